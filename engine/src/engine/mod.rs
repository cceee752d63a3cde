//! The storage engine: tables, memtables, the write path, flush, compaction, retention and deletes.
//!
//! Write path: a batch is coerced to the table schema, split by partition, framed into the WAL and
//! fsynced (group commit), and only then added to the memtables: "acknowledged" means durable.
//!
//! Lock order (always taken in this order, never the reverse):
//! `maintenance` → `gate` → `catalog` → `tables` → a table's `data`.
//! `maintenance` serialises everything that changes sealed segments (flush, compaction, retention,
//! deletes, drops). `gate` is held shared by appends from WAL write to memtable insert, and exclusively
//! by flush while it rotates the WAL and freezes the memtables, so every row in a WAL file older than the
//! rotation is in a frozen memtable.
//!
//! Readers take a [`TableSnapshot`] (sealed segments plus memtable batches, all immutable and shared) and
//! never block writers, flushes or compactions for longer than copying a list of `Arc`s.
//!
//! One module per lifecycle step, each adding methods to [`Engine`] (this module knows them only as
//! `mod` lines): [`table`] (tables, partitions, snapshots and the row helpers the steps share),
//! `ddl` (tables, views, catalog objects), `write` (the write path), `bulk` (large loads written
//! straight to segments), `flush`, `compaction`,
//! `retention` (retention, TRUNCATE, the rewrites of DELETE and UPDATE), `changes` (change
//! tracking for rollups), `status` (status and metrics), `worker` (the background thread).

mod bulk;
mod changes;
mod compaction;
mod ddl;
mod flush;
mod retention;
mod status;
mod table;
mod worker;
mod write;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::Sender;
use parking_lot::{Mutex, RwLock};

use crate::catalog::{Catalog, CatalogData, TableEntry, segment_path};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result, SqlState};
use crate::io::{Fs, RealFs};
use crate::segment::{Segment, WriteOptions};
use crate::shard::ShardRule;
use crate::store::ObjectStorage;
use crate::types::{TableDef, coerce_batch};
use crate::wal::{Wal, list_wal_files, replay};

pub use bulk::BulkLoad;
pub use retention::{Rewrite, Rewritten, RowId};
pub use status::TableStatus;
pub use table::{ColumnBounds, MemBatch, PartitionSnapshot, SegmentHandle, Table, TableSnapshot};
use table::{min_opt, record_changes};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Flush when the memtables hold this many bytes.
    pub flush_bytes: usize,
    /// Flush when the oldest unflushed row has waited this long.
    pub flush_interval: Duration,
    /// Writers wait for a flush when the memtables exceed this many bytes (backpressure).
    pub max_memtable_bytes: usize,
    /// Compact a partition when it has at least this many small segments.
    pub compaction_min_segments: usize,
    /// Segments with at least this many rows are left alone by compaction, and a merge writes at most
    /// about this many rows (small segments are merged in groups up to it). Larger merges would buy
    /// nothing for time-ordered data (its segments do not overlap) and cost memory.
    pub compaction_max_rows: u64,
    /// Run flush, compaction and retention in a background thread.
    pub background: bool,
    /// How often the background thread looks for work.
    pub background_tick: Duration,
    pub segment: WriteOptions,
    /// Where time-driven work reads the time (see [`crate::clock`]).
    pub clock: Arc<dyn Clock>,
    /// The object store sealed segments and the catalog are written to (see [`crate::store`]); the
    /// data directory then holds the WAL and a copy of every segment.
    pub store: Option<Arc<ObjectStorage>>,
    /// This writer's shard of a shared object-store prefix (see [`crate::shard`]): rows of other
    /// shards are refused. `None` on a node that owns every row (and, with a store, reads the
    /// shards published under its prefix).
    pub shard: Option<ShardRule>,
    /// Bytes of segments fetched from other shards kept on local disk.
    pub cache_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flush_bytes: 128 << 20,
            flush_interval: Duration::from_secs(30),
            max_memtable_bytes: 512 << 20,
            compaction_min_segments: 4,
            compaction_max_rows: 1 << 20,
            background: true,
            background_tick: Duration::from_millis(500),
            segment: WriteOptions::default(),
            clock: Arc::new(SystemClock::default()),
            store: None,
            shard: None,
            cache_bytes: 10 << 30,
        }
    }
}

/// One partition's share of a segment swap: these segments out, those in.
struct Swap {
    key: i64,
    old: Vec<Arc<SegmentHandle>>,
    new: Vec<Arc<SegmentHandle>>,
}

enum WorkerMsg {
    Nudge,
    Stop,
}

/// The storage engine of one data directory.
pub struct Engine {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: Options,
    catalog: Mutex<Catalog>,
    tables: RwLock<HashMap<String, Arc<Table>>>,
    wal: Wal,
    gate: RwLock<()>,
    maintenance: Mutex<()>,
    mem_bytes: AtomicUsize,
    mem_since: Mutex<Option<Duration>>,
    next_txn: AtomicU64,
    next_segment_id: AtomicU64,
    closed: AtomicBool,
    worker: Mutex<Option<(Sender<WorkerMsg>, JoinHandle<()>)>>,
    /// The directory lock, held until [`Engine::close`] (or drop).
    lock: Mutex<Option<std::fs::File>>,
    /// Figures for EXPLAIN, metrics and tests.
    pub stats: EngineStats,
}

/// Counters kept by the engine.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub rows_appended: AtomicU64,
    pub appends: AtomicU64,
    /// The time each durable append took (coercion, WAL write and fsync, memtable).
    pub append_seconds: crate::metrics::Histogram,
    pub flush_seconds: crate::metrics::Histogram,
    pub flushes: AtomicU64,
    pub compactions: AtomicU64,
    pub partitions_dropped: AtomicU64,
    pub replayed_rows: AtomicU64,
    pub replay_truncated_bytes: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.dir).finish()
    }
}

impl Engine {
    /// Opens (or creates) the data directory `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Arc<Engine>> {
        let dir = dir.as_ref().to_path_buf();
        RealFs.create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::invalid(
                    SqlState::InvalidParameter,
                    format!("data directory {} is in use by another process", dir.display()),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        Self::open_with(Arc::new(RealFs), dir, options, Some(lock))
    }

    /// Opens a data directory on any file system (the crash tests use [`crate::io::sim::SimFs`]).
    pub fn open_with(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        options: Options,
        lock: Option<std::fs::File>,
    ) -> Result<Arc<Engine>> {
        let wal_dir = dir.join("wal");
        let tables_dir = dir.join("tables");
        let staging_dir = dir.join(bulk::STAGING_DIR);
        for d in [&dir, &wal_dir, &tables_dir, &staging_dir] {
            fs.create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let mut options = remember_store(fs.as_ref(), &dir, options)?;
        options.shard = crate::shard::remember(fs.as_ref(), &dir, options.shard.take())?;
        let catalog = Catalog::open(fs.clone(), &dir, options.store.clone())?;
        let data = catalog.data().clone();
        if let Some(store) = &options.store {
            sync_store(fs.as_ref(), &dir, &data, store)?;
        }

        let mut tables = HashMap::new();
        for entry in &data.tables {
            let table = Table::new(entry);
            {
                let mut d = table.data.write();
                for (&key, segs) in &entry.partitions {
                    let p = d.partitions.entry(key).or_default();
                    for s in segs {
                        let path = segment_path(&dir, entry.id, key, s.id);
                        let segment = Segment::open(fs.as_ref(), &path)?;
                        check_segment_columns(&segment, &entry.def)?;
                        p.segments.push(Arc::new(SegmentHandle { entry: s.clone(), segment }));
                    }
                }
            }
            tables.insert(entry.def.name.clone(), Arc::new(table));
        }
        remove_orphans(fs.as_ref(), &dir, &data)?;

        // Replay what the WAL holds beyond the sealed segments.
        let by_id: HashMap<u64, Arc<Table>> = tables.values().map(|t| (t.id, t.clone())).collect();
        let mut mem_bytes = 0usize;
        let stats = replay(fs.as_ref(), &wal_dir, data.wal_replay_from, |table_id, batches| {
            if let Some(t) = by_id.get(&table_id) {
                let mut d = t.data.write();
                for b in batches {
                    let b = coerce_batch(&t.def, &t.schema, &b)?;
                    if let Some(m) = t.min_time(std::slice::from_ref(&b)) {
                        t.mark_changed(m);
                    }
                    for (k, piece) in t.split(b)? {
                        mem_bytes += piece.get_array_memory_size();
                        d.partitions.entry(k).or_default().mem.push(MemBatch::new(piece));
                    }
                }
            }
            Ok(())
        })?;
        let files = list_wal_files(fs.as_ref(), &wal_dir)?;
        let next_seq = files.last().map_or(data.wal_replay_from, |(s, _)| s + 1).max(data.wal_replay_from);
        // Files before the replay point are covered by segments; files without a committed
        // transaction hold nothing. Neither is needed again.
        for (seq, path) in &files {
            if *seq < data.wal_replay_from || stats.empty_files.contains(path) {
                fs.remove_file(path).map_err(|e| Error::io(path, e))?;
            }
        }
        fs.sync_dir(&wal_dir).map_err(|e| Error::io(&wal_dir, e))?;
        let wal = Wal::start(fs.clone(), wal_dir, next_seq)?;

        let engine = Arc::new(Engine {
            fs,
            dir,
            options: options.clone(),
            next_segment_id: AtomicU64::new(data.next_segment_id),
            catalog: Mutex::new(catalog),
            tables: RwLock::new(tables),
            wal,
            gate: RwLock::new(()),
            maintenance: Mutex::new(()),
            mem_bytes: AtomicUsize::new(mem_bytes),
            mem_since: Mutex::new(if mem_bytes > 0 { Some(options.clock.elapsed()) } else { None }),
            next_txn: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            worker: Mutex::new(None),
            lock: Mutex::new(lock),
            stats: EngineStats::default(),
        });
        engine.stats.replayed_rows.store(stats.rows, Ordering::Relaxed);
        engine.stats.replay_truncated_bytes.store(stats.truncated_bytes, Ordering::Relaxed);
        // A shard's rule travels in its published catalog: readers take from it which tables are
        // sharded (those with the key column).
        if let Some(rule) = &options.shard {
            let value = serde_json::to_value(rule).map_err(|e| Error::Internal(e.to_string()))?;
            if engine.object(crate::shard::SHARD_KEY).as_ref() != Some(&value) {
                engine.put_object(crate::shard::SHARD_KEY, Some(value))?;
            }
        }
        if options.background {
            engine.start_worker()?;
        }
        Ok(engine)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The wall-clock time of the engine's clock, microseconds since the Unix epoch.
    pub fn now_us(&self) -> i64 {
        self.options.clock.now_us()
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    pub fn table(&self, name: &str) -> Option<Arc<Table>> {
        self.tables.read().get(name).cloned()
    }

    /// Every table, sorted by name.
    pub fn tables(&self) -> Vec<Arc<Table>> {
        let mut v: Vec<Arc<Table>> = self.tables.read().values().cloned().collect();
        v.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        v
    }

    /// A copy of the catalog as last committed.
    pub fn catalog(&self) -> CatalogData {
        self.catalog.lock().data().clone()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) { Err(Error::Closed) } else { Ok(()) }
    }

    /// Swaps segments in and out of partitions with one catalog commit (so the change is atomic), then
    /// publishes it to readers and removes the old files. `changed_from` (new rows from that time on)
    /// is recorded for the table's watchers in the same commit.
    fn swap_segments(&self, t: &Arc<Table>, swaps: Vec<Swap>, changed_from: Option<i64>) -> Result<()> {
        let next_id = self.next_segment_id.load(Ordering::Acquire);
        let is_old = |swap: &Swap, id: u64| swap.old.iter().any(|o| o.entry.id == id);
        self.catalog.lock().commit(|c| {
            if let Some(e) = c.table_mut(t.id) {
                let mut changes = t.changes.lock().clone();
                if let Some(from) = changed_from {
                    changes.values_mut().for_each(|v| *v = min_opt(*v, Some(from)));
                }
                if record_changes(e, &changes) {
                    e.watch_epoch += 1;
                }
                for swap in &swaps {
                    let p = e.partitions.entry(swap.key).or_default();
                    p.retain(|s| !is_old(swap, s.id));
                    p.extend(swap.new.iter().map(|h| h.entry.clone()));
                    if p.is_empty() {
                        e.partitions.remove(&swap.key);
                    }
                }
            }
            c.next_segment_id = c.next_segment_id.max(next_id);
            Ok(())
        })?;
        {
            let mut d = t.data.write();
            for swap in &swaps {
                if swap.old.is_empty() && swap.new.is_empty() {
                    continue;
                }
                // An UPDATE may move rows into a partition the table did not have.
                let p = d.partitions.entry(swap.key).or_default();
                p.segments.retain(|s| !is_old(swap, s.entry.id));
                p.segments.extend(swap.new.iter().cloned());
                p.segments.sort_by_key(|s| (s.entry.min_ts, s.entry.id));
                if p.segments.is_empty() && p.mem.is_empty() && p.frozen.is_empty() {
                    d.partitions.remove(&swap.key);
                }
            }
        }
        if let Some(store) = &self.options.store {
            let version = self.catalog.lock().data().version;
            let names =
                swaps.iter().flat_map(|s| s.old.iter()).map(|o| ObjectStorage::name_of(&self.dir, &o.segment.path));
            store.delete_after_publish(version, names);
        }
        for old in swaps.iter().flat_map(|s| s.old.iter()) {
            // Readers holding the old segment keep their mapping; only the name goes.
            if let Err(e) = self.fs.remove_file(&old.segment.path) {
                tracing::warn!("could not remove {}: {e}; it is removed at the next open", old.segment.path.display());
            }
        }
        Ok(())
    }

    /// Flushes, stops background work and the WAL writer. Further calls fail with [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let r = self.flush();
        self.closed.store(true, Ordering::Release);
        self.stop_worker();
        self.wal.stop();
        // Nothing can write any more: another process may open the directory now.
        self.lock.lock().take();
        r
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

fn check_segment_columns(segment: &Segment, def: &TableDef) -> Result<()> {
    let same = segment.footer.columns.len() == def.columns.len()
        && segment.footer.columns.iter().zip(&def.columns).all(|(a, b)| a.name == b.name && a.ty == b.ty);
    if same {
        Ok(())
    } else {
        Err(Error::corrupt(&segment.path, 0, format!("segment columns do not match table \"{}\"", def.name)))
    }
}

/// The file naming a data directory's object store, so that whatever opens the directory (the server,
/// `trafficdb sql`, an import, the library) writes through to it.
pub const STORE_FILE: &str = "object_store";

/// Records the store of `options` in the directory, or, without one, takes the one recorded there.
fn remember_store(fs: &dyn Fs, dir: &Path, options: Options) -> Result<Options> {
    let path = dir.join(STORE_FILE);
    match &options.store {
        Some(store) => {
            if fs.read(&path).ok().as_deref() != Some(store.url().as_bytes()) {
                crate::io::write_atomic(fs, &path, store.url().as_bytes()).map_err(|e| Error::io(&path, e))?;
            }
            Ok(options)
        }
        None if fs.exists(&path) => {
            let bytes = fs.read(&path).map_err(|e| Error::io(&path, e))?;
            let url = String::from_utf8_lossy(&bytes);
            Ok(Options { store: Some(ObjectStorage::open(url.trim())?), ..options })
        }
        None => Ok(options),
    }
}

/// The files of a table's segments as the catalog names them, with their object names.
fn segment_files<'a>(dir: &'a Path, t: &'a TableEntry) -> impl Iterator<Item = (PathBuf, String)> + 'a {
    t.partitions.iter().flat_map(move |(&key, segs)| {
        segs.iter().map(move |s| {
            let name = crate::catalog::segment_name(t.id, key, s.id);
            (dir.join(&name), name)
        })
    })
}

/// Makes the directory and its object store agree with the catalog: segments the store lacks (a store
/// newly given to a directory) are put, segments the directory lacks (a node started from the store
/// alone) are fetched, and objects no catalog names (a flush that crashed between its put and its
/// commit, a delete that never ran) are deleted.
fn sync_store(fs: &dyn Fs, dir: &Path, data: &CatalogData, store: &ObjectStorage) -> Result<()> {
    let stored: std::collections::BTreeSet<String> = store.list("tables")?.into_iter().collect();
    let mut named = std::collections::BTreeSet::new();
    for (path, name) in data.tables.iter().flat_map(|t| segment_files(dir, t)) {
        if !fs.exists(&path) {
            let bytes = store.get(&name)?.ok_or_else(|| {
                Error::corrupt(&path, 0, format!("the segment is neither here nor in {}", store.url()))
            })?;
            let parent = path.parent().expect("segment paths have a parent");
            fs.create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            let mut f = fs.create(&path).map_err(|e| Error::io(&path, e))?;
            f.write_all(&bytes).and_then(|()| f.sync()).map_err(|e| Error::io(&path, e))?;
            fs.sync_dir(parent).map_err(|e| Error::io(parent, e))?;
        } else if !stored.contains(&name) {
            store.put(&name, fs.read(&path).map_err(|e| Error::io(&path, e))?)?;
        }
        named.insert(name);
    }
    // Now that the store holds every segment it names, the catalog.
    let catalog = dir.join(crate::catalog::CATALOG_FILE);
    let bytes = fs.read(&catalog).map_err(|e| Error::io(&catalog, e))?;
    store.publish_catalog(crate::catalog::CATALOG_FILE, data.version, bytes);
    store.delete_after_publish(data.version, stored.into_iter().filter(|n| !named.contains(n)));
    Ok(())
}

/// Removes files the catalog does not reference: segments of a flush, compaction or bulk load that
/// crashed before its commit, tables dropped before their files were removed, temporary catalog files.
fn remove_orphans(fs: &dyn Fs, dir: &Path, data: &CatalogData) -> Result<()> {
    let tables_dir = dir.join("tables");
    let io = |p: &Path, e| Error::io(p, e);
    let staging_dir = dir.join(bulk::STAGING_DIR);
    for f in fs.list_dir(&staging_dir).map_err(|e| io(&staging_dir, e))? {
        fs.remove_file(&f).map_err(|e| io(&f, e))?;
    }
    for tdir in fs.list_dir(&tables_dir).map_err(|e| io(&tables_dir, e))? {
        let id = tdir.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok());
        let Some(entry) = id.and_then(|id| data.tables.iter().find(|t| t.id == id)) else {
            fs.remove_dir_all(&tdir).map_err(|e| io(&tdir, e))?;
            continue;
        };
        if !fs.is_dir(&tdir) {
            continue;
        }
        for pdir in fs.list_dir(&tdir).map_err(|e| io(&tdir, e))? {
            let key = pdir.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<i64>().ok());
            let segs = key.and_then(|k| entry.partitions.get(&k));
            let Some(segs) = segs else {
                fs.remove_dir_all(&pdir).map_err(|e| io(&pdir, e))?;
                continue;
            };
            for f in fs.list_dir(&pdir).map_err(|e| io(&pdir, e))? {
                let sid = f.file_stem().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok());
                if !sid.is_some_and(|sid| segs.iter().any(|s| s.id == sid)) {
                    fs.remove_file(&f).map_err(|e| io(&f, e))?;
                }
            }
        }
    }
    let tmp = dir.join("catalog.tmp");
    if fs.exists(&tmp) {
        fs.remove_file(&tmp).map_err(|e| io(&tmp, e))?;
    }
    Ok(())
}

pub fn undefined_table(name: &str) -> Error {
    Error::invalid(SqlState::UndefinedTable, format!("relation \"{name}\" does not exist"))
}
