//! The PostgreSQL listener: datafusion-postgres's session service (simple and extended protocol,
//! `pg_catalog`, SET / SHOW / transactions / cursors) over the database's DataFusion session, with:
//!
//! - our own accept loop (so tests can bind port 0 and shutdown is clean: stop accepting, then end
//!   the connections);
//! - query hooks that route each statement and check the session's role on what will run
//!   ([`crate::pgwire::router`]);
//! - an error handler that gives every error its SQLSTATE (datafusion-postgres reports XX000).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::common::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireServerHandlers, RandomPidSecretKeyGenerator};
use pgwire::error::PgWireError;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use trafficdb::Database;

use crate::config::ServerConfig;
use crate::ops::metrics::ServerMetrics;
use crate::ops::stats::{Slot, Stats};
use crate::pgwire::copy::Copier;
use crate::pgwire::results;
use crate::pgwire::router::{Planned, Router};
use crate::pgwire::session::{Cancels, Session, connection_context};
use crate::pgwire::startup::{Authenticator, Parameters};
use crate::security::audit::Audit;
use trafficdb::SqlState;

/// The bound PostgreSQL listener, ready to serve.
pub struct Listener {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// What every connection shares.
struct Shared {
    config: Arc<ServerConfig>,
    /// The database's session context with the catalog emulation; each connection gets a context of
    /// its own built from it (see [`connection_context`]).
    base: SessionContext,
    hooks: Vec<Arc<dyn QueryHook>>,
    copier: Arc<Copier>,
    parameters: Arc<Parameters>,
    pids: Arc<RandomPidSecretKeyGenerator>,
    cancels: Arc<Cancels>,
    tls: Option<TlsAcceptor>,
    stats: Arc<Stats>,
    audit: Arc<Audit>,
    metrics: Arc<ServerMetrics>,
}

impl Listener {
    /// Binds `config.listen` and prepares the catalog emulation and TLS.
    pub async fn bind(
        db: &Arc<Database>,
        config: Arc<ServerConfig>,
        audit: Arc<Audit>,
        stats: Arc<Stats>,
        metrics: Arc<ServerMetrics>,
    ) -> anyhow::Result<Listener> {
        let base = db.session().clone();
        crate::pgwire::catalog::install(db, &base)?;
        crate::pgwire::compat::register_functions(&base, db.engine().clone());
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let listen = config.listen.clone();
        let listener =
            TcpListener::bind(&listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        crate::pgwire::compat::register_listen_address(&base, listener.local_addr()?);
        let router = Router::new(db.clone(), audit.clone(), config.clone());
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            router.clone(),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
            Arc::new(Planned(router)),
        ];
        let shared = Arc::new(Shared {
            config,
            base,
            hooks,
            copier: Arc::new(Copier { db: db.clone() }),
            parameters: Arc::new(Parameters::default()),
            pids: Arc::new(RandomPidSecretKeyGenerator::default()),
            cancels: Arc::new(Cancels::default()),
            tls,
            stats,
            audit,
            metrics,
        });
        Ok(Listener { listener, shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves connections until `shutdown` completes; returns the connections still
    /// open, for the caller to end when it is ready.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) -> tokio::task::JoinSet<()> {
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
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
                        if let Err(e) = crate::pgwire::wire::serve(socket, shared.tls.clone(), handlers, timeout).await {
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
        tasks
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
    copier: Arc<Copier>,
}

impl Handlers {
    fn new(shared: &Shared, pending: Slot) -> Handlers {
        let (cancel, _) = tokio::sync::watch::channel(0u64);
        let ctx = connection_context(&shared.base, shared.config.query_memory_limit);
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
        let built = if let Some(df) = inner.downcast_ref::<DataFusionError>() {
            results::datafusion_error(df)
        } else if let Some(e) = inner.downcast_ref::<trafficdb::Error>() {
            results::pg_error_ref(e)
        } else if inner.downcast_ref::<datafusion::sql::sqlparser::parser::ParserError>().is_some() {
            results::user_error(SqlState::Syntax, inner.to_string())
        } else {
            // Errors of the protocol libraries (parameter decoding, encoding) keep their text.
            return;
        };
        tracing::debug!("query failed: {built}");
        *error = built;
    }
}
