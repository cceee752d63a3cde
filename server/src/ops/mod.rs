//! What operators watch: connection and query counters ([`stats`]), the metrics exposed over HTTP
//! and as a table ([`metrics`]), alert webhooks ([`webhook`]), and internal errors logged under a
//! number the client is given ([`incident`]).

pub mod incident;
pub mod metrics;
pub mod stats;
pub mod webhook;
