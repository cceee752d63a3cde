//! Time-driven behaviour under a manual clock (`trafficdb::clock::ManualClock`): a memtable's age
//! flush, a rollup's refresh interval and lag, an alert rule's `every`. Time moves only when a test
//! moves it, so each boundary is checked on both sides without sleeping through it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use trafficdb::Options;
use trafficdb::clock::ManualClock;

use crate::common::{EVENTS_DDL, events_batch, runtime};
use crate::http::rows;

/// 2024-01-01 01:00:00 UTC: an hour after the first row of `events_batch`.
const ONE_AM_US: i64 = 1_704_070_800_000_000;

fn options(clock: &Arc<ManualClock>) -> Options {
    Options { background_tick: Duration::from_millis(2), clock: clock.clone(), ..Options::default() }
}

#[test]
fn a_memtable_is_flushed_once_its_oldest_row_is_older_than_the_interval() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ONE_AM_US));
    let interval = Duration::from_secs(30);
    let db = rt
        .block_on(trafficdb::Database::open_with(dir.path(), Options { flush_interval: interval, ..options(&clock) }))
        .unwrap();
    rt.block_on(db.sql(EVENTS_DDL)).unwrap();
    let flushes = || db.engine().stats.flushes.load(Ordering::Acquire);
    let before = flushes();
    db.append("events", &events_batch(0, 10)).unwrap();
    // The worker looks every 2 ms; a few dozen looks at an unchanged clock flush nothing.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(flushes(), before);
    clock.advance(interval - Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(flushes(), before, "flushed before the interval passed");
    clock.advance(Duration::from_millis(1));
    let deadline = Instant::now() + Duration::from_secs(30);
    while flushes() == before {
        assert!(Instant::now() < deadline, "not flushed once the interval passed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_rollup_refreshes_on_its_interval_up_to_now_minus_its_lag() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ONE_AM_US));
    rt.block_on(async {
        let db = trafficdb::Database::open_with(dir.path(), options(&clock)).await.unwrap();
        db.sql(EVENTS_DDL).await.unwrap();
        // One row a second from 00:00:00 to 00:59:59.
        db.append("events", &events_batch(0, 3600)).unwrap();
        db.sql(
            "CREATE MATERIALIZED VIEW ev_1m WITH (refresh = '1 minute', lag = '5 minutes', realtime = false) AS \
             SELECT time_bucket(INTERVAL '1 minute', ts) AS minute, count(*) AS n FROM events GROUP BY 1",
        )
        .await
        .unwrap();
        let buckets = || async { rows(&db, "SELECT count(*), max(minute) FROM ev_1m").await[0].clone() };
        // Created at 01:00: the minutes that ended by 00:55.
        assert_eq!(buckets().await, ["55", "2024-01-01T00:54:00"]);
        assert_eq!(db.refresh_due_rollups().await.unwrap(), 0, "refreshed again at once");
        clock.advance(Duration::from_secs(59));
        assert_eq!(db.refresh_due_rollups().await.unwrap(), 0, "refreshed before its interval");
        clock.advance(Duration::from_secs(2));
        assert_eq!(db.refresh_due_rollups().await.unwrap(), 1);
        // 01:01:01 less the lag: the minute 00:55 has ended.
        assert_eq!(buckets().await, ["56", "2024-01-01T00:55:00"]);
        assert_eq!(rows(&db, "SELECT n FROM ev_1m WHERE minute = '2024-01-01 00:55:00'").await, [["60"]]);
    });
}

#[test]
fn an_alert_rule_runs_every_so_often_and_stamps_events_with_the_clock() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ONE_AM_US));
    rt.block_on(async {
        let db = trafficdb_schema::open_with(dir.path(), false, options(&clock)).await.unwrap();
        db.sql("CREATE TABLE flags (ts TIMESTAMP NOT NULL, name TEXT) WITH (time_column = 'ts')").await.unwrap();
        db.sql(
            "INSERT INTO alert_rules (name, query, every, webhook, enabled, description) VALUES ('flagged', 'SELECT name, 1.0 AS value FROM flags', '5 minutes', NULL, true, 'test')",
        )
        .await
        .unwrap();
        assert!(db.evaluate_alerts(None).await.unwrap().is_empty(), "nothing flagged yet");
        db.sql("INSERT INTO flags VALUES ('2024-01-01 00:59:00', 'a')").await.unwrap();
        clock.advance(Duration::from_secs(299));
        assert!(db.evaluate_alerts(None).await.unwrap().is_empty(), "the rule ran before its interval");
        clock.advance(Duration::from_secs(1));
        let events = db.evaluate_alerts(None).await.unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!((events[0].state, events[0].key.as_str()), ("firing", "name=a"));
        assert_eq!(events[0].ts_us, ONE_AM_US + 300_000_000, "stamped with the clock's time");
    });
}
