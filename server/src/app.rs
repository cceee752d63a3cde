//! The composition root: the only module that knows both listeners. Binds the PostgreSQL and HTTP
//! listeners over one database, runs the background work (continuous rollups, alert rules and their
//! webhooks), and shuts down in order: stop accepting, stop the background work, end the
//! connections, flush the database.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use trafficdb::Database;

use crate::config::ServerConfig;
use crate::ingest::dedup::Dedup;
use crate::ops::metrics::{ServerMetrics, metrics_table};
use crate::ops::stats::Stats;
use crate::pgwire::listener::Listener;
use crate::security::audit::Audit;

/// A bound server, ready to run.
pub struct Server {
    pg: Listener,
    http: Option<TcpListener>,
    db: Arc<Database>,
    config: Arc<ServerConfig>,
    stats: Arc<Stats>,
    audit: Arc<Audit>,
    metrics: Arc<ServerMetrics>,
}

impl Server {
    /// Binds `config.listen` (and `config.http`) and prepares the catalog emulation and TLS. Nothing
    /// is served until [`Server::run_until`].
    pub async fn bind(db: Arc<Database>, config: ServerConfig) -> anyhow::Result<Server> {
        config.validate()?;
        // Alert rules run under the sessions' limits (60 s when sessions have no timeout).
        let timeout =
            if config.statement_timeout.is_zero() { Duration::from_secs(60) } else { config.statement_timeout };
        db.set_background_limits(timeout, config.query_memory_limit);
        let audit = Arc::new(match &config.audit.path {
            Some(path) => Audit::open(path, config.audit.max_bytes, config.audit.max_files)?,
            None => Audit::disabled(),
        });
        let config = Arc::new(config);
        let stats = Arc::new(Stats::default());
        let metrics = Arc::new(ServerMetrics::new(stats.clone()));
        let pg = Listener::bind(&db, config.clone(), audit.clone(), stats.clone(), metrics.clone()).await?;
        let http = match &config.http {
            Some(addr) => Some(
                TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr} for HTTP: {e}"))?,
            ),
            None => None,
        };
        db.add_system_table("system_metrics", Arc::new(metrics_table(db.engine().clone(), metrics.clone())));
        Ok(Server { pg, http, db, config, stats, audit, metrics })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.pg.local_addr()
    }

    /// The HTTP listener's address, when one was configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The server's connection counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves connections until `shutdown` completes, then stops accepting, ends the open connections
    /// and flushes the database (memtables to segments; nothing acknowledged was ever at risk).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        // Continuous rollups and alert rules, in the background (each at its own interval).
        let rollups = {
            let db = self.db.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    if let Err(e) = db.refresh_due_rollups().await {
                        tracing::warn!("refreshing a materialized view failed: {e}");
                    }
                    // Alert rules after the rollups they may read.
                    if let Err(e) = db.evaluate_alerts(None).await {
                        tracing::warn!("evaluating alert rules failed: {e}");
                    }
                    // Also what CALL evaluate_alerts() found.
                    crate::ops::webhook::send_all(db.take_alert_outbox());
                }
            })
        };
        self.metrics.ready.store(true, Ordering::Release);
        let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
        let http = self.http.map(|listener| {
            let router = crate::http::router(crate::http::App {
                db: self.db.clone(),
                config: self.config.clone(),
                audit: self.audit.clone(),
                dedup: Arc::new(Dedup::default()),
                metrics: self.metrics.clone(),
            });
            let mut stopped = http_stopped.clone();
            let max_http = self.config.max_http_connections;
            tokio::spawn(async move {
                let stop = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                let listener = crate::http::LimitedListener::new(listener, max_http);
                if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
                    tracing::error!("HTTP server failed: {e}");
                }
            })
        });
        let mut connections = self.pg.serve_until(shutdown).await;
        self.metrics.ready.store(false, Ordering::Release);
        tracing::info!("shutting down: closing connections and flushing");
        // A refresh cut short is repeated at the next start (its watermark moves only when it is done).
        rollups.abort();
        let _ = rollups.await;
        let _ = stop_http.send(true);
        if let Some(http) = http {
            let _ = http.await;
        }
        connections.shutdown().await;
        let engine = self.db.engine().clone();
        tokio::task::spawn_blocking(move || engine.close()).await??;
        Ok(())
    }
}
