//! Status and metrics: what each table holds, the WAL size, the engine's counters as samples.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::Sample;
use crate::wal::list_wal_files;

use super::Engine;
use super::table::{max_opt, min_opt, time_bounds};

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

impl Engine {
    /// `Ok` while the database takes reads and writes; else why not (closed, or the write-ahead log
    /// failed and refuses writes until the database is reopened).
    pub fn health(&self) -> std::result::Result<(), String> {
        self.check_open().map_err(|e| e.to_string())?;
        match self.wal.stats.poisoned.lock().as_ref() {
            Some(p) => Err(format!("the write-ahead log failed and refuses writes: {p}")),
            None => Ok(()),
        }
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
}
