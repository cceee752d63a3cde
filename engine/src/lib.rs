//! trafficdb: an embedded time-series database for load-balancer telemetry.
//!
//! Data flow, top to bottom:
//!
//! - [`Database`] (embedded API) parses SQL; statements on stored tables are handled here, the rest is
//!   planned and run by Apache DataFusion over the [`query`] providers.
//! - [`query`] exposes each stored table as a DataFusion `TableProvider` reading a consistent
//!   [`engine::TableSnapshot`], pruning partitions and row groups with the query's filters.
//! - [`engine`] owns the write path (coerce, WAL with group commit, memtables), flush to sealed
//!   segments, compaction, retention and deletes.
//! - [`wal`], [`segment`] and [`catalog`] are the on-disk formats (byte layouts in `docs/storage.md`);
//!   every file operation goes through the [`io`] seam so crash tests can simulate power loss.
//!
//! Durability: when an append (or INSERT, or COPY through the server) returns, its rows are fsynced
//! in the write-ahead log. A crash loses nothing acknowledged and never leaves part of an append.

pub mod alert;
pub mod backup;
pub(crate) mod bytes;
pub mod catalog;
pub mod database;
pub mod engine;
pub mod error;
pub mod io;
pub mod metrics;
pub mod query;
pub mod rollup;
pub mod segment;
pub mod types;
pub mod wal;

pub use database::{Database, Output};
pub use datafusion;
pub use datafusion::arrow;
pub use engine::{Engine, Options};
pub use error::{Error, Result, SqlState};
pub use types::{ColumnDef, ColumnType, TableDef};
