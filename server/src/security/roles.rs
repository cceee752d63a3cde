//! Roles: what a session may do, each including the ones before it.

/// What a session may do; ordered, each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries, `COPY ... TO STDOUT`, `SET` / `SHOW`, transactions, cursors.
    Reader,
    /// Also `INSERT`, `DELETE`, `UPDATE`, `TRUNCATE`, `COPY ... FROM STDIN`.
    Writer,
    /// Everything: DDL, `SET datafusion.runtime.*`, `COPY` to or from server files.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}
