//! The background worker: flushes when memtables are large or old, compacts, enforces retention.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam::channel::bounded;

use crate::error::{Error, Result};

use super::{Engine, WorkerMsg};

impl Engine {
    pub(super) fn start_worker(self: &Arc<Self>) -> Result<()> {
        let engine = self;
        let (tx, rx) = bounded::<WorkerMsg>(16);
        let weak: Weak<Engine> = Arc::downgrade(engine);
        let tick = engine.options.background_tick;
        let clock = engine.options.clock.clone();
        let handle = std::thread::Builder::new()
            .name("trafficdb-background".into())
            .spawn(move || {
                let mut last_retention = clock.elapsed();
                loop {
                    match rx.recv_timeout(tick) {
                        Ok(WorkerMsg::Stop) | Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
                        Ok(WorkerMsg::Nudge) | Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
                    }
                    let Some(engine) = weak.upgrade() else { break };
                    let now = clock.elapsed();
                    let retention_due = now.saturating_sub(last_retention) >= Duration::from_secs(60);
                    if retention_due {
                        last_retention = now;
                    }
                    engine.background_round(retention_due);
                }
            })
            .map_err(|e| Error::io("background thread", e))?;
        *engine.worker.lock() = Some((tx, handle));
        Ok(())
    }

    pub(super) fn stop_worker(&self) {
        if let Some((tx, handle)) = self.worker.lock().take() {
            let _ = tx.send(WorkerMsg::Stop);
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }

    /// Runs one round of background work: flush if due, compaction, retention.
    pub(super) fn background_round(&self, retention_due: bool) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        if self.needs_flush()
            && let Err(e) = self.flush()
        {
            tracing::error!("background flush failed: {e}");
        }
        if let Err(e) = self.compact() {
            tracing::error!("background compaction failed: {e}");
        }
        if retention_due && let Err(e) = self.enforce_retention() {
            tracing::error!("retention failed: {e}");
        }
        // A catalog or a delete the object store refused earlier.
        if let Some(store) = &self.options.store
            && !store.settled()
        {
            store.republish();
        }
    }
}
