//! trafficdb: an embedded time-series database for load-balancer telemetry.
//!
//! Data flow, top to bottom:
//!
//! - [`Database`] (embedded API) parses SQL; statements on stored tables are handled here, the rest is
//!   planned and run by Apache DataFusion over the [`query`] providers.
//! - [`query`] exposes each stored table as a DataFusion `TableProvider` reading a consistent
//!   [`engine::TableSnapshot`], pruning partitions and row groups with the query's filters.
//! - [`engine`] owns the write path (coerce, WAL with group commit, memtables), bulk loads (straight
//!   to segments, [`engine::BulkLoad`]), flush to sealed segments, compaction, retention and deletes.
//! - [`wal`], [`segment`] and [`catalog`] are the on-disk formats (byte layouts in `docs/storage.md`);
//!   every file operation goes through the [`io`] seam so crash tests can simulate power loss.
//!
//! Durability: when an append (or INSERT, or COPY through the server) returns, its rows are fsynced
//! in the write-ahead log. A crash loses nothing acknowledged and never leaves part of an append.
//!
//! # Module map
//!
//! Imports point down this list (`scripts/module-circles.py` checks there is no circle):
//!
//! - [`database`]: the embedded API and the SQL front: parses statements (after [`rewrite`], the
//!   one list of text rewrites, which the server's parsers call too), answers the engine's own
//!   (DDL with options, materialized views, `CALL`s), hands the rest to DataFusion; [`rollup`] and
//!   [`alert`] are the background work it drives.
//! - [`query`]: DataFusion over stored tables: `query::scan` (the scan, pruning), `query::latest`
//!   (the latest-per-key rule) over `query::key_max`, `query::symbols` (group-bys on text codes,
//!   `query::codes` the code tables the scan and the rule share), `query::dml` (DELETE / UPDATE /
//!   RETURNING planned as queries, executed by [`engine::Engine::rewrite`]).
//! - [`cluster`]: distributed queries (a coordinator's planner hooks, the scan's codec, a worker's
//!   session); [`shards`]: a reader's union of the shards other writers publish under its prefix;
//!   [`cache`]: segments fetched from an object store, bounded in bytes, for both.
//! - [`engine`]: one module per lifecycle step (see its documentation, which also gives the lock
//!   order: `maintenance` → `gate` → `catalog` → `tables` → a table's `data`).
//! - [`backup`]: online backup and restore of a data directory; [`store`]: the object store segments
//!   and catalogs are written through to; [`shard`]: a writer's shard rule (which rows it owns).
//! - [`wal`], [`segment`] (with `segment::codec`), [`catalog`]: the on-disk formats, over `bytes`
//!   (little-endian helpers) and [`io`] (the file system seam, with a simulated file system for crash
//!   tests) and [`clock`] (the time seam: every time-driven decision reads `Options::clock`, so tests
//!   move a manual clock instead of sleeping); [`types`] (schemas, coercion, value formatting, the
//!   storage layout a sort key chooses), [`metrics`], [`error`] (errors and their SQLSTATE).
//!
//! Every writer of segments (flush, compaction, bulk loads, rewrites) puts rows in the table's storage
//! order through `engine::table::storage_order`, so a new writer must too.
//!
//! What to touch together: a format change means [`segment`] or [`wal`], `docs/storage.md` and the
//! crash / corruption tests; a new statement the engine answers, [`database`] and the server's
//! router (`server/src/pgwire/router.rs`), which must know the statement has no DataFusion plan.

pub mod alert;
pub mod backup;
pub(crate) mod bytes;
pub mod cache;
pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod database;
pub mod engine;
pub mod error;
pub mod io;
pub mod metrics;
pub mod query;
pub mod rewrite;
pub mod rollup;
pub mod segment;
pub mod shard;
pub mod shards;
pub mod store;
pub mod types;
pub mod wal;

pub use database::{Database, Output};
pub use datafusion;
pub use datafusion::arrow;
pub use engine::{Engine, Options};
pub use error::{Error, Result, SqlState};
pub use types::{ColumnDef, ColumnType, TableDef};
