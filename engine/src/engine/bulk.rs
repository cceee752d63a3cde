//! Bulk loads: a large append written straight to sealed segments and published with one catalog
//! commit, past the WAL and the memtables.
//!
//! A [`BulkLoad`] gathers rows per partition. Each time a partition holds a run's worth (see
//! [`Layout`]: a row group in time order, 16 smaller ones with a sort key), they are put in storage
//! order and appended as a run to the partition's open segment, a file under `staging/`
//! ([`SegmentWriter`]); a segment is closed (footer written, fsynced) when it reaches
//! `compaction_max_rows`, or when the next run would start before its last row (input out of time
//! order: the next rows start a new segment). Memory holds about a run per partition, and at most
//! [`MAX_PENDING_ROWS`] in all (past that, the partition holding most is written as a shorter run),
//! whatever the size of the load.
//!
//! Publishing moves the closed files into their partitions, syncs those directories, and adds them to
//! the catalog in one commit, under the maintenance lock (so a flush, compaction, retention pass,
//! DELETE or DROP sees the load either wholly before or wholly after it). A crash before that commit
//! leaves files the catalog does not name: `staging/` and unnamed segment files are removed at the
//! next open. A load dropped without publishing removes its files.
//!
//! The rows are written once, compressed, instead of to the WAL as Arrow IPC, then to the memtable,
//! then to a segment at the next flush. A load that ends before writing any row group goes through
//! [`Engine::append`] instead, so small COPYs do not make small segments.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::RecordBatch;

use crate::catalog::{SegmentEntry, segment_path};
use crate::error::{Error, Result};
use crate::segment::{Segment, SegmentWriter, WrittenSegment};
use crate::types::{Layout, coerce_batch};

use super::table::{SegmentHandle, Table, min_opt, sort_by_time, storage_order, time_bounds};
use super::{Engine, Swap, undefined_table};

/// The directory (under the data directory) where bulk loads write segments before they are published.
pub(super) const STAGING_DIR: &str = "staging";

/// At most this many segments are open at once; opening another closes the oldest.
const MAX_OPEN: usize = 16;

/// At most this many rows are held in memory across partitions, waiting to fill a run.
const MAX_PENDING_ROWS: usize = 1 << 20;

/// One partition's share of a load.
#[derive(Default)]
struct Part {
    /// Rows not yet written.
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
    /// The segment being written, with its id and staging path.
    open: Option<(u64, PathBuf, SegmentWriter)>,
}

/// A closed segment file, not yet published.
struct Staged {
    key: i64,
    id: u64,
    path: PathBuf,
    written: WrittenSegment,
}

/// A bulk load into one table (see the module documentation). Rows pushed are durable and visible
/// once [`BulkLoad::commit`] returns; [`BulkLoad::publish`] makes the closed segments durable before.
pub struct BulkLoad {
    engine: Arc<Engine>,
    table: Arc<Table>,
    parts: BTreeMap<i64, Part>,
    /// Partitions with an open segment, oldest first.
    opened: Vec<i64>,
    staged: Vec<Staged>,
    pushed: u64,
    published: u64,
}

impl Engine {
    /// Starts a bulk load into `table`.
    pub fn bulk_load(self: &Arc<Self>, table: &Arc<Table>) -> Result<BulkLoad> {
        self.check_open()?;
        Ok(BulkLoad {
            engine: self.clone(),
            table: table.clone(),
            parts: BTreeMap::new(),
            opened: Vec::new(),
            staged: Vec::new(),
            pushed: 0,
            published: 0,
        })
    }
}

impl BulkLoad {
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.pushed
    }

    /// Rows made durable and visible so far.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Bytes of rows held in memory, not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.parts.values().map(|p| p.bytes).sum()
    }

    /// Adds rows (cast to the table's types); writes runs as partitions fill.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = coerce_batch(&self.table.def, &self.table.schema, batch)?;
        if let Some(shard) = &self.engine.options.shard {
            shard.check(&self.table.def, &batch)?;
        }
        self.pushed += batch.num_rows() as u64;
        let run_rows = self.layout().run_rows;
        for (key, piece) in self.table.split(batch)? {
            let p = self.parts.entry(key).or_default();
            p.rows += piece.num_rows();
            p.bytes += piece.get_array_memory_size();
            p.batches.push(piece);
            while self.parts.get(&key).is_some_and(|p| p.rows >= run_rows) {
                self.write_run(key)?;
            }
        }
        while self.parts.values().map(|p| p.rows).sum::<usize>() > MAX_PENDING_ROWS {
            let Some((&key, _)) = self.parts.iter().max_by_key(|(_, p)| p.rows) else { break };
            self.write_run(key)?;
        }
        Ok(())
    }

    fn layout(&self) -> Layout {
        self.table.def.layout()
    }

    /// Writes every partition's rows held in memory (to bound memory).
    pub fn write_pending(&mut self) -> Result<()> {
        let keys: Vec<i64> = self.parts.iter().filter(|(_, p)| p.rows > 0).map(|(k, _)| *k).collect();
        for key in keys {
            while self.parts.get(&key).is_some_and(|p| p.rows > 0) {
                self.write_run(key)?;
            }
        }
        Ok(())
    }

    /// Writes up to a run's worth of one partition's pending rows (the oldest, in storage order) to its
    /// open segment (a new one if it has none, or if they start before the segment's last row).
    fn write_run(&mut self, key: i64) -> Result<()> {
        let (schema, def) = (&self.table.schema, &self.table.def);
        let run_rows = self.layout().run_rows;
        let Some(p) = self.parts.get_mut(&key) else { return Ok(()) };
        let mut pending = std::mem::take(&mut p.batches);
        if p.rows > run_rows {
            // Only the oldest run's worth is written: sort by time alone first.
            pending = sort_by_time(pending, schema, def)?;
        }
        let (run, rest) = split_rows(pending, run_rows);
        p.rows = rest.iter().map(|b| b.num_rows()).sum();
        p.bytes = rest.iter().map(|b| b.get_array_memory_size()).sum();
        p.batches = rest;
        let run = storage_order(run, schema, def)?;
        let first = def.time_column().and_then(|t| run.iter().filter_map(|b| time_bounds(b, t).0).min());
        let behind = p.open.as_ref().is_some_and(|(_, _, w)| w.max_ts().zip(first).is_some_and(|(m, f)| f < m));
        if behind {
            self.close(key)?;
        }
        if self.parts.get(&key).is_some_and(|p| p.open.is_none()) {
            self.open(key)?;
        }
        let max_rows = self.engine.options.compaction_max_rows;
        let Some(p) = self.parts.get_mut(&key) else { return Ok(()) };
        let Some((_, _, w)) = p.open.as_mut() else { return Ok(()) };
        w.write_run(&run)?;
        if w.rows() >= max_rows {
            self.close(key)?;
        }
        Ok(())
    }

    /// Opens a segment file for partition `key` in the staging directory.
    fn open(&mut self, key: i64) -> Result<()> {
        if self.opened.len() >= MAX_OPEN {
            let oldest = self.opened[0];
            self.close(oldest)?;
        }
        let engine = &self.engine;
        let id = engine.next_segment_id.fetch_add(1, Ordering::AcqRel);
        let path = engine.dir.join(STAGING_DIR).join(format!("{id:012}.seg"));
        let t = &self.table;
        let w = SegmentWriter::create(
            engine.fs.as_ref(),
            &path,
            &t.def.columns,
            t.def.time_column(),
            t.def.layout(),
            engine.options.segment,
        )?;
        self.parts.entry(key).or_default().open = Some((id, path, w));
        self.opened.push(key);
        Ok(())
    }

    /// Closes partition `key`'s open segment: footer written and fsynced, ready to publish.
    fn close(&mut self, key: i64) -> Result<()> {
        self.opened.retain(|k| *k != key);
        let Some((id, path, w)) = self.parts.get_mut(&key).and_then(|p| p.open.take()) else { return Ok(()) };
        match w.finish() {
            Ok(written) => {
                self.staged.push(Staged { key, id, path, written });
                Ok(())
            }
            Err(e) => {
                let _ = self.engine.fs.remove_file(&path);
                Err(e)
            }
        }
    }

    /// Publishes the closed segments with one catalog commit (rows still in memory or in an open
    /// segment are not).
    pub fn publish(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let engine = self.engine.clone();
        engine.check_open()?;
        let _m = engine.maintenance.lock();
        if self.table.dropped.load(Ordering::Acquire) {
            return Err(undefined_table(self.table.name()));
        }
        let fs = engine.fs.as_ref();
        let mut swaps: BTreeMap<i64, Vec<Arc<SegmentHandle>>> = BTreeMap::new();
        let mut changed_from: Option<i64> = None;
        let mut rows = 0;
        while let Some(s) = self.staged.first() {
            let path = segment_path(&engine.dir, self.table.id, s.key, s.id);
            let parent = path.parent().expect("segment paths have a parent");
            fs.create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            fs.rename(&s.path, &path).map_err(|e| Error::io(&s.path, e))?;
            // Moved: a failure from here on leaves a file the catalog does not name, removed at open.
            let s = self.staged.remove(0);
            fs.sync_dir(parent).map_err(|e| Error::io(parent, e))?;
            let segment = Segment::open(fs, &path)?;
            engine.put_segment(&segment)?;
            let w = s.written;
            changed_from = min_opt(changed_from, w.min_ts);
            rows += w.rows;
            let entry = SegmentEntry { id: s.id, rows: w.rows, bytes: w.bytes, min_ts: w.min_ts, max_ts: w.max_ts };
            swaps.entry(s.key).or_default().push(Arc::new(SegmentHandle { entry, segment }));
        }
        let swaps = swaps.into_iter().map(|(key, new)| Swap { key, old: Vec::new(), new }).collect();
        engine.swap_segments(&self.table, swaps, changed_from)?;
        self.published += rows;
        engine.stats.rows_appended.fetch_add(rows, Ordering::Relaxed);
        engine.stats.appends.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes every row pushed durable and visible, as one transaction, and returns how many rows the
    /// load has made visible in all. A load that has written no run is appended through the WAL.
    pub fn commit(&mut self) -> Result<u64> {
        if self.staged.is_empty() && self.opened.is_empty() {
            let batches: Vec<RecordBatch> =
                std::mem::take(&mut self.parts).into_values().flat_map(|p| p.batches).collect();
            self.published += self.engine.append(&self.table, &batches)?;
            return Ok(self.published);
        }
        self.write_pending()?;
        for key in self.opened.clone() {
            self.close(key)?;
        }
        self.publish()?;
        Ok(self.published)
    }
}

impl Drop for BulkLoad {
    fn drop(&mut self) {
        let open = self.parts.values().filter_map(|p| p.open.as_ref().map(|(_, path, _)| path));
        for path in self.staged.iter().map(|s| &s.path).chain(open) {
            if let Err(e) = self.engine.fs.remove_file(path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("could not remove {}: {e}; it is removed at the next open", path.display());
            }
        }
    }
}

/// The first `n` rows of `batches` and the rest, as slices (no copy).
fn split_rows(batches: Vec<RecordBatch>, n: usize) -> (Vec<RecordBatch>, Vec<RecordBatch>) {
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    let mut left = n;
    for b in batches {
        if left >= b.num_rows() {
            left -= b.num_rows();
            head.push(b);
        } else if left > 0 {
            head.push(b.slice(0, left));
            tail.push(b.slice(left, b.num_rows() - left));
            left = 0;
        } else {
            tail.push(b);
        }
    }
    (head, tail)
}
