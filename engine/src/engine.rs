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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Sender, bounded};
use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{
    SortOptions, concat_batches, filter_record_batch, sort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use parking_lot::{Mutex, RwLock};

use crate::catalog::{Catalog, CatalogData, SegmentEntry, TableEntry, ViewEntry, segment_path};
use crate::error::{Error, Result, SqlState};
use crate::io::{Fs, RealFs};
use crate::metrics::Sample;
use crate::segment::{Segment, WriteOptions, write_segment};
use crate::types::{TableDef, coerce_batch};
use crate::wal::{Wal, encode_txn, list_wal_files, replay};

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
        }
    }
}

/// A sealed segment with its catalog entry.
#[derive(Debug)]
pub struct SegmentHandle {
    pub entry: SegmentEntry,
    pub segment: Segment,
}

#[derive(Debug, Default)]
struct Partition {
    segments: Vec<Arc<SegmentHandle>>,
    /// Batches acknowledged since the last freeze.
    mem: Vec<RecordBatch>,
    /// Batches frozen by a flush that is writing them to a segment.
    frozen: Vec<RecordBatch>,
}

#[derive(Debug, Default)]
struct TableData {
    partitions: BTreeMap<i64, Partition>,
}

/// A stored table.
#[derive(Debug)]
pub struct Table {
    pub id: u64,
    pub def: TableDef,
    pub schema: SchemaRef,
    retention_us: Mutex<Option<i64>>,
    data: RwLock<TableData>,
    dropped: AtomicBool,
    /// Per watcher, the earliest time changed since it last took its changes (in memory; flushes and
    /// deletes record it in the catalog too).
    changes: Mutex<BTreeMap<String, Option<i64>>>,
}

/// One partition as a reader sees it.
#[derive(Debug, Clone)]
pub struct PartitionSnapshot {
    pub key: i64,
    pub segments: Vec<Arc<SegmentHandle>>,
    /// Unflushed rows (memtable and frozen memtable), in the table schema.
    pub batches: Vec<RecordBatch>,
}

/// A consistent view of a table: what was acknowledged when it was taken, nothing half-done.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    pub partitions: Vec<PartitionSnapshot>,
}

impl TableSnapshot {
    pub fn num_rows(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| {
                p.segments.iter().map(|s| s.entry.rows).sum::<u64>()
                    + p.batches.iter().map(|b| b.num_rows() as u64).sum::<u64>()
            })
            .sum()
    }
}

impl Table {
    fn new(entry: &TableEntry) -> Table {
        Table {
            id: entry.id,
            def: entry.def.clone(),
            schema: entry.def.arrow_schema(),
            retention_us: Mutex::new(entry.def.time.as_ref().and_then(|t| t.retention_us)),
            data: RwLock::new(TableData::default()),
            dropped: AtomicBool::new(false),
            changes: Mutex::new(entry.watchers.clone()),
        }
    }

    /// Records that rows at or after `ts_us` changed, for every watcher.
    fn mark_changed(&self, ts_us: i64) {
        for v in self.changes.lock().values_mut() {
            *v = Some(v.map_or(ts_us, |cur| cur.min(ts_us)));
        }
    }

    /// The earliest time in `batches` (time-series tables).
    fn min_time(&self, batches: &[RecordBatch]) -> Option<i64> {
        let tc = self.def.time_column()?;
        batches.iter().filter_map(|b| time_bounds(b, tc).0).min()
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    pub fn retention_us(&self) -> Option<i64> {
        *self.retention_us.lock()
    }

    pub fn snapshot(&self) -> TableSnapshot {
        let d = self.data.read();
        TableSnapshot {
            partitions: d
                .partitions
                .iter()
                .map(|(&key, p)| PartitionSnapshot {
                    key,
                    segments: p.segments.clone(),
                    batches: p.frozen.iter().chain(p.mem.iter()).cloned().collect(),
                })
                .collect(),
        }
    }

    fn partition_key(&self, ts_us: i64) -> i64 {
        match &self.def.time {
            Some(t) => ts_us.div_euclid(t.partition_width_us),
            None => 0,
        }
    }

    /// Splits a coerced batch into one batch per partition.
    fn split(&self, batch: RecordBatch) -> Result<Vec<(i64, RecordBatch)>> {
        let Some(t) = &self.def.time else { return Ok(vec![(0, batch)]) };
        let ts = time_values(&batch, t.time_column);
        let keys: Vec<i64> = ts.iter().map(|&v| self.partition_key(v)).collect();
        if keys.iter().all(|&k| k == keys[0]) {
            return Ok(vec![(keys[0], batch)]);
        }
        let mut groups: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            groups.entry(*k).or_default().push(i as u32);
        }
        groups.into_iter().map(|(k, idx)| Ok((k, take_record_batch(&batch, &UInt32Array::from(idx))?))).collect()
    }
}

/// The time column's values as microseconds (the column is never NULL).
fn time_values(batch: &RecordBatch, col: usize) -> Vec<i64> {
    let a = batch.column(col);
    match a.as_primitive_opt::<TimestampMicrosecondType>() {
        Some(p) => p.values().to_vec(),
        None => a.as_primitive::<Int64Type>().values().to_vec(),
    }
}

/// The earliest and latest time of a batch, without copying the column.
fn time_bounds(batch: &RecordBatch, col: usize) -> (Option<i64>, Option<i64>) {
    use datafusion::arrow::compute::{max, min};
    let a = batch.column(col);
    match a.as_primitive_opt::<TimestampMicrosecondType>() {
        Some(p) => (min(p), max(p)),
        None => {
            let p = a.as_primitive::<Int64Type>();
            (min(p), max(p))
        }
    }
}

/// Sorts a batch by its time column (stable, so equal timestamps keep arrival order).
fn sort_by_time(batch: &RecordBatch, def: &TableDef) -> Result<RecordBatch> {
    let Some(t) = def.time_column() else { return Ok(batch.clone()) };
    let idx = sort_to_indices(batch.column(t), Some(SortOptions { descending: false, nulls_first: false }), None)?;
    if idx.values().iter().enumerate().all(|(i, &v)| i as u32 == v) {
        return Ok(batch.clone());
    }
    Ok(take_record_batch(batch, &idx)?)
}

/// A row of a sealed segment, as [`Engine::rewrite`] names it: the segment's index in the list its
/// decision was given (high 32 bits) and the row's offset in the segment (low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowId(pub u64);

impl RowId {
    pub fn new(segment: usize, row: u32) -> RowId {
        RowId(((segment as u64) << 32) | row as u64)
    }
    pub fn segment(self) -> usize {
        (self.0 >> 32) as usize
    }
    pub fn row(self) -> u32 {
        self.0 as u32
    }
}

/// What a statement takes out of a table's sealed rows, and puts back (see [`Engine::rewrite`]).
#[derive(Debug, Default)]
pub struct Rewrite {
    /// The rows to take out ([`RowId`]s); a row may be named more than once.
    pub rows: Vec<u64>,
    /// UPDATE: one row per entry of `rows`, the new values of the columns it names (by name); the
    /// other columns keep their values. `None` for DELETE.
    pub values: Option<RecordBatch>,
    /// Return the rows taken out (DELETE) or written (UPDATE), for RETURNING.
    pub keep_rows: bool,
}

/// What [`Engine::rewrite`] did.
#[derive(Debug, Default)]
pub struct Rewritten {
    /// Rows deleted or updated (each once).
    pub rows: u64,
    /// With [`Rewrite::keep_rows`]: the rows deleted, or the updated rows as written.
    pub returned: Vec<RecordBatch>,
}

/// `old` (rows in the table schema) with the columns of `values` (same rows, named by column) in
/// place of their old values, coerced to the table schema (types, NOT NULL).
fn replace_columns(table: &Table, old: &RecordBatch, values: &RecordBatch) -> Result<RecordBatch> {
    let vschema = values.schema();
    let mut fields = Vec::with_capacity(old.num_columns());
    let mut columns = Vec::with_capacity(old.num_columns());
    for (i, f) in table.schema.fields().iter().enumerate() {
        match vschema.index_of(f.name()) {
            Ok(v) => {
                fields.push(datafusion::arrow::datatypes::Field::new(
                    f.name(),
                    values.column(v).data_type().clone(),
                    true,
                ));
                columns.push(values.column(v).clone());
            }
            Err(_) => {
                fields.push(f.as_ref().clone().with_nullable(true));
                columns.push(old.column(i).clone());
            }
        }
    }
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(old.num_rows()));
    let batch = RecordBatch::try_new_with_options(
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        columns,
        &options,
    )?;
    coerce_batch(&table.def, &table.schema, &batch)
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
    mem_since: Mutex<Option<Instant>>,
    next_txn: AtomicU64,
    next_segment_id: AtomicU64,
    closed: AtomicBool,
    worker: Mutex<Option<(Sender<WorkerMsg>, JoinHandle<()>)>>,
    /// The directory lock, held until [`Engine::close`] (or drop).
    lock: Mutex<Option<std::fs::File>>,
    /// Figures for EXPLAIN, metrics and tests.
    pub stats: EngineStats,
}

/// What one table holds (for status pages and metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableStatus {
    pub name: String,
    pub time_column: Option<String>,
    pub retention_us: Option<i64>,
    pub partitions: usize,
    pub partitions_to_compact: usize,
    pub segments: usize,
    pub segment_rows: u64,
    pub segment_bytes: u64,
    pub memtable_rows: u64,
    /// The oldest and newest time stored (time-series tables).
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
}

/// Merges the in-memory changes into a catalog entry's; true if that changed anything.
fn record_changes(e: &mut TableEntry, mem: &BTreeMap<String, Option<i64>>) -> bool {
    let mut changed = false;
    for (w, v) in mem {
        let Some(v) = v else { continue };
        if let Some(slot) = e.watchers.get_mut(w) {
            let next = Some(slot.map_or(*v, |cur| cur.min(*v)));
            if *slot != next {
                *slot = next;
                changed = true;
            }
        }
    }
    changed
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) | (None, x) => x,
    }
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
        for d in [&dir, &wal_dir, &tables_dir] {
            fs.create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let catalog = Catalog::open(fs.clone(), &dir)?;
        let data = catalog.data().clone();

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
                        d.partitions.entry(k).or_default().mem.push(piece);
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
            mem_since: Mutex::new(if mem_bytes > 0 { Some(Instant::now()) } else { None }),
            next_txn: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            worker: Mutex::new(None),
            lock: Mutex::new(lock),
            stats: EngineStats::default(),
        });
        engine.stats.replayed_rows.store(stats.rows, Ordering::Relaxed);
        engine.stats.replay_truncated_bytes.store(stats.truncated_bytes, Ordering::Relaxed);
        if options.background {
            start_worker(&engine)?;
        }
        Ok(engine)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Creates a table. Durable when this returns.
    pub fn create_table(&self, def: TableDef, if_not_exists: bool) -> Result<Arc<Table>> {
        self.check_open()?;
        def.validate()?;
        let mut catalog = self.catalog.lock();
        if let Some(t) = self.table(&def.name) {
            if if_not_exists {
                return Ok(t);
            }
            return Err(Error::invalid(SqlState::DuplicateTable, format!("relation \"{}\" already exists", def.name)));
        }
        if catalog.data().views.iter().any(|v| v.name == def.name) {
            return Err(Error::invalid(
                SqlState::DuplicateTable,
                format!("relation \"{}\" already exists (a view)", def.name),
            ));
        }
        let entry = catalog.commit(|c| {
            let entry = TableEntry {
                id: c.next_table_id,
                def: def.clone(),
                partitions: BTreeMap::new(),
                watchers: BTreeMap::new(),
                watch_epoch: 0,
            };
            c.next_table_id += 1;
            c.tables.push(entry.clone());
            Ok(entry)
        })?;
        let table = Arc::new(Table::new(&entry));
        self.tables.write().insert(def.name.clone(), table.clone());
        Ok(table)
    }

    /// Drops a table and its files. Returns false if it did not exist.
    pub fn drop_table(&self, name: &str) -> Result<bool> {
        self.check_open()?;
        let _m = self.maintenance.lock();
        let Some(table) = self.table(name) else { return Ok(false) };
        self.catalog.lock().commit(|c| {
            c.tables.retain(|t| t.id != table.id);
            Ok(())
        })?;
        table.dropped.store(true, Ordering::Release);
        self.tables.write().remove(name);
        let dir = self.dir.join("tables").join(table.id.to_string());
        if let Err(e) = self.fs.remove_dir_all(&dir) {
            tracing::warn!("could not remove {}: {e}; it is removed at the next open", dir.display());
        }
        Ok(true)
    }

    /// Sets or clears a table's retention. Durable when this returns.
    pub fn set_retention(&self, name: &str, retention_us: Option<i64>) -> Result<()> {
        self.check_open()?;
        let table = self.table(name).ok_or_else(|| undefined_table(name))?;
        if table.def.time.is_none() {
            return Err(Error::invalid(
                SqlState::InvalidParameter,
                format!("table \"{name}\" has no time column, so it cannot have a retention period"),
            ));
        }
        if retention_us.is_some_and(|r| r <= 0) {
            return Err(Error::invalid(SqlState::InvalidParameter, "retention must be positive"));
        }
        self.catalog.lock().commit(|c| {
            if let Some(t) = c.table_mut(table.id).and_then(|t| t.def.time.as_mut()) {
                t.retention_us = retention_us;
            }
            Ok(())
        })?;
        *table.retention_us.lock() = retention_us;
        Ok(())
    }

    /// Stores a view definition (the `CREATE VIEW` statement). Durable when this returns.
    pub fn put_view(&self, name: &str, sql: &str) -> Result<()> {
        self.check_open()?;
        if self.table(name).is_some() {
            return Err(Error::invalid(
                SqlState::DuplicateTable,
                format!("relation \"{name}\" already exists (a table)"),
            ));
        }
        self.catalog.lock().commit(|c| {
            match c.views.iter_mut().find(|v| v.name == name) {
                Some(v) => v.sql = sql.to_string(),
                None => c.views.push(ViewEntry { name: name.to_string(), sql: sql.to_string() }),
            }
            Ok(())
        })
    }

    /// Removes a stored view definition. Returns false if there was none.
    pub fn remove_view(&self, name: &str) -> Result<bool> {
        self.check_open()?;
        let mut catalog = self.catalog.lock();
        if !catalog.data().views.iter().any(|v| v.name == name) {
            return Ok(false);
        }
        catalog.commit(|c| {
            c.views.retain(|v| v.name != name);
            Ok(true)
        })
    }

    /// Reads a persistent object stored by another layer.
    pub fn object(&self, key: &str) -> Option<serde_json::Value> {
        self.catalog.lock().data().objects.get(key).cloned()
    }

    /// Stores (or, with `None`, removes) a persistent object. Durable when this returns.
    pub fn put_object(&self, key: &str, value: Option<serde_json::Value>) -> Result<()> {
        self.check_open()?;
        self.catalog.lock().commit(|c| {
            match value {
                Some(v) => c.objects.insert(key.to_string(), v),
                None => c.objects.remove(key),
            };
            Ok(())
        })
    }

    /// Appends batches to a table as one transaction: all rows or none. When this returns `Ok`, the
    /// rows are durable (fsynced) and visible to new snapshots.
    pub fn append(&self, table: &Arc<Table>, batches: &[RecordBatch]) -> Result<u64> {
        self.check_open()?;
        let started = Instant::now();
        let mut pieces = Vec::new();
        let mut rows = 0u64;
        for b in batches {
            if b.num_rows() == 0 {
                continue;
            }
            let b = coerce_batch(&table.def, &table.schema, b)?;
            rows += b.num_rows() as u64;
            pieces.extend(table.split(b)?);
        }
        if pieces.is_empty() {
            return Ok(0);
        }
        let txn = self.next_txn.fetch_add(1, Ordering::Relaxed);
        let payload = encode_txn(txn, table.id, &pieces.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>())?;
        let bytes: usize = pieces.iter().map(|(_, b)| b.get_array_memory_size()).sum();
        let changed_from = if table.changes.lock().is_empty() {
            None
        } else {
            table.min_time(&pieces.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>())
        };
        let total = {
            let _g = self.gate.read();
            if table.dropped.load(Ordering::Acquire) {
                return Err(undefined_table(table.name()));
            }
            self.wal.append(payload)?;
            // Marked under the gate: a flush that freezes these rows records the change with them.
            if let Some(m) = changed_from {
                table.mark_changed(m);
            }
            let mut d = table.data.write();
            for (k, b) in pieces {
                d.partitions.entry(k).or_default().mem.push(b);
            }
            // Counted under the gate, so a concurrent freeze cannot reset the count in between.
            self.mem_since.lock().get_or_insert_with(Instant::now);
            self.mem_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes
        };
        self.stats.rows_appended.fetch_add(rows, Ordering::Relaxed);
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        self.stats.append_seconds.observe(started.elapsed());
        if total >= self.options.max_memtable_bytes {
            // Backpressure: the writer that crosses the bound pays for the flush.
            self.flush()?;
        } else if total >= self.options.flush_bytes {
            self.nudge();
        }
        Ok(rows)
    }

    fn nudge(&self) {
        if let Some((tx, _)) = &*self.worker.lock() {
            let _ = tx.try_send(WorkerMsg::Nudge);
        }
    }

    fn needs_flush(&self) -> bool {
        self.mem_bytes.load(Ordering::Acquire) >= self.options.flush_bytes
            || self.mem_since.lock().is_some_and(|t| t.elapsed() >= self.options.flush_interval)
    }

    /// Writes every memtable to sealed segments and drops the WAL they came from.
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        let _m = self.maintenance.lock();
        let started = Instant::now();
        let r = self.flush_locked();
        self.stats.flush_seconds.observe(started.elapsed());
        r
    }

    fn flush_locked(&self) -> Result<()> {
        // 1. Freeze: rotate the WAL and move memtables aside, with appends held off. The table list is
        // taken under the gate too, so a table created a moment ago cannot keep rows in a WAL file that
        // this flush is about to delete.
        let (seq, tables) = {
            let _g = self.gate.write();
            let tables = self.tables();
            let any = tables
                .iter()
                .any(|t| t.data.read().partitions.values().any(|p| !p.mem.is_empty() || !p.frozen.is_empty()));
            if !any {
                return Ok(());
            }
            let seq = self.wal.rotate()?;
            for t in &tables {
                let mut d = t.data.write();
                for p in d.partitions.values_mut() {
                    let mem = std::mem::take(&mut p.mem);
                    p.frozen.extend(mem);
                }
            }
            self.mem_bytes.store(0, Ordering::Release);
            *self.mem_since.lock() = None;
            (seq, tables)
        };
        // 2. Write a segment per frozen partition (no lock held but `maintenance`: readers and writers
        // go on).
        let mut written: Vec<(Arc<Table>, i64, Arc<SegmentHandle>, usize)> = Vec::new();
        for t in &tables {
            let frozen: Vec<(i64, Vec<RecordBatch>)> = t
                .data
                .read()
                .partitions
                .iter()
                .filter(|(_, p)| !p.frozen.is_empty())
                .map(|(k, p)| (*k, p.frozen.clone()))
                .collect();
            for (key, batches) in frozen {
                let batch = concat_batches(&t.schema, &batches)?;
                let batch = sort_by_time(&batch, &t.def)?;
                let handle = self.write_segment(t, key, &batch)?;
                written.push((t.clone(), key, handle, batches.len()));
            }
        }
        // 3. Commit: the segments enter the catalog and the old WAL is no longer needed.
        let next_id = self.next_segment_id.load(Ordering::Acquire);
        self.catalog.lock().commit(|c| {
            for (t, key, h, _) in &written {
                if let Some(e) = c.table_mut(t.id) {
                    e.partitions.entry(*key).or_default().push(h.entry.clone());
                }
            }
            // The changes watchers have not taken yet become durable with the rows.
            for t in &tables {
                if let Some(e) = c.table_mut(t.id)
                    && record_changes(e, &t.changes.lock())
                {
                    e.watch_epoch += 1;
                }
            }
            c.next_segment_id = c.next_segment_id.max(next_id);
            c.wal_replay_from = seq;
            Ok(())
        })?;
        // 4. Publish: readers now see the segments instead of the frozen batches.
        for (t, key, h, n) in written {
            let mut d = t.data.write();
            let p = d.partitions.entry(key).or_default();
            p.segments.push(h);
            p.segments.sort_by_key(|s| (s.entry.min_ts, s.entry.id));
            p.frozen.drain(..n);
        }
        // 5. The WAL files before `seq` are covered by the catalog; remove them.
        let wal_dir = self.dir.join("wal");
        for (s, path) in list_wal_files(self.fs.as_ref(), &wal_dir)? {
            if s < seq {
                self.fs.remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes one sealed segment for `batch` (sorted) and makes its name durable.
    fn write_segment(&self, t: &Table, key: i64, batch: &RecordBatch) -> Result<Arc<SegmentHandle>> {
        let id = self.next_segment_id.fetch_add(1, Ordering::AcqRel);
        let path = segment_path(&self.dir, t.id, key, id);
        let parent = path.parent().expect("segment paths have a parent");
        self.fs.create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let w =
            write_segment(self.fs.as_ref(), &path, &t.def.columns, t.def.time_column(), batch, self.options.segment)?;
        self.fs.sync_dir(parent).map_err(|e| Error::io(parent, e))?;
        let segment = Segment::open(self.fs.as_ref(), &path)?;
        let entry = SegmentEntry { id, rows: w.rows, bytes: w.bytes, min_ts: w.min_ts, max_ts: w.max_ts };
        Ok(Arc::new(SegmentHandle { entry, segment }))
    }

    /// `Ok` while the database takes reads and writes; else why not (closed, or the write-ahead log
    /// failed and refuses writes until the database is reopened).
    pub fn health(&self) -> std::result::Result<(), String> {
        self.check_open().map_err(|e| e.to_string())?;
        match self.wal.stats.poisoned.lock().as_ref() {
            Some(p) => Err(format!("the write-ahead log failed and refuses writes: {p}")),
            None => Ok(()),
        }
    }

    /// Starts tracking changes to `table` for `watcher` (a continuous rollup): from now on, appends,
    /// replays and deletes record the earliest time they touch, until [`Engine::take_changes`].
    pub fn watch(&self, table: &Arc<Table>, watcher: &str) -> Result<()> {
        self.check_open()?;
        table.changes.lock().entry(watcher.to_string()).or_insert(None);
        self.catalog.lock().commit(|c| {
            if let Some(e) = c.table_mut(table.id) {
                e.watchers.entry(watcher.to_string()).or_insert(None);
            }
            Ok(())
        })
    }

    /// Stops tracking changes for `watcher`.
    pub fn unwatch(&self, table: &Arc<Table>, watcher: &str) -> Result<()> {
        table.changes.lock().remove(watcher);
        self.catalog.lock().commit(|c| {
            if let Some(e) = c.table_mut(table.id) {
                e.watchers.remove(watcher);
            }
            Ok(())
        })
    }

    /// The earliest time changed for `watcher` since it last settled (in memory and as recorded by
    /// flushes), and a token for [`Engine::settle_changes`]. The in-memory record starts afresh; give
    /// the value back with [`Engine::restore_changes`] if the work that used it fails.
    pub fn take_changes(&self, table: &Arc<Table>, watcher: &str) -> (Option<i64>, u64) {
        let mem = table.changes.lock().get_mut(watcher).and_then(Option::take);
        let catalog = self.catalog.lock();
        let entry = catalog.data().tables.iter().find(|t| t.id == table.id);
        let stored = entry.and_then(|e| e.watchers.get(watcher).copied().flatten());
        let epoch = entry.map_or(0, |e| e.watch_epoch);
        (min_opt(mem, stored), epoch)
    }

    /// Puts back changes taken by [`Engine::take_changes`] whose work failed.
    pub fn restore_changes(&self, table: &Arc<Table>, watcher: &str, from: Option<i64>) {
        if let (Some(v), Some(slot)) = (from, table.changes.lock().get_mut(watcher)) {
            *slot = Some(slot.map_or(v, |cur| cur.min(v)));
        }
    }

    /// After the work for taken changes is durable: forgets the recorded changes, unless a flush or
    /// delete recorded more since they were taken (`epoch` differs), which the next take returns.
    pub fn settle_changes(&self, table: &Arc<Table>, watcher: &str, epoch: u64) -> Result<()> {
        self.catalog.lock().commit(|c| {
            if let Some(e) = c.table_mut(table.id)
                && e.watch_epoch == epoch
                && let Some(slot) = e.watchers.get_mut(watcher)
            {
                *slot = None;
            }
            Ok(())
        })
    }

    /// What each table holds now.
    pub fn table_status(&self) -> Vec<TableStatus> {
        let mut out: Vec<TableStatus> = self
            .tables()
            .iter()
            .map(|t| {
                let d = t.data.read();
                let mut s = TableStatus {
                    name: t.def.name.clone(),
                    time_column: t.def.time_column().map(|i| t.def.columns[i].name.clone()),
                    retention_us: t.retention_us(),
                    partitions: d.partitions.len(),
                    ..Default::default()
                };
                for p in d.partitions.values() {
                    let small = p.segments.iter().filter(|x| x.entry.rows < self.options.compaction_max_rows).count();
                    if small >= self.options.compaction_min_segments {
                        s.partitions_to_compact += 1;
                    }
                    for seg in &p.segments {
                        s.segments += 1;
                        s.segment_rows += seg.entry.rows;
                        s.segment_bytes += seg.entry.bytes;
                        s.min_ts = min_opt(s.min_ts, seg.entry.min_ts);
                        s.max_ts = max_opt(s.max_ts, seg.entry.max_ts);
                    }
                    for b in p.frozen.iter().chain(p.mem.iter()) {
                        s.memtable_rows += b.num_rows() as u64;
                        if let Some(tc) = t.def.time_column()
                            && b.num_rows() > 0
                        {
                            let (lo, hi) = time_bounds(b, tc);
                            s.min_ts = min_opt(s.min_ts, lo);
                            s.max_ts = max_opt(s.max_ts, hi);
                        }
                    }
                }
                s
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Bytes in the write-ahead log directory.
    pub fn wal_bytes(&self) -> u64 {
        let dir = self.dir.join("wal");
        list_wal_files(self.fs.as_ref(), &dir)
            .map(|files| files.iter().map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum())
            .unwrap_or(0)
    }

    /// The engine's figures (see [`crate::metrics`]).
    pub fn metrics(&self) -> Vec<Sample> {
        let st = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let tables = self.table_status();
        let mut out = vec![
            Sample::counter(
                "trafficdb_rows_appended_total",
                "Rows appended (durable) since start",
                load(&st.rows_appended),
            ),
            Sample::counter(
                "trafficdb_appends_total",
                "Durable appends (INSERT, COPY, line-protocol and library writes)",
                load(&st.appends),
            ),
            Sample::counter(
                "trafficdb_wal_bytes_total",
                "Bytes written to the write-ahead log",
                load(&self.wal.stats.bytes),
            ),
            Sample::gauge("trafficdb_wal_disk_bytes", "Bytes in write-ahead log files", self.wal_bytes() as f64),
            Sample::gauge(
                "trafficdb_memtable_bytes",
                "Flush backlog: bytes of acknowledged rows not yet in segments",
                self.mem_bytes.load(Ordering::Relaxed) as f64,
            ),
            Sample::gauge(
                "trafficdb_compaction_backlog_partitions",
                "Partitions with enough small segments to be compacted",
                tables.iter().map(|t| t.partitions_to_compact).sum::<usize>() as f64,
            ),
            Sample::counter("trafficdb_flushes_total", "Memtable flushes", load(&st.flushes)),
            Sample::counter("trafficdb_compactions_total", "Segment merges", load(&st.compactions)),
            Sample::counter(
                "trafficdb_partitions_dropped_total",
                "Partitions dropped by retention",
                load(&st.partitions_dropped),
            ),
        ];
        out.extend(self.wal.stats.fsync.samples("trafficdb_wal_fsync_seconds", "Write-ahead log fsync latency", &[]));
        out.extend(st.append_seconds.samples("trafficdb_append_seconds", "Durable append latency", &[]));
        out.extend(st.flush_seconds.samples("trafficdb_flush_seconds", "Flush duration", &[]));
        for t in &tables {
            let name = || t.name.clone();
            out.push(
                Sample::gauge(
                    "trafficdb_table_rows",
                    "Rows per table (segments and memtables)",
                    (t.segment_rows + t.memtable_rows) as f64,
                )
                .label("table", name()),
            );
            out.push(
                Sample::gauge("trafficdb_table_segments", "Sealed segments per table", t.segments as f64)
                    .label("table", name()),
            );
            out.push(
                Sample::gauge(
                    "trafficdb_table_disk_bytes",
                    "Bytes of sealed segments per table",
                    t.segment_bytes as f64,
                )
                .label("table", name()),
            );
            out.push(
                Sample::gauge(
                    "trafficdb_table_memtable_rows",
                    "Rows per table not yet flushed to segments",
                    t.memtable_rows as f64,
                )
                .label("table", name()),
            );
        }
        out
    }

    /// Merges the small segments of each partition that has many. Returns the number of merges.
    pub fn compact(&self) -> Result<usize> {
        self.check_open()?;
        let _m = self.maintenance.lock();
        let mut merges = 0;
        for t in self.tables() {
            let candidates: Vec<(i64, Vec<Arc<SegmentHandle>>)> = t
                .data
                .read()
                .partitions
                .iter()
                .map(|(k, p)| {
                    let small: Vec<Arc<SegmentHandle>> = p
                        .segments
                        .iter()
                        .filter(|s| s.entry.rows < self.options.compaction_max_rows)
                        .cloned()
                        .collect();
                    (*k, small)
                })
                .filter(|(_, s)| s.len() >= self.options.compaction_min_segments)
                .collect();
            for (key, segs) in candidates {
                for group in merge_groups(segs, self.options.compaction_max_rows) {
                    let batch = read_all(&t, &group)?;
                    let batch = sort_by_time(&batch, &t.def)?;
                    let new = self.write_segment(&t, key, &batch)?;
                    self.swap_segments(&t, vec![Swap { key, old: group, new: vec![new] }])?;
                    merges += 1;
                    self.stats.compactions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(merges)
    }

    /// Drops the partitions of every table that lie wholly before its retention cutoff. The cutoff is
    /// measured from the earlier of the clock and the table's newest row, so one row stamped far in the
    /// future cannot expire a table, and a database of old data is not wiped on open.
    pub fn enforce_retention(&self) -> Result<usize> {
        self.enforce_retention_at(now_us())
    }

    /// [`Engine::enforce_retention`] with the clock given (for tests).
    pub fn enforce_retention_at(&self, now_us: i64) -> Result<usize> {
        self.check_open()?;
        let _m = self.maintenance.lock();
        let mut dropped = 0;
        for t in self.tables() {
            let Some(retention) = t.retention_us() else { continue };
            let (expired, newest) = {
                let d = t.data.read();
                let newest = d.partitions.values().filter_map(partition_max_ts).max();
                let Some(newest) = newest else { continue };
                let cutoff = newest.min(now_us).saturating_sub(retention);
                let expired: Vec<(i64, Vec<Arc<SegmentHandle>>)> = d
                    .partitions
                    .iter()
                    .filter(|(_, p)| p.mem.is_empty() && p.frozen.is_empty() && !p.segments.is_empty())
                    .filter(|(_, p)| partition_max_ts(p).is_some_and(|m| m < cutoff))
                    .map(|(k, p)| (*k, p.segments.clone()))
                    .collect();
                (expired, newest)
            };
            if expired.is_empty() {
                continue;
            }
            let keys: Vec<i64> = expired.iter().map(|(k, _)| *k).collect();
            tracing::info!("retention: dropping partitions {keys:?} of {} (newest row at {newest} us)", t.name());
            self.swap_segments(&t, expired.into_iter().map(|(key, old)| Swap { key, old, new: Vec::new() }).collect())?;
            for key in keys {
                let pdir = self.dir.join("tables").join(t.id.to_string()).join(key.to_string());
                let _ = self.fs.remove_dir_all(&pdir);
                dropped += 1;
                self.stats.partitions_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(dropped)
    }

    /// Deletes every row of `table` (TRUNCATE) as one atomic, durable step: the memtables are flushed
    /// and every segment is swapped out with one catalog commit. Returns the rows deleted.
    pub fn truncate(&self, table: &Arc<Table>) -> Result<u64> {
        self.check_open()?;
        let _m = self.maintenance.lock();
        self.flush_locked()?;
        let mut rows = 0u64;
        let mut swaps = Vec::new();
        for p in table.snapshot().partitions {
            rows += p.segments.iter().map(|s| s.entry.rows).sum::<u64>();
            if let Some(m) = p.segments.iter().filter_map(|s| s.entry.min_ts).min() {
                table.mark_changed(m);
            }
            if !p.segments.is_empty() {
                swaps.push(Swap { key: p.key, old: p.segments, new: Vec::new() });
            }
        }
        if !swaps.is_empty() {
            self.swap_segments(table, swaps)?;
        }
        Ok(rows)
    }

    /// Rewrites sealed rows of `table` as one atomic, durable statement (DELETE, UPDATE). Under the
    /// maintenance lock (no flush, compaction, retention or other rewrite runs meanwhile), the memtables
    /// are flushed, so every row acknowledged before the call is in a sealed segment, and `decide` is
    /// given the table's segments: it names the rows to take out (see [`RowId`]) and, for an UPDATE,
    /// their new values. Each touched segment is rewritten without those rows; updated rows go back
    /// into their segment's partition or, when their time moved, into new segments of their new
    /// partition. Everything is written first and swapped in with one catalog commit: a crash leaves
    /// either no row changed or all of them. Rows appended while `decide` runs are not touched.
    pub fn rewrite(
        &self,
        table: &Arc<Table>,
        decide: impl FnOnce(&[Arc<SegmentHandle>]) -> Result<Rewrite>,
    ) -> Result<Rewritten> {
        self.check_open()?;
        let _m = self.maintenance.lock();
        self.flush_locked()?;
        if table.dropped.load(Ordering::Acquire) {
            return Err(undefined_table(table.name()));
        }
        let snapshot = table.snapshot();
        let keyed: Vec<(i64, Arc<SegmentHandle>)> =
            snapshot.partitions.iter().flat_map(|p| p.segments.iter().map(move |s| (p.key, s.clone()))).collect();
        let segments: Vec<Arc<SegmentHandle>> = keyed.iter().map(|(_, s)| s.clone()).collect();
        let Rewrite { rows, values, keep_rows } = decide(&segments)?;
        if let Some(v) = &values {
            debug_assert_eq!(v.num_rows(), rows.len(), "one row of new values per row taken out");
        }
        // Per segment, its rows to take out and the index of each one's new values. A row named twice
        // (a join that matched it twice) is changed once, with the first values given for it.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| rows[i]);
        order.dedup_by_key(|i| rows[*i]);
        let mut by_segment: BTreeMap<usize, Vec<(u32, u32)>> = BTreeMap::new();
        for i in order {
            let id = RowId(rows[i]);
            if id.segment() >= segments.len() {
                return Err(Error::Internal(format!("row id {} names no segment of \"{}\"", rows[i], table.name())));
            }
            by_segment.entry(id.segment()).or_default().push((id.row(), i as u32));
        }
        let mut swaps: Vec<Swap> = Vec::new();
        let mut moved: BTreeMap<i64, Vec<RecordBatch>> = BTreeMap::new();
        let mut returned = Vec::new();
        let mut changed = 0u64;
        for (si, picked) in by_segment {
            let (key, seg) = &keyed[si];
            let batch = read_all(table, std::slice::from_ref(seg))?;
            if picked.last().is_some_and(|(r, _)| *r as usize >= batch.num_rows()) {
                return Err(Error::Internal(format!("row id past the end of segment {}", seg.entry.id)));
            }
            let mut keep = vec![true; batch.num_rows()];
            for (r, _) in &picked {
                keep[*r as usize] = false;
            }
            changed += picked.len() as u64;
            if let Some(m) = seg.entry.min_ts {
                table.mark_changed(m);
            }
            let mut pieces = vec![filter_record_batch(&batch, &BooleanArray::from(keep))?];
            let old = take_record_batch(&batch, &UInt32Array::from_iter_values(picked.iter().map(|(r, _)| *r)))?;
            match &values {
                None => {
                    if keep_rows {
                        returned.push(old);
                    }
                }
                Some(values) => {
                    let at = UInt32Array::from_iter_values(picked.iter().map(|(_, i)| *i));
                    let new = replace_columns(table, &old, &take_record_batch(values, &at)?)?;
                    if let Some(m) = table.min_time(std::slice::from_ref(&new)) {
                        table.mark_changed(m);
                    }
                    if keep_rows {
                        returned.push(new.clone());
                    }
                    for (k, part) in table.split(new)? {
                        if k == *key {
                            pieces.push(part);
                        } else {
                            moved.entry(k).or_default().push(part);
                        }
                    }
                }
            }
            let rest = concat_batches(&table.schema, &pieces)?;
            let new = if rest.num_rows() == 0 {
                Vec::new()
            } else {
                let rest = if values.is_some() { sort_by_time(&rest, &table.def)? } else { rest };
                vec![self.write_segment(table, *key, &rest)?]
            };
            swaps.push(Swap { key: *key, old: vec![seg.clone()], new });
        }
        for (key, batches) in moved {
            let batch = sort_by_time(&concat_batches(&table.schema, &batches)?, &table.def)?;
            swaps.push(Swap { key, old: Vec::new(), new: vec![self.write_segment(table, key, &batch)?] });
        }
        if !swaps.is_empty() {
            self.swap_segments(table, swaps)?;
        }
        Ok(Rewritten { rows: changed, returned })
    }

    /// Swaps segments in and out of partitions with one catalog commit (so the change is atomic), then
    /// publishes it to readers and removes the old files.
    fn swap_segments(&self, t: &Arc<Table>, swaps: Vec<Swap>) -> Result<()> {
        let next_id = self.next_segment_id.load(Ordering::Acquire);
        let is_old = |swap: &Swap, id: u64| swap.old.iter().any(|o| o.entry.id == id);
        self.catalog.lock().commit(|c| {
            if let Some(e) = c.table_mut(t.id) {
                if record_changes(e, &t.changes.lock()) {
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

    fn stop_worker(&self) {
        if let Some((tx, handle)) = self.worker.lock().take() {
            let _ = tx.send(WorkerMsg::Stop);
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }

    /// Runs one round of background work: flush if due, compaction, retention.
    fn background_round(&self, retention_due: bool) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        if self.needs_flush()
            && let Err(e) = self.flush()
        {
            tracing::error!("background flush failed: {e}");
        }
        if let Err(e) = self.compact() {
            tracing::error!("background compaction failed: {e}");
        }
        if retention_due && let Err(e) = self.enforce_retention() {
            tracing::error!("retention failed: {e}");
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

fn start_worker(engine: &Arc<Engine>) -> Result<()> {
    let (tx, rx) = bounded::<WorkerMsg>(16);
    let weak: Weak<Engine> = Arc::downgrade(engine);
    let tick = engine.options.background_tick;
    let handle = std::thread::Builder::new()
        .name("trafficdb-background".into())
        .spawn(move || {
            let mut last_retention = Instant::now();
            loop {
                match rx.recv_timeout(tick) {
                    Ok(WorkerMsg::Stop) | Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
                    Ok(WorkerMsg::Nudge) | Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
                }
                let Some(engine) = weak.upgrade() else { break };
                let retention_due = last_retention.elapsed() >= Duration::from_secs(60);
                if retention_due {
                    last_retention = Instant::now();
                }
                engine.background_round(retention_due);
            }
        })
        .map_err(|e| Error::io("background thread", e))?;
    *engine.worker.lock() = Some((tx, handle));
    Ok(())
}

fn partition_max_ts(p: &Partition) -> Option<i64> {
    p.segments.iter().filter_map(|s| s.entry.max_ts).max()
}

/// Small segments (in time order) cut into groups of at least two whose rows add up to at most about
/// `max_rows`, each merged into one segment; a segment left alone in its group is not rewritten.
fn merge_groups(mut segs: Vec<Arc<SegmentHandle>>, max_rows: u64) -> Vec<Vec<Arc<SegmentHandle>>> {
    segs.sort_by_key(|s| (s.entry.min_ts, s.entry.id));
    let (mut groups, mut current, mut rows) = (Vec::new(), Vec::new(), 0u64);
    for s in segs {
        if !current.is_empty() && rows + s.entry.rows > max_rows {
            groups.push(std::mem::take(&mut current));
            rows = 0;
        }
        rows += s.entry.rows;
        current.push(s);
    }
    groups.push(current);
    groups.retain(|g| g.len() >= 2);
    groups
}

/// Reads every row of the given segments (all columns) into one batch.
fn read_all(t: &Table, segs: &[Arc<SegmentHandle>]) -> Result<RecordBatch> {
    let projection: Vec<usize> = (0..t.schema.fields().len()).collect();
    let mut batches = Vec::new();
    for s in segs {
        for rg in 0..s.segment.footer.row_groups.len() {
            batches.push(s.segment.read(rg, &projection, &t.schema)?);
        }
    }
    Ok(concat_batches(&t.schema, &batches)?)
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

/// Removes files the catalog does not reference: segments of a flush or compaction that crashed before
/// its commit, tables dropped before their files were removed, temporary catalog files.
fn remove_orphans(fs: &dyn Fs, dir: &Path, data: &CatalogData) -> Result<()> {
    let tables_dir = dir.join("tables");
    let io = |p: &Path, e| Error::io(p, e);
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

pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}
