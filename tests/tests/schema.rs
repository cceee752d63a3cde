//! The load-balancer schema: applied to a new data directory in order, recorded in the catalog,
//! finished after a crash halfway through, never applied to a directory created empty, and a table
//! the user drops stays dropped.

use trafficdb::ColumnType;
use trafficdb_schema::{APPLIED_KEY, FILES};

use crate::common::runtime;

/// `(column, type, nullable)` of a table, in column order, from its stored definition.
fn columns(db: &trafficdb::Database, table: &str) -> Vec<(String, ColumnType, bool)> {
    let t = db.engine().table(table).expect("table exists");
    t.def.columns.iter().map(|c| (c.name.clone(), c.ty, c.nullable)).collect()
}

async fn tables(db: &trafficdb::Database) -> Vec<String> {
    let mut names: Vec<String> = db.engine().tables().iter().map(|t| t.def.name.clone()).collect();
    names.sort();
    names
}

#[test]
fn new_directories_get_the_schema_once() {
    let rt = runtime();
    rt.block_on(async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = trafficdb_schema::open(tmp.path(), false).await.expect("open");
        assert_eq!(
            tables(&db).await,
            [
                "alert_events",
                "alert_rules",
                "backends",
                "incidents",
                "lb_requests",
                "lb_targets",
                "retry_cost_parameters",
                "rollup_requests_1h",
                "rollup_requests_1m",
                "slo_objectives"
            ]
        );
        let req = columns(&db, "lb_requests");
        assert_eq!(req.len(), 22);
        let col = |cols: &[(String, ColumnType, bool)], name: &str| {
            cols.iter().find(|c| c.0 == name).map(|c| (c.1, c.2)).expect("column")
        };
        assert_eq!(req[0], ("ts".to_string(), ColumnType::Timestamp, false));
        assert_eq!(col(&req, "attempt"), (ColumnType::SmallInt, false));
        assert_eq!(col(&req, "target_status"), (ColumnType::SmallInt, true));
        assert_eq!(col(&req, "response_bytes"), (ColumnType::BigInt, false));
        assert_eq!(col(&req, "retry_after"), (ColumnType::Int, true));
        assert_eq!(col(&columns(&db, "lb_targets"), "error_rate"), (ColumnType::Double, true));
        assert_eq!(col(&columns(&db, "backends"), "backend"), (ColumnType::Text, false));
        assert_eq!(col(&columns(&db, "incidents"), "started_at"), (ColumnType::Timestamp, false));
        let lb_req = db.engine().table("lb_requests").expect("lb_requests");
        assert!(lb_req.def.time.is_some(), "lb_requests is a time-series table");
        assert!(db.engine().table("backends").expect("backends").def.time.is_none(), "backends is a plain table");
        let recorded: Vec<String> =
            serde_json::from_value(db.engine().object(APPLIED_KEY).expect("recorded")).expect("list");
        assert_eq!(recorded, FILES.iter().map(|f| f.name).collect::<Vec<_>>());

        // The generator writes exactly the tables' columns (names, types, nullability, order).
        use trafficdb_schema::generate;
        for (table, schema) in [
            ("lb_requests", generate::requests_schema()),
            ("lb_targets", generate::targets_schema()),
            ("backends", generate::backends_schema()),
            ("incidents", generate::incidents_schema()),
        ] {
            let t = db.engine().table(table).expect("table");
            let stored: Vec<_> = t
                .schema
                .fields()
                .iter()
                .zip(&t.def.columns)
                .map(|(f, c)| (f.name().clone(), f.data_type().clone(), c.nullable))
                .collect();
            let generated: Vec<_> =
                schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect();
            assert_eq!(stored, generated, "{table}");
        }

        // The views plan, and survive a restart.
        let views = [
            "kpi_requests_1m",
            "kpi_requests_1h",
            "kpi_latency_1m",
            "kpi_latency_1h",
            "kpi_lb_latency_1m",
            "kpi_lb_latency_1h",
            "kpi_backend_health_1m",
            "kpi_backend_health_1h",
            "kpi_slo_burn",
            "retry_training",
            "kpi_anomalies",
            "kpi_rollup_1m",
            "kpi_rollup_1h",
        ];
        for v in views {
            db.sql(&format!("SELECT * FROM {v}")).await.unwrap_or_else(|e| panic!("{v}: {e}"));
        }
        db.close().expect("close");
        let db = trafficdb_schema::open(tmp.path(), false).await.expect("reopen");
        for v in views {
            db.sql(&format!("SELECT * FROM {v} LIMIT 1")).await.unwrap_or_else(|e| panic!("{v} after restart: {e}"));
        }

        // A dropped table stays dropped; reopening applies nothing.
        db.sql("DROP TABLE incidents").await.expect("drop");
        db.close().expect("close");
        let db = trafficdb_schema::open(tmp.path(), false).await.expect("reopen");
        assert_eq!(
            tables(&db).await,
            [
                "alert_events",
                "alert_rules",
                "backends",
                "lb_requests",
                "lb_targets",
                "retry_cost_parameters",
                "rollup_requests_1h",
                "rollup_requests_1m",
                "slo_objectives"
            ]
        );
        db.close().expect("close");
    });
}

#[test]
fn empty_directories_and_crashes_halfway() {
    let rt = runtime();
    rt.block_on(async {
        // --empty: no tables, and none later.
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = trafficdb_schema::open(tmp.path(), true).await.expect("open empty");
        assert!(tables(&db).await.is_empty());
        assert!(db.engine().object(APPLIED_KEY).is_none());
        db.close().expect("close");
        let db = trafficdb_schema::open(tmp.path(), false).await.expect("reopen");
        assert!(tables(&db).await.is_empty(), "an existing directory does not take the schema later");
        db.close().expect("close");

        // A crash after the first file was applied and recorded, and the second applied but not
        // recorded: the next open applies the rest, the second one again without harm.
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = trafficdb::Database::open(tmp.path()).await.expect("open");
        db.sql(FILES[0].sql).await.expect("first file");
        db.sql(FILES[1].sql).await.expect("second file");
        db.engine().put_object(APPLIED_KEY, Some(serde_json::json!([FILES[0].name]))).expect("record");
        db.close().expect("close");
        let db = trafficdb_schema::open(tmp.path(), false).await.expect("reopen");
        assert_eq!(
            tables(&db).await,
            [
                "alert_events",
                "alert_rules",
                "backends",
                "incidents",
                "lb_requests",
                "lb_targets",
                "retry_cost_parameters",
                "rollup_requests_1h",
                "rollup_requests_1m",
                "slo_objectives"
            ]
        );
        assert_eq!(trafficdb_schema::upgrade(&db).await.expect("nothing left"), Vec::<&str>::new());
        // A file applied twice changes nothing: the cost parameters keep their one row.
        let last = FILES.last().expect("files");
        db.sql(last.sql).await.expect("applied again");
        let rows = db.sql("SELECT count(*) FROM retry_cost_parameters").await.expect("count");
        let n =
            rows[0].column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().expect("count").value(0);
        assert_eq!(n, 1, "{} applied twice", last.name);
        db.close().expect("close");
    });
}
