//! Which keys a unit of rows holds, each with its newest timestamp, and the state of a
//! latest-per-key scan that emits only rows holding some key's newest timestamp (see
//! [`crate::query::latest`] for the rule that switches a scan to that mode).

use std::collections::HashMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::error::Result;

/// A key value, hashable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Null,
    Int(i64),
    Text(Box<str>),
}

/// For one unit: each key it holds, with its newest timestamp and the row holding it.
pub(crate) type KeyMax = HashMap<Key, (i64, u32)>;

/// Which columns (indices into the projected schema) latest-per-key mode works on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LatestMode {
    pub key: usize,
    pub time: usize,
}

fn keys_of(array: &ArrayRef) -> Option<Vec<Key>> {
    let n = array.len();
    match array.data_type() {
        DataType::Utf8 => {
            let s = array.as_string::<i32>();
            Some((0..n).map(|i| if s.is_null(i) { Key::Null } else { Key::Text(s.value(i).into()) }).collect())
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Boolean
        | DataType::Timestamp(..) => {
            let a = cast(array, &DataType::Int64).ok()?;
            let p = a.as_primitive::<Int64Type>();
            Some((0..n).map(|i| if p.is_null(i) { Key::Null } else { Key::Int(p.value(i)) }).collect())
        }
        _ => None,
    }
}

/// Computes the newest timestamp (and its row) of every key in a batch.
pub(crate) fn key_max(keys: &ArrayRef, times: &ArrayRef) -> Option<KeyMax> {
    let keys = keys_of(keys)?;
    let t = cast(times, &DataType::Int64).ok()?;
    let t = t.as_primitive::<Int64Type>();
    let mut out: KeyMax = HashMap::new();
    for (row, k) in keys.into_iter().enumerate() {
        let ts = t.value(row);
        let e = out.entry(k).or_insert((ts, row as u32));
        if ts > e.0 {
            *e = (ts, row as u32);
        }
    }
    Some(out)
}

/// Per-partition state of a latest-per-key scan.
#[derive(Debug, Default)]
pub(crate) struct LatestState {
    best: HashMap<Key, i64>,
}

impl LatestState {
    /// The rows of a unit to emit (those holding a key's newest timestamp beyond what was emitted), or
    /// an empty list if the unit has nothing newer for any key. Records them as emitted.
    pub fn select(&mut self, m: &KeyMax) -> Vec<u32> {
        let mut rows = Vec::new();
        for (k, &(ts, row)) in m {
            let newer = self.best.get(k).is_none_or(|&b| ts > b);
            if newer {
                self.best.insert(k.clone(), ts);
                rows.push(row);
            }
        }
        rows.sort_unstable();
        rows
    }
}

/// Takes the chosen rows of a decoded unit.
pub(crate) fn take_rows(batch: &RecordBatch, rows: Vec<u32>) -> Result<RecordBatch> {
    Ok(take_record_batch(batch, &UInt32Array::from(rows))?)
}
