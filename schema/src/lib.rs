//! The load-balancer domain: table and view definitions (numbered `.sql` files applied in order) and the
//! synthetic telemetry generator. Uses only the engine's public API.
