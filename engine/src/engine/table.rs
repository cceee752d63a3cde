//! Tables, their partitions and snapshots: what a stored table holds in memory and on disk,
//! and the row-level helpers every lifecycle step shares (time bounds, sorting, reading segments back).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use datafusion::arrow::array::{AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{SortOptions, concat_batches, sort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use parking_lot::{Mutex, RwLock};

use crate::catalog::{SegmentEntry, TableEntry};
use crate::error::Result;
use crate::segment::Segment;
use crate::types::TableDef;

/// A sealed segment with its catalog entry.
#[derive(Debug)]
pub struct SegmentHandle {
    pub entry: SegmentEntry,
    pub segment: Segment,
}

#[derive(Debug, Default)]
pub(super) struct Partition {
    pub(super) segments: Vec<Arc<SegmentHandle>>,
    /// Batches acknowledged since the last freeze.
    pub(super) mem: Vec<RecordBatch>,
    /// Batches frozen by a flush that is writing them to a segment.
    pub(super) frozen: Vec<RecordBatch>,
}

#[derive(Debug, Default)]
pub(super) struct TableData {
    pub(super) partitions: BTreeMap<i64, Partition>,
}

/// A stored table.
#[derive(Debug)]
pub struct Table {
    pub id: u64,
    pub def: TableDef,
    pub schema: SchemaRef,
    pub(super) retention_us: Mutex<Option<i64>>,
    pub(super) data: RwLock<TableData>,
    pub(super) dropped: AtomicBool,
    /// Per watcher, the earliest time changed since it last took its changes (in memory; flushes and
    /// deletes record it in the catalog too).
    pub(super) changes: Mutex<BTreeMap<String, Option<i64>>>,
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
    pub(super) fn new(entry: &TableEntry) -> Table {
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
    pub(super) fn mark_changed(&self, ts_us: i64) {
        for v in self.changes.lock().values_mut() {
            *v = Some(v.map_or(ts_us, |cur| cur.min(ts_us)));
        }
    }

    /// The earliest time in `batches` (time-series tables).
    pub(super) fn min_time(&self, batches: &[RecordBatch]) -> Option<i64> {
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

    pub(super) fn partition_key(&self, ts_us: i64) -> i64 {
        match &self.def.time {
            Some(t) => ts_us.div_euclid(t.partition_width_us),
            None => 0,
        }
    }

    /// Splits a coerced batch into one batch per partition.
    pub(super) fn split(&self, batch: RecordBatch) -> Result<Vec<(i64, RecordBatch)>> {
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
pub(super) fn time_values(batch: &RecordBatch, col: usize) -> &[i64] {
    let a = batch.column(col);
    match a.as_primitive_opt::<TimestampMicrosecondType>() {
        Some(p) => p.values(),
        None => a.as_primitive::<Int64Type>().values(),
    }
}

/// The earliest and latest time of a batch, without copying the column.
pub(super) fn time_bounds(batch: &RecordBatch, col: usize) -> (Option<i64>, Option<i64>) {
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

/// True when `batches`, one after another, are in time order.
pub(super) fn sorted_by_time(batches: &[RecordBatch], def: &TableDef) -> bool {
    let Some(t) = def.time_column() else { return true };
    let mut last = i64::MIN;
    batches.iter().all(|b| {
        let v = time_values(b, t);
        let ok = v.first().is_none_or(|&f| f >= last) && v.is_sorted();
        last = v.last().copied().unwrap_or(last);
        ok
    })
}

/// Puts rows in time order (stable, so equal timestamps keep arrival order): batches already in order
/// are returned as they are, others are concatenated and sorted.
pub(super) fn sort_by_time(batches: Vec<RecordBatch>, schema: &SchemaRef, def: &TableDef) -> Result<Vec<RecordBatch>> {
    let Some(t) = def.time_column() else { return Ok(batches) };
    if sorted_by_time(&batches, def) {
        return Ok(batches);
    }
    let batch = concat_batches(schema, &batches)?;
    let idx = sort_to_indices(batch.column(t), Some(SortOptions { descending: false, nulls_first: false }), None)?;
    Ok(vec![take_record_batch(&batch, &idx)?])
}

pub(super) fn partition_max_ts(p: &Partition) -> Option<i64> {
    p.segments.iter().filter_map(|s| s.entry.max_ts).max()
}

/// Reads every row of the given segments (all columns), a batch per row group.
pub(super) fn read_all(t: &Table, segs: &[Arc<SegmentHandle>]) -> Result<Vec<RecordBatch>> {
    let projection: Vec<usize> = (0..t.schema.fields().len()).collect();
    let mut batches = Vec::new();
    for s in segs {
        for rg in 0..s.segment.footer.row_groups.len() {
            batches.push(s.segment.read(rg, &projection, &t.schema)?);
        }
    }
    Ok(batches)
}

/// Merges the in-memory changes into a catalog entry's; true if that changed anything.
pub(super) fn record_changes(e: &mut TableEntry, mem: &BTreeMap<String, Option<i64>>) -> bool {
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

pub(super) fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    }
}

pub(super) fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) | (None, x) => x,
    }
}
