//! The catalog: the versioned manifest of tables, their sealed segments, views and other persistent
//! objects. It lives in one file, `catalog`, replaced atomically (write a temporary file, fsync, rename,
//! fsync the directory), so a crash leaves either the old version or the new one. The file is a header
//! line `TDBCAT01 <crc32 of the rest, hex>` followed by JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::{Fs, write_atomic};
use crate::store::ObjectStorage;
use crate::types::TableDef;

pub const CATALOG_FILE: &str = "catalog";

/// The catalog object holding the model registry (`CatalogData::objects`).
pub const MODELS_KEY: &str = "models";
const HEADER: &str = "TDBCAT01";
pub const CATALOG_FORMAT: u32 = 1;

/// A sealed segment as the catalog records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentEntry {
    pub id: u64,
    pub rows: u64,
    pub bytes: u64,
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    pub id: u64,
    pub def: TableDef,
    /// Segments per partition key (`floor(ts / partition width)`; 0 for plain tables).
    pub partitions: BTreeMap<i64, Vec<SegmentEntry>>,
    /// Change tracking for derived data (continuous rollups): per watcher, the earliest time changed
    /// in the rows flushed or deleted since the watcher last settled (see `Engine::take_changes`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub watchers: BTreeMap<String, Option<i64>>,
    /// Increases whenever a flush or delete records changes for watchers.
    #[serde(default)]
    pub watch_epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewEntry {
    pub name: String,
    /// The `CREATE VIEW` statement, replayed on open.
    pub sql: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogData {
    pub format: u32,
    /// Increases by one with every committed change.
    pub version: u64,
    pub next_table_id: u64,
    pub next_segment_id: u64,
    /// The first WAL file whose contents are not all in sealed segments.
    pub wal_replay_from: u64,
    pub tables: Vec<TableEntry>,
    pub views: Vec<ViewEntry>,
    /// Persistent objects owned by other layers (models, for example), by key.
    #[serde(default)]
    pub objects: BTreeMap<String, serde_json::Value>,
}

impl Default for CatalogData {
    fn default() -> Self {
        CatalogData {
            format: CATALOG_FORMAT,
            version: 0,
            next_table_id: 1,
            next_segment_id: 1,
            wal_replay_from: 1,
            tables: Vec::new(),
            views: Vec::new(),
            objects: BTreeMap::new(),
        }
    }
}

impl CatalogData {
    pub fn table(&self, name: &str) -> Option<&TableEntry> {
        self.tables.iter().find(|t| t.def.name == name)
    }
    pub fn table_mut(&mut self, id: u64) -> Option<&mut TableEntry> {
        self.tables.iter_mut().find(|t| t.id == id)
    }
}

/// The catalog file and its current contents.
#[derive(Debug)]
pub struct Catalog {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    data: CatalogData,
    /// Where each commit is published, when the directory has an object store.
    store: Option<Arc<ObjectStorage>>,
}

impl Catalog {
    /// Loads the catalog of `dir`, or starts an empty one (written at once) if there is none. With an
    /// object store, a directory without a catalog takes the store's published one (a replacement
    /// node, or a new reader, starts from the store alone). Every commit is published.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, store: Option<Arc<ObjectStorage>>) -> Result<Catalog> {
        let path = dir.join(CATALOG_FILE);
        if !fs.exists(&path)
            && let Some(bytes) = store.as_ref().map(|s| s.get(CATALOG_FILE)).transpose()?.flatten()
        {
            decode(&bytes)
                .map_err(|(off, reason)| Error::corrupt(&path, off, format!("in the object store: {reason}")))?;
            write_atomic(fs.as_ref(), &path, &bytes).map_err(|e| Error::io(&path, e))?;
        }
        if !fs.exists(&path) {
            let mut c = Catalog { fs, path, data: CatalogData::default(), store };
            c.commit(|_| Ok(()))?;
            return Ok(c);
        }
        let bytes = fs.read(&path).map_err(|e| Error::io(&path, e))?;
        let data = decode(&bytes).map_err(|(off, reason)| Error::corrupt(&path, off, reason))?;
        Ok(Catalog { fs, path, data, store })
    }

    pub fn data(&self) -> &CatalogData {
        &self.data
    }

    /// Applies `change` to a copy, writes it atomically, and only then makes it current. If anything
    /// fails, the catalog in memory and on disk is unchanged.
    pub fn commit<T>(&mut self, change: impl FnOnce(&mut CatalogData) -> Result<T>) -> Result<T> {
        let mut next = self.data.clone();
        let out = change(&mut next)?;
        // An invariant, checked in every build: a change never sets the version itself.
        if next.version != self.data.version {
            return Err(Error::Internal(format!(
                "a catalog change set the version to {} (it is {})",
                next.version, self.data.version
            )));
        }
        next.version += 1;
        let bytes = encode(&next)?;
        write_atomic(self.fs.as_ref(), &self.path, &bytes).map_err(|e| Error::io(&self.path, e))?;
        if let Some(s) = &self.store {
            s.publish_catalog(CATALOG_FILE, next.version, bytes);
        }
        self.data = next;
        Ok(out)
    }
}

fn encode(data: &CatalogData) -> Result<Vec<u8>> {
    let json = serde_json::to_vec_pretty(data)
        .map_err(|e| Error::invalid(crate::error::SqlState::InvalidParameter, format!("catalog encoding: {e}")))?;
    let mut out = format!("{HEADER} {:08x}\n", crc32fast::hash(&json)).into_bytes();
    out.extend_from_slice(&json);
    Ok(out)
}

pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<CatalogData, (u64, String)> {
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or((0, "no header line".to_string()))?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| (0, "header is not text".to_string()))?;
    let crc_hex = header.strip_prefix(HEADER).map(str::trim).ok_or((0, "bad catalog magic".to_string()))?;
    let crc = u32::from_str_radix(crc_hex, 16).map_err(|_| (0, "bad checksum field".to_string()))?;
    let body = &bytes[nl + 1..];
    if crc32fast::hash(body) != crc {
        return Err(((nl + 1) as u64, "catalog checksum mismatch".to_string()));
    }
    let data: CatalogData =
        serde_json::from_slice(body).map_err(|e| ((nl + 1) as u64, format!("catalog does not parse: {e}")))?;
    if data.format != CATALOG_FORMAT {
        return Err((0, format!("unsupported catalog format {}", data.format)));
    }
    Ok(data)
}

/// Where a segment's file lives.
pub fn segment_path(dir: &Path, table_id: u64, partition: i64, segment_id: u64) -> PathBuf {
    dir.join(segment_name(table_id, partition, segment_id))
}

/// A segment's name below its data directory (and its object name below the store's prefix).
pub fn segment_name(table_id: u64, partition: i64, segment_id: u64) -> String {
    format!("tables/{table_id}/{partition}/{segment_id:012}.seg")
}
