//! Workspace integration tests, in one binary (each test binary costs a DataFusion link):
//! `.slt` files, crash and recovery against a model, corruption, concurrency, a real `kill -9`, and the
//! wire server (clients, limits, malformed input).

mod alerts;
mod backup;
mod clock;
mod cluster;
mod common;
mod concurrency;
mod corruption;
mod crash;
mod generator;
mod http;
mod import;
mod kill;
mod objects;
mod pushdown;
mod schema;
mod security;
mod server;
mod slt;
mod wire;
