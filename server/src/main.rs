//! The `trafficdb` binary.

mod format;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use trafficdb::Output;

#[derive(Parser)]
#[command(
    name = "trafficdb",
    version,
    about = "An embedded time-series database for load-balancer telemetry",
    long_about = "trafficdb stores load-balancer request logs and health samples in compressed, \
                  time-partitioned columnar files and answers SQL (Apache DataFusion, PostgreSQL dialect)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run SQL against a data directory, in-process (no server).
    ///
    /// Each -c is one or more statements; results are printed in order. Without -c, SQL is read from
    /// standard input. The exit status is 1 if a statement fails (the error and its SQLSTATE go to stderr).
    #[command(
        after_help = "Examples:\n  trafficdb sql -d ./data -c \"CREATE TABLE t (ts TIMESTAMP, v DOUBLE) WITH (time_column = 'ts')\"\n  trafficdb sql -d ./data -c \"SELECT count(*) FROM t\" --format csv\n  echo \"SELECT 1\" | trafficdb sql -d ./data"
    )]
    Sql(SqlArgs),
    /// Serve a data directory over the PostgreSQL wire protocol.
    ///
    /// Connect with any PostgreSQL client, e.g. `psql -h 127.0.0.1 -p 5432 -d trafficdb`. The server
    /// binds to loopback by default. SIGTERM or Ctrl-C stops it cleanly: it stops accepting, closes the
    /// connections and flushes (every acknowledged write is already durable in the write-ahead log).
    #[command(after_help = "Settings come from, in order of precedence: these options, TRAFFICDB_* environment \
                      variables (every setting has one: docs/configuration.md), the --config file, the defaults shown.\n\nExamples:\n  \
                      trafficdb serve -d ./data\n  trafficdb serve -d ./data --config trafficdb.toml --auth password")]
    Serve(ServeArgs),
    /// Print a [[users]] entry for the configuration file, with the password stored as a hash.
    ///
    /// The password is read from standard input (one line; not echoed on a terminal). The entry holds a
    /// SCRAM-SHA-256 verifier (or, with --md5, the MD5 hash old clients need), in the form PostgreSQL
    /// stores in pg_authid, so entries can also be copied from a PostgreSQL server.
    #[command(after_help = "Example:\n  echo 's3cret' | trafficdb passwd grafana --role reader >> trafficdb.toml")]
    Passwd(PasswdArgs),
    /// Generate realistic load-balancer telemetry: request logs with retries, target health samples,
    /// the backends and the injected incidents.
    ///
    /// Writes lb_requests, lb_targets, backends and incidents as CSV or Parquet files into --output, or
    /// appends them to the tables of a data directory with --into. The same options and seed give the
    /// same data, byte for byte. See docs/generator.md for the model.
    #[command(after_help = "Examples:\n  trafficdb generate --rows 10000000 --days 1 --output ./gen\n  \
                      trafficdb generate --rows 1000000 --format csv --output ./gen --seed 7\n  \
                      trafficdb generate --rows 3000000 --into ./data")]
    Generate(GenerateArgs),
    /// Append Parquet files to a table of a data directory, in-process (no server).
    ///
    /// Columns are matched by name and cast to the table's types as INSERT does; columns the table has
    /// and the files lack are NULL. Rows are written straight to segments in the table's storage order
    /// (time, then its sort key), a run at a time, each segment durable and visible once written
    /// (every 1,048,576 rows of a partition); a bad file or value stops the import with the file and
    /// row it was at, and the rows before it stay (the message says how many). Time-ordered files make
    /// the fewest segments.
    #[command(after_help = "Examples:\n  trafficdb generate --rows 1000000 --days 1 --output ./gen\n  \
                      trafficdb import -d ./data lb_requests ./gen/lb_requests.parquet\n  \
                      trafficdb import -d ./data lb_targets ./gen/lb_targets.parquet")]
    Import(ImportArgs),
    /// Back up a data directory, while a server may be writing to it.
    ///
    /// Copies the sealed segments the catalog lists, then the write-ahead log from the catalog's replay
    /// point, then the catalog (docs/operations.md): the backup holds every row acknowledged before it
    /// began, each transaction whole. No lock is taken; writes and queries go on. A `BACKUP` file in
    /// DEST marks the backup complete.
    #[command(after_help = "Examples:\n  trafficdb backup -d ./data --to /backups/trafficdb-2026-12-01\n  \
                      trafficdb backup -d ./data --to ./data-snapshot --link")]
    Backup(BackupArgs),
    /// Restore a backup into a new data directory, and check that it opens.
    ///
    /// Copies the backup's files into DIR (which must be missing or empty), opens it (replaying the
    /// copied write-ahead log), prints each table's rows, and flushes. Start a server on DIR afterwards.
    #[command(after_help = "Example:\n  trafficdb restore --from /backups/trafficdb-2026-12-01 -d ./data-restored")]
    Restore(RestoreArgs),
    /// Run a worker of a cluster: it runs the stages a coordinator (`serve` with [cluster] workers)
    /// sends it, reading segments from the object store through a local cache.
    ///
    /// A worker keeps no data of its own: stop, add or replace workers freely (a query running on a
    /// worker that stops fails, and can be run again). See docs/scale-out.md.
    #[command(after_help = "Example:
  trafficdb worker --listen 10.0.0.2:50051 --object-store s3://telemetry/lb \
                          --cache-dir /var/cache/trafficdb --cache-size 50GiB")]
    Worker(WorkerArgs),
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// Address for the coordinator and the other workers (gRPC).
    #[arg(long, env = "TRAFFICDB_WORKER_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
    /// The object store the coordinator's data directory writes through ([storage] object_store).
    #[arg(long, env = "TRAFFICDB_STORAGE_OBJECT_STORE", value_name = "URL")]
    object_store: String,
    /// Where fetched segments are kept (emptied at start).
    #[arg(long, env = "TRAFFICDB_WORKER_CACHE_DIR", value_name = "DIR")]
    cache_dir: PathBuf,
    /// The most segment bytes kept in --cache-dir, e.g. 20GiB.
    #[arg(long, env = "TRAFFICDB_WORKER_CACHE_SIZE", default_value = "10GiB", value_parser = trafficdb_server::config::parse_bytes)]
    cache_size: u64,
}

#[derive(clap::Args)]
struct BackupArgs {
    /// The data directory to back up.
    #[arg(short = 'd', long, env = "TRAFFICDB_DATA_DIR")]
    data_dir: PathBuf,
    /// Where to write the backup: a directory that is missing or empty.
    #[arg(long, value_name = "DEST")]
    to: PathBuf,
    /// Hard-link segments instead of copying them (same file system only). Fast, but the backup then
    /// shares storage with the database: copy it elsewhere to survive a disk failure.
    #[arg(long)]
    link: bool,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The backup (a directory written by `trafficdb backup`).
    #[arg(long, value_name = "BACKUP")]
    from: PathBuf,
    /// The data directory to create: missing or empty.
    #[arg(short = 'd', long, env = "TRAFFICDB_DATA_DIR")]
    data_dir: PathBuf,
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The data directory (created if missing, with the load-balancer schema unless --empty).
    #[arg(short = 'd', long, env = "TRAFFICDB_DATA_DIR")]
    data_dir: PathBuf,
    /// Create a new data directory without the load-balancer schema.
    #[arg(long)]
    empty: bool,
    /// The table to append to; it must exist.
    table: String,
    /// Parquet files, appended in order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Rows of lb_requests to generate (exactly; about 1% are logged health checks).
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Seed of the random streams.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// First day (UTC): YYYY-MM-DD or YYYY-MM-DD HH:MM:SS.
    #[arg(long, default_value = "2024-01-01")]
    start: String,
    /// Days the rows are spread over (the request rate follows from --rows and --days).
    #[arg(long, default_value_t = 7.0)]
    days: f64,
    /// Load balancers.
    #[arg(long, default_value_t = 2)]
    lbs: u32,
    /// Backends (pools of 3-8 targets each), spread over the load balancers.
    #[arg(long, default_value_t = 8)]
    backends: u32,
    /// Distinct clients (traffic is skewed towards a few heavy ones).
    #[arg(long, default_value_t = 10_000)]
    clients: u32,
    /// Incidents injected per day (target outage, latency regression, zone loss, bad deploy, retry storm).
    #[arg(long, default_value_t = 3.0)]
    incidents_per_day: f64,
    /// File format with --output.
    #[arg(long, value_enum, default_value_t = GenFormat::Parquet)]
    format: GenFormat,
    /// Directory for the files (<table>.parquet or <table>.csv); created if missing.
    #[arg(long, value_name = "DIR", conflicts_with = "into", required_unless_present = "into")]
    output: Option<PathBuf>,
    /// Append to the tables of this data directory instead (created with the schema if missing;
    /// lb_requests must be empty).
    #[arg(long, value_name = "DIR")]
    into: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum GenFormat {
    Parquet,
    Csv,
}

impl GenerateArgs {
    fn config(&self) -> anyhow::Result<trafficdb_schema::generate::Config> {
        Ok(trafficdb_schema::generate::Config {
            rows: self.rows,
            seed: self.seed,
            start_us: trafficdb_schema::generate::parse_start(&self.start)?,
            days: self.days,
            lbs: self.lbs,
            backends: self.backends,
            clients: self.clients,
            incidents_per_day: self.incidents_per_day,
            ..Default::default()
        })
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The data directory (created if missing, with the load-balancer schema unless --empty).
    #[arg(short = 'd', long, env = "TRAFFICDB_DATA_DIR")]
    data_dir: PathBuf,
    /// Create a new data directory without the load-balancer schema (lb_requests, lb_targets, backends,
    /// incidents); an existing directory is left as it is.
    #[arg(long)]
    empty: bool,
    /// A TOML configuration file ([server], [storage], [audit], [[users]]; see docs/configuration.md).
    #[arg(long, env = "TRAFFICDB_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on for PostgreSQL clients [default: 127.0.0.1:5432].
    #[arg(long, env = "TRAFFICDB_LISTEN")]
    listen: Option<String>,
    /// Address for HTTP: health probes, /metrics, /api/v1/status, line-protocol writes (/api/v2/write,
    /// /write) and POST /v1/predict/retry (docs/operations.md) [default: none].
    #[arg(long, env = "TRAFFICDB_HTTP", value_name = "ADDR")]
    http: Option<String>,
    /// How clients authenticate: trust, or password (SCRAM-SHA-256; MD5 for users stored as MD5) [default: trust].
    #[arg(long, env = "TRAFFICDB_AUTH", value_enum)]
    auth: Option<trafficdb_server::config::AuthMode>,
    /// Connections beyond this are refused with SQLSTATE 53300 [default: 100].
    #[arg(long, env = "TRAFFICDB_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Cancel statements running longer (SQLSTATE 57014), e.g. 30s, 5min; 0 for none [default: 0].
    #[arg(long, env = "TRAFFICDB_STATEMENT_TIMEOUT", value_parser = trafficdb_server::config::parse_duration)]
    statement_timeout: Option<std::time::Duration>,
    /// Memory one connection's query may use in sorts, aggregations and joins before it fails
    /// (SQLSTATE 53200), e.g. 512MiB, 4GiB; 0 for none [default: 4GiB].
    #[arg(long, env = "TRAFFICDB_QUERY_MEMORY_LIMIT", value_parser = trafficdb_server::config::parse_bytes)]
    query_memory_limit: Option<u64>,
    /// On a data directory whose lb_requests is empty, first generate a week of demo telemetry ending
    /// now (3 million requests; a few seconds).
    #[arg(long)]
    demo: bool,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, env = "TRAFFICDB_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, env = "TRAFFICDB_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ServeArgs {
    /// The file's settings with the command line and environment on top.
    fn server_config(&self) -> anyhow::Result<trafficdb_server::ServerConfig> {
        let mut c =
            trafficdb_server::ServerConfig::load_with_env(self.config.as_deref(), |name| std::env::var(name).ok())?;
        if let Some(v) = &self.listen {
            c.listen = v.clone();
        }
        if let Some(v) = &self.http {
            c.http = Some(v.clone());
        }
        if let Some(v) = self.auth {
            c.auth = v;
        }
        if let Some(v) = self.max_connections {
            c.max_connections = v;
        }
        if let Some(v) = self.statement_timeout {
            c.statement_timeout = v;
        }
        if let Some(v) = self.query_memory_limit {
            c.query_memory_limit = v;
        }
        if self.tls_cert.is_some() {
            c.tls_cert = self.tls_cert.clone();
            c.tls_key = self.tls_key.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

#[derive(clap::Args)]
struct PasswdArgs {
    /// The user name.
    user: String,
    /// The user's role.
    #[arg(long, value_enum, default_value = "reader")]
    role: trafficdb_server::security::roles::Role,
    /// Store an MD5 hash instead of a SCRAM-SHA-256 verifier (only for clients that cannot do SCRAM).
    #[arg(long)]
    md5: bool,
}

#[derive(clap::Args)]
struct SqlArgs {
    /// The data directory (created if missing, with the load-balancer schema unless --empty).
    #[arg(short = 'd', long, env = "TRAFFICDB_DATA_DIR")]
    data_dir: PathBuf,
    /// Create a new data directory without the load-balancer schema (lb_requests, lb_targets, backends,
    /// incidents); an existing directory is left as it is.
    #[arg(long)]
    empty: bool,
    /// SQL to run; may be given several times.
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    commands: Vec<String>,
    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Aligned columns, as psql prints them.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of objects per result.
    Json,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRAFFICDB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Planning recurses once per nesting level: 8 MiB stacks hold several times the deepest statement
    // the nesting limit lets through (about 1,500 levels overflowed tokio's default 2 MiB).
    let rt = match tokio::runtime::Builder::new_multi_thread().thread_stack_size(8 << 20).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Sql(args) => rt.block_on(run_sql(args)),
        Command::Serve(args) => exit(rt.block_on(serve(args))),
        Command::Passwd(args) => exit(passwd(args)),
        Command::Generate(args) => exit(rt.block_on(generate(args))),
        Command::Import(args) => exit(rt.block_on(import(args))),
        Command::Backup(args) => exit(backup(args)),
        Command::Restore(args) => exit(restore(args)),
        Command::Worker(args) => exit(rt.block_on(worker(args))),
    }
}

fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let (worker, _cache) = trafficdb_server::cluster::worker(&args.object_store, &args.cache_dir, args.cache_size)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    eprintln!(
        "trafficdb worker on {}, reading {} (cache {} up to {} bytes)",
        listener.local_addr()?,
        args.object_store,
        args.cache_dir.display(),
        args.cache_size
    );
    trafficdb_server::cluster::serve_worker(listener, worker, shutdown_signal()).await
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.server_config()?;
    let db = trafficdb_schema::open_with(&args.data_dir, args.empty, config.storage.options()?).await?;
    if args.demo {
        demo(&db).await?;
    }
    let db = if config.cluster.workers.is_empty() {
        db
    } else {
        // The directory's store: configured, or recorded by an earlier opener.
        let Some(store) = db.engine().options().store.as_ref().map(|s| s.url().to_string()) else {
            anyhow::bail!(
                "[cluster] workers needs an object store ([storage] object_store): the workers read segments from it"
            )
        };
        let db = trafficdb_server::cluster::coordinator(db, &config.cluster, &store).await?;
        eprintln!("coordinating workers {} over {store}", config.cluster.workers.join(", "));
        db
    };
    let db = std::sync::Arc::new(db);
    let auth = config.auth;
    let tls = config.tls_cert.is_some();
    let server = trafficdb_server::Server::bind(db, config).await?;
    let addr = server.local_addr()?;
    let auth = if auth == trafficdb_server::config::AuthMode::Trust { "trust" } else { "password" };
    eprintln!(
        "trafficdb serving {} on {addr} (auth {auth}, TLS {})",
        args.data_dir.display(),
        if tls { "on" } else { "off" }
    );
    eprintln!("  psql -h {} -p {} -d trafficdb", addr.ip(), addr.port());
    if let Some(http) = server.http_addr() {
        eprintln!(
            "  HTTP on {http}: the console at http://{http}/; GET /health, /metrics, /api/v1/status; POST /api/v1/query (SQL), /api/v2/write (line protocol), /v1/predict/retry"
        );
    }
    if args.demo {
        eprintln!(
            "  Power BI: Get Data > PostgreSQL database, server {}:{}, database trafficdb, \
             then the kpi_* views (docs/power-bi.md)",
            addr.ip(),
            addr.port()
        );
        eprintln!("  try: SELECT * FROM kpi_requests_1h ORDER BY bucket DESC LIMIT 10;");
    }
    server.run_until(shutdown_signal()).await
}

/// Rows of demo telemetry `serve --demo` generates.
const DEMO_ROWS: u64 = 3_000_000;

/// Fills an empty lb_requests with a week of telemetry ending now.
async fn demo(db: &trafficdb::Database) -> anyhow::Result<()> {
    let Some(t) = db.engine().table("lb_requests") else {
        anyhow::bail!("--demo needs the load-balancer schema, which this data directory was created without (--empty)")
    };
    if t.snapshot().num_rows() > 0 {
        eprintln!("demo data: lb_requests already has rows; leaving them as they are");
        return demo_model(db).await;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let cfg = trafficdb_schema::generate::Config {
        rows: DEMO_ROWS,
        start_us: (now / 60 * 60 - 7 * 86_400) * 1_000_000,
        days: 7.0,
        ..Default::default()
    };
    eprintln!("demo data: generating a week of telemetry ({DEMO_ROWS} requests)");
    let summary = tokio::task::block_in_place(|| load_with_progress(db, cfg))?;
    eprintln!(
        "demo data: {} requests, {} target samples, {} incidents",
        summary.requests, summary.targets, summary.incidents
    );
    demo_model(db).await
}

/// Trains and deploys the `retry` model on the demo data unless a version is already deployed.
async fn demo_model(db: &trafficdb::Database) -> anyhow::Result<()> {
    if db.models().resolve("retry", None).is_ok() {
        return Ok(());
    }
    eprintln!("demo model: training the retry model on retry_features (docs/retry-model.md)");
    let batches = db.sql(DEMO_TRAINING).await?;
    let row = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?;
    eprintln!("{row}");
    Ok(())
}

/// How `serve --demo` trains the `retry` model: boosted trees on the week's retryable failures (nothing
/// else is retried), the last fifth held out; the baseline is the client's past retry share.
const DEMO_TRAINING: &str = "SELECT model, version, rows_train, rows_eval, round(auc_roc, 4) AS auc_roc, \
    round(log_loss, 4) AS log_loss, round(baseline_auc_roc, 4) AS baseline_auc_roc, iterations, deployed \
    FROM train_retry_model('retry', 'SELECT * FROM retry_features WHERE retryable', 'model_type=boosted_trees, deploy=true')";

fn progress_bar(rows: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(rows);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} rows  {per_sec}  eta {eta}")
            .expect("the template is valid"),
    );
    bar
}

fn load_with_progress(
    db: &trafficdb::Database,
    cfg: trafficdb_schema::generate::Config,
) -> anyhow::Result<trafficdb_schema::generate::Summary> {
    let bar = progress_bar(cfg.rows);
    let summary = trafficdb_schema::generate::load_into(db, cfg, &|n| bar.set_position(n));
    bar.finish_and_clear();
    Ok(summary?)
}

async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let started = std::time::Instant::now();
    let rows = cfg.rows;
    let summary = match (&args.output, &args.into) {
        (_, Some(dir)) => {
            let db = trafficdb_schema::open(dir, false).await?;
            let summary = tokio::task::block_in_place(|| load_with_progress(&db, cfg))?;
            db.close()?;
            summary
        }
        (Some(dir), None) => {
            let format = match args.format {
                GenFormat::Parquet => trafficdb_schema::generate::FileFormat::Parquet,
                GenFormat::Csv => trafficdb_schema::generate::FileFormat::Csv,
            };
            let bar = progress_bar(rows);
            let r = tokio::task::block_in_place(|| {
                trafficdb_schema::generate::write_files(cfg, format, dir, &|n| bar.set_position(n))
            });
            bar.finish_and_clear();
            r?
        }
        (None, None) => anyhow::bail!("give --output DIR or --into DIR"),
    };
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "generated {} lb_requests rows ({:.0} rows/s), {} lb_targets rows, {} backends, {} incidents in {secs:.2} s",
        summary.requests,
        summary.requests as f64 / secs,
        summary.targets,
        summary.backends,
        summary.incidents
    );
    for f in &summary.files {
        eprintln!("  {}", f.display());
    }
    Ok(())
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let db = trafficdb_schema::open(&args.data_dir, args.empty).await?;
    if db.engine().table(&args.table).is_none() {
        anyhow::bail!("table \"{}\" does not exist in {}", args.table, args.data_dir.display());
    }
    let started = std::time::Instant::now();
    let r = tokio::task::block_in_place(|| {
        let bar = progress_bar(0);
        let r = trafficdb_server::ingest::import::run(&db, &args.table, &args.files, &|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        });
        bar.finish_and_clear();
        r
    });
    // Flushed either way: what was appended is kept, and the directory is left closed cleanly.
    db.close()?;
    let rows = r?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("imported {rows} rows into {} in {secs:.2} s ({:.0} rows/s)", args.table, rows as f64 / secs);
    Ok(())
}

fn bytes_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes}  {bytes_per_sec}  eta {eta}")
            .expect("the template is valid"),
    );
    bar
}

fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let bar = bytes_bar();
    let options = trafficdb::backup::BackupOptions { link: args.link };
    let r = trafficdb::backup::backup(&args.data_dir, &args.to, options, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let m = r?;
    eprintln!(
        "backed up {} to {} in {:.2} s: {} segments ({} bytes{}), {} write-ahead log files ({} bytes), catalog version {}",
        args.data_dir.display(),
        args.to.display(),
        started.elapsed().as_secs_f64(),
        m.segments,
        m.segment_bytes,
        if m.linked { ", hard-linked" } else { "" },
        m.wal_files,
        m.wal_bytes,
        m.catalog_version
    );
    Ok(())
}

fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let bar = bytes_bar();
    let r = trafficdb::backup::restore(&args.from, &args.data_dir, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let m = r?;
    let engine = trafficdb::Engine::open(&args.data_dir, trafficdb::Options::default())?;
    eprintln!(
        "restored the backup of {} (catalog version {}) into {}",
        m.source,
        m.catalog_version,
        args.data_dir.display()
    );
    for t in engine.table_status() {
        eprintln!("  {:<28} {:>12} rows", t.name, t.segment_rows + t.memtable_rows);
    }
    engine.close()?;
    Ok(())
}

fn passwd(args: PasswdArgs) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let tty = std::io::stdin().is_terminal();
    let stty = |arg: &str| {
        let _ = std::process::Command::new("stty").arg(arg).stdin(std::process::Stdio::inherit()).status();
    };
    if tty {
        eprint!("Password for {}: ", args.user);
        let _ = std::io::stderr().flush();
        stty("-echo");
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if tty {
        stty("echo");
        eprintln!();
    }
    read?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        anyhow::bail!("empty password");
    }
    let secret = if args.md5 {
        trafficdb_server::security::secret::Secret::md5(&args.user, password)
    } else {
        trafficdb_server::security::secret::Secret::scram(password)
    };
    println!("[[users]]\nname = {:?}\nrole = \"{}\"\npassword = \"{secret}\"", args.user, args.role.name());
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn run_sql(args: SqlArgs) -> ExitCode {
    let scripts = if args.commands.is_empty() {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            eprintln!("error: cannot read SQL from standard input: {e}");
            return ExitCode::FAILURE;
        }
        vec![s]
    } else {
        args.commands
    };
    let db = match trafficdb_schema::open(&args.data_dir, args.empty).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("ERROR:  {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut status = ExitCode::SUCCESS;
    'scripts: for script in scripts {
        let stmts = match trafficdb::database::parse(&script) {
            Ok(s) => s,
            Err(e) => {
                report(&e);
                status = ExitCode::FAILURE;
                break;
            }
        };
        for stmt in stmts {
            let r = match db.execute(stmt).await {
                Ok(Output::Done(tag)) => {
                    if matches!(args.format, Format::Table) {
                        println!("{tag}");
                    }
                    Ok(())
                }
                Ok(Output::Stream(s) | Output::Returning { rows: s, .. }) => {
                    let schema = s.schema();
                    match trafficdb::datafusion::physical_plan::common::collect(s).await {
                        Ok(batches) => format::print(&schema, &batches, args.format).map_err(trafficdb::Error::from),
                        Err(e) => Err(e.into()),
                    }
                }
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                report(&e);
                status = ExitCode::FAILURE;
                break 'scripts;
            }
        }
    }
    if let Err(e) = db.close() {
        report(&e);
        status = ExitCode::FAILURE;
    }
    status
}

fn report(e: &trafficdb::Error) {
    eprintln!("ERROR:  {e}\nSQLSTATE: {}", e.sqlstate());
}
