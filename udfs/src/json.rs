//! PostgreSQL's JSON functions over JSON kept as text: `to_json` / `to_jsonb`, `json_build_object` /
//! `jsonb_build_object`, `json_build_array` / `jsonb_build_array`, the aggregates `json_agg` /
//! `jsonb_agg`, and the operators `->` (an object's field or an array's element, as JSON) and `->>`
//! (the same as text), planned for text operands by [`JsonOperators`].
//!
//! There is no JSON type: a JSON value is text, written as PostgreSQL writes it (`json_build_object`
//! as `{"a" : 1}`, the `jsonb` ones as `{"a": 1}`). The functions here mark their results as JSON
//! (Arrow's `arrow.json` extension type in the field's metadata), so one nests in another as JSON
//! rather than as a quoted string: `json_build_object('a', json_build_array(1, 2))` is
//! `{"a" : [1, 2]}`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DFSchema, ExprSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Expr, ExprSchemable, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;

use crate::pg::{answer, arrays};

/// The metadata that marks a text field as JSON (Arrow's canonical extension type).
const EXTENSION_KEY: &str = "ARROW:extension:name";
const JSON_EXTENSION: &str = "arrow.json";

/// The scalar functions of this module.
pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    let mut out = vec![];
    for (name, build) in [
        ("to_json", Build::Value { jsonb: false }),
        ("to_jsonb", Build::Value { jsonb: true }),
        ("json_build_object", Build::Object { jsonb: false }),
        ("jsonb_build_object", Build::Object { jsonb: true }),
        ("json_build_array", Build::Array { jsonb: false }),
        ("jsonb_build_array", Build::Array { jsonb: true }),
    ] {
        out.push(Arc::new(ScalarUDF::from(JsonBuild::new(name, build))));
    }
    out.push(Arc::new(ScalarUDF::from(JsonGet::new(false))));
    out.push(Arc::new(ScalarUDF::from(JsonGet::new(true))));
    out
}

/// The aggregates of this module, built on DataFusion's `array_agg` (which keeps `ORDER BY`).
pub fn aggregate_functions(array_agg: &Arc<AggregateUDF>) -> Vec<Arc<AggregateUDF>> {
    [("json_agg", false), ("jsonb_agg", true)]
        .into_iter()
        .map(|(name, jsonb)| Arc::new(AggregateUDF::from(JsonAgg { name, jsonb, inner: array_agg.as_ref().clone() })))
        .collect()
}

fn json_field(name: &str) -> FieldRef {
    Arc::new(
        Field::new(name, DataType::Utf8, true)
            .with_metadata(HashMap::from([(EXTENSION_KEY.to_string(), JSON_EXTENSION.to_string())])),
    )
}

fn is_json(field: &Field) -> bool {
    field.metadata().get(EXTENSION_KEY).is_some_and(|v| v == JSON_EXTENSION)
}

/// Writes `s` as a JSON string.
fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes row `row` of `values` as JSON, as PostgreSQL's `to_json` writes a value of its type:
/// numbers and booleans as themselves, text quoted, times in ISO 8601, arrays and structs as JSON
/// arrays and objects; a value already JSON (`json`) as it is.
fn write_value(out: &mut String, values: &dyn Array, row: usize, json: bool, jsonb: bool) -> Result<()> {
    use DataType as D;
    if values.is_null(row) || values.data_type() == &D::Null {
        out.push_str("null");
        return Ok(());
    }
    match values.data_type() {
        D::Utf8 | D::LargeUtf8 | D::Utf8View if json => {
            let text = ScalarValue::try_from_array(values, row)?.to_string();
            out.push_str(&text);
        }
        D::Boolean => out.push_str(if values.as_boolean().value(row) { "true" } else { "false" }),
        t if t.is_numeric() => {
            let v = ScalarValue::try_from_array(values, row)?;
            let text = v.to_string();
            let finite = match &v {
                ScalarValue::Float64(Some(f)) => f.is_finite(),
                ScalarValue::Float32(Some(f)) => f.is_finite(),
                _ => true,
            };
            // PostgreSQL writes NaN and infinities as strings; whole floats without a fraction.
            if !finite {
                quote(out, &text);
            } else if let Some(whole) = text.strip_suffix(".0") {
                out.push_str(whole);
            } else {
                out.push_str(&text);
            }
        }
        D::Timestamp(..) | D::Date32 | D::Date64 | D::Time32(_) | D::Time64(_) => {
            let text = datafusion::arrow::util::display::array_value_to_string(values, row)?;
            quote(out, &text.replace(' ', "T"));
        }
        D::List(_) | D::LargeList(_) | D::FixedSizeList(..) => {
            let items = ScalarValue::try_from_array(values, row)?;
            let items = match items {
                ScalarValue::List(l) => l.value(0),
                ScalarValue::LargeList(l) => l.value(0),
                ScalarValue::FixedSizeList(l) => l.value(0),
                _ => unreachable!("a list type holds a list"),
            };
            out.push('[');
            for i in 0..items.len() {
                if i > 0 {
                    out.push_str(if jsonb { ", " } else { "," });
                }
                write_value(out, items.as_ref(), i, false, jsonb)?;
            }
            out.push(']');
        }
        D::Struct(fields) => {
            let s = values.as_struct();
            out.push('{');
            for (i, (field, column)) in fields.iter().zip(s.columns()).enumerate() {
                if i > 0 {
                    out.push_str(if jsonb { ", " } else { "," });
                }
                quote(out, field.name());
                out.push_str(if jsonb { ": " } else { ":" });
                write_value(out, column.as_ref(), row, is_json(field), jsonb)?;
            }
            out.push('}');
        }
        _ => {
            let text = ScalarValue::try_from_array(values, row)?.to_string();
            quote(out, &text);
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Build {
    Value { jsonb: bool },
    Object { jsonb: bool },
    Array { jsonb: bool },
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuild {
    name: &'static str,
    build: Build,
    signature: Signature,
}

impl JsonBuild {
    fn new(name: &'static str, build: Build) -> JsonBuild {
        let signature = match build {
            Build::Value { .. } => Signature::any(1, Volatility::Stable),
            _ => Signature::variadic_any(Volatility::Stable),
        };
        JsonBuild { name, build, signature }
    }
}

impl ScalarUDFImpl for JsonBuild {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, _: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        Ok(json_field(self.name))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let json: Vec<bool> = args.arg_fields.iter().map(|f| is_json(f)).collect();
        let rows = if args.args.iter().any(|a| matches!(a, ColumnarValue::Array(_))) { args.number_rows } else { 1 };
        let (values, scalar) = if args.args.is_empty() { (vec![], rows == 1) } else { arrays(&args.args)? };
        let mut out = Vec::with_capacity(rows);
        let mut text = String::new();
        for row in 0..rows {
            text.clear();
            match self.build {
                Build::Value { jsonb } => {
                    if values[0].is_null(row) || values[0].data_type() == &DataType::Null {
                        out.push(None);
                        continue;
                    }
                    write_value(&mut text, values[0].as_ref(), row, json[0], jsonb)?;
                }
                Build::Array { jsonb } => {
                    text.push('[');
                    for (i, v) in values.iter().enumerate() {
                        if i > 0 {
                            text.push_str(", ");
                        }
                        write_value(&mut text, v.as_ref(), row, json[i], jsonb)?;
                    }
                    text.push(']');
                }
                Build::Object { jsonb } => {
                    if values.len() % 2 == 1 {
                        return Err(datafusion::error::DataFusionError::External(Box::new(crate::SqlError {
                            code: crate::SqlState::InvalidParameter,
                            message: "argument list must have even number of elements".into(),
                        })));
                    }
                    text.push('{');
                    for (i, pair) in values.chunks(2).enumerate() {
                        if i > 0 {
                            text.push_str(", ");
                        }
                        if pair[0].is_null(row) {
                            return Err(datafusion::error::DataFusionError::External(Box::new(crate::SqlError {
                                code: crate::SqlState::InvalidParameter,
                                message: "null value not allowed for object key".into(),
                            })));
                        }
                        let key = ScalarValue::try_from_array(&pair[0], row)?.to_string();
                        quote(&mut text, &key);
                        text.push_str(if jsonb { ": " } else { " : " });
                        write_value(&mut text, pair[1].as_ref(), row, json[2 * i + 1], jsonb)?;
                    }
                    text.push('}');
                }
            }
            out.push(Some(text.clone()));
        }
        answer(Arc::new(StringArray::from(out)), scalar)
    }
}

/// `json_get(json, key)` (`->`) and `json_get_text(json, key)` (`->>`): an object's field by name,
/// or an array's element by position (from 0; negative from the end); NULL when there is none or the
/// text is not JSON.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonGet {
    text: bool,
    signature: Signature,
}

impl JsonGet {
    fn new(text: bool) -> JsonGet {
        JsonGet { text, signature: Signature::any(2, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for JsonGet {
    fn name(&self) -> &str {
        if self.text { "json_get_text" } else { "json_get" }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, _: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        Ok(if self.text { Arc::new(Field::new(self.name(), DataType::Utf8, true)) } else { json_field(self.name()) })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (values, scalar) = arrays(&args.args)?;
        let docs = datafusion::arrow::compute::cast(&values[0], &DataType::Utf8)?;
        let docs = docs.as_string::<i32>();
        let keys = &values[1];
        let mut out = Vec::with_capacity(docs.len());
        for row in 0..docs.len() {
            if docs.is_null(row) || keys.is_null(row) {
                out.push(None);
                continue;
            }
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(docs.value(row)) else {
                out.push(None);
                continue;
            };
            let key = ScalarValue::try_from_array(keys, row)?;
            let found = match (&doc, &key) {
                (serde_json::Value::Object(map), k) => map.get(&k.to_string()),
                (serde_json::Value::Array(items), k) => match k.cast_to(&DataType::Int64) {
                    Ok(ScalarValue::Int64(Some(i))) => {
                        let i = if i < 0 { items.len() as i64 + i } else { i };
                        usize::try_from(i).ok().and_then(|i| items.get(i))
                    }
                    _ => None,
                },
                _ => None,
            };
            out.push(match found {
                None | Some(serde_json::Value::Null) if self.text => None,
                None => None,
                Some(serde_json::Value::String(s)) if self.text => Some(s.clone()),
                Some(v) => Some(v.to_string()),
            });
        }
        answer(Arc::new(StringArray::from(out)), scalar)
    }
}

/// `json_agg(x [ORDER BY ...])` / `jsonb_agg`: the group's values as a JSON array (NULLs as `null`),
/// NULL for no rows. The values are gathered by DataFusion's `array_agg`, with its ordering.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonAgg {
    name: &'static str,
    jsonb: bool,
    inner: AggregateUDF,
}

impl AggregateUDFImpl for JsonAgg {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field(&self, _: &[FieldRef]) -> Result<FieldRef> {
        Ok(json_field(self.name))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        let json = is_json(&args.expr_fields[0]);
        // array_agg's accumulator, asked for the list it makes.
        let list_field = self.inner.return_field(args.expr_fields)?;
        let inner_args = AccumulatorArgs { return_field: list_field, ..args };
        Ok(Box::new(JsonAggAccumulator { inner: self.inner.accumulator(inner_args)?, json, jsonb: self.jsonb }))
    }

    fn order_sensitivity(&self) -> datafusion::logical_expr::utils::AggregateOrderSensitivity {
        self.inner.inner().order_sensitivity()
    }

    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        let inner = Arc::clone(self.inner.inner()).with_beneficial_ordering(beneficial_ordering)?;
        Ok(inner.map(|inner| {
            Arc::new(JsonAgg { name: self.name, jsonb: self.jsonb, inner: AggregateUDF::new_from_shared_impl(inner) })
                as Arc<dyn AggregateUDFImpl>
        }))
    }
}

#[derive(Debug)]
struct JsonAggAccumulator {
    inner: Box<dyn Accumulator>,
    json: bool,
    jsonb: bool,
}

impl Accumulator for JsonAggAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(values)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let items = match self.inner.evaluate()? {
            ScalarValue::List(l) if !l.is_null(0) => l.value(0),
            _ => return Ok(ScalarValue::Utf8(None)),
        };
        let mut text = String::from("[");
        for i in 0..items.len() {
            if i > 0 {
                text.push_str(", ");
            }
            write_value(&mut text, items.as_ref(), i, self.json, self.jsonb)?;
        }
        text.push(']');
        Ok(ScalarValue::Utf8(Some(text)))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.inner.size()
    }
}

/// Plans `->` and `->>` on text as [`JsonGet`]'s functions.
#[derive(Debug)]
pub struct JsonOperators;

impl ExprPlanner for JsonOperators {
    fn plan_binary_op(&self, expr: RawBinaryExpr, schema: &DFSchema) -> Result<PlannerResult<RawBinaryExpr>> {
        let text = matches!(expr.op, BinaryOperator::LongArrow);
        if !matches!(expr.op, BinaryOperator::Arrow | BinaryOperator::LongArrow) {
            return Ok(PlannerResult::Original(expr));
        }
        let Ok(left) = expr.left.get_type(schema as &dyn ExprSchema) else {
            return Ok(PlannerResult::Original(expr));
        };
        if !matches!(left, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            return Ok(PlannerResult::Original(expr));
        }
        let f = Arc::new(ScalarUDF::from(JsonGet::new(text)));
        Ok(PlannerResult::Planned(Expr::ScalarFunction(ScalarFunction::new_udf(f, vec![expr.left, expr.right]))))
    }
}
