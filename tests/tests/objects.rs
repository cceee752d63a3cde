//! Sealed segments and the catalog on an object store (`engine/src/store.rs`, docs/scale-out.md): every
//! segment the catalog names is in the store and nothing else is, the store's catalog is the committed
//! one, and a node with an empty directory opens the table from the store alone.

use std::collections::BTreeSet;

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
    let options =
        |store| Options { background: false, compaction_min_segments: 2, store: Some(store), ..Options::default() };

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
    db.append("events", &events_batch(17_000, 100)).expect("append on b");
    db.flush().expect("flush b");
    assert_eq!(stored(&store), named_segments(&db), "b's flush");
    rt.block_on(db.sql("DROP TABLE events")).expect("drop");
    assert!(stored(&store).is_empty(), "DROP TABLE leaves objects: {:?}", stored(&store));
    db.close().expect("close b");
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
