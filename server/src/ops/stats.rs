//! Connection counters, shared by the listeners and read by the metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Connection counters, readable while the server runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now (including one being refused for the connection limit).
    pub active: AtomicUsize,
    /// Connections accepted since the server started.
    pub accepted: AtomicU64,
    /// Connections whose task panicked. Each is a bug: no input may reach a panic. The panic ends
    /// that connection only; it is logged as an error.
    pub panicked: AtomicU64,
    /// Connections not yet authenticated (at most `max_pending_connections`).
    pub pending: AtomicUsize,
    /// Authenticated connections (at most `max_connections`).
    pub authenticated: AtomicUsize,
}

/// A connection slot (pending or authenticated), given back when dropped.
pub struct Slot {
    stats: Arc<Stats>,
    authenticated: bool,
}

impl Stats {
    fn counter(&self, authenticated: bool) -> &AtomicUsize {
        if authenticated { &self.authenticated } else { &self.pending }
    }

    /// Takes a slot of the kind, unless `max` are taken.
    pub fn take_slot(self: &Arc<Self>, authenticated: bool, max: usize) -> Option<Slot> {
        let counter = self.counter(authenticated);
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Slot { stats: self.clone(), authenticated })
    }
}

impl Slot {
    /// The counters the slot belongs to.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.counter(self.authenticated).fetch_sub(1, Ordering::SeqCst);
    }
}
