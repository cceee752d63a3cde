//! The `trafficdb` binary.

mod format;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use trafficdb::datafusion::sql::parser::Statement as DFStatement;
use trafficdb::datafusion::sql::sqlparser::ast::Statement;
use trafficdb::{Database, Output};

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
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The data directory (created if missing).
    #[arg(short = 'd', long, env = "TRAFFICDB_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to listen on for PostgreSQL clients.
    #[arg(long, env = "TRAFFICDB_LISTEN", default_value = "127.0.0.1:5432")]
    listen: String,
}

#[derive(clap::Args)]
struct SqlArgs {
    /// The data directory (created if missing).
    #[arg(short = 'd', long, env = "TRAFFICDB_DATA_DIR")]
    data_dir: PathBuf,
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
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Sql(args) => rt.block_on(run_sql(args)),
        Command::Serve(args) => match rt.block_on(serve(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let db = std::sync::Arc::new(Database::open(&args.data_dir).await?);
    let server = trafficdb_server::Server::bind(db, &args.listen).await?;
    let addr = server.local_addr()?;
    eprintln!("trafficdb serving {} on {addr}", args.data_dir.display());
    eprintln!("  psql -h {} -p {} -d trafficdb", addr.ip(), addr.port());
    server.run_until(shutdown_signal()).await
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
    let db = match Database::open(&args.data_dir).await {
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
            let dml = dml_verb(&stmt);
            let r = match db.execute(stmt).await {
                Ok(Output::Done(tag)) => {
                    if matches!(args.format, Format::Table) {
                        println!("{tag}");
                    }
                    Ok(())
                }
                Ok(Output::Stream(s)) => {
                    let schema = s.schema();
                    match trafficdb::datafusion::physical_plan::common::collect(s).await {
                        Ok(batches) => match dml {
                            Some(verb) if matches!(args.format, Format::Table) => {
                                println!("{verb} {}", format::count_of(&batches));
                                Ok(())
                            }
                            _ => format::print(&schema, &batches, args.format).map_err(trafficdb::Error::from),
                        },
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

/// The psql-style verb for statements that report a row count.
fn dml_verb(stmt: &DFStatement) -> Option<&'static str> {
    match stmt {
        DFStatement::Statement(s) => match s.as_ref() {
            Statement::Insert(_) => Some("INSERT 0"),
            Statement::Delete(_) => Some("DELETE"),
            Statement::Update { .. } => Some("UPDATE"),
            Statement::Truncate(_) => Some("TRUNCATE"),
            _ => None,
        },
        _ => None,
    }
}
