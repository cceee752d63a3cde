//! Ingest without a protocol: the line protocol parser ([`line_protocol`]), points batched into
//! durable appends per table ([`batch`]), and the deduplication of retried writes ([`dedup`]). The
//! HTTP routes call [`batch::write`]; nothing here knows HTTP.

pub mod batch;
pub mod copy_format;
pub mod dedup;
pub mod import;
pub mod line_protocol;
