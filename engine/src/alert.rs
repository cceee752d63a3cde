//! Alert rules evaluated in the database: rows of the table `alert_rules` (`name`, `query`, `every`,
//! `webhook`, `enabled`). A rule's query returns one row per thing that is wrong now; each row is an
//! alert instance, identified by its columns other than `value`. An instance that appears is *firing*,
//! one that disappears is *resolved*; both are appended to `alert_events` (and, by the server, POSTed
//! to the rule's webhook). Which instances are firing is kept in the catalog, so a restart neither
//! repeats nor loses a transition.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, SqlState};

/// The catalog object with every rule's firing instances.
pub const STATE_KEY: &str = "alerts";

/// A rule as `alert_rules` holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub query: String,
    pub every_us: i64,
    pub webhook: Option<String>,
}

/// A firing instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    pub since_us: i64,
    pub value: Option<f64>,
    pub details: String,
}

/// Firing instances per rule, by key.
pub type State = BTreeMap<String, BTreeMap<String, Firing>>;

/// A transition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub ts_us: i64,
    pub alert: String,
    /// `firing` or `resolved`.
    pub state: &'static str,
    pub key: String,
    pub value: Option<f64>,
    /// The instance's row as a JSON object (text).
    pub details: String,
    #[serde(skip)]
    pub webhook: Option<String>,
}

/// The instances of a rule's result: key (the columns other than `value`, `name=value` joined by
/// `, `), the `value` column as a number when there is one, and the row as JSON.
pub fn instances(batch: &RecordBatch) -> Result<BTreeMap<String, (Option<f64>, String)>> {
    let options = FormatOptions::default().with_null("NULL");
    let schema = batch.schema();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let value_col = schema.index_of("value").ok();
    let numbers = match value_col {
        Some(i) => {
            Some(datafusion::arrow::compute::cast(batch.column(i), &datafusion::arrow::datatypes::DataType::Float64)?)
        }
        None => None,
    };
    let mut out = BTreeMap::new();
    for row in 0..batch.num_rows() {
        let mut key = Vec::new();
        let mut details = serde_json::Map::new();
        for (i, f) in schema.fields().iter().enumerate() {
            let text = formatters[i].value(row).to_string();
            details.insert(f.name().clone(), serde_json::Value::String(text.clone()));
            if Some(i) != value_col {
                key.push(format!("{}={text}", f.name()));
            }
        }
        let value = numbers.as_ref().and_then(|n| {
            let n = n.as_any().downcast_ref::<datafusion::arrow::array::Float64Array>()?;
            (!n.is_null(row)).then(|| n.value(row))
        });
        out.insert(key.join(", "), (value, serde_json::Value::Object(details).to_string()));
    }
    Ok(out)
}

/// The transitions from `before` to `now` for rule `rule`; updates `before`.
pub fn transitions(
    rule: &Rule,
    before: &mut BTreeMap<String, Firing>,
    now: BTreeMap<String, (Option<f64>, String)>,
    ts_us: i64,
) -> Vec<Event> {
    let mut events = Vec::new();
    let gone: Vec<String> = before.keys().filter(|k| !now.contains_key(*k)).cloned().collect();
    for key in gone {
        let f = before.remove(&key).expect("listed");
        events.push(Event {
            ts_us,
            alert: rule.name.clone(),
            state: "resolved",
            key,
            value: f.value,
            details: f.details,
            webhook: rule.webhook.clone(),
        });
    }
    for (key, (value, details)) in now {
        match before.get_mut(&key) {
            Some(f) => {
                f.value = value;
                f.details = details;
            }
            None => {
                events.push(Event {
                    ts_us,
                    alert: rule.name.clone(),
                    state: "firing",
                    key: key.clone(),
                    value,
                    details: details.clone(),
                    webhook: rule.webhook.clone(),
                });
                before.insert(key, Firing { since_us: ts_us, value, details });
            }
        }
    }
    events
}

/// The events as rows of `alert_events` (ts, alert, state, key, value, details).
pub fn events_batch(events: &[Event]) -> Result<RecordBatch> {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        Field::new("alert", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("details", DataType::Utf8, true),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampMicrosecondArray::from_iter_values(events.iter().map(|e| e.ts_us))),
            Arc::new(StringArray::from_iter_values(events.iter().map(|e| e.alert.as_str()))),
            Arc::new(StringArray::from_iter_values(events.iter().map(|e| e.state))),
            Arc::new(StringArray::from_iter_values(events.iter().map(|e| e.key.as_str()))),
            Arc::new(Float64Array::from(events.iter().map(|e| e.value).collect::<Vec<_>>())),
            Arc::new(StringArray::from(events.iter().map(|e| Some(e.details.as_str())).collect::<Vec<_>>())),
        ],
    )?)
}

pub fn load(engine: &crate::Engine) -> State {
    engine.object(STATE_KEY).and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default()
}

pub fn save(engine: &crate::Engine, state: &State) -> Result<()> {
    let v = serde_json::to_value(state).map_err(|e| Error::invalid(SqlState::InvalidParameter, e.to_string()))?;
    engine.put_object(STATE_KEY, Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Rule {
        Rule { name: "r".into(), query: String::new(), every_us: 60_000_000, webhook: None }
    }

    fn now(keys: &[(&str, f64)]) -> BTreeMap<String, (Option<f64>, String)> {
        keys.iter().map(|(k, v)| (k.to_string(), (Some(*v), "{}".to_string()))).collect()
    }

    #[test]
    fn fire_hold_resolve() {
        let mut state = BTreeMap::new();
        let e = transitions(&rule(), &mut state, now(&[("backend=a", 0.3)]), 1);
        assert_eq!(e.iter().map(|e| (e.state, e.key.as_str())).collect::<Vec<_>>(), [("firing", "backend=a")]);
        // Still wrong: no new event, the value follows.
        let e = transitions(&rule(), &mut state, now(&[("backend=a", 0.5), ("backend=b", 0.4)]), 2);
        assert_eq!(e.iter().map(|e| (e.state, e.key.as_str())).collect::<Vec<_>>(), [("firing", "backend=b")]);
        assert_eq!(state["backend=a"].value, Some(0.5));
        assert_eq!(state["backend=a"].since_us, 1);
        let e = transitions(&rule(), &mut state, now(&[]), 3);
        assert_eq!(
            e.iter().map(|e| (e.state, e.key.as_str())).collect::<Vec<_>>(),
            [("resolved", "backend=a"), ("resolved", "backend=b")]
        );
        assert!(state.is_empty());
    }
}
