//! A simulated file system for crash tests. It keeps, for every file, the bytes written and the bytes
//! made durable by `sync`, and for every directory the names made durable by `sync_dir`. It can be told
//! to fail at the N-th mutating operation (a write fails after writing only part of its buffer), after
//! which every operation fails, as if the process had died. [`SimFs::crash`] then returns the file system
//! a restarted process would find: durable names and durable bytes, plus, for files whose durable bytes
//! are a prefix of what was written, a seeded-random part of the unsynced tail (a torn write).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{File, Fs, Mapped};

#[derive(Debug, Default, Clone)]
struct Inode {
    written: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    inodes: Vec<Inode>,
    /// Names as a running process sees them.
    names: BTreeMap<PathBuf, usize>,
    /// Names as they would be found after a crash.
    durable_names: BTreeMap<PathBuf, usize>,
    dirs: BTreeSet<PathBuf>,
    /// Mutating operations performed so far.
    ops: u64,
    /// Fail at this operation (1-based) and every one after it.
    fail_at: Option<u64>,
    dead: bool,
}

/// A shared handle to a simulated file system.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn dead() -> io::Error {
    io::Error::other("simulated crash: the file system is gone")
}

impl SimFs {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way tests rely on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the `n`-th mutating operation from now fail (and every one after it).
    pub fn fail_after(&self, n: u64) {
        let mut s = self.lock();
        s.fail_at = Some(s.ops + n);
    }

    /// The number of mutating operations performed so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// True once an injected failure has happened.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// The file system a restarted process would see. `seed` chooses how much of each unsynced tail
    /// survives.
    pub fn crash(&self, seed: u64) -> SimFs {
        let s = self.lock();
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut new = State { dirs: s.dirs.clone(), ..State::default() };
        let mut remap = BTreeMap::new();
        for (name, &ino) in &s.durable_names {
            let id = *remap.entry(ino).or_insert_with(|| {
                let inode = &s.inodes[ino];
                let mut bytes = inode.durable.clone();
                if inode.written.len() > bytes.len() && inode.written.starts_with(&bytes) {
                    let extra = inode.written.len() - bytes.len();
                    let keep = (next() % (extra as u64 + 1)) as usize;
                    bytes.extend_from_slice(&inode.written[inode.durable.len()..][..keep]);
                }
                new.inodes.push(Inode { written: bytes.clone(), durable: bytes });
                new.inodes.len() - 1
            });
            new.names.insert(name.clone(), id);
            new.durable_names.insert(name.clone(), id);
        }
        SimFs { state: Arc::new(Mutex::new(new)) }
    }

    /// Flips one byte of a file in place (both images), for corruption tests.
    pub fn flip_byte(&self, path: &Path, offset: usize) {
        let mut s = self.lock();
        if let Some(&ino) = s.names.get(path) {
            let inode = &mut s.inodes[ino];
            if offset < inode.written.len() {
                inode.written[offset] ^= 0xFF;
            }
            if offset < inode.durable.len() {
                inode.durable[offset] ^= 0xFF;
            }
        }
    }

    /// All file names, for tests that look for files.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().names.keys().cloned().collect()
    }
}

impl State {
    /// Counts a mutating operation; errors if the process is dead or this is the failing one.
    fn tick(&mut self) -> io::Result<bool> {
        if self.dead {
            return Err(dead());
        }
        self.ops += 1;
        if self.fail_at.is_some_and(|f| self.ops >= f) {
            self.dead = true;
            return Ok(true);
        }
        Ok(false)
    }

    fn check(&self) -> io::Result<()> {
        if self.dead { Err(dead()) } else { Ok(()) }
    }

    fn inode(&self, path: &Path) -> io::Result<usize> {
        self.names
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display())))
    }
}

struct SimFile {
    fs: SimFs,
    ino: usize,
}

impl File for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.fs.lock();
        if s.tick()? {
            // Die in the middle of the write: part of the buffer reaches the page cache.
            let half = buf.len() / 2;
            s.inodes[self.ino].written.extend_from_slice(&buf[..half]);
            return Err(dead());
        }
        s.inodes[self.ino].written.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.fs.lock();
        if s.tick()? {
            return Err(dead());
        }
        let inode = &mut s.inodes[self.ino];
        inode.durable = inode.written.clone();
        Ok(())
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.check()?;
        let mut p = Some(path);
        while let Some(dir) = p {
            if dir.as_os_str().is_empty() {
                break;
            }
            s.dirs.insert(dir.to_path_buf());
            p = dir.parent();
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let s = self.lock();
        s.check()?;
        if !s.dirs.contains(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display())));
        }
        let mut out: BTreeSet<PathBuf> = BTreeSet::new();
        for name in s.names.keys().chain(s.dirs.iter()) {
            if name.parent() == Some(path) {
                out.insert(name.clone());
            }
        }
        Ok(out.into_iter().collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.lock();
        s.names.contains_key(path) || s.dirs.contains(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.lock().dirs.contains(path)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.lock();
        s.check()?;
        let ino = s.inode(path)?;
        Ok(s.inodes[ino].written.clone())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn io::Read + Send>> {
        self.read(path).map(|bytes| Box::new(io::Cursor::new(bytes)) as Box<dyn io::Read + Send>)
    }

    fn map(&self, path: &Path) -> io::Result<Mapped> {
        self.read(path).map(Mapped::from_vec)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn File>> {
        let mut s = self.lock();
        if s.tick()? {
            return Err(dead());
        }
        s.inodes.push(Inode::default());
        let ino = s.inodes.len() - 1;
        s.names.insert(path.to_path_buf(), ino);
        Ok(Box::new(SimFile { fs: self.clone(), ino }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn File>> {
        let s = self.lock();
        s.check()?;
        let ino = s.inode(path)?;
        Ok(Box::new(SimFile { fs: self.clone(), ino }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if s.tick()? {
            return Err(dead());
        }
        let ino = s.inode(from)?;
        s.names.remove(from);
        s.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if s.tick()? {
            return Err(dead());
        }
        let ino = s.inode(from)?;
        if s.names.contains_key(to) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{}", to.display())));
        }
        s.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if s.tick()? {
            return Err(dead());
        }
        s.names.remove(path);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if s.tick()? {
            return Err(dead());
        }
        s.names.retain(|k, _| !k.starts_with(path));
        // Removing a directory tree is durable at once here: the engine removes only trees that the
        // catalog no longer references, so either image is correct after a crash.
        s.durable_names.retain(|k, _| !k.starts_with(path));
        s.dirs.retain(|d| !d.starts_with(path));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if s.tick()? {
            return Err(dead());
        }
        let current: Vec<(PathBuf, usize)> =
            s.names.iter().filter(|(k, _)| k.parent() == Some(path)).map(|(k, v)| (k.clone(), *v)).collect();
        s.durable_names.retain(|k, _| k.parent() != Some(path));
        s.durable_names.extend(current);
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = self.lock();
        if s.tick()? {
            return Err(dead());
        }
        let ino = s.inode(path)?;
        let inode = &mut s.inodes[ino];
        inode.written.truncate(len as usize);
        inode.durable = inode.written.clone();
        Ok(())
    }

    fn file_len(&self, path: &Path) -> u64 {
        let s = self.lock();
        s.names.get(path).map(|&i| s.inodes[i].written.len() as u64).unwrap_or(0)
    }
}
