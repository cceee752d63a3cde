//! The `trafficdb` server: the PostgreSQL wire protocol over an open [`trafficdb::Database`].
//! The binary (`src/main.rs`) adds the command line.

pub mod auth;
pub mod catalog;
pub mod compat;
pub mod config;
pub mod copy;
pub mod http;
pub mod pg;
pub mod rewrite;
pub mod session;
pub mod wire;

pub use config::ServerConfig;
pub use pg::Server;
