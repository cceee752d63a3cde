//! The file-system seam. Every byte the engine reads or writes goes through [`Fs`], so the crash tests can
//! run the engine on [`sim::SimFs`], which keeps a "written" and a "durable" image of every file and can
//! fail at any operation.
//!
//! Durability contract of [`RealFs`]: a file's contents are durable once [`File::sync`] returns; a file's
//! name (creation, rename, removal) is durable once [`Fs::sync_dir`] on its directory returns.
//!
//! This module holds the engine's only `unsafe` code: mapping sealed segment files (see [`RealFs::map`]).

pub mod sim;

use std::fmt;
use std::io::{self, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file being written.
pub trait File: Send {
    /// Appends `buf` at the end of the file (not durable until [`File::sync`]).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// When this returns, every byte written so far is durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// The file operations the engine needs.
pub trait Fs: Send + Sync + fmt::Debug + 'static {
    /// Creates a directory and its parents; durable on return (parents are synced).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The entries of a directory (files and directories), as full paths, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    fn exists(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens a file to read it in pieces, from its start (a backup copies files so).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn io::Read + Send>>;
    /// Maps a sealed file read-only. The caller promises never to modify the file afterwards.
    fn map(&self, path: &Path) -> io::Result<Mapped>;
    /// Creates (or truncates) a file for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn File>>;
    /// Opens an existing file for appending.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn File>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// A second name for the file `from` (same file system only); durable as a rename is.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the names in a directory durable (after create, rename, remove).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Cuts a file to `len` bytes and makes that durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Bytes used by a file (0 if it does not exist).
    fn file_len(&self, path: &Path) -> u64;
}

/// The bytes of a sealed file: a memory map, or an owned copy.
#[derive(Clone)]
pub struct Mapped(Arc<MappedInner>);

enum MappedInner {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Mapped {
    pub fn from_vec(v: Vec<u8>) -> Self {
        Mapped(Arc::new(MappedInner::Owned(v)))
    }
}

/// So that a sealed file's bytes can be handed on without a copy (`bytes::Bytes::from_owner`).
impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &*self.0 {
            MappedInner::Map(m) => m,
            MappedInner::Owned(v) => v,
        }
    }
}

impl fmt::Debug for Mapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mapped({} bytes)", self.len())
    }
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealFile(std::fs::File);

impl File for RealFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        if path.is_dir() {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut p = path;
        while !p.exists() {
            missing.push(p.to_path_buf());
            match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                _ => break,
            }
        }
        std::fs::create_dir_all(path)?;
        // Make each new name durable in its parent.
        for dir in missing {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                self.sync_dir(parent)?;
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(path)? {
            out.push(entry?.path());
        }
        out.sort();
        Ok(out)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn io::Read + Send>> {
        Ok(Box::new(std::fs::File::open(path)?))
    }

    fn map(&self, path: &Path) -> io::Result<Mapped> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            return Ok(Mapped::from_vec(Vec::new()));
        }
        // SAFETY: the engine maps only sealed segment files: they are written once, fsynced and
        // checksummed before they enter the catalog, and never modified afterwards (compaction and
        // deletes write new files; old ones are unlinked, which leaves existing maps valid on Unix).
        // Another process writing into the data directory would break this contract; the directory
        // is the engine's alone, as documented in docs/storage.md.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Mapped(Arc::new(MappedInner::Map(map))))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn File>> {
        let f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
        Ok(Box::new(RealFile(f)))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn File>> {
        let f = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(RealFile(f)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn file_len(&self, path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

/// Writes `data` to `path` atomically: a temporary file, fsync, rename, fsync of the directory.
/// A crash at any point leaves either the old file or the new one.
pub fn write_atomic(fs: &dyn Fs, path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs.create(&tmp)?;
    f.write_all(data)?;
    f.sync()?;
    drop(f);
    fs.rename(&tmp, path)?;
    fs.sync_dir(path.parent().unwrap_or(Path::new(".")))
}
