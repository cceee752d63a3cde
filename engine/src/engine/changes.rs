//! Change tracking: for each watcher (a continuous rollup), the earliest time changed since it
//! last settled, kept in the catalog so a restart loses nothing.

use std::sync::Arc;

use crate::error::Result;

use super::Engine;
use super::table::{Table, min_opt};

impl Engine {
    /// Starts tracking changes to `table` for `watcher` (a continuous rollup): from now on, appends,
    /// replays and deletes record the earliest time they touch, until [`Engine::take_changes`].
    pub fn watch(&self, table: &Arc<Table>, watcher: &str) -> Result<()> {
        self.check_open()?;
        table.changes.lock().entry(watcher.to_string()).or_insert(None);
        self.catalog.lock().commit(|c| {
            if let Some(e) = c.table_mut(table.id) {
                e.watchers.entry(watcher.to_string()).or_insert(None);
            }
            Ok(())
        })
    }

    /// Stops tracking changes for `watcher`.
    pub fn unwatch(&self, table: &Arc<Table>, watcher: &str) -> Result<()> {
        table.changes.lock().remove(watcher);
        self.catalog.lock().commit(|c| {
            if let Some(e) = c.table_mut(table.id) {
                e.watchers.remove(watcher);
            }
            Ok(())
        })
    }

    /// The earliest time changed for `watcher` since it last settled (in memory and as recorded by
    /// flushes), and a token for [`Engine::settle_changes`]. The in-memory record starts afresh; give
    /// the value back with [`Engine::restore_changes`] if the work that used it fails.
    pub fn take_changes(&self, table: &Arc<Table>, watcher: &str) -> (Option<i64>, u64) {
        let mem = table.changes.lock().get_mut(watcher).and_then(Option::take);
        let catalog = self.catalog.lock();
        let entry = catalog.data().tables.iter().find(|t| t.id == table.id);
        let stored = entry.and_then(|e| e.watchers.get(watcher).copied().flatten());
        let epoch = entry.map_or(0, |e| e.watch_epoch);
        (min_opt(mem, stored), epoch)
    }

    /// The earliest change recorded for `watcher` and not yet settled, without taking it.
    pub fn peek_changes(&self, table: &Arc<Table>, watcher: &str) -> Option<i64> {
        let mem = table.changes.lock().get(watcher).copied().flatten();
        let catalog = self.catalog.lock();
        let entry = catalog.data().tables.iter().find(|t| t.id == table.id);
        min_opt(mem, entry.and_then(|e| e.watchers.get(watcher).copied().flatten()))
    }

    /// Puts back changes taken by [`Engine::take_changes`] whose work failed.
    pub fn restore_changes(&self, table: &Arc<Table>, watcher: &str, from: Option<i64>) {
        if let (Some(v), Some(slot)) = (from, table.changes.lock().get_mut(watcher)) {
            *slot = Some(slot.map_or(v, |cur| cur.min(v)));
        }
    }

    /// After the work for taken changes is durable: forgets the recorded changes, unless a flush or
    /// delete recorded more since they were taken (`epoch` differs), which the next take returns.
    pub fn settle_changes(&self, table: &Arc<Table>, watcher: &str, epoch: u64) -> Result<()> {
        self.catalog.lock().commit(|c| {
            if let Some(e) = c.table_mut(table.id)
                && e.watch_epoch == epoch
                && let Some(slot) = e.watchers.get_mut(watcher)
            {
                *slot = None;
            }
            Ok(())
        })
    }
}
