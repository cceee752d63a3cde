//! Bulk loads: a large append written straight to sealed segments and published with one catalog
//! commit, past the WAL and the memtables.
//!
//! A [`BulkLoad`] gathers rows per partition. Each time a partition holds a row group's worth
//! ([`MAX_ROW_GROUP_ROWS`]), they are sorted by time and appended as a row group to the partition's
//! open segment, a file under `staging/` ([`SegmentWriter`]); a segment is closed (footer written,
//! fsynced) when it reaches `compaction_max_rows`, or when the next row group would start before its
//! last row (input out of time order: the next rows start a new segment). Memory holds about a row
//! group per partition, whatever the size of the load.
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
use crate::segment::{MAX_ROW_GROUP_ROWS, Segment, SegmentWriter, WrittenSegment};
use crate::types::coerce_batch;

use super::table::{SegmentHandle, Table, min_opt, sort_by_time, time_bounds};
use super::{Engine, Swap, undefined_table};

/// The directory (under the data directory) where bulk loads write segments before they are published.
pub(super) const STAGING_DIR: &str = "staging";

/// At most this many segments are open at once; opening another closes the oldest.
const MAX_OPEN: usize = 16;

/// One partition's share of a load.
#[derive(Default)]
struct Part {
    /// Rows not yet in a row group.
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

    /// Bytes of rows held in memory, not yet in a row group.
    pub fn pending_bytes(&self) -> usize {
        self.parts.values().map(|p| p.bytes).sum()
    }

    /// Adds rows (cast to the table's types); writes row groups as partitions fill.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = coerce_batch(&self.table.def, &self.table.schema, batch)?;
        self.pushed += batch.num_rows() as u64;
        for (key, piece) in self.table.split(batch)? {
            let p = self.parts.entry(key).or_default();
            p.rows += piece.num_rows();
            p.bytes += piece.get_array_memory_size();
            p.batches.push(piece);
            while self.parts.get(&key).is_some_and(|p| p.rows >= MAX_ROW_GROUP_ROWS) {
                self.write_group(key)?;
            }
        }
        Ok(())
    }

    /// Writes every partition's rows held in memory as row groups (to bound memory).
    pub fn write_pending(&mut self) -> Result<()> {
        let keys: Vec<i64> = self.parts.iter().filter(|(_, p)| p.rows > 0).map(|(k, _)| *k).collect();
        for key in keys {
            while self.parts.get(&key).is_some_and(|p| p.rows > 0) {
                self.write_group(key)?;
            }
        }
        Ok(())
    }

    /// Sorts one partition's pending rows by time and writes the first row group's worth of them to its
    /// open segment (a new one if it has none, or if they start before the segment's last row).
    fn write_group(&mut self, key: i64) -> Result<()> {
        let (schema, def) = (&self.table.schema, &self.table.def);
        let Some(p) = self.parts.get_mut(&key) else { return Ok(()) };
        let sorted = sort_by_time(std::mem::take(&mut p.batches), schema, def)?;
        let (group, rest) = split_rows(sorted, MAX_ROW_GROUP_ROWS);
        p.rows = rest.iter().map(|b| b.num_rows()).sum();
        p.bytes = rest.iter().map(|b| b.get_array_memory_size()).sum();
        p.batches = rest;
        let first = def.time_column().and_then(|t| group.first().and_then(|b| time_bounds(b, t).0));
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
        w.write_row_group(&group)?;
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
    /// load has made visible in all. A load that has written no row group is appended through the WAL.
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
