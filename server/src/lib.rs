//! The `trafficdb` server: the PostgreSQL wire protocol and HTTP over an open [`trafficdb::Database`].
//! The binary (`src/main.rs`) adds the command line.
//!
//! # Module map
//!
//! Imports point down this list, never up (`scripts/module-circles.py` checks there is no circle):
//!
//! - [`app`]: the composition root, the only module that knows both listeners: binds them, runs the
//!   background work (rollups, alerts and their webhooks), shuts down.
//! - [`pgwire`]: the PostgreSQL server: [`pgwire::wire`] (framing and message limits),
//!   [`pgwire::startup`] (startup and authentication exchange), [`pgwire::session`] (one connection:
//!   simple and extended protocol, statement timeout, memory pool), [`pgwire::router`] (where each
//!   statement goes), [`pgwire::plans`] (plans a connection keeps and runs again),
//!   [`pgwire::gate`] (the role check), [`pgwire::copy`], [`pgwire::catalog`] and
//!   [`pgwire::compat`] (what PostgreSQL clients expect to find), [`pgwire::rewrite`] (parsed
//!   statements on PostgreSQL's catalog answered by an equivalent one; text rewrites before parsing
//!   are the engine's, `trafficdb::rewrite`, applied by its `prepare`, the front door both protocols
//!   call), [`pgwire::names`] (results' columns named as PostgreSQL names them), [`pgwire::output`]
//!   (result values in PostgreSQL's output formats) and [`pgwire::casts`] (casts to and from text
//!   by PostgreSQL's rules), [`pgwire::results`] (errors and command tags).
//! - [`http`]: the HTTP listener: health, metrics, status, line-protocol writes, predictions; Basic
//!   authentication against the same users.
//! - [`ingest`]: protocol-free ingest: the line protocol parser, batching into tables, deduplication.
//! - [`ops`]: counters and metrics ([`ops::stats`], [`ops::metrics`]) and alert webhooks.
//! - [`cluster`]: a worker's gRPC service for distributed queries (docs/scale-out.md).
//! - [`config`]: the configuration file and its environment overrides.
//! - [`security`]: roles and the least role of each statement or plan, settings a role may change,
//!   stored secrets, the audit log.
//!
//! To add a statement the engine answers, see `trafficdb::Database` and [`pgwire::router`]; a new
//! setting, [`security::settings`]; a new HTTP route, [`http`].

pub mod app;
pub mod cluster;
pub mod config;
pub mod http;
pub mod ingest;
pub mod ops;
pub mod pgwire;
pub mod security;

pub use app::Server;
pub use config::ServerConfig;
