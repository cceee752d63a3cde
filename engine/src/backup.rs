//! Online backup and restore of a data directory.
//!
//! A backup needs no lock and no help from a running server, because of how the directory changes:
//! sealed segments are never modified, the catalog is replaced atomically, and the write-ahead log
//! is only appended to (and removed once a catalog covers it). So [`backup`]:
//!
//! 1. reads the catalog;
//! 2. copies (or hard-links) every segment it lists; a segment gone meanwhile (merged by compaction,
//!    dropped by retention) means a newer catalog exists: start again from 1, keeping what is copied;
//! 3. copies the write-ahead log files from the catalog's replay point, each up to its length then;
//! 4. reads the catalog again: if a flush moved the replay point in between, the log files copied may
//!    be incomplete prefixes of removed ones, so start again from 1;
//! 5. writes the catalog of step 1, then a `BACKUP` file that marks the backup complete.
//!
//! The result is the database as of step 3: everything acknowledged before the backup began (fsynced
//! in the log, or in a segment the catalog lists), and possibly later writes, each transaction whole or
//! absent (a record cut off at the end of the last log file is a torn tail, dropped on open).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::{CATALOG_FILE, CatalogData, segment_path};
use crate::error::{Error, Result, SqlState};
use crate::wal::{list_wal_files, wal_path};

/// The file that marks a finished backup.
pub const MANIFEST: &str = "BACKUP";
/// How often the copy starts again when flushes keep moving the log's replay point.
const ATTEMPTS: usize = 20;

/// What a backup holds (written to its `BACKUP` file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    /// When the backup finished, microseconds since the epoch.
    pub created_us: i64,
    pub source: String,
    pub catalog_version: u64,
    pub segments: usize,
    pub segment_bytes: u64,
    pub wal_files: usize,
    pub wal_bytes: u64,
    /// Segments hard-linked rather than copied.
    pub linked: bool,
    /// How many times the copy started over.
    pub attempts: usize,
}

/// How to copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupOptions {
    /// Hard-link segments (same file system only; falls back to copying). Fast and small, but the
    /// backup then shares its segments' storage with the database.
    pub link: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Reads a catalog file (the engine's format, checksum checked).
pub fn read_catalog(dir: &Path) -> Result<(CatalogData, Vec<u8>)> {
    let path = dir.join(CATALOG_FILE);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let data = crate::catalog::decode(&bytes).map_err(|(off, reason)| Error::corrupt(&path, off, reason))?;
    Ok((data, bytes))
}

/// Backs up the data directory `src` into `dest` (which must be missing or empty) while the database
/// may be running. `progress` is called with bytes copied so far and the total known so far.
pub fn backup(src: &Path, dest: &Path, options: BackupOptions, progress: &dyn Fn(u64, u64)) -> Result<Manifest> {
    if !src.join(CATALOG_FILE).exists() {
        return Err(Error::invalid(
            SqlState::InvalidParameter,
            format!("{} is not a trafficdb data directory (no catalog)", src.display()),
        ));
    }
    ensure_empty(dest)?;
    std::fs::create_dir_all(dest.join("wal")).map_err(io(dest))?;
    let mut copied: HashSet<PathBuf> = HashSet::new();
    let mut linked_any = false;
    let mut done_bytes = 0u64;
    for attempt in 1..=ATTEMPTS {
        let (catalog, catalog_bytes) = read_catalog(src)?;
        // 2. Segments.
        let mut wanted = Vec::new();
        let mut segment_bytes = 0u64;
        for t in &catalog.tables {
            for (key, segs) in &t.partitions {
                for s in segs {
                    wanted.push(segment_path(Path::new(""), t.id, *key, s.id));
                    segment_bytes += s.bytes;
                }
            }
        }
        let mut vanished = false;
        for rel in &wanted {
            if copied.contains(rel) {
                continue;
            }
            let (from, to) = (src.join(rel), dest.join(rel));
            let parent = to.parent().expect("segment paths have a parent");
            std::fs::create_dir_all(parent).map_err(io(parent))?;
            let linked = options.link && std::fs::hard_link(&from, &to).is_ok();
            if linked {
                linked_any = true;
            } else {
                match copy_file(&from, &to) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        vanished = true;
                        break;
                    }
                    Err(e) => return Err(Error::io(&from, e)),
                }
            }
            done_bytes += std::fs::metadata(&to).map(|m| m.len()).unwrap_or(0);
            progress(done_bytes, segment_bytes.max(done_bytes));
            copied.insert(rel.clone());
        }
        if vanished {
            tracing::debug!("backup: a segment was replaced while copying; reading the catalog again");
            continue;
        }
        // 3. The log from the replay point, each file as long as it is now.
        let wal_dir = dest.join("wal");
        for entry in std::fs::read_dir(&wal_dir).map_err(io(&wal_dir))? {
            let p = entry.map_err(io(&wal_dir))?.path();
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        let mut wal_files = 0;
        let mut wal_bytes = 0u64;
        let mut vanished = false;
        for (seq, from) in list_wal_files(&crate::io::RealFs, &src.join("wal"))? {
            if seq < catalog.wal_replay_from {
                continue;
            }
            match copy_file(&from, &wal_path(&wal_dir, seq)) {
                Ok(n) => {
                    wal_files += 1;
                    wal_bytes += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    vanished = true;
                    break;
                }
                Err(e) => return Err(Error::io(&from, e)),
            }
        }
        // 4. Still the same replay point?
        let (now, _) = read_catalog(src)?;
        if vanished || now.wal_replay_from != catalog.wal_replay_from {
            tracing::debug!("backup: a flush moved the log's replay point while copying; starting again");
            continue;
        }
        // 5. Segments of earlier attempts that this catalog no longer lists go; then the catalog and
        // the manifest.
        let keep: HashSet<&PathBuf> = wanted.iter().collect();
        for rel in copied.iter().filter(|r| !keep.contains(r)) {
            let p = dest.join(rel);
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        sync_tree(dest)?;
        write_synced(&dest.join(CATALOG_FILE), &catalog_bytes)?;
        let manifest = Manifest {
            format: 1,
            created_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0),
            source: src.display().to_string(),
            catalog_version: catalog.version,
            segments: wanted.len(),
            segment_bytes,
            wal_files,
            wal_bytes,
            linked: linked_any,
            attempts: attempt,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
        write_synced(&dest.join(MANIFEST), &json)?;
        sync_dir(dest)?;
        return Ok(manifest);
    }
    Err(Error::invalid(
        SqlState::InvalidParameter,
        format!(
            "the database kept changing while it was copied ({ATTEMPTS} attempts); try again, or back up with fewer writes"
        ),
    ))
}

/// Copies the backup `from` into the data directory `to` (missing or empty); the caller then opens it,
/// which replays the copied log. Returns the backup's manifest.
pub fn restore(from: &Path, to: &Path, progress: &dyn Fn(u64, u64)) -> Result<Manifest> {
    let manifest_path = from.join(MANIFEST);
    let text = std::fs::read(&manifest_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::invalid(
                SqlState::InvalidParameter,
                format!("{} is not a complete backup (no {MANIFEST} file)", from.display()),
            )
        } else {
            Error::io(&manifest_path, e)
        }
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| Error::corrupt(&manifest_path, 0, format!("the manifest does not parse: {e}")))?;
    let (catalog, _) = read_catalog(from)?;
    ensure_empty(to)?;
    let mut files = vec![PathBuf::from(CATALOG_FILE)];
    for t in &catalog.tables {
        for (key, segs) in &t.partitions {
            for s in segs {
                files.push(segment_path(Path::new(""), t.id, *key, s.id));
            }
        }
    }
    for (seq, _) in list_wal_files(&crate::io::RealFs, &from.join("wal"))? {
        files.push(wal_path(Path::new("wal"), seq));
    }
    let total: u64 = files.iter().map(|f| std::fs::metadata(from.join(f)).map(|m| m.len()).unwrap_or(0)).sum();
    let mut done = 0;
    std::fs::create_dir_all(to.join("wal")).map_err(io(to))?;
    std::fs::create_dir_all(to.join("tables")).map_err(io(to))?;
    // The catalog last: a restore cut short leaves a directory without one, which does not open as
    // the backup's database.
    files.rotate_left(1);
    for rel in &files {
        let (src, dst) = (from.join(rel), to.join(rel));
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        if rel.as_os_str() == CATALOG_FILE {
            sync_tree(to)?;
        }
        done += copy_file(&src, &dst).map_err(|e| Error::io(&src, e))?;
        progress(done, total);
    }
    sync_dir(to)?;
    Ok(manifest)
}

fn ensure_empty(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::invalid(
                    SqlState::InvalidParameter,
                    format!("{} exists and is not empty; give a new directory", dir.display()),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir).map_err(io(dir)),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Copies a file as it is now and fsyncs the copy; returns the bytes copied.
fn copy_file(from: &Path, to: &Path) -> std::io::Result<u64> {
    let mut src = std::fs::File::open(from)?;
    let mut dst = std::fs::File::create(to)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = src.read(&mut buf)?;
        if k == 0 {
            break;
        }
        dst.write_all(&buf[..k])?;
        n += k as u64;
    }
    dst.sync_all()?;
    Ok(n)
}

fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

/// Fsyncs every directory under `dir` (the files were fsynced as they were written).
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if entry.file_type().map_err(io(dir))?.is_dir() {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(dir)
}
