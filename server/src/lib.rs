//! The `trafficdb` server: the PostgreSQL wire protocol over an open [`trafficdb::Database`].
//! The binary (`src/main.rs`) adds the command line.

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod compat;
pub mod config;
pub mod copy;
pub mod dedup;
pub mod http;
pub mod ingest;
pub mod line_protocol;
pub mod metrics;
pub mod pg;
pub mod rewrite;
pub mod router;
pub mod session;
pub mod settings;
pub mod webhook;
pub mod wire;

pub use config::ServerConfig;
pub use pg::Server;
