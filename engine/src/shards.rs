//! The reader's side of sharded writers (docs/scale-out.md §2): a node whose object store is the
//! shared prefix itself (it has no shard of its own) reads each sharded table (one with the column
//! the shard's published rule routes by) as the union of its own rows and of the segments every
//! shard's published catalog names (`<prefix>/shards/<name>/catalog`), so each shard's zone maps
//! prune as its writer's do.
//!
//! The shards are listed (one request) at most every [`LIST_EVERY`]; their catalogs are checked (a
//! HEAD each, all at once) once per query, and fetched again when they changed. Segments are fetched whole into a
//! [`SegmentCache`] bounded in bytes, only those whose time range the query's filters may need. A
//! writer's rows are seen once its flush has published them (at most its `flush_interval` after they
//! were acknowledged): memtables stay on the writer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;

use crate::cache::SegmentCache;
use crate::catalog::{CATALOG_FILE, CatalogData, SegmentEntry, TableEntry, decode, segment_name};
use crate::engine::SegmentHandle;
use crate::error::{Error, Result, SqlState};
use crate::shard::{SHARD_KEY, ShardRule};
use crate::store::ObjectStorage;
use crate::types::TableDef;

/// How often the shards under the prefix are listed (a new writer is seen within this).
pub const LIST_EVERY: Duration = Duration::from_secs(10);

/// Where shards publish, below the shared prefix.
const SHARDS_DIR: &str = "shards";

/// The shards published under a node's object-store prefix, and the segments fetched from them.
pub struct Shards {
    cache: Arc<SegmentCache>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards").field("store", &self.cache.store().url()).finish()
    }
}

#[derive(Default)]
struct State {
    listed: Option<Instant>,
    shards: BTreeMap<String, Published>,
    /// The query the catalogs were last checked for (see [`Check::Query`]).
    checked_for: Option<i64>,
}

struct Published {
    tag: String,
    catalog: Arc<ShardCatalog>,
}

/// A shard's published catalog and the key column its rule routes rows by (read once, when the
/// catalog is fetched).
pub struct ShardCatalog {
    data: CatalogData,
    key: Option<String>,
}

impl ShardCatalog {
    fn new(data: CatalogData) -> ShardCatalog {
        let rule = data.objects.get(SHARD_KEY).and_then(|v| ShardRule::deserialize(v).ok());
        ShardCatalog { key: rule.map(|r| r.key), data }
    }

    /// The shard's sharded tables: those with its key column (a writer's other tables, such as the
    /// configuration tables every node's schema fills, are its own).
    fn tables(&self) -> impl Iterator<Item = &TableEntry> {
        let key = self.key.as_deref();
        self.data.tables.iter().filter(move |t| key.is_some_and(|k| t.def.column_index(k).is_some()))
    }
}

/// How fresh the shards' catalogs must be.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// Checked now (a HEAD per shard).
    Now,
    /// Checked once for the query that started at this time (nanoseconds), so a query that scans a
    /// table several times sees one version of each shard.
    Query(i64),
    /// As last checked (the list of shards is still renewed every [`LIST_EVERY`]).
    Cached,
}

/// One shard's segment of a table: its partition key and the segment, fetched.
pub type ShardSegment = (i64, Arc<SegmentHandle>);

impl Shards {
    /// The shards under `root` (a node's own store), their segments cached in `dir` (emptied) up to
    /// `capacity` bytes.
    pub fn open(root: Arc<ObjectStorage>, dir: &Path, capacity: u64) -> Result<Arc<Shards>> {
        Ok(Arc::new(Shards { cache: SegmentCache::open(root, dir, capacity)?, state: Mutex::default() }))
    }

    /// Where fetched segments are kept: `<dir>/shards/<name>/tables/...`, the objects' own names.
    pub fn cache(&self) -> &Arc<SegmentCache> {
        &self.cache
    }

    /// The shards' published catalogs, by shard name, as fresh as `check` asks.
    pub fn catalogs(&self, check: Check) -> Result<Vec<(String, Arc<ShardCatalog>)>> {
        let store = self.cache.store();
        let mut state = self.state.lock();
        let list = state.listed.is_none_or(|t| t.elapsed() >= LIST_EVERY);
        let head = match check {
            Check::Now => true,
            Check::Query(q) => state.checked_for != Some(q),
            Check::Cached => false,
        };
        if list || head {
            let names = if list { store.children(SHARDS_DIR)? } else { state.shards.keys().cloned().collect() };
            let objects: Vec<String> = names.iter().map(|n| format!("{SHARDS_DIR}/{n}/{CATALOG_FILE}")).collect();
            let tags = if objects.is_empty() { Vec::new() } else { store.tags(&objects)? };
            let mut next = BTreeMap::new();
            for ((name, object), tag) in names.into_iter().zip(&objects).zip(tags) {
                let Some(tag) = tag else { continue };
                let published = match state.shards.remove(&name) {
                    Some(p) if p.tag == tag => p,
                    _ => {
                        let Some(bytes) = store.get(object)? else { continue };
                        let data = decode(&bytes).map_err(|(offset, reason)| {
                            Error::corrupt(format!("{}/{object}", store.url().trim_end_matches('/')), offset, reason)
                        })?;
                        Published { tag, catalog: Arc::new(ShardCatalog::new(data)) }
                    }
                };
                next.insert(name, published);
            }
            if list {
                state.listed = Some(Instant::now());
            }
            state.shards = next;
            state.checked_for = match check {
                Check::Query(q) => Some(q),
                _ => None,
            };
        }
        Ok(state.shards.iter().map(|(n, p)| (n.clone(), p.catalog.clone())).collect())
    }

    /// The definitions of the tables the shards hold (the first shard's, by name, for a table
    /// several hold).
    pub fn tables(&self, check: Check) -> Result<Vec<TableDef>> {
        let mut defs: BTreeMap<String, TableDef> = BTreeMap::new();
        for (_, catalog) in self.catalogs(check)? {
            for t in catalog.tables() {
                defs.entry(t.def.name.clone()).or_insert_with(|| t.def.clone());
            }
        }
        Ok(defs.into_values().collect())
    }

    /// Every shard's segments of the table `def` names that `keep` wants (given their catalog
    /// entries), fetched. A segment a writer deleted after this reader read its catalog (a compaction
    /// raced the query) makes the catalogs be read again, once.
    pub fn segments(
        &self,
        def: &TableDef,
        check: Check,
        keep: impl Fn(&[&SegmentEntry]) -> Vec<bool>,
    ) -> Result<Vec<ShardSegment>> {
        match self.segments_of(def, self.catalogs(check)?, &keep) {
            Err(Error::Invalid { code: SqlState::UndefinedObject, .. }) => {
                self.segments_of(def, self.catalogs(Check::Now)?, &keep)
            }
            other => other,
        }
    }

    fn segments_of(
        &self,
        def: &TableDef,
        catalogs: Vec<(String, Arc<ShardCatalog>)>,
        keep: &impl Fn(&[&SegmentEntry]) -> Vec<bool>,
    ) -> Result<Vec<ShardSegment>> {
        let mut out = Vec::new();
        for (shard, catalog) in catalogs {
            let Some(t) = catalog.tables().find(|t| t.def.name == def.name) else { continue };
            check_compatible(&shard, t, def)?;
            let listed: Vec<(i64, &SegmentEntry)> =
                t.partitions.iter().flat_map(|(&key, segs)| segs.iter().map(move |s| (key, s))).collect();
            let wanted = keep(&listed.iter().map(|(_, s)| *s).collect::<Vec<_>>());
            for ((key, entry), wanted) in listed.into_iter().zip(wanted) {
                if wanted {
                    let name = format!("{SHARDS_DIR}/{shard}/{}", segment_name(t.id, key, entry.id));
                    out.push((key, self.cache.segment(&name, entry)?));
                }
            }
        }
        Ok(out)
    }
}

/// A shard's table must be laid out as this node's: the same columns, time column, partitions and
/// sort key (retention may differ: each writer applies its own).
fn check_compatible(shard: &str, theirs: &TableEntry, ours: &TableDef) -> Result<()> {
    let columns = |d: &TableDef| d.columns.iter().map(|c| (c.name.clone(), c.ty)).collect::<Vec<_>>();
    let time = |d: &TableDef| d.time.as_ref().map(|t| (t.time_column, t.partition_width_us));
    let t = &theirs.def;
    if columns(t) == columns(ours) && time(t) == time(ours) && t.sort_key == ours.sort_key {
        return Ok(());
    }
    Err(Error::invalid(
        SqlState::DatatypeMismatch,
        format!(
            "table \"{}\" of shard \"{shard}\" is defined unlike this node's (columns, time column, partition width \
             or sort key differ); every writer of a shared prefix needs the same definition",
            ours.name
        ),
    ))
}
