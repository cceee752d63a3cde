//! Sealed segments and the catalog on object storage (docs/scale-out.md), through the `object_store`
//! crate: S3 and S3-compatible stores (`s3://`), a local directory (`file://`), or an in-memory store
//! (tests).
//!
//! The contract, kept by the engine's callers:
//! - a segment is `PUT` before the catalog that names it is committed ([`ObjectStorage::put`]);
//! - the catalog is `PUT` after each commit ([`ObjectStorage::publish_catalog`]); a failed publish does
//!   not undo the local commit (the WAL and the local catalog are the durable truth on this node) and
//!   is retried by the next commit or [`ObjectStorage::republish`];
//! - an object is deleted only once a catalog that no longer names it has been published
//!   ([`ObjectStorage::delete_after_publish`]), and then only after a grace period
//!   ([`DELETE_GRACE`]), so a reader of the published catalog finds every object it names, and so does
//!   a reader on another node still planning with the catalog before it (a worker, a reader of shards).
//!
//! Objects are named by the file's path inside the data directory (`catalog`,
//! `tables/<table>/<partition>/<segment>.seg`) under the store's prefix.
//!
//! The engine's code is synchronous and may run on a thread of another async runtime, so the calls run
//! on a small runtime of this module's own and the caller waits on a channel.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// A data directory's object store: where its sealed segments and published catalogs live.
pub struct ObjectStorage {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// Always `Some` but in `drop`, which shuts it down without waiting (a runtime dropped the
    /// ordinary way panics inside another runtime's task).
    runtime: Option<tokio::runtime::Runtime>,
    state: Mutex<PublishState>,
    /// [`DELETE_GRACE`] unless set otherwise, in milliseconds.
    grace_ms: AtomicU64,
}

/// How long an object a published catalog dropped stays in the store: readers on other nodes that
/// read the catalog before (a query planned a moment earlier) still find it.
pub const DELETE_GRACE: Duration = Duration::from_secs(60);

impl Drop for ObjectStorage {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Default)]
struct PublishState {
    /// The newest catalog committed locally and not yet published: (object name, version, bytes).
    unpublished: Option<(String, u64, Vec<u8>)>,
    /// Objects to delete once the catalog of at least this version is published.
    deletes: Vec<(u64, String)>,
    /// Objects a published catalog dropped, and when: deleted once their grace has passed.
    expiring: Vec<(Instant, String)>,
    published: u64,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage").field("url", &self.url).finish()
    }
}

impl ObjectStorage {
    /// The store at `url`: `s3://bucket/prefix`, `file:///absolute/dir` or `memory:///` (for tests).
    ///
    /// An S3 store takes its credentials and settings from the environment, as the AWS tools do
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_SESSION_TOKEN`); an
    /// S3-compatible server (MinIO, Ceph, R2, moto) is named by `AWS_ENDPOINT_URL` (or
    /// `AWS_ENDPOINT`), and `AWS_ALLOW_HTTP=true` lets it be reached without TLS.
    pub fn open(url: &str) -> Result<Arc<ObjectStorage>> {
        let bad = |reason: String| Error::invalid(crate::error::SqlState::InvalidParameter, reason);
        let parsed = url::Url::parse(url).map_err(|e| bad(format!("object store URL \"{url}\": {e}")))?;
        let failed = |e: object_store::Error| {
            bad(format!(
                "object store URL \"{url}\": {e} (supported: s3://bucket/prefix, file:///absolute/path, memory:///)"
            ))
        };
        let (store, prefix): (Box<dyn ObjectStore>, ObjectPath) = if parsed.scheme() == "s3" {
            let s3 = object_store::aws::AmazonS3Builder::from_env().with_url(url).build().map_err(failed)?;
            let prefix = ObjectPath::from_url_path(parsed.path())
                .map_err(|e| bad(format!("object store URL \"{url}\": {e}")))?;
            (Box::new(s3), prefix)
        } else {
            object_store::parse_url(&parsed).map_err(failed)?
        };
        if parsed.scheme() == "file" {
            // LocalFileSystem needs its root to exist.
            let dir = parsed.to_file_path().map_err(|()| bad(format!("object store URL \"{url}\" is not a path")))?;
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Self::new(url, Arc::from(store), prefix)
    }

    /// A store already built (any `object_store` implementation), objects under `prefix`.
    pub fn new(url: &str, store: Arc<dyn ObjectStore>, prefix: ObjectPath) -> Result<Arc<ObjectStorage>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("trafficdb-store")
            .enable_all()
            .build()
            .map_err(|e| Error::io(Path::new(url), e))?;
        Ok(Arc::new(ObjectStorage {
            url: url.to_string(),
            store,
            prefix,
            runtime: Some(runtime),
            state: Mutex::new(PublishState::default()),
            grace_ms: AtomicU64::new(DELETE_GRACE.as_millis() as u64),
        }))
    }

    /// Sets how long a dropped object stays after the catalog that dropped it is published
    /// ([`DELETE_GRACE`] by default; zero deletes at once, for a store no other node reads).
    pub fn set_delete_grace(&self, grace: Duration) {
        self.grace_ms.store(grace.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `f` on the store's runtime and waits for it (from any thread, inside a runtime or not).
    fn block<T: Send + 'static>(
        &self,
        f: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> object_store::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        runtime.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(object_store::Error::Generic {
                store: "trafficdb",
                source: "the object store's runtime stopped".into(),
            })
        })
    }

    fn location(&self, name: &str) -> ObjectPath {
        name.split('/').fold(self.prefix.clone(), |p, part| p.clone().join(part))
    }

    /// The object name of a file of the data directory `dir`.
    pub fn name_of(dir: &Path, file: &Path) -> String {
        let rel = file.strip_prefix(dir).unwrap_or(file);
        rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
    }

    fn error(&self, name: &str, e: object_store::Error) -> Error {
        Error::io(format!("{}/{name}", self.url.trim_end_matches('/')), std::io::Error::other(e))
    }

    /// Stores `bytes` as object `name` (atomically: readers see the whole object or none).
    pub fn put(&self, name: &str, bytes: impl Into<PutPayload>) -> Result<()> {
        let (store, at, payload) = (self.store.clone(), self.location(name), bytes.into());
        self.block(async move { store.put(&at, payload).await.map(|_| ()) }).map_err(|e| self.error(name, e))
    }

    /// The bytes of object `name`, or `None` when there is no such object.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let (store, at) = (self.store.clone(), self.location(name));
        match self.block(async move { store.get(&at).await?.bytes().await }) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(name, e)),
        }
    }

    /// A tag that changes whenever object `name` does (its ETag, or its time and size); `None` when
    /// there is no such object.
    pub fn tag(&self, name: &str) -> Result<Option<String>> {
        let mut tags = self.tags(&[name.to_string()])?;
        Ok(tags.pop().flatten())
    }

    /// The [`ObjectStorage::tag`]s of several objects, asked for all at once (one round trip's wait,
    /// however many there are).
    pub fn tags(&self, names: &[String]) -> Result<Vec<Option<String>>> {
        let heads = names.iter().map(|name| {
            let (store, at) = (self.store.clone(), self.location(name));
            async move {
                match store.head(&at).await {
                    Ok(m) => Ok(Some(
                        m.e_tag.unwrap_or_else(|| format!("{}/{}", m.last_modified.timestamp_micros(), m.size)),
                    )),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        });
        let heads: Vec<_> = heads.collect();
        let results = self
            .block(async move { Ok(futures::future::join_all(heads).await) })
            .map_err(|e| self.error(names.first().map_or("", String::as_str), e))?;
        names.iter().zip(results).map(|(name, r)| r.map_err(|e| self.error(name, e))).collect()
    }

    /// The names of the objects under `name/`, sorted.
    pub fn list(&self, name: &str) -> Result<Vec<String>> {
        let (store, at) = (self.store.clone(), self.location(name));
        let prefix = self.prefix.clone();
        let mut names = self
            .block(async move {
                let metas: Vec<object_store::ObjectMeta> = store.list(Some(&at)).try_collect().await?;
                Ok(metas
                    .into_iter()
                    .map(|m| {
                        let parts: Vec<String> = m.location.prefix_match(&prefix).map_or_else(
                            || m.location.parts().map(|p| p.as_ref().to_string()).collect(),
                            |ps| ps.map(|p| p.as_ref().to_string()).collect(),
                        );
                        parts.join("/")
                    })
                    .collect::<Vec<String>>())
            })
            .map_err(|e| self.error(name, e))?;
        names.sort();
        Ok(names)
    }

    /// The names of the "directories" directly under `name/` (the common prefixes of its objects),
    /// sorted: one listing request, however many objects lie below them.
    pub fn children(&self, name: &str) -> Result<Vec<String>> {
        let (store, at) = (self.store.clone(), self.location(name));
        let listing =
            self.block(async move { store.list_with_delimiter(Some(&at)).await }).map_err(|e| self.error(name, e))?;
        let mut names: Vec<String> =
            listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        names.sort();
        Ok(names)
    }

    fn delete_now(&self, name: &str) -> Result<()> {
        let (store, at) = (self.store.clone(), self.location(name));
        match self.block(async move { store.delete(&at).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(name, e)),
        }
    }

    /// Publishes the catalog of `version` (its file's bytes) as object `name`, then deletes the
    /// objects that waited for it. A failure is logged and kept: the next commit or [`ObjectStorage::republish`] tries
    /// again; the local commit stands either way.
    pub fn publish_catalog(&self, name: &str, version: u64, bytes: Vec<u8>) {
        self.state.lock().unpublished = Some((name.to_string(), version, bytes));
        self.republish();
    }

    /// Publishes the newest catalog not yet published, if any, and deletes what has waited out its
    /// grace since a published catalog dropped it. Returns true when nothing is left to do.
    pub fn republish(&self) -> bool {
        let mut state = self.state.lock();
        if let Some((name, version, bytes)) = state.unpublished.take() {
            if let Err(e) = self.put(&name, bytes.clone()) {
                tracing::warn!("could not publish catalog version {version} to {}: {e}; retried later", self.url);
                state.unpublished = Some((name, version, bytes));
                return false;
            }
            state.published = version;
        }
        let published = state.published;
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut state.deletes).into_iter().partition(|(v, _)| *v <= published);
        state.deletes = later;
        let now = Instant::now();
        state.expiring.extend(due.into_iter().map(|(_, name)| (now, name)));
        let grace = Duration::from_millis(self.grace_ms.load(Ordering::Relaxed));
        let (expired, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut state.expiring).into_iter().partition(|(dropped, _)| *dropped + grace <= now);
        state.expiring = waiting;
        for (at, name) in expired {
            if let Err(e) = self.delete_now(&name) {
                tracing::warn!("could not delete {name} from {}: {e}; retried later", self.url);
                state.expiring.push((at, name));
            }
        }
        state.unpublished.is_none() && state.deletes.is_empty() && state.expiring.is_empty()
    }

    /// Deletes `names` once the catalog of `version` (which no longer names them) is published.
    pub fn delete_after_publish(&self, version: u64, names: impl IntoIterator<Item = String>) {
        self.state.lock().deletes.extend(names.into_iter().map(|n| (version, n)));
        self.republish();
    }

    /// True when every committed catalog is published and no delete waits (for a publish or for its
    /// grace to end).
    pub fn settled(&self) -> bool {
        let state = self.state.lock();
        state.unpublished.is_none() && state.deletes.is_empty() && state.expiring.is_empty()
    }
}
