//! What the fuzz targets share: an engine on the simulated file system with one table of every
//! column type, and a valid segment and write-ahead log file of that table for the targets to mutate
//! (random bytes alone rarely get past a file's magic and layout).

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use trafficdb::io::sim::SimFs;
use trafficdb::io::Fs;
use trafficdb::{Database, Engine, Options};

pub struct Fixture {
    pub db: Database,
    pub runtime: tokio::runtime::Runtime,
    /// A sealed segment of table `t`, as flushed.
    pub segment: Vec<u8>,
    /// A write-ahead log file holding two transactions.
    pub wal: Vec<u8>,
}

impl Fixture {
    pub fn engine(&self) -> &Arc<Engine> {
        self.db.engine()
    }
}

/// Every column type, text both repetitive (stored as a dictionary) and not, NULLs in every column
/// that takes them.
const TABLE: &str = "CREATE TABLE t (ts TIMESTAMP NOT NULL, host TEXT, path TEXT, code SMALLINT, n INT, \
    big BIGINT, r REAL, d DOUBLE PRECISION, ok BOOLEAN, at TIMESTAMPTZ) WITH (time_column = 'ts', partition = '1 day')";
const ROWS: &str = "INSERT INTO t SELECT \
    CAST(to_timestamp_seconds(1704067200 + v) AS TIMESTAMP), \
    CASE WHEN v % 7 = 0 THEN NULL ELSE 'host-' || (v % 5) END, \
    '/p/' || v || repeat('x', CAST(v % 9 AS INT)), \
    CASE WHEN v % 11 = 0 THEN NULL ELSE CAST(v % 600 AS SMALLINT) END, \
    CAST(v * 7 AS INT), v * v * 1000003, CAST(v AS REAL) / 3, \
    CASE WHEN v % 13 = 0 THEN NULL ELSE v * 0.25 END, v % 3 = 0, \
    CAST(to_timestamp_seconds(1704067200 + v * 60) AS TIMESTAMP) \
    FROM generate_series(0, 2999) AS g(v)";

pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let fs = SimFs::new();
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let options = Options { background: false, ..Options::default() };
    let engine = Engine::open_with(Arc::new(fs.clone()), PathBuf::from("/db"), options, None).expect("open");
    let db = runtime.block_on(Database::from_engine(engine)).expect("database");
    runtime.block_on(db.sql(TABLE)).expect("create");
    runtime.block_on(db.sql(ROWS)).expect("insert");
    runtime.block_on(db.sql(&ROWS.replace("2999", "99"))).expect("insert");
    let file = |dir: &str| {
        let found = fs.files().into_iter().find(|p| p.starts_with(dir) && fs.file_len(p) > 0);
        fs.read(&found.unwrap_or_else(|| panic!("no file under {dir}"))).expect("read")
    };
    let wal = file("/db/wal");
    db.flush().expect("flush");
    let segment = file("/db/tables");
    Fixture { db, runtime, segment, wal }
});

/// `base` changed as `edits` says: the first byte picks how (0: `edits` itself, the base ignored;
/// 1: truncated to a length read from the next bytes; otherwise the base with bytes XORed: each
/// three bytes are a position (two bytes, scaled over the file) and a mask).
pub fn mutate(base: &[u8], edits: &[u8]) -> Vec<u8> {
    let Some((&how, edits)) = edits.split_first() else { return base.to_vec() };
    match how % 4 {
        0 => edits.to_vec(),
        1 => {
            let at = edits.iter().take(4).fold(0usize, |a, &b| a << 8 | b as usize);
            base[..at.min(base.len())].to_vec()
        }
        _ => {
            let mut out = base.to_vec();
            for e in edits.chunks_exact(3) {
                let at = (u16::from_le_bytes([e[0], e[1]]) as usize * out.len()) >> 16;
                out[at] ^= e[2];
            }
            out
        }
    }
}

/// A simulated file system holding `bytes` at `path`.
pub fn file_at(path: &Path, bytes: &[u8]) -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    let mut f = fs.create(path).expect("create");
    f.write_all(bytes).expect("write");
    fs
}
