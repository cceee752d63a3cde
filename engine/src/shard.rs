//! A writer's shard (docs/scale-out.md §2): several writers share one object-store prefix, each
//! owning the rows of some load balancers (or of a hash of another key column) and publishing its own
//! catalog and segments under `<prefix>/shards/<name>/`. A node on the prefix itself reads the union
//! of the shards' catalogs (`crate::shards`).
//!
//! A writer refuses a row of another shard (SQLSTATE 23514, `check_violation`), so a misrouted load
//! balancer is noticed rather than stored twice. Tables without the key column are not sharded: a
//! writer's rows in them stay its own (readers read such tables from their own directory: dimension
//! tables such as `backends` are written there).

use std::path::Path;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, SqlState};
use crate::io::Fs;
use crate::types::TableDef;

/// Which rows a shard owns, by the text of its key column (a null key counts as the empty text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owns {
    /// Rows whose key is one of these.
    Values(Vec<String>),
    /// Rows whose key's CRC-32 (IEEE, of its UTF-8 bytes) modulo `of` is `index`.
    Hash { of: u32, index: u32 },
}

/// A writer's shard: its name (the store prefix `shards/<name>/`), the column that routes a row, and
/// the rows it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRule {
    pub name: String,
    pub key: String,
    pub owns: Owns,
}

/// The file recording a data directory's shard, so that every opener of the directory checks rows
/// the same way.
pub const SHARD_FILE: &str = "shard";

/// The catalog object holding a writer's rule (`CatalogData::objects`), published with its catalog.
pub const SHARD_KEY: &str = "shard";

impl ShardRule {
    /// Checks the rule itself: a name usable in an object path, a key, something owned.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(SqlState::InvalidParameter, m));
        if self.name.is_empty()
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || self.name.starts_with('.')
        {
            return bad(format!("shard name \"{}\": use letters, digits, '-', '_' and '.'", self.name));
        }
        if self.key.is_empty() {
            return bad(format!("shard \"{}\" needs a key column", self.name));
        }
        match &self.owns {
            Owns::Values(v) if v.is_empty() => bad(format!("shard \"{}\" owns no values", self.name)),
            Owns::Hash { of, index } if *of == 0 || index >= of => {
                bad(format!("shard \"{}\": hash index {index} of {of} is out of range", self.name))
            }
            _ => Ok(()),
        }
    }

    /// The object store URL this shard writes to, below the shared `prefix` URL.
    pub fn store_url(&self, prefix: &str) -> String {
        format!("{}/shards/{}", prefix.trim_end_matches('/'), self.name)
    }

    /// Whether a row whose key is `value` belongs to this shard.
    pub fn owns(&self, value: &str) -> bool {
        match &self.owns {
            Owns::Values(v) => v.iter().any(|x| x == value),
            Owns::Hash { of, index } => crc32fast::hash(value.as_bytes()) % of == *index,
        }
    }

    /// Refuses `batch` (rows of table `def`, in its schema) if any row belongs to another shard.
    pub fn check(&self, def: &TableDef, batch: &RecordBatch) -> Result<()> {
        let Ok(i) = batch.schema().index_of(&self.key) else { return Ok(()) };
        let text = cast(batch.column(i), &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let mut last: Option<&str> = None;
        for row in 0..text.len() {
            let value = if text.is_null(row) { "" } else { text.value(row) };
            if last == Some(value) {
                continue;
            }
            if !self.owns(value) {
                return Err(Error::invalid(
                    SqlState::CheckViolation,
                    format!(
                        "new row for relation \"{}\" belongs to another shard: {} = '{value}' is not owned by shard \"{}\"",
                        def.name, self.key, self.name
                    ),
                ));
            }
            last = Some(value);
        }
        Ok(())
    }
}

/// Records `rule` in the directory, or, without one, takes the one recorded there.
pub(crate) fn remember(fs: &dyn Fs, dir: &Path, rule: Option<ShardRule>) -> Result<Option<ShardRule>> {
    let path = dir.join(SHARD_FILE);
    match rule {
        Some(rule) => {
            rule.validate()?;
            let bytes = serde_json::to_vec_pretty(&rule).map_err(|e| Error::Internal(e.to_string()))?;
            if fs.read(&path).ok().as_deref() != Some(bytes.as_slice()) {
                crate::io::write_atomic(fs, &path, &bytes).map_err(|e| Error::io(&path, e))?;
            }
            Ok(Some(rule))
        }
        None if fs.exists(&path) => {
            let bytes = fs.read(&path).map_err(|e| Error::io(&path, e))?;
            let rule: ShardRule =
                serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, 0, format!("shard file: {e}")))?;
            Ok(Some(rule))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn def() -> TableDef {
        TableDef { name: "t".into(), columns: Vec::new(), time: None, dedup_keys: Vec::new(), sort_key: Vec::new() }
    }

    fn batch(values: &[Option<&str>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("lb", DataType::Utf8, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(values.to_vec()))]).expect("batch")
    }

    #[test]
    fn values_and_hash_decide_ownership() {
        let east = ShardRule { name: "east".into(), key: "lb".into(), owns: Owns::Values(vec!["lb-1".into()]) };
        assert!(east.check(&def(), &batch(&[Some("lb-1"), Some("lb-1")])).is_ok());
        let err = east.check(&def(), &batch(&[Some("lb-1"), Some("lb-2")])).expect_err("lb-2 is not east's");
        assert_eq!(err.sqlstate(), "23514");
        assert!(err.to_string().contains("lb = 'lb-2'"), "{err}");
        // Tables without the key column are not sharded.
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec!["lb-9"]))],
        )
        .expect("batch");
        assert!(east.check(&def(), &other).is_ok());

        // Every key belongs to exactly one of the hash shards.
        let shards: Vec<ShardRule> = (0..3)
            .map(|index| ShardRule { name: format!("h{index}"), key: "lb".into(), owns: Owns::Hash { of: 3, index } })
            .collect();
        for v in ["lb-1", "lb-2", "lb-3", "", "zone-a"] {
            let owners = shards.iter().filter(|s| s.check(&def(), &batch(&[Some(v)])).is_ok()).count();
            assert_eq!(owners, 1, "{v}");
        }
        // A null key is the empty text.
        let owner = shards.iter().find(|s| s.owns("")).expect("an owner");
        assert!(owner.check(&def(), &batch(&[None])).is_ok());
    }

    #[test]
    fn bad_rules_are_refused() {
        let rule = |name: &str, owns: Owns| ShardRule { name: name.into(), key: "lb".into(), owns };
        assert!(rule("a/b", Owns::Values(vec!["x".into()])).validate().is_err());
        assert!(rule("..", Owns::Values(vec!["x".into()])).validate().is_err());
        assert!(rule("a", Owns::Values(Vec::new())).validate().is_err());
        assert!(rule("a", Owns::Hash { of: 2, index: 2 }).validate().is_err());
        assert!(rule("a", Owns::Hash { of: 2, index: 1 }).validate().is_ok());
        assert_eq!(rule("a", Owns::Hash { of: 2, index: 1 }).store_url("s3://b/t/"), "s3://b/t/shards/a");
    }
}
