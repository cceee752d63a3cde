//! The PostgreSQL server. See the crate's module map for what each module holds.

pub mod casts;
pub mod catalog;
pub mod compat;
pub mod copy;
pub mod gate;
pub mod listener;
pub mod names;
pub mod output;
pub mod plans;
pub mod results;
pub mod rewrite;
pub mod router;
pub mod session;
pub mod startup;
pub mod wire;
