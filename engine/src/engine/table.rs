//! Tables, their partitions and snapshots: what a stored table holds in memory and on disk,
//! and the row-level helpers every lifecycle step shares (time bounds, sorting, reading segments back).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array, make_comparator};
use datafusion::arrow::compute::{
    SortColumn, SortOptions, concat_batches, interleave, lexsort_to_indices, sort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use datafusion::common::{HashMap, ScalarValue};
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
    pub(super) mem: Vec<MemBatch>,
    /// Batches frozen by a flush that is writing them to a segment.
    pub(super) frozen: Vec<MemBatch>,
}

/// A memtable batch and the bounds of its columns, computed when a plan first asks for them and
/// kept while the batch lives (a batch never changes once acknowledged; every snapshot shares them).
#[derive(Debug, Clone)]
pub struct MemBatch {
    pub batch: RecordBatch,
    bounds: Arc<[std::sync::OnceLock<ColumnBounds>]>,
}

/// The minimum and maximum of a column's non-NULL values (`None`: all NULL, or not computable).
pub type ColumnBounds = Option<(ScalarValue, ScalarValue)>;

impl MemBatch {
    pub(crate) fn new(batch: RecordBatch) -> MemBatch {
        let bounds = (0..batch.num_columns()).map(|_| std::sync::OnceLock::new()).collect();
        MemBatch { batch, bounds }
    }

    /// The bounds of column `c`, from `compute` the first time they are asked for.
    pub fn bounds(&self, c: usize, compute: impl FnOnce(&ArrayRef) -> ColumnBounds) -> &ColumnBounds {
        self.bounds[c].get_or_init(|| compute(self.batch.column(c)))
    }

    /// True when the bounds of column `c` are known without reading the batch.
    pub fn has_bounds(&self, c: usize) -> bool {
        self.bounds[c].get().is_some()
    }
}

impl std::ops::Deref for MemBatch {
    type Target = RecordBatch;

    fn deref(&self) -> &RecordBatch {
        &self.batch
    }
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
    pub batches: Vec<MemBatch>,
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

/// Puts rows in the table's storage order (see [`crate::types::Layout`]): time order, then, with a sort
/// key, each run of the layout's rows sorted by the key (rows of one key keep their time order). With a
/// sort key, a batch per run is returned, each gathered once from the input.
pub(super) fn storage_order(batches: Vec<RecordBatch>, schema: &SchemaRef, def: &TableDef) -> Result<Vec<RecordBatch>> {
    let layout = def.layout();
    let (true, Some(time)) = (layout.clustered(), def.time_column()) else {
        return sort_by_time(batches, schema, def);
    };
    let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    let mut rows: Vec<(usize, usize)> =
        batches.iter().enumerate().flat_map(|(b, batch)| (0..batch.num_rows()).map(move |r| (b, r))).collect();
    if !sorted_by_time(&batches, def) {
        let times: Vec<&[i64]> = batches.iter().map(|b| time_values(b, time)).collect();
        rows.sort_by_key(|&(b, r)| times[b][r]);
    }
    let keys = def.sort_key_columns();
    let mut runs = Vec::with_capacity(rows.len().div_ceil(layout.run_rows));
    for run in rows.chunks(layout.run_rows) {
        let run = key_order(&batches, &keys, time, run)?;
        let columns = crate::segment::parallel_map(schema.fields(), |f| {
            let c = schema.index_of(f.name())?;
            let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            Ok::<_, crate::error::Error>(interleave(&arrays, &run)?)
        });
        runs.push(RecordBatch::try_new(schema.clone(), columns.into_iter().collect::<Result<_>>()?)?);
    }
    Ok(runs)
}

/// `run` (rows of `batches`, in time order) sorted by the columns `keys` (NULLs last), then by time.
fn key_order(
    batches: &[RecordBatch],
    keys: &[usize],
    time: usize,
    run: &[(usize, usize)],
) -> Result<Vec<(usize, usize)>> {
    let gather = |c: usize| -> Result<ArrayRef> {
        let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
        Ok(interleave(&arrays, run)?)
    };
    let key_columns: Vec<ArrayRef> = keys.iter().map(|&k| gather(k)).collect::<Result<_>>()?;
    let order = match packed_order(&key_columns, run.len())? {
        Some(order) => order,
        None => lexical_order(&key_columns, gather(time)?)?,
    };
    Ok(order.iter().map(|&i| run[i as usize]).collect())
}

/// The stable order of `n` rows by `columns`, each replaced by its rank among its distinct values and
/// all packed in a `u64`; `None` when the ranks do not fit.
fn packed_order(columns: &[ArrayRef], n: usize) -> Result<Option<Vec<u32>>> {
    let mut composite = vec![0u64; n];
    let mut span: u64 = 1;
    for column in columns {
        let (ranks, distinct) = ranks(column)?;
        let Some(s) = span.checked_mul(distinct) else { return Ok(None) };
        span = s;
        for (c, r) in composite.iter_mut().zip(ranks) {
            *c = *c * distinct + u64::from(r);
        }
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by_key(|&i| composite[i as usize]);
    Ok(Some(order))
}

/// Each row's rank among the column's distinct values (NULL ranks last), and how many ranks there are.
fn ranks(array: &ArrayRef) -> Result<(Vec<u32>, u64)> {
    let Some(text) = array.as_string_opt::<i32>() else {
        let options = SortOptions { descending: false, nulls_first: false };
        let sorted = sort_to_indices(array, Some(options), None)?;
        let cmp = make_comparator(array.as_ref(), array.as_ref(), options)?;
        let mut ranks = vec![0u32; array.len()];
        let mut rank = 0u32;
        for w in sorted.values().windows(2) {
            if cmp(w[0] as usize, w[1] as usize).is_ne() {
                rank += 1;
            }
            ranks[w[1] as usize] = rank;
        }
        return Ok((ranks, u64::from(rank) + 1));
    };
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut codes = Vec::with_capacity(array.len());
    for v in text.iter() {
        codes.push(match v {
            Some(v) => {
                let next = ids.len() as u32;
                *ids.entry(v).or_insert(next)
            }
            None => u32::MAX,
        });
    }
    let mut distinct: Vec<(&str, u32)> = ids.into_iter().collect();
    distinct.sort_unstable();
    let mut rank_of = vec![0u32; distinct.len()];
    for (rank, (_, id)) in distinct.iter().enumerate() {
        rank_of[*id as usize] = rank as u32;
    }
    let null_rank = distinct.len() as u32;
    let ranks = codes.into_iter().map(|c| if c == u32::MAX { null_rank } else { rank_of[c as usize] }).collect();
    Ok((ranks, u64::from(null_rank) + 1))
}

/// The order of rows by `columns` (NULLs last), then `time`, by comparison (many distinct keys).
fn lexical_order(columns: &[ArrayRef], time: ArrayRef) -> Result<Vec<u32>> {
    let options = Some(SortOptions { descending: false, nulls_first: false });
    // Time last: the comparison sort is not stable.
    let columns: Vec<SortColumn> =
        (columns.iter().cloned().chain([time])).map(|values| SortColumn { values, options }).collect();
    Ok(lexsort_to_indices(&columns, None)?.values().to_vec())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, AsArray, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Int32Type, TimestampMicrosecondType};

    use super::{lexical_order, packed_order, storage_order};
    use crate::types::{ColumnDef, ColumnType, Layout, TableDef, TimeOptions};

    fn def() -> TableDef {
        let col = |name: &str, ty| ColumnDef { name: name.into(), ty, nullable: true };
        TableDef {
            name: "t".into(),
            columns: vec![col("ts", ColumnType::Timestamp), col("k", ColumnType::Text), col("n", ColumnType::Int)],
            time: Some(TimeOptions { time_column: 0, partition_width_us: i64::MAX / 4, retention_us: None }),
            dedup_keys: Vec::new(),
            sort_key: vec!["k".into(), "n".into()],
        }
    }

    /// Rows in arrival order: times jittered around `i`, keys with NULLs.
    fn rows(n: usize, seed: u64) -> RecordBatch {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ts = Vec::with_capacity(n);
        let mut k = Vec::with_capacity(n);
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            ts.push(i as i64 * 10 + (next() % 50) as i64);
            let r = next();
            k.push((r % 23 != 0).then(|| format!("k{}", r % 37)));
            v.push((r % 19 != 0).then_some((next() % 7) as i32 - 3));
        }
        RecordBatch::try_new(
            def().arrow_schema(),
            vec![
                Arc::new(TimestampMicrosecondArray::from(ts)),
                Arc::new(StringArray::from(k)),
                Arc::new(Int32Array::from(v)),
            ],
        )
        .unwrap()
    }

    type Row = (i64, Option<String>, Option<i32>);

    fn collect(b: &RecordBatch) -> Vec<Row> {
        let ts = b.column(0).as_primitive::<TimestampMicrosecondType>();
        let k = b.column(1).as_string::<i32>();
        let n = b.column(2).as_primitive::<Int32Type>();
        (0..b.num_rows())
            .map(|i| (ts.value(i), k.is_valid(i).then(|| k.value(i).to_string()), n.is_valid(i).then(|| n.value(i))))
            .collect()
    }

    /// NULLs last, as the storage order puts them.
    fn key(r: &Row) -> (bool, &Option<String>, bool, Option<i32>, i64) {
        (r.1.is_none(), &r.1, r.2.is_none(), r.2, r.0)
    }

    #[test]
    fn runs_follow_each_other_in_time_and_hold_rows_by_key_then_time() {
        let d = def();
        let input = rows(Layout::CLUSTERED.run_rows * 2 + 1000, 7);
        let pieces = vec![input.slice(0, 300_000), input.slice(300_000, input.num_rows() - 300_000)];
        let runs = storage_order(pieces, &d.arrow_schema(), &d).unwrap();
        let run = Layout::CLUSTERED.run_rows;
        assert_eq!(runs.iter().map(|r| r.num_rows()).collect::<Vec<_>>(), [run, run, 1000]);
        let mut last_max = i64::MIN;
        let mut all = Vec::new();
        for run in &runs {
            let rows = collect(run);
            assert!(rows.windows(2).all(|w| key(&w[0]) <= key(&w[1])), "a run out of key order");
            let min = rows.iter().map(|r| r.0).min().unwrap();
            assert!(min >= last_max, "a run starts before the one before it ends");
            last_max = rows.iter().map(|r| r.0).max().unwrap();
            all.extend(rows);
        }
        let mut expected = collect(&input);
        expected.sort();
        all.sort();
        assert_eq!(all, expected);
    }

    #[test]
    fn packed_key_order_is_the_comparison_order() {
        let batch = rows(5000, 11);
        let (keys, time) = (vec![batch.column(1).clone(), batch.column(2).clone()], batch.column(0).clone());
        let packed = packed_order(&keys, batch.num_rows()).unwrap().unwrap();
        let compared = lexical_order(&keys, time).unwrap();
        let rows = collect(&batch);
        let at = |order: &[u32]| -> Vec<Row> {
            let mut picked: Vec<Row> = order.iter().map(|&i| rows[i as usize].clone()).collect();
            // The packed order keeps arrival order among equal keys; compare within keys by time.
            picked.chunk_by_mut(|a, b| a.1 == b.1 && a.2 == b.2).for_each(|c| c.sort());
            picked
        };
        assert_eq!(at(&packed), at(&compared));
        assert_eq!(packed.len(), batch.num_rows());
    }
}
