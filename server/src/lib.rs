//! The `trafficdb` server: the PostgreSQL wire protocol over an open [`trafficdb::Database`].
//! The binary (`src/main.rs`) adds the command line.

pub mod copy;
pub mod pg;

pub use pg::Server;
