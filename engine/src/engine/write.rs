//! The write path: coerce, split by partition, WAL with group commit, then the memtables.
//! An append returns only when its rows are fsynced in the WAL.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;

use crate::error::Result;
use crate::types::coerce_batch;
use crate::wal::encode_txn;

use super::table::{MemBatch, Table};
use super::{Engine, WorkerMsg, undefined_table};

impl Engine {
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
            if let Some(shard) = &self.options.shard {
                shard.check(&table.def, &b)?;
            }
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
                d.partitions.entry(k).or_default().mem.push(MemBatch::new(b));
            }
            // Counted under the gate, so a concurrent freeze cannot reset the count in between.
            self.mem_since.lock().get_or_insert_with(|| self.options.clock.elapsed());
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

    pub(super) fn nudge(&self) {
        if let Some((tx, _)) = &*self.worker.lock() {
            let _ = tx.try_send(WorkerMsg::Nudge);
        }
    }

    pub(super) fn needs_flush(&self) -> bool {
        self.mem_bytes.load(Ordering::Acquire) >= self.options.flush_bytes
            || self
                .mem_since
                .lock()
                .is_some_and(|t| self.options.clock.elapsed().saturating_sub(t) >= self.options.flush_interval)
    }
}
