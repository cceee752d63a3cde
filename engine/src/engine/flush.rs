//! Flush: memtables to sealed segments, the WAL rotated under the gate so that every row of an
//! older WAL file is in a frozen memtable.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;

use crate::catalog::{SegmentEntry, segment_path};
use crate::error::{Error, Result};
use crate::segment::{Segment, WrittenSegment, write_segment};
use crate::wal::list_wal_files;

use super::Engine;
use super::table::{SegmentHandle, Table, record_changes, sorted_by_time, storage_order};

impl Engine {
    /// Writes every memtable to sealed segments and drops the WAL they came from.
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        let _m = self.maintenance.lock();
        let started = Instant::now();
        let r = self.flush_locked();
        self.stats.flush_seconds.observe(started.elapsed());
        r
    }

    pub(super) fn flush_locked(&self) -> Result<()> {
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
                .map(|(k, p)| (*k, p.frozen.iter().map(|m| m.batch.clone()).collect()))
                .collect();
            for (key, batches) in frozen {
                let n = batches.len();
                let batches = storage_order(batches, &t.schema, &t.def)?;
                let handle = self.write_segment(t, key, &batches)?;
                written.push((t.clone(), key, handle, n));
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

    /// Writes one sealed segment for `batches` (in storage order) and makes its name durable.
    pub(super) fn write_segment(&self, t: &Table, key: i64, batches: &[RecordBatch]) -> Result<Arc<SegmentHandle>> {
        let id = self.next_segment_id.fetch_add(1, Ordering::AcqRel);
        let path = segment_path(&self.dir, t.id, key, id);
        let parent = path.parent().expect("segment paths have a parent");
        self.fs.create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let w = self.encode_segment(t, &path, batches)?;
        self.fs.sync_dir(parent).map_err(|e| Error::io(parent, e))?;
        let segment = Segment::open(self.fs.as_ref(), &path)?;
        self.put_segment(&segment)?;
        let entry = SegmentEntry { id, rows: w.rows, bytes: w.bytes, min_ts: w.min_ts, max_ts: w.max_ts };
        Ok(Arc::new(SegmentHandle { entry, segment }))
    }

    /// Puts a sealed segment in the object store, if the directory has one: before the catalog names
    /// it. The bytes are the segment's own mapping, not read again.
    pub(super) fn put_segment(&self, segment: &Segment) -> Result<()> {
        let Some(store) = &self.options.store else { return Ok(()) };
        let name = crate::store::ObjectStorage::name_of(&self.dir, &segment.path);
        store.put(&name, bytes::Bytes::from_owner(segment.bytes()))
    }

    /// Writes `batches` (in storage order, one after another) as a segment file at `path` and fsyncs
    /// it; the name is the caller's to make durable.
    pub(super) fn encode_segment(&self, t: &Table, path: &Path, batches: &[RecordBatch]) -> Result<WrittenSegment> {
        let layout = t.def.layout();
        // An invariant, checked in every build (one pass over the times, next to encoding them): the
        // row groups' time bounds and the newest-first scans rely on it. The writer checks that runs
        // follow each other in time; rows in time order are checked here.
        if !layout.clustered() && !sorted_by_time(batches, &t.def) {
            return Err(Error::Internal(format!("rows of table {} reached a segment unsorted by time", t.def.name)));
        }
        let (columns, time) = (&t.def.columns, t.def.time_column());
        write_segment(self.fs.as_ref(), path, columns, time, layout, batches, self.options.segment)
    }
}
