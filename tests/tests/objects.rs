//! Sealed segments and the catalog on an object store (`engine/src/store.rs`, docs/scale-out.md): every
//! segment the catalog names is in the store and nothing else is, the store's catalog is the committed
//! one, and a node with an empty directory opens the table from the store alone.

use std::collections::BTreeSet;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use trafficdb::shard::{Owns, ShardRule};
use trafficdb::store::ObjectStorage;
use trafficdb::{Database, Options};

use crate::common::{EVENTS_DDL, all_ids, events_batch, runtime};

/// The object names of the segments the catalog of `db` names.
fn named_segments(db: &Database) -> BTreeSet<String> {
    let engine = db.engine();
    let mut names = BTreeSet::new();
    for t in &engine.catalog().tables {
        for (key, segs) in &t.partitions {
            for s in segs {
                let path = trafficdb::catalog::segment_path(engine.dir(), t.id, *key, s.id);
                names.insert(ObjectStorage::name_of(engine.dir(), &path));
            }
        }
    }
    names
}

fn stored(store: &ObjectStorage) -> BTreeSet<String> {
    store.list("tables").expect("list the store").into_iter().collect()
}

#[test]
fn segments_and_the_catalog_live_in_the_object_store() {
    let rt = runtime();
    let root = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", root.path().join("bucket").display());
    // No other node reads this store: dropped objects go at once (see `dropped_objects_wait_out_their_grace`).
    let options = |store: std::sync::Arc<ObjectStorage>| {
        store.set_delete_grace(Duration::ZERO);
        Options { background: false, compaction_min_segments: 2, store: Some(store), ..Options::default() }
    };

    // A writer: appends flushed into several segments, a bulk load, a compaction, a DELETE's rewrite.
    let store = ObjectStorage::open(&url).expect("the store");
    let a = root.path().join("a");
    let db = rt.block_on(Database::open_with(&a, options(store.clone()))).expect("open a");
    rt.block_on(db.sql(EVENTS_DDL)).expect("create");
    for i in 0..4 {
        db.append("events", &events_batch(i * 3000, 3000)).expect("append");
        db.flush().expect("flush");
    }
    let t = db.engine().table("events").expect("the table");
    let mut load = db.engine().bulk_load(&t).expect("bulk load");
    load.push(&events_batch(12_000, 5000)).expect("push");
    load.commit().expect("commit the load");
    assert!(named_segments(&db).len() > 4, "several segments: {:?}", named_segments(&db));
    assert_eq!(stored(&store), named_segments(&db), "after flushes and a bulk load");
    let merges = db.engine().compact().expect("compact");
    assert!(merges > 0, "the test means to compact");
    assert_eq!(stored(&store), named_segments(&db), "after compaction: merged segments gone from the store");
    rt.block_on(db.sql("DELETE FROM events WHERE id % 7 = 0")).expect("delete");
    assert_eq!(stored(&store), named_segments(&db), "after a DELETE rewrote segments");
    assert!(store.settled());
    let local = std::fs::read(a.join("catalog")).expect("the local catalog");
    assert_eq!(
        store.get("catalog").expect("get").as_deref(),
        Some(&local[..]),
        "the store's catalog is the committed one"
    );
    let ids = rt.block_on(all_ids(&db));
    assert_eq!(ids.len(), 17_000 - 17_000usize.div_ceil(7));
    db.close().expect("close a");

    // An object no catalog names (a flush that crashed between its put and its commit) is removed
    // when a node opens the store; a replacement node with an empty directory reads the same rows.
    let orphan = format!(
        "{}/999999999999.seg",
        stored(&store).iter().next().expect("a segment").rsplit_once('/').expect("a path").0
    );
    store.put(&orphan, b"not a segment".to_vec()).expect("put an orphan");
    let store = ObjectStorage::open(&url).expect("the store, from another node");
    let b = root.path().join("b");
    let db = rt.block_on(Database::open_with(&b, options(store.clone()))).expect("open b from the store alone");
    assert_eq!(rt.block_on(all_ids(&db)), ids, "the rows read from the store");
    assert!(!stored(&store).contains(&orphan), "the orphan is deleted");
    assert_eq!(stored(&store), named_segments(&db));

    // Opened again without naming the store (as `trafficdb sql` or an import would), it writes
    // through to the store the directory records: a new segment is stored; DROP TABLE deletes the
    // table's objects.
    db.close().expect("close b");
    let db =
        rt.block_on(Database::open_with(&b, Options { background: false, ..Options::default() })).expect("reopen b");
    assert_eq!(db.engine().options().store.as_ref().map(|s| s.url().to_string()), Some(url.clone()));
    db.engine().options().store.as_ref().expect("the recorded store").set_delete_grace(Duration::ZERO);
    db.append("events", &events_batch(17_000, 100)).expect("append on b");
    db.flush().expect("flush b");
    assert_eq!(stored(&store), named_segments(&db), "b's flush");
    rt.block_on(db.sql("DROP TABLE events")).expect("drop");
    assert!(stored(&store).is_empty(), "DROP TABLE leaves objects: {:?}", stored(&store));
    db.close().expect("close b");
}

/// Objects a published catalog dropped stay in the store for a grace period, so that a node that read
/// the catalog before (a worker, a reader of shards) still finds every segment it names.
#[test]
fn dropped_objects_wait_out_their_grace() {
    let rt = runtime();
    let root = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", root.path().join("bucket").display());
    let store = ObjectStorage::open(&url).expect("the store");
    let options =
        Options { background: false, compaction_min_segments: 2, store: Some(store.clone()), ..Options::default() };
    let db = rt.block_on(Database::open_with(root.path().join("a"), options)).expect("open");
    rt.block_on(db.sql(EVENTS_DDL)).expect("create");
    for i in 0..3 {
        db.append("events", &events_batch(i * 1000, 1000)).expect("append");
        db.flush().expect("flush");
    }
    let before = stored(&store);
    assert!(db.engine().compact().expect("compact") > 0, "the test means to compact");
    let after = named_segments(&db);
    assert!(before.iter().any(|n| !after.contains(n)), "compaction dropped segments");
    assert!(before.is_subset(&stored(&store)), "dropped segments stay for their grace");
    assert!(!store.settled(), "deletes wait");
    store.set_delete_grace(Duration::ZERO);
    assert!(store.republish(), "the grace, now zero, is over");
    assert_eq!(stored(&store), after, "then they are deleted");
    db.close().expect("close");
}

#[test]
fn a_store_given_to_an_existing_directory_receives_its_segments() {
    let rt = runtime();
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("db");
    let plain = Options { background: false, ..Options::default() };
    let db = rt.block_on(Database::open_with(&dir, plain.clone())).expect("open");
    rt.block_on(db.sql(EVENTS_DDL)).expect("create");
    db.append("events", &events_batch(0, 2000)).expect("append");
    db.close().expect("close");

    let url = format!("file://{}", root.path().join("bucket").display());
    let store = ObjectStorage::open(&url).expect("the store");
    let db = rt.block_on(Database::open_with(&dir, Options { store: Some(store.clone()), ..plain })).expect("reopen");
    assert!(!named_segments(&db).is_empty());
    assert_eq!(stored(&store), named_segments(&db));
    assert!(store.get("catalog").expect("get").is_some());
    db.close().expect("close");
}

#[test]
fn a_bad_store_url_is_refused_with_its_reason() {
    let e = ObjectStorage::open("s4://nowhere/x").expect_err("an unknown scheme");
    assert!(e.to_string().contains("s4://nowhere/x"), "{e}");
    assert!(ObjectStorage::open("not a url").is_err());
}

/// The rows of `batch` whose `backend` is one of `owned` (a NULL backend counts as "").
fn rows_of(batch: &RecordBatch, owned: &[&str]) -> RecordBatch {
    let backend = batch.column(2).as_string::<i32>();
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| Some(owned.contains(&if backend.is_null(i) { "" } else { backend.value(i) })))
        .collect();
    filter_record_batch(batch, &keep).expect("filter")
}

fn text(rt: &tokio::runtime::Runtime, db: &Database, sql: &str) -> String {
    let batches = rt.block_on(db.sql(sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&batches).expect("format").to_string()
}

/// Fails with the first line where the two answers to `sql` differ.
fn assert_same(rt: &tokio::runtime::Runtime, got: &Database, want: &Database, sql: &str, when: &str) {
    let (g, w) = (text(rt, got, sql), text(rt, want, sql));
    if g != w {
        let at = g.lines().zip(w.lines()).position(|(a, b)| a != b).unwrap_or(g.lines().count().min(w.lines().count()));
        panic!(
            "{when}: {sql}\n{} lines against {}; line {at}: {:?} against {:?}",
            g.lines().count(),
            w.lines().count(),
            g.lines().nth(at),
            w.lines().nth(at)
        );
    }
}

/// Two writers, each owning some backends' rows, publish under one prefix (`shards/<name>/`); a node
/// on the prefix itself reads the union as one table, giving what one node holding every row gives.
#[test]
fn shards_of_several_writers_read_as_one_table() {
    let rt = runtime();
    let root = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", root.path().join("bucket").display());
    let rule = |name: &str, owned: &[&str]| ShardRule {
        name: name.into(),
        key: "backend".into(),
        owns: Owns::Values(owned.iter().map(|s| s.to_string()).collect()),
    };
    let (east, west) = (rule("east", &["b0", "b1", ""]), rule("west", &["b2", "b3", "b4"]));
    let writer = |dir: &str, rule: &ShardRule| {
        let store = ObjectStorage::open(&rule.store_url(&url)).expect("the shard's store");
        let options = Options {
            background: false,
            compaction_min_segments: 2,
            store: Some(store),
            shard: Some(rule.clone()),
            ..Options::default()
        };
        let db = rt.block_on(Database::open_with(root.path().join(dir), options)).expect("open a writer");
        rt.block_on(db.sql(EVENTS_DDL)).expect("create");
        db
    };
    let (a, b) = (writer("a", &east), writer("b", &west));
    let reader_options = Options {
        background: false,
        store: Some(ObjectStorage::open(&url).expect("the prefix")),
        ..Options::default()
    };
    let reader = rt.block_on(Database::open_with(root.path().join("r"), reader_options)).expect("open the reader");
    rt.block_on(reader.sql(EVENTS_DDL)).expect("create");
    let single = rt.block_on(Database::open(root.path().join("single"))).expect("open the single node");
    rt.block_on(single.sql(EVENTS_DDL)).expect("create");

    // Rows in several flushes, a bulk load on one writer, a compaction on the other.
    for i in 0..4 {
        let batch = events_batch(i * 2500, 2500);
        a.append("events", &rows_of(&batch, &["b0", "b1", ""])).expect("append to east");
        b.append("events", &rows_of(&batch, &["b2", "b3", "b4"])).expect("append to west");
        single.append("events", &batch).expect("append");
        a.flush().expect("flush");
        b.flush().expect("flush");
    }
    let t = b.engine().table("events").expect("the table");
    let mut load = b.engine().bulk_load(&t).expect("bulk load");
    load.push(&rows_of(&events_batch(10_000, 3000), &["b2", "b3", "b4"])).expect("push");
    load.commit().expect("commit the load");
    b.flush().expect("flush (a load this small goes through the WAL)");
    a.append("events", &rows_of(&events_batch(10_000, 3000), &["b0", "b1", ""])).expect("append");
    single.append("events", &events_batch(10_000, 3000)).expect("append");
    a.flush().expect("flush");
    assert!(a.engine().compact().expect("compact") > 0, "the test means to compact");

    let queries = [
        "SELECT id FROM events ORDER BY id",
        "SELECT count(*), min(ts), max(ts), sum(CAST(ms * 10 AS BIGINT)) FROM events",
        "SELECT backend, count(*), min(ms), max(id) FROM events GROUP BY backend ORDER BY backend",
        "SELECT ts, id, backend FROM events WHERE ok ORDER BY ts DESC, id LIMIT 7",
        "SELECT date_trunc('hour', ts) AS h, count(*) FILTER (WHERE NOT ok) FROM events \
         WHERE ts >= TIMESTAMP '2024-01-01 01:00:00' AND ts < TIMESTAMP '2024-01-01 02:30:00' GROUP BY h ORDER BY h",
        "SELECT count(DISTINCT backend) FROM events WHERE backend LIKE 'b%'",
    ];
    for q in queries {
        assert_same(&rt, &reader, &single, q, "the union");
    }
    assert!(
        reader.engine().catalog().table("events").expect("events").partitions.is_empty(),
        "the reader keeps no segments of its own"
    );

    // A row of another shard is refused, by the append and by SQL, and nothing of it is kept.
    let misrouted = rows_of(&events_batch(20_000, 10), &["b3"]);
    let e = a.append("events", &misrouted).expect_err("b3 is west's");
    assert_eq!(e.sqlstate(), "23514", "{e}");
    let e = rt
        .block_on(a.sql("INSERT INTO events VALUES (TIMESTAMP '2024-01-02 00:00:00', 1, 'b4', 1.0, true)"))
        .expect_err("b4 is west's");
    assert_eq!(e.sqlstate(), "23514", "{e}");

    // A writer's rows are read once flushed; its deletes once published.
    a.append("events", &rows_of(&events_batch(30_000, 100), &["b0", "b1", ""])).expect("append");
    single.append("events", &events_batch(30_000, 100)).expect("append");
    let count = "SELECT count(*) FROM events";
    assert_ne!(text(&rt, &reader, count), text(&rt, &single, count), "memtables stay on the writer");
    b.append("events", &rows_of(&events_batch(30_000, 100), &["b2", "b3", "b4"])).expect("append");
    a.flush().expect("flush");
    b.flush().expect("flush");
    rt.block_on(a.sql("DELETE FROM events WHERE id % 10 = 3")).expect("delete on east");
    rt.block_on(b.sql("DELETE FROM events WHERE id % 10 = 3")).expect("delete on west");
    rt.block_on(single.sql("DELETE FROM events WHERE id % 10 = 3")).expect("delete");
    for q in queries {
        assert_same(&rt, &reader, &single, q, "after flushes and deletes");
    }

    // A table only a writer has is read on the reader too.
    rt.block_on(b.sql("CREATE TABLE notes (ts TIMESTAMP NOT NULL, backend TEXT, note TEXT) WITH (time_column = 'ts')"))
        .expect("create notes");
    rt.block_on(b.sql("INSERT INTO notes VALUES (TIMESTAMP '2024-01-01 00:00:00', 'b2', 'drained')")).expect("insert");
    b.flush().expect("flush");
    assert_eq!(text(&rt, &reader, "SELECT backend, note FROM notes"), text(&rt, &b, "SELECT backend, note FROM notes"));

    // A table without the key column is the writer's own: its rows are not the reader's.
    rt.block_on(b.sql("CREATE TABLE settings (name TEXT, value TEXT)")).expect("create settings");
    rt.block_on(b.sql("INSERT INTO settings VALUES ('owner', 'west')")).expect("insert");
    b.flush().expect("flush");
    rt.block_on(reader.sql("CREATE TABLE settings (name TEXT, value TEXT)")).expect("create settings here");
    assert_eq!(text(&rt, &reader, "SELECT count(*) AS n FROM settings"), "+---+\n| n |\n+---+\n| 0 |\n+---+");

    // A writer whose table is defined otherwise is named in the error, not read wrongly.
    // (A reader lists the shards every few seconds; a replacement reader, started from the store,
    // lists them at once.)
    reader.close().expect("close the reader");
    let odd = writer_with_ddl(&rt, root.path(), &url, rule("odd", &["b9"]));
    let reader_options = Options {
        background: false,
        store: Some(ObjectStorage::open(&url).expect("the prefix")),
        ..Options::default()
    };
    let reader = rt.block_on(Database::open_with(root.path().join("r2"), reader_options)).expect("a new reader");
    let e = rt.block_on(reader.sql(count)).expect_err("an unlike definition");
    assert_eq!(e.sqlstate(), "42804", "{e}");
    assert!(e.to_string().contains("shard \"odd\""), "{e}");
    for db in [a, b, reader, single, odd] {
        db.close().expect("close");
    }
}

fn writer_with_ddl(rt: &tokio::runtime::Runtime, root: &std::path::Path, url: &str, rule: ShardRule) -> Database {
    let store = ObjectStorage::open(&rule.store_url(url)).expect("the shard's store");
    let options = Options { background: false, store: Some(store), shard: Some(rule), ..Options::default() };
    let db = rt.block_on(Database::open_with(root.join("odd"), options)).expect("open");
    let ddl = "CREATE TABLE events (ts TIMESTAMP NOT NULL, id BIGINT NOT NULL, backend TEXT) WITH (time_column = 'ts')";
    rt.block_on(db.sql(ddl)).expect("create");
    rt.block_on(db.sql("INSERT INTO events VALUES (TIMESTAMP '2024-01-01 00:00:00', 1, 'b9')")).expect("insert");
    db.flush().expect("flush");
    db
}
