//! Local copies of segments fetched from an object store, bounded in bytes: a worker's (segments of
//! the scans it is sent) and a reader's (segments of other writers' shards, `crate::shards`).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::catalog::SegmentEntry;
use crate::engine::SegmentHandle;
use crate::error::{Error, SqlState};
use crate::io::RealFs;
use crate::segment::Segment;
use crate::store::ObjectStorage;

/// A worker's local copies of segments fetched from the object store, at most `capacity` bytes of
/// them (least recently used first out). Segments never change once written, so a copy is good for
/// as long as it is kept. A copy being read when it is evicted stays readable (its file is unlinked,
/// its mapping lives on until the read ends).
pub struct SegmentCache {
    store: Arc<ObjectStorage>,
    dir: PathBuf,
    capacity: u64,
    state: Mutex<CacheState>,
    fetches: AtomicU64,
}

#[derive(Default)]
struct CacheState {
    segments: HashMap<String, Cached>,
    bytes: u64,
    tick: u64,
}

struct Cached {
    handle: Arc<SegmentHandle>,
    bytes: u64,
    used: u64,
}

impl std::fmt::Debug for SegmentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCache").field("store", &self.store.url()).field("dir", &self.dir).finish()
    }
}

impl SegmentCache {
    /// A cache in `dir` (emptied: copies left by an earlier run are not trusted) over `store`.
    pub fn open(store: Arc<ObjectStorage>, dir: &Path, capacity: u64) -> crate::Result<Arc<SegmentCache>> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Arc::new(SegmentCache {
            store,
            dir: dir.to_path_buf(),
            capacity,
            state: Mutex::new(CacheState::default()),
            fetches: AtomicU64::new(0),
        }))
    }

    /// The store the segments are fetched from.
    pub fn store(&self) -> &Arc<ObjectStorage> {
        &self.store
    }

    /// The directory the copies are kept in, each under its object name.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Segments fetched from the store so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The segment stored as object `name`, from the cache or fetched.
    pub(crate) fn segment(&self, name: &str, entry: &SegmentEntry) -> crate::Result<Arc<SegmentHandle>> {
        {
            let mut state = self.state.lock();
            state.tick += 1;
            let tick = state.tick;
            if let Some(c) = state.segments.get_mut(name) {
                c.used = tick;
                return Ok(c.handle.clone());
            }
        }
        let relative = Path::new(name);
        if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(Error::invalid(SqlState::InvalidParameter, format!("bad segment object name \"{name}\"")));
        }
        let bytes = self.store.get(name)?.ok_or_else(|| {
            Error::invalid(SqlState::UndefinedObject, format!("segment {name} is not in {}", self.store.url()))
        })?;
        let n = self.fetches.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(relative);
        let parent = path.parent().expect("a segment path has a directory");
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        // Written under a name of its own, then renamed: two tasks may fetch the same segment at once.
        let partial = parent.join(format!(".fetch-{n}"));
        std::fs::write(&partial, &bytes).map_err(|e| Error::io(&partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| Error::io(&path, e))?;
        let handle = Arc::new(SegmentHandle { entry: entry.clone(), segment: Segment::open(&RealFs, &path)? });
        let mut state = self.state.lock();
        state.tick += 1;
        let used = state.tick;
        if let Some(c) = state.segments.get(name) {
            return Ok(c.handle.clone());
        }
        state.bytes += bytes.len() as u64;
        state.segments.insert(name.to_string(), Cached { handle: handle.clone(), bytes: bytes.len() as u64, used });
        while state.bytes > self.capacity && state.segments.len() > 1 {
            let Some(oldest) = (state.segments.iter())
                .filter(|(k, _)| k.as_str() != name)
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let c = state.segments.remove(&oldest).expect("just found");
            state.bytes -= c.bytes;
            let _ = std::fs::remove_file(self.dir.join(&oldest));
        }
        Ok(handle)
    }
}
