//! trafficdb SQL functions: time-series helpers, anomaly detection and the retry-prediction model.
//!
//! The functions depend on DataFusion and Arrow only, never on the storage engine's internals, and are
//! registered into a `SessionContext` by the embedding program (the server registers them into every
//! session).
