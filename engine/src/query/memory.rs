//! Memory pools for queries under a limit.
//!
//! DataFusion 55's `RepartitionExec` writes a batch to a spill file when its reservation is refused,
//! and its reader can then wait forever for a batch that sits in a second spill file
//! (apache/datafusion#24883): under a small limit a grouped aggregation on two partitions stopped
//! with every thread parked, about one run in forty of `a_rollup_refresh_over_its_memory_limit_...`
//! in `tests/tests/alerts.rs` when several ran at once. [`Unspilled`] grants the repartition's
//! reservations instead: its buffers are counted (so the operators that can spill or fail, sorts,
//! aggregations and joins, see less room and spill or fail with 53200), but never refused. What the
//! repartition holds is then bounded as it was before it could spill: by its channels' gate (a sender
//! waits once every output channel holds a batch), not by the pool. The upstream fix is not in
//! DataFusion 55.2.0, the newest 55 release.

use std::fmt;

use datafusion::common::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation};

/// A pool that refuses nothing to `RepartitionExec` and passes everything else to `inner`.
#[derive(Debug)]
pub struct Unspilled<P> {
    inner: P,
}

impl<P: MemoryPool> Unspilled<P> {
    pub fn new(inner: P) -> Self {
        Unspilled { inner }
    }
}

/// Whether a consumer is a `RepartitionExec`'s output channel (named `RepartitionExec[n]`).
fn is_repartition(consumer: &MemoryConsumer) -> bool {
    consumer.name().starts_with("RepartitionExec[")
}

impl<P: MemoryPool> MemoryPool for Unspilled<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if is_repartition(reservation.consumer()) {
            self.inner.grow(reservation, additional);
            return Ok(());
        }
        self.inner.try_grow(reservation, additional)
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

impl<P: MemoryPool> fmt::Display for Unspilled<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryPool};

    use super::Unspilled;

    #[test]
    fn repartition_reservations_are_granted_and_counted_others_are_refused_past_the_limit() {
        let pool: Arc<dyn MemoryPool> = Arc::new(Unspilled::new(GreedyMemoryPool::new(100)));
        let repartition = MemoryConsumer::new("RepartitionExec[0]").with_can_spill(true).register(&pool);
        repartition.try_grow(80).unwrap();
        repartition.try_grow(80).unwrap();
        assert_eq!(pool.reserved(), 160);
        let sort = MemoryConsumer::new("ExternalSorter[0]").with_can_spill(true).register(&pool);
        assert!(sort.try_grow(1).is_err(), "the repartition's bytes count against the others");
        drop(repartition);
        sort.try_grow(100).unwrap();
        assert!(sort.try_grow(1).is_err());
    }
}
