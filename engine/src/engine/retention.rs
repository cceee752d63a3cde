//! Retention and deletes: whole partitions past the retention dropped; TRUNCATE; and the
//! rewrite of the segments a DELETE or UPDATE touches, all rows or none.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};

use crate::error::{Error, Result};
use crate::types::coerce_batch;

use super::table::{SegmentHandle, Table, partition_max_ts, read_all, storage_order};
use super::{Engine, Swap, undefined_table};

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
pub(super) fn replace_columns(table: &Table, old: &RecordBatch, values: &RecordBatch) -> Result<RecordBatch> {
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

impl Engine {
    /// Drops the partitions of every table that lie wholly before its retention cutoff. The cutoff is
    /// measured from the earlier of the clock and the table's newest row, so one row stamped far in the
    /// future cannot expire a table, and a database of old data is not wiped on open.
    pub fn enforce_retention(&self) -> Result<usize> {
        self.enforce_retention_at(self.now_us())
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
            self.swap_segments(
                &t,
                expired.into_iter().map(|(key, old)| Swap { key, old, new: Vec::new() }).collect(),
                None,
            )?;
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
            self.swap_segments(table, swaps, None)?;
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
            let batch = concat_batches(&table.schema, &read_all(table, std::slice::from_ref(seg))?)?;
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
                let rest = storage_order(vec![rest], &table.schema, &table.def)?;
                vec![self.write_segment(table, *key, &rest)?]
            };
            swaps.push(Swap { key: *key, old: vec![seg.clone()], new });
        }
        for (key, batches) in moved {
            let batch = storage_order(batches, &table.schema, &table.def)?;
            swaps.push(Swap { key, old: Vec::new(), new: vec![self.write_segment(table, key, &batch)?] });
        }
        if !swaps.is_empty() {
            self.swap_segments(table, swaps, None)?;
        }
        Ok(Rewritten { rows: changed, returned })
    }
}
