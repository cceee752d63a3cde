//! Schema objects: creating and dropping tables, retention settings, views and catalog objects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::catalog::{TableEntry, ViewEntry};
use crate::error::{Error, Result, SqlState};
use crate::types::TableDef;

use super::table::Table;
use super::{Engine, undefined_table};

impl Engine {
    /// Creates a table. Durable when this returns.
    pub fn create_table(&self, def: TableDef, if_not_exists: bool) -> Result<Arc<Table>> {
        self.check_open()?;
        def.validate()?;
        let mut catalog = self.catalog.lock();
        if let Some(t) = self.table(&def.name) {
            if if_not_exists {
                return Ok(t);
            }
            return Err(Error::invalid(SqlState::DuplicateTable, format!("relation \"{}\" already exists", def.name)));
        }
        if catalog.data().views.iter().any(|v| v.name == def.name) {
            return Err(Error::invalid(
                SqlState::DuplicateTable,
                format!("relation \"{}\" already exists (a view)", def.name),
            ));
        }
        let entry = catalog.commit(|c| {
            let entry = TableEntry {
                id: c.next_table_id,
                def: def.clone(),
                partitions: BTreeMap::new(),
                watchers: BTreeMap::new(),
                watch_epoch: 0,
            };
            c.next_table_id += 1;
            c.tables.push(entry.clone());
            Ok(entry)
        })?;
        let table = Arc::new(Table::new(&entry));
        self.tables.write().insert(def.name.clone(), table.clone());
        Ok(table)
    }

    /// Drops a table and its files. Returns false if it did not exist.
    pub fn drop_table(&self, name: &str) -> Result<bool> {
        self.check_open()?;
        let _m = self.maintenance.lock();
        let Some(table) = self.table(name) else { return Ok(false) };
        let (version, segments) = {
            let mut catalog = self.catalog.lock();
            let entry = catalog.data().tables.iter().filter(|t| t.id == table.id);
            let segments: Vec<String> =
                entry.flat_map(|t| super::segment_files(&self.dir, t)).map(|(_, n)| n).collect();
            catalog.commit(|c| {
                c.tables.retain(|t| t.id != table.id);
                Ok(())
            })?;
            (catalog.data().version, segments)
        };
        if let Some(store) = &self.options.store {
            store.delete_after_publish(version, segments);
        }
        table.dropped.store(true, Ordering::Release);
        self.tables.write().remove(name);
        let dir = self.dir.join("tables").join(table.id.to_string());
        if let Err(e) = self.fs.remove_dir_all(&dir) {
            tracing::warn!("could not remove {}: {e}; it is removed at the next open", dir.display());
        }
        Ok(true)
    }

    /// Sets or clears a table's retention. Durable when this returns.
    pub fn set_retention(&self, name: &str, retention_us: Option<i64>) -> Result<()> {
        self.check_open()?;
        let table = self.table(name).ok_or_else(|| undefined_table(name))?;
        if table.def.time.is_none() {
            return Err(Error::invalid(
                SqlState::InvalidParameter,
                format!("table \"{name}\" has no time column, so it cannot have a retention period"),
            ));
        }
        if retention_us.is_some_and(|r| r <= 0) {
            return Err(Error::invalid(SqlState::InvalidParameter, "retention must be positive"));
        }
        self.catalog.lock().commit(|c| {
            if let Some(t) = c.table_mut(table.id).and_then(|t| t.def.time.as_mut()) {
                t.retention_us = retention_us;
            }
            Ok(())
        })?;
        *table.retention_us.lock() = retention_us;
        Ok(())
    }

    /// Stores a view definition (the `CREATE VIEW` statement). Durable when this returns.
    pub fn put_view(&self, name: &str, sql: &str) -> Result<()> {
        self.check_open()?;
        if self.table(name).is_some() {
            return Err(Error::invalid(
                SqlState::DuplicateTable,
                format!("relation \"{name}\" already exists (a table)"),
            ));
        }
        self.catalog.lock().commit(|c| {
            match c.views.iter_mut().find(|v| v.name == name) {
                Some(v) => v.sql = sql.to_string(),
                None => c.views.push(ViewEntry { name: name.to_string(), sql: sql.to_string() }),
            }
            Ok(())
        })
    }

    /// Removes a stored view definition. Returns false if there was none.
    pub fn remove_view(&self, name: &str) -> Result<bool> {
        self.check_open()?;
        let mut catalog = self.catalog.lock();
        if !catalog.data().views.iter().any(|v| v.name == name) {
            return Ok(false);
        }
        catalog.commit(|c| {
            c.views.retain(|v| v.name != name);
            Ok(true)
        })
    }

    /// Reads a persistent object stored by another layer.
    pub fn object(&self, key: &str) -> Option<serde_json::Value> {
        self.catalog.lock().data().objects.get(key).cloned()
    }

    /// Looks into a persistent object without copying it.
    pub fn with_object<T>(&self, key: &str, f: impl FnOnce(Option<&serde_json::Value>) -> T) -> T {
        f(self.catalog.lock().data().objects.get(key))
    }

    /// Stores (or, with `None`, removes) a persistent object. Durable when this returns.
    pub fn put_object(&self, key: &str, value: Option<serde_json::Value>) -> Result<()> {
        self.check_open()?;
        self.catalog.lock().commit(|c| {
            match value {
                Some(v) => c.objects.insert(key.to_string(), v),
                None => c.objects.remove(key),
            };
            Ok(())
        })
    }
}
