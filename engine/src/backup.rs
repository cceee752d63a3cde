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
//!
//! Every file operation goes through [`Fs`] ([`backup_with`], [`restore_with`]), so the crash tests
//! cut both short at every operation: a backup cut short has no `BACKUP` file and is refused by a
//! restore; a restore cut short has no catalog (it is written last, atomically), so it never opens
//! as part of the backup's database.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::{CATALOG_FILE, CatalogData, segment_path};
use crate::error::{Error, Result, SqlState};
use crate::io::{Fs, RealFs};
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
    read_catalog_with(&RealFs, dir)
}

fn read_catalog_with(fs: &dyn Fs, dir: &Path) -> Result<(CatalogData, Vec<u8>)> {
    let path = dir.join(CATALOG_FILE);
    let bytes = fs.read(&path).map_err(io(&path))?;
    let data = crate::catalog::decode(&bytes).map_err(|(off, reason)| Error::corrupt(&path, off, reason))?;
    Ok((data, bytes))
}

/// Backs up the data directory `src` into `dest` (which must be missing or empty) while the database
/// may be running. `progress` is called with bytes copied so far and the total known so far.
pub fn backup(src: &Path, dest: &Path, options: BackupOptions, progress: &dyn Fn(u64, u64)) -> Result<Manifest> {
    backup_with(&RealFs, src, dest, options, progress)
}

/// [`backup`] on the file system `fs`.
pub fn backup_with(
    fs: &dyn Fs,
    src: &Path,
    dest: &Path,
    options: BackupOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<Manifest> {
    if !fs.exists(&src.join(CATALOG_FILE)) {
        return Err(Error::invalid(
            SqlState::InvalidParameter,
            format!("{} is not a trafficdb data directory (no catalog)", src.display()),
        ));
    }
    ensure_empty(fs, dest)?;
    let wal_dir = dest.join("wal");
    fs.create_dir_all(&wal_dir).map_err(io(dest))?;
    let mut copied: HashSet<PathBuf> = HashSet::new();
    let mut linked_any = false;
    let mut done_bytes = 0u64;
    for attempt in 1..=ATTEMPTS {
        let (catalog, catalog_bytes) = read_catalog_with(fs, src)?;
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
            fs.create_dir_all(parent).map_err(io(parent))?;
            let linked = options.link && fs.hard_link(&from, &to).is_ok();
            if linked {
                linked_any = true;
            } else {
                match copy_file(fs, &from, &to) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        vanished = true;
                        break;
                    }
                    Err(e) => return Err(Error::io(&from, e)),
                }
            }
            done_bytes += fs.file_len(&to);
            progress(done_bytes, segment_bytes.max(done_bytes));
            copied.insert(rel.clone());
        }
        if vanished {
            tracing::debug!("backup: a segment was replaced while copying; reading the catalog again");
            continue;
        }
        // 3. The log from the replay point, each file as long as it is now.
        for p in fs.list_dir(&wal_dir).map_err(io(&wal_dir))? {
            fs.remove_file(&p).map_err(io(&p))?;
        }
        let mut wal_files = 0;
        let mut wal_bytes = 0u64;
        let mut vanished = false;
        for (seq, from) in list_wal_files(fs, &src.join("wal"))? {
            if seq < catalog.wal_replay_from {
                continue;
            }
            match copy_file(fs, &from, &wal_path(&wal_dir, seq)) {
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
        let (now, _) = read_catalog_with(fs, src)?;
        if vanished || now.wal_replay_from != catalog.wal_replay_from {
            tracing::debug!("backup: a flush moved the log's replay point while copying; starting again");
            continue;
        }
        // 5. Segments of earlier attempts that this catalog no longer lists go; then the catalog and
        // the manifest.
        let keep: HashSet<&PathBuf> = wanted.iter().collect();
        for rel in copied.iter().filter(|r| !keep.contains(r)) {
            let p = dest.join(rel);
            fs.remove_file(&p).map_err(io(&p))?;
        }
        sync_tree(fs, dest)?;
        let catalog_path = dest.join(CATALOG_FILE);
        crate::io::write_atomic(fs, &catalog_path, &catalog_bytes).map_err(io(&catalog_path))?;
        let manifest = Manifest {
            format: 1,
            created_us: crate::clock::wall_now_us(),
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
        let manifest_path = dest.join(MANIFEST);
        crate::io::write_atomic(fs, &manifest_path, &json).map_err(io(&manifest_path))?;
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
    restore_with(&RealFs, from, to, progress)
}

/// [`restore`] on the file system `fs`.
pub fn restore_with(fs: &dyn Fs, from: &Path, to: &Path, progress: &dyn Fn(u64, u64)) -> Result<Manifest> {
    let manifest_path = from.join(MANIFEST);
    let text = fs.read(&manifest_path).map_err(|e| {
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
    let (catalog, catalog_bytes) = read_catalog_with(fs, from)?;
    ensure_empty(fs, to)?;
    let mut files = Vec::new();
    for t in &catalog.tables {
        for (key, segs) in &t.partitions {
            for s in segs {
                files.push(segment_path(Path::new(""), t.id, *key, s.id));
            }
        }
    }
    for (seq, _) in list_wal_files(fs, &from.join("wal"))? {
        files.push(wal_path(Path::new("wal"), seq));
    }
    let total: u64 = files.iter().map(|f| fs.file_len(&from.join(f))).sum::<u64>() + catalog_bytes.len() as u64;
    let mut done = 0;
    fs.create_dir_all(&to.join("wal")).map_err(io(to))?;
    fs.create_dir_all(&to.join("tables")).map_err(io(to))?;
    for rel in &files {
        let (src, dst) = (from.join(rel), to.join(rel));
        if let Some(parent) = dst.parent() {
            fs.create_dir_all(parent).map_err(io(parent))?;
        }
        done += copy_file(fs, &src, &dst).map_err(|e| Error::io(&src, e))?;
        progress(done, total);
    }
    // The catalog last, atomically, once everything it names is durable: a restore cut short leaves a
    // directory without one, which does not open as the backup's database.
    sync_tree(fs, to)?;
    let catalog_path = to.join(CATALOG_FILE);
    crate::io::write_atomic(fs, &catalog_path, &catalog_bytes).map_err(io(&catalog_path))?;
    progress(done + catalog_bytes.len() as u64, total);
    Ok(manifest)
}

fn ensure_empty(fs: &dyn Fs, dir: &Path) -> Result<()> {
    match fs.list_dir(dir) {
        Ok(entries) if !entries.is_empty() => Err(Error::invalid(
            SqlState::InvalidParameter,
            format!("{} exists and is not empty; give a new directory", dir.display()),
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs.create_dir_all(dir).map_err(io(dir)),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Copies a file as it is now and fsyncs the copy; returns the bytes copied.
fn copy_file(fs: &dyn Fs, from: &Path, to: &Path) -> std::io::Result<u64> {
    let mut src = fs.open_read(from)?;
    let mut dst = fs.create(to)?;
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
    dst.sync()?;
    Ok(n)
}

/// Makes every name under `dir` durable (the files were fsynced as they were written).
fn sync_tree(fs: &dyn Fs, dir: &Path) -> Result<()> {
    for entry in fs.list_dir(dir).map_err(io(dir))? {
        if fs.is_dir(&entry) {
            sync_tree(fs, &entry)?;
        }
    }
    fs.sync_dir(dir).map_err(io(dir))
}
