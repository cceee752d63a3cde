//! The cluster's network side (docs/scale-out.md): a worker's gRPC service, which `trafficdb worker`
//! runs and every coordinator runs for itself too (the workers read what its single-task stages
//! produce), and the coordinator's view of its workers.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use datafusion_distributed::Worker;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use trafficdb::Database;
use trafficdb::cluster::{Cluster, ClusterOptions, SegmentCache, WorkerSession};
use trafficdb::store::ObjectStorage;
use url::Url;

use crate::config::ClusterConfig;

/// Where, in a coordinator's data directory, its own worker's cache lives.
const COORDINATOR_CACHE_DIR: &str = "worker-cache";

/// A worker reading segments of `store` through a cache of at most `cache_bytes` in `cache_dir`.
pub fn worker(store: &str, cache_dir: &Path, cache_bytes: u64) -> anyhow::Result<(Worker, Arc<SegmentCache>)> {
    let cache = SegmentCache::open(ObjectStorage::open(store)?, cache_dir, cache_bytes)?;
    let worker =
        Worker::from_session_builder(WorkerSession::new(cache.clone())).with_version(env!("CARGO_PKG_VERSION"));
    Ok((worker, cache))
}

/// `db`'s session remade as the coordinator of `config`'s workers, with this node's own worker service
/// started (it runs until the process ends).
pub async fn coordinator(db: Database, config: &ClusterConfig, store: &str) -> anyhow::Result<Database> {
    let workers = (config.workers.iter())
        .map(|w| Url::parse(w).map_err(|e| anyhow::anyhow!("[cluster] workers: \"{w}\": {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("[cluster] listen: cannot listen on {}: {e}", config.listen))?;
    let own = match &config.advertise {
        Some(a) => Url::parse(a).map_err(|e| anyhow::anyhow!("[cluster] advertise: \"{a}\": {e}"))?,
        None => Url::parse(&format!("http://{}", listener.local_addr()?))?,
    };
    // Stages sent to this node arrive as plans, not bytes: its cache stays empty (in the data
    // directory, emptied at every start, so nothing is left behind elsewhere).
    let cache_dir = db.engine().dir().join(COORDINATOR_CACHE_DIR);
    let (worker, _cache) = self::worker(store, &cache_dir, 1 << 30)?;
    let served = worker.clone();
    tokio::spawn(async move {
        if let Err(e) = serve_worker(listener, served, std::future::pending()).await {
            tracing::error!("the coordinator's worker service stopped: {e:#}");
        }
    });
    let cluster = Cluster {
        workers,
        local: (worker, own),
        options: ClusterOptions { rows_per_task: config.rows_per_task.max(1) as usize },
    };
    let engine = db.engine().clone();
    drop(db);
    Ok(Database::from_engine_in(engine, Some(&cluster)).await?)
}

/// Serves `worker` on `listener` until `shutdown` completes.
pub async fn serve_worker(
    listener: TcpListener,
    worker: Worker,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(worker.into_worker_server())
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await?;
    Ok(())
}
