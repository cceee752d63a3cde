//! The codes of a text column within one query (see `query::symbols`): code `i` stands for the `i`-th
//! distinct value met, so codes and values are a bijection for the query's lifetime.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, StringArray};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type};
use datafusion::common::{DataFusionError, Result};
use parking_lot::Mutex;

/// The codes of one text column within one query: code `i` stands for the `i`-th distinct value met.
#[derive(Default)]
pub(crate) struct Symbols {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    codes: HashMap<Box<str>, i32>,
    /// The values in code order, as Arrow offsets and bytes.
    offsets: Vec<i32>,
    bytes: Vec<u8>,
}

impl Entries {
    fn code(&mut self, v: &str) -> Result<i32> {
        if let Some(&c) = self.codes.get(v) {
            return Ok(c);
        }
        let c = i32::try_from(self.codes.len()).map_err(|_| too_many())?;
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.bytes.extend_from_slice(v.as_bytes());
        self.offsets.push(i32::try_from(self.bytes.len()).map_err(|_| too_many())?);
        self.codes.insert(v.into(), c);
        Ok(c)
    }
}

fn too_many() -> DataFusionError {
    DataFusionError::ResourcesExhausted("too many distinct text values to group by codes".into())
}

impl fmt::Debug for Symbols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbols({} values)", self.inner.lock().codes.len())
    }
}

impl Symbols {
    /// The codes of a text array (`Utf8`, or a `Dictionary(Int32, Utf8)` as segments decode it), with
    /// its NULLs.
    pub(crate) fn encode(&self, array: &ArrayRef) -> Result<ArrayRef> {
        if let Some(d) = array.as_dictionary_opt::<Int32Type>()
            && d.values().null_count() == 0
            && let Some(values) = d.values().as_string_opt::<i32>()
        {
            // Each entry once; the rows through the entries' codes.
            let mapped = {
                let mut e = self.inner.lock();
                values.iter().map(|v| e.code(v.unwrap_or_default())).collect::<Result<Vec<i32>>>()?
            };
            let keys = d.keys();
            let codes: Vec<i32> =
                keys.values().iter().map(|&k| mapped.get(k as usize).copied().unwrap_or_default()).collect();
            return Ok(Arc::new(Int32Array::new(ScalarBuffer::from(codes), keys.nulls().cloned())));
        }
        let plain;
        let strings = match array.as_string_opt::<i32>() {
            Some(s) => s,
            None => {
                plain = cast(array, &DataType::Utf8)?;
                plain.as_string::<i32>()
            }
        };
        let mut e = self.inner.lock();
        let codes = (0..strings.len())
            .map(|i| if strings.is_null(i) { Ok(0) } else { e.code(strings.value(i)) })
            .collect::<Result<Vec<i32>>>()?;
        Ok(Arc::new(Int32Array::new(ScalarBuffer::from(codes), strings.nulls().cloned())))
    }

    /// The text of codes this table gave out.
    pub(crate) fn decode(&self, codes: &Int32Array) -> Result<StringArray> {
        let e = self.inner.lock();
        let mut offsets = Vec::with_capacity(codes.len() + 1);
        offsets.push(0i32);
        let mut bytes = Vec::new();
        for (i, &c) in codes.values().iter().enumerate() {
            if !codes.is_null(i) {
                let c = usize::try_from(c)
                    .ok()
                    .filter(|&c| c + 1 < e.offsets.len())
                    .ok_or_else(|| DataFusionError::Internal(format!("text code {c} was never given out")))?;
                bytes.extend_from_slice(&e.bytes[e.offsets[c] as usize..e.offsets[c + 1] as usize]);
            }
            offsets.push(i32::try_from(bytes.len()).map_err(|_| too_many())?);
        }
        Ok(StringArray::try_new(OffsetBuffer::new(ScalarBuffer::from(offsets)), bytes.into(), codes.nulls().cloned())?)
    }
}
