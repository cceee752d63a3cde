//! Storage engine report: durable append rate through the library, bytes per row on disk, full-scan and
//! time-range query times, the fraction of row groups a one-hour query reads, and open time.
//!
//! Run: `cargo run --release --bin storage_report -- [ROWS] [DAYS]`
//! (defaults: 10,000,000 rows over 7 days). Writes into a temporary directory and removes it.

use std::time::Instant;

use anyhow::Context;
use trafficdb::{Database, Options};
use trafficdb_benches::{REQUESTS_DDL, RequestGen};

/// CPU seconds (user + system) this process has used, from /proc (Linux); 0 elsewhere.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

const LATEST: &str = "SELECT backend, ts, total_ms FROM (SELECT *, row_number() OVER (PARTITION BY backend ORDER BY ts DESC) AS rn FROM requests) t WHERE rn = 1";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn dir_bytes(dir: &std::path::Path, ext: &str) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = args.get(1).map(|s| s.replace('_', "").parse()).transpose()?.unwrap_or(10_000_000);
    let days: u32 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(7);
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("db");
    println!("rows: {rows}, days: {days}, directory: {}", dir.display());

    let db = Database::open_with(&dir, Options::default()).await?;
    db.sql(REQUESTS_DDL).await?;

    // Generation is timed apart from the appends.
    let t = Instant::now();
    let batches: Vec<_> = RequestGen::new(42, rows, days, 100_000).collect();
    let gen_s = t.elapsed().as_secs_f64();
    println!("generate: {gen_s:.2} s ({:.2} M rows/s, not part of the append figure)", rows as f64 / gen_s / 1e6);

    let t = Instant::now();
    let cpu0 = cpu_seconds();
    for b in &batches {
        db.append("requests", b).context("append")?;
    }
    let append_s = t.elapsed().as_secs_f64();
    let append_cpu = cpu_seconds() - cpu0;
    println!(
        "durable append (library, 100k-row batches, each fsynced before it returns): {append_s:.2} s = {:.2} M rows/s",
        rows as f64 / append_s / 1e6
    );
    if append_cpu > 0.0 {
        println!(
            "  CPU used by the appends (all threads: caller, WAL writer, background flush): {append_cpu:.2} s = {:.2} M rows per CPU-second",
            rows as f64 / append_cpu / 1e6
        );
    }
    drop(batches);
    let t = Instant::now();
    db.flush()?;
    let flush_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let merges = db.engine().compact()?;
    let compact_s = t.elapsed().as_secs_f64();
    println!("final flush: {flush_s:.2} s; compaction: {merges} merges in {compact_s:.2} s");
    println!(
        "ingest end to end (append + final flush + compaction): {:.2} M rows/s",
        rows as f64 / (append_s + flush_s + compact_s) / 1e6
    );
    let seg_bytes = dir_bytes(&dir, "seg");
    println!("on disk: {seg_bytes} bytes in segments = {:.2} bytes/row", seg_bytes as f64 / rows as f64);
    let catalog = db.engine().catalog();
    let segs: usize = catalog.tables.iter().map(|t| t.partitions.values().map(|p| p.len()).sum::<usize>()).sum();
    println!("segments: {segs}");
    // Bytes per row by column, and how many chunks zstd compressed.
    if let Some(t) = db.engine().table("requests") {
        let snap = t.snapshot();
        let ncols = t.def.columns.len();
        let mut bytes = vec![0u64; ncols];
        let mut zstd = vec![0usize; ncols];
        let mut chunks = 0usize;
        for p in &snap.partitions {
            for s in &p.segments {
                for rg in &s.segment.footer.row_groups {
                    chunks += 1;
                    for (i, c) in rg.chunks.iter().enumerate() {
                        bytes[i] += c.len as u64;
                        zstd[i] += (c.compression == 1) as usize;
                    }
                }
            }
        }
        for (i, c) in t.def.columns.iter().enumerate() {
            println!(
                "  column {:<16} {:>6.2} bytes/row, zstd on {}/{} chunks",
                c.name,
                bytes[i] as f64 / rows as f64,
                zstd[i],
                chunks
            );
        }
    }

    let queries = [
        ("count(*)", "SELECT count(*) FROM requests".to_string()),
        ("sum(total_ms), avg(target_ms)", "SELECT sum(total_ms), avg(target_ms) FROM requests".to_string()),
        (
            "group by backend: count, avg(total_ms), max(status)",
            "SELECT backend, count(*), avg(total_ms), max(status) FROM requests GROUP BY backend".to_string(),
        ),
        (
            "one hour (day 4, 10:00-11:00): count, avg, p99 by backend",
            "SELECT backend, count(*), avg(total_ms), approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms) \
             FROM requests WHERE ts >= TIMESTAMP '2024-01-04 10:00:00' AND ts < TIMESTAMP '2024-01-04 11:00:00' GROUP BY backend"
                .to_string(),
        ),
        ("newest 10 rows", "SELECT * FROM requests ORDER BY ts DESC LIMIT 10".to_string()),
        ("latest row per backend", LATEST.to_string()),
    ];
    for (name, sql) in &queries {
        db.sql(sql).await?; // first run
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            db.sql(sql).await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!("query {name}: median {:.1} ms (5 runs after a first)", median(times));
    }
    let plan = db
        .sql("EXPLAIN SELECT count(*), avg(total_ms) FROM requests WHERE ts >= TIMESTAMP '2024-01-04 10:00:00' AND ts < TIMESTAMP '2024-01-04 11:00:00'")
        .await?;
    let text = trafficdb::arrow::util::pretty::pretty_format_batches(&plan)?.to_string();
    if let Some(line) = text.lines().find(|l| l.contains("TrafficScan")) {
        let rg = line.split("row_groups=").nth(1).and_then(|s| s.split(',').next()).unwrap_or("?");
        if let Some((a, b)) = rg.split_once('/') {
            let (a, b): (f64, f64) = (a.parse()?, b.parse()?);
            println!("one-hour query reads {rg} row groups = {:.2}%", 100.0 * a / b);
        }
    }
    for (name, sql) in
        [("newest-10", "SELECT * FROM requests ORDER BY ts DESC LIMIT 10"), ("latest-per-backend", LATEST)]
    {
        let analyzed = db.sql(&format!("EXPLAIN ANALYZE {sql}")).await?;
        let text = trafficdb::arrow::util::pretty::pretty_format_batches(&analyzed)?.to_string();
        if let Some(line) = text.lines().find(|l| l.contains("TrafficScan")) {
            let metric = |m: &str| {
                line.split(&format!("{m}=")).nth(1).and_then(|s| s.split([',', ']']).next()).unwrap_or("?").to_string()
            };
            println!(
                "{name} query: row groups decoded {}, skipped at run time {}, of {}",
                metric("row_groups_scanned"),
                metric("row_groups_pruned_at_run_time"),
                metric("row_groups")
            );
        }
    }
    db.close()?;

    let mut opens = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let db = Database::open_with(&dir, Options::default()).await?;
        opens.push(t.elapsed().as_secs_f64() * 1e3);
        db.close()?;
    }
    println!("open ({rows} rows): median {:.1} ms", median(opens));
    Ok(())
}
