//! The PostgreSQL wire server: datafusion-postgres's session service (simple and extended protocol,
//! `pg_catalog`, SET / SHOW / transactions / cursors) over the database's DataFusion session, with:
//!
//! - our own accept loop (so tests can bind port 0 and shutdown is clean: stop accepting, then flush);
//! - query hooks that route each statement and check the session's role on what will run
//!   ([`crate::router`]);
//! - an error handler that gives every error its SQLSTATE (datafusion-postgres reports XX000).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use datafusion::common::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireServerHandlers, RandomPidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use trafficdb::Database;

use crate::audit::Audit;
use crate::auth::{Authenticator, Parameters};
use crate::config::ServerConfig;
use crate::dedup::Dedup;
use crate::metrics::{ServerMetrics, metrics_table};
use crate::session::{Cancels, Session};

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    http: Option<TcpListener>,
    db: Arc<Database>,
    shared: Arc<Shared>,
}

/// What every connection shares.
struct Shared {
    config: Arc<ServerConfig>,
    /// The database's session context with the catalog emulation; each connection gets a context of
    /// its own built from it (see [`crate::session::connection_context`]).
    base: SessionContext,
    hooks: Vec<Arc<dyn QueryHook>>,
    copier: Arc<crate::copy::Copier>,
    parameters: Arc<Parameters>,
    pids: Arc<RandomPidSecretKeyGenerator>,
    cancels: Arc<Cancels>,
    tls: Option<TlsAcceptor>,
    stats: Arc<Stats>,
    audit: Arc<Audit>,
    dedup: Arc<Dedup>,
    metrics: Arc<ServerMetrics>,
}

/// Connection counters, readable while the server runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now (including one being refused for the connection limit).
    pub active: AtomicUsize,
    /// Connections accepted since the server started.
    pub accepted: AtomicU64,
    /// Connections whose task panicked. Each is a bug: no input may reach a panic. The panic ends
    /// that connection only; it is logged as an error.
    pub panicked: AtomicU64,
    /// Connections not yet authenticated (at most `max_pending_connections`).
    pub pending: AtomicUsize,
    /// Authenticated connections (at most `max_connections`).
    pub authenticated: AtomicUsize,
}

/// A connection slot (pending or authenticated), given back when dropped.
pub struct Slot {
    stats: Arc<Stats>,
    authenticated: bool,
}

impl Stats {
    fn counter(&self, authenticated: bool) -> &AtomicUsize {
        if authenticated { &self.authenticated } else { &self.pending }
    }

    /// Takes a slot of the kind, unless `max` are taken.
    pub fn take_slot(self: &Arc<Self>, authenticated: bool, max: usize) -> Option<Slot> {
        let counter = self.counter(authenticated);
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Slot { stats: self.clone(), authenticated })
    }
}

impl Slot {
    /// The counters the slot belongs to.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.counter(self.authenticated).fetch_sub(1, Ordering::SeqCst);
    }
}

impl Server {
    /// Binds `config.listen` and prepares the catalog emulation and TLS. Nothing is served until
    /// [`Server::run_until`].
    pub async fn bind(db: Arc<Database>, config: ServerConfig) -> anyhow::Result<Server> {
        config.validate()?;
        // Alert rules run under the sessions' limits (60 s when sessions have no timeout).
        let timeout =
            if config.statement_timeout.is_zero() { Duration::from_secs(60) } else { config.statement_timeout };
        db.set_background_limits(timeout, config.query_memory_limit);
        let base = db.session().clone();
        crate::catalog::install(&db, &base)?;
        crate::compat::register_functions(&base, db.engine().clone());
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let listen = config.listen.clone();
        let listener =
            TcpListener::bind(&listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let http = match &config.http {
            Some(addr) => Some(
                TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr} for HTTP: {e}"))?,
            ),
            None => None,
        };
        let audit = Arc::new(match &config.audit.path {
            Some(path) => Audit::open(path, config.audit.max_bytes, config.audit.max_files)?,
            None => Audit::disabled(),
        });
        let config = Arc::new(config);
        let router = crate::router::Router::new(db.clone(), audit.clone(), config.clone());
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            router.clone(),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
            Arc::new(crate::router::Planned(router)),
        ];
        let stats = Arc::new(Stats::default());
        let metrics = Arc::new(ServerMetrics::new(stats.clone()));
        db.add_system_table("system_metrics", Arc::new(metrics_table(db.engine().clone(), metrics.clone())));
        let shared = Arc::new(Shared {
            config,
            base,
            hooks,
            copier: Arc::new(crate::copy::Copier { db: db.clone() }),
            parameters: Arc::new(Parameters::default()),
            pids: Arc::new(RandomPidSecretKeyGenerator::default()),
            cancels: Arc::new(Cancels::default()),
            tls,
            stats,
            audit,
            dedup: Arc::new(Dedup::default()),
            metrics,
        });
        Ok(Server { listener, http, db, shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The HTTP listener's address, when one was configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The server's connection counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Serves connections until `shutdown` completes, then stops accepting, ends the open connections
    /// and flushes the database (memtables to segments; nothing acknowledged was ever at risk).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
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
                    crate::webhook::send_all(db.take_alert_outbox());
                }
            })
        };
        self.shared.metrics.ready.store(true, Ordering::Release);
        let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
        let http = self.http.map(|listener| {
            let router = crate::http::router(crate::http::App {
                db: self.db.clone(),
                config: self.shared.config.clone(),
                audit: self.shared.audit.clone(),
                dedup: self.shared.dedup.clone(),
                metrics: self.shared.metrics.clone(),
            });
            let mut stopped = http_stopped.clone();
            let max_http = self.shared.config.max_http_connections;
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
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            continue;
                        }
                    };
                    let shared = self.shared.clone();
                    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    // Slow or idle clients that never authenticate hold no connection slot, and only
                    // so many may be pending at once: the next is closed at once.
                    let Some(pending) = shared.stats.take_slot(false, shared.config.max_pending_connections) else {
                        tracing::warn!("closing a connection from {peer}: {} connections are pending authentication", shared.config.max_pending_connections);
                        drop(socket);
                        continue;
                    };
                    shared.stats.active.fetch_add(1, Ordering::SeqCst);
                    // Counted down here, not in the task, so a connection that panics is uncounted too.
                    let guard = ActiveGuard(shared.stats.clone());
                    tasks.spawn(async move {
                        let _guard = guard;
                        let handlers = Handlers::new(&shared, pending);
                        let timeout = shared.config.authentication_timeout;
                        if let Err(e) = crate::wire::serve(socket, shared.tls.clone(), handlers, timeout).await {
                            tracing::debug!("connection from {peer} ended: {e}");
                        }
                    });
                }
                Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = ended
                        && e.is_panic()
                    {
                        self.shared.stats.panicked.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("a connection task panicked (a bug; the server carries on): {e}");
                    }
                }
            }
        }
        self.shared.metrics.ready.store(false, Ordering::Release);
        tracing::info!("shutting down: closing connections and flushing");
        // A refresh cut short is repeated at the next start (its watermark moves only when it is done).
        rollups.abort();
        let _ = rollups.await;
        let _ = stop_http.send(true);
        if let Some(http) = http {
            let _ = http.await;
        }
        tasks.shutdown().await;
        let engine = self.db.engine().clone();
        tokio::task::spawn_blocking(move || engine.close()).await??;
        Ok(())
    }
}

/// Counts a connection as ended when dropped (also when its task panics).
struct ActiveGuard(Arc<Stats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A TLS acceptor for the PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1).
fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read the TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read the TLS private key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("invalid TLS certificate or key: {e}"))?;
    // PostgreSQL 17 clients may start TLS directly (sslnegotiation=direct); they require this ALPN.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// One connection's handlers: its own session (context, memory pool, limits) and authenticator.
struct Handlers {
    session: Arc<Session>,
    startup: Arc<Authenticator>,
    cancels: Arc<Cancels>,
    copier: Arc<crate::copy::Copier>,
}

impl Handlers {
    fn new(shared: &Shared, pending: Slot) -> Handlers {
        let (cancel, _) = tokio::sync::watch::channel(0u64);
        let ctx = crate::session::connection_context(&shared.base, shared.config.query_memory_limit);
        Handlers {
            session: Arc::new(Session::new(ctx, shared.hooks.clone(), cancel.clone(), shared.metrics.clone())),
            startup: Arc::new(Authenticator::new(
                shared.config.clone(),
                shared.parameters.clone(),
                shared.pids.clone(),
                shared.cancels.clone(),
                cancel,
                pending,
                shared.audit.clone(),
            )),
            cancels: shared.cancels.clone(),
            copier: shared.copier.clone(),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.session.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.session.clone()
    }
    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlStateErrors)
    }
    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancels.clone()
    }
    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        self.copier.clone()
    }
}

/// Gives errors their SQLSTATE.
struct SqlStateErrors;

impl ErrorHandler for SqlStateErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        let PgWireError::ApiError(inner) = error else { return };
        let (code, message) = if let Some(df) = inner.downcast_ref::<DataFusionError>() {
            (trafficdb::error::datafusion_sqlstate(df), trafficdb::error::datafusion_message(df))
        } else if let Some(e) = inner.downcast_ref::<trafficdb::Error>() {
            (e.sqlstate(), e.to_string())
        } else if inner.downcast_ref::<datafusion::sql::sqlparser::parser::ParserError>().is_some() {
            ("42601", inner.to_string())
        } else {
            return;
        };
        tracing::debug!("query failed ({code}): {message}");
        *error = PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)));
    }
}
