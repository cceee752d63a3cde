//! The load-balancer domain: table and view definitions (numbered `.sql` files applied in order) and the
//! synthetic telemetry generator. Uses only the engine's public API.
//!
//! A data directory created through [`open`] gets the schema (unless the caller asks for an empty
//! database) and remembers, in a catalog object, which files it has had. Each file is recorded once
//! applied, so a crash halfway through is finished at the next open, and a later release's new files
//! are applied to an existing directory. A directory created empty, or before the schema existed,
//! never gets it. A table the user drops stays dropped.
//!
//! Modules: this file (the schema files and how they are applied) and [`generate`] (the telemetry
//! generator: `generate::columns`: the schemas and Arrow builders of the generated tables; `generate::output` writes them
//! as CSV, Parquet or straight into a database). A new table or view is a new numbered file in
//! `schema/sql`, added to [`FILES`], documented in `docs/schema.md`.

pub mod generate;

use std::path::Path;

use trafficdb::Database;

/// One schema file, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct SchemaFile {
    pub name: &'static str,
    pub sql: &'static str,
}

/// The schema files, in the order they are applied.
pub const FILES: &[SchemaFile] = &[
    SchemaFile { name: "001_lb_requests.sql", sql: include_str!("../sql/001_lb_requests.sql") },
    SchemaFile { name: "002_lb_targets.sql", sql: include_str!("../sql/002_lb_targets.sql") },
    SchemaFile { name: "003_backends.sql", sql: include_str!("../sql/003_backends.sql") },
    SchemaFile { name: "004_incidents.sql", sql: include_str!("../sql/004_incidents.sql") },
    SchemaFile { name: "005_slo_objectives.sql", sql: include_str!("../sql/005_slo_objectives.sql") },
    SchemaFile { name: "006_kpi_views.sql", sql: include_str!("../sql/006_kpi_views.sql") },
    SchemaFile { name: "007_retry_training.sql", sql: include_str!("../sql/007_retry_training.sql") },
    SchemaFile { name: "008_kpi_anomalies.sql", sql: include_str!("../sql/008_kpi_anomalies.sql") },
    SchemaFile { name: "009_retry_model.sql", sql: include_str!("../sql/009_retry_model.sql") },
    SchemaFile { name: "010_rollups.sql", sql: include_str!("../sql/010_rollups.sql") },
    SchemaFile { name: "011_alerts.sql", sql: include_str!("../sql/011_alerts.sql") },
    // The retry views with the client's history after its own failures: 007 and 009 again, for
    // directories that had them before (every statement in them can be applied twice).
    SchemaFile {
        name: "012_retry_client_history.sql",
        sql: concat!(include_str!("../sql/007_retry_training.sql"), "\n", include_str!("../sql/009_retry_model.sql")),
    },
    // kpi_anomalies weighing each minute by its requests and keeping anomalies out of the baseline: 008
    // again, for directories that had it before.
    SchemaFile { name: "013_kpi_anomalies_weighted.sql", sql: include_str!("../sql/008_kpi_anomalies.sql") },
];

/// The catalog object listing the schema files a directory has had.
pub const APPLIED_KEY: &str = "schema.applied";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Database(#[from] trafficdb::Error),
    #[error("schema file {file}: {source}")]
    File { file: &'static str, source: trafficdb::Error },
    #[error("the catalog object {APPLIED_KEY} is not a list of file names: {0}")]
    Record(serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Opens the data directory `dir`, creating it if missing. A directory created here gets the
/// load-balancer schema unless `empty`; an existing one gets the schema files it is missing, if it
/// took the schema when it was created.
pub async fn open(dir: impl AsRef<Path>, empty: bool) -> Result<Database> {
    open_with(dir, empty, trafficdb::Options::default()).await
}

/// [`open`] with engine options.
pub async fn open_with(dir: impl AsRef<Path>, empty: bool, options: trafficdb::Options) -> Result<Database> {
    let dir = dir.as_ref();
    let new = !dir.join(trafficdb::catalog::CATALOG_FILE).exists();
    let db = Database::open_with(dir, options).await?;
    if new && !empty {
        install(&db).await?;
    } else {
        upgrade(&db).await?;
    }
    Ok(db)
}

/// Gives `db` the load-balancer schema (the files it does not have yet), whether or not it was created
/// with it, and keeps it up to date at later opens.
pub async fn install(db: &Database) -> Result<Vec<&'static str>> {
    if db.engine().object(APPLIED_KEY).is_none() {
        db.engine().put_object(APPLIED_KEY, Some(serde_json::json!([])))?;
    }
    upgrade(db).await
}

/// Applies, in order, the schema files `db` takes and has not had yet; returns their names. Each is
/// recorded in the catalog once applied (its statements are `IF NOT EXISTS`, so a file applied but not
/// yet recorded when a crash came is harmless to apply again).
pub async fn upgrade(db: &Database) -> Result<Vec<&'static str>> {
    let Some(record) = db.engine().object(APPLIED_KEY) else { return Ok(Vec::new()) };
    let mut applied: Vec<String> = serde_json::from_value(record).map_err(Error::Record)?;
    let mut now = Vec::new();
    for file in FILES {
        if applied.iter().any(|a| a == file.name) {
            continue;
        }
        db.sql(file.sql).await.map_err(|source| Error::File { file: file.name, source })?;
        applied.push(file.name.to_string());
        db.engine().put_object(APPLIED_KEY, Some(serde_json::json!(applied)))?;
        now.push(file.name);
    }
    Ok(now)
}
