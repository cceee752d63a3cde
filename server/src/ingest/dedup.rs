//! Appends that drop rows already stored, for tables created `WITH (dedup_keys = 'a, b')`: a row is a
//! repeat when a stored row, or an earlier row of the same batch, has the same time and keys. Used
//! by the line-protocol writes, whose clients resend a batch when an answer is lost.
//!
//! The check reads the keys stored in the batch's time range (pruned like any query) and appends
//! what is new; writes to one such table are serialised so that two copies of a batch sent at once
//! cannot both pass the check.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch, max, min};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{Column, ScalarValue, TableReference};
use datafusion::logical_expr::{Expr, lit};
use trafficdb::engine::Table;
use trafficdb::{Database, Error};

/// Per-table write locks for tables with dedup keys.
#[derive(Debug, Default)]
pub struct Dedup {
    locks: parking_lot::Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
}

/// An unexpected failure (a bug or the environment), reported as SQLSTATE XX000.
pub(crate) fn internal(e: impl std::fmt::Display) -> Error {
    Error::DataFusion(datafusion::error::DataFusionError::Execution(e.to_string()))
}

impl Dedup {
    /// Appends `batch` (columns named as the table's), durably; returns (rows written, rows dropped
    /// as repeats).
    pub async fn append(
        &self,
        db: &Database,
        table: &Arc<Table>,
        batches: Vec<RecordBatch>,
    ) -> Result<(u64, u64), Error> {
        let def = &table.def;
        let Some(time) = def.time_column().filter(|_| !def.dedup_keys.is_empty()) else {
            return Ok((append(db, table, batches).await?, 0));
        };
        let batch = match batches.len() {
            1 => batches.into_iter().next().expect("one batch"),
            _ => concat_batches(&batches[0].schema(), &batches).map_err(internal)?,
        };
        let lock = self.locks.lock().entry(table.id).or_default().clone();
        let _serialised = lock.lock_owned().await;
        let keys: Vec<&str> =
            std::iter::once(def.columns[time].name.as_str()).chain(def.dedup_keys.iter().map(String::as_str)).collect();
        let (batch, dropped) = new_rows(db, table, &keys, batch).await?;
        Ok((append(db, table, vec![batch]).await?, dropped))
    }
}

async fn append(db: &Database, table: &Arc<Table>, batches: Vec<RecordBatch>) -> Result<u64, Error> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(0);
    }
    let (engine, table) = (db.engine().clone(), table.clone());
    tokio::task::spawn_blocking(move || engine.append(&table, &batches)).await.map_err(internal)?
}

/// The rows of `batch` whose keys are neither stored nor repeated earlier in the batch.
async fn new_rows(
    db: &Database,
    table: &Arc<Table>,
    keys: &[&str],
    batch: RecordBatch,
) -> Result<(RecordBatch, u64), Error> {
    let schema = &table.schema;
    let mut incoming: Vec<ArrayRef> = Vec::with_capacity(keys.len());
    for k in keys {
        let field = schema.field_with_name(k).map_err(internal)?;
        let a = match batch.column_by_name(k) {
            Some(a) if a.data_type() == field.data_type() => a.clone(),
            Some(a) => cast(a, field.data_type()).map_err(internal)?,
            None => new_null_array(field.data_type(), batch.num_rows()),
        };
        incoming.push(a);
    }
    let ts = incoming[0]
        .as_any()
        .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
        .ok_or_else(|| internal("the time column is not a microsecond timestamp"))?;
    let (Some(lo), Some(hi)) = (min(ts), max(ts)) else { return Ok((batch, 0)) };
    let tz = match ts.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, tz) => tz.clone(),
        _ => None,
    };
    let time = Expr::Column(Column::new_unqualified(keys[0]));
    let range = time.between(
        lit(ScalarValue::TimestampMicrosecond(Some(lo), tz.clone())),
        lit(ScalarValue::TimestampMicrosecond(Some(hi), tz)),
    );
    let stored = db
        .session()
        .table(TableReference::bare(table.def.name.as_str()))
        .await?
        .filter(range)?
        .select(keys.iter().map(|k| Expr::Column(Column::new_unqualified(*k))).collect::<Vec<_>>())?
        .collect()
        .await?;
    let converter = RowConverter::new(incoming.iter().map(|a| SortField::new(a.data_type().clone())).collect())
        .map_err(internal)?;
    let mut seen: HashSet<Box<[u8]>> = HashSet::new();
    for b in &stored {
        let cols = b
            .columns()
            .iter()
            .zip(&incoming)
            .map(|(c, want)| if c.data_type() == want.data_type() { Ok(c.clone()) } else { cast(c, want.data_type()) })
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        let rows = converter.convert_columns(&cols).map_err(internal)?;
        seen.extend(rows.iter().map(|r| Box::<[u8]>::from(r.as_ref())));
    }
    let rows = converter.convert_columns(&incoming).map_err(internal)?;
    let keep: BooleanArray = rows.iter().map(|r| Some(seen.insert(Box::from(r.as_ref())))).collect();
    let dropped = (keep.len() - keep.true_count()) as u64;
    if dropped == 0 {
        return Ok((batch, 0));
    }
    Ok((filter_record_batch(&batch, &keep).map_err(internal)?, dropped))
}
