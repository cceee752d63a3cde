//! What operators watch: connection and query counters ([`stats`]), the metrics exposed over HTTP
//! and as a table ([`metrics`]), and alert webhooks ([`webhook`]).

pub mod metrics;
pub mod stats;
pub mod webhook;
