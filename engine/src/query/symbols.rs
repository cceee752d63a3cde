//! Tags as symbols: grouping by low-cardinality text on integer codes.
//!
//! Text columns such as `backend`, `lb` or `path_template` hold few distinct values, and segments store
//! them as a dictionary per row-group chunk (`segment::codec`). Grouping by them as strings hashes and
//! copies a string per row. The [`SymbolGroupBy`] physical optimizer rule finds an aggregate whose
//! group keys include such a column read straight from a table scan, and has the scan emit the column
//! as `Int32` codes into a [`Symbols`] table shared by the query's partitions: each row-group
//! dictionary's few entries are looked up once, and its per-row codes are mapped through them (plain
//! chunks and memtable rows are looked up one by one). The aggregate then groups on integers, and a
//! projection right above it turns the codes of its (few) output rows back into text, so every
//! operator above sees the plan it had. The codes are a bijection with the values within one query,
//! so the groups are exactly those of the text. A partial aggregate grouped by codes and time buckets
//! then needs no hash table: `query::code_agg` numbers its groups by key.
//!
//! A column qualifies when it is a plain column reference among the group keys, no aggregate argument,
//! ordering, `FILTER` or other group key (`upper(k)`) reads it, the aggregate keeps no top-N in key
//! order (codes are not in the text's order), and the scan's largest row group stores it as a
//! dictionary (the cardinality test: the writer stores a chunk as a dictionary when at most half its
//! values, and no more than 65,536, are distinct; a chunk of 256 values or fewer always is). Should
//! DataFusion refuse the aggregate over codes, the plan stays as it was.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int32Type, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

use super::code_agg::CodeAggregateExec;
use super::codes::Symbols;
use super::scan::{TableScanSource, Unit};

/// The text of a code column (see the module documentation).
#[derive(Debug)]
struct SymbolText {
    codes: Arc<dyn PhysicalExpr>,
    symbols: Arc<Symbols>,
}

impl fmt::Display for SymbolText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "symbol_text({})", self.codes)
    }
}

impl PartialEq for SymbolText {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.symbols, &other.symbols) && self.codes.eq(&other.codes)
    }
}

impl Eq for SymbolText {}

impl Hash for SymbolText {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.codes.hash(state);
        (Arc::as_ptr(&self.symbols) as usize).hash(state);
    }
}

impl PhysicalExpr for SymbolText {
    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        let nullable = self.codes.nullable(input_schema)?;
        Ok(Arc::new(Field::new(self.to_string(), DataType::Utf8, nullable)))
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let codes = self.codes.evaluate(batch)?.into_array(batch.num_rows())?;
        let codes = codes
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| DataFusionError::Internal(format!("text codes of type {}", codes.data_type())))?;
        Ok(ColumnarValue::Array(Arc::new(self.symbols.decode(codes)?)))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.codes]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        let [codes] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("symbol_text takes one argument".into()))?;
        Ok(Arc::new(SymbolText { codes, symbols: self.symbols.clone() }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The physical optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct SymbolGroupBy;

impl PhysicalOptimizerRule for SymbolGroupBy {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = plan
            .transform_up(|node| match rewrite(&node)? {
                Some(new) => Ok(Transformed::yes(new)),
                None => Ok(Transformed::no(node)),
            })
            .data()?;
        // Then partial aggregates grouped by codes and time buckets go without a hash table.
        plan.transform_up(|node| match node.downcast_ref::<AggregateExec>().and_then(CodeAggregateExec::of) {
            Some(keyed) => Ok(Transformed::yes(Arc::new(keyed) as Arc<dyn ExecutionPlan>)),
            None => Ok(Transformed::no(node)),
        })
        .data()
    }

    fn name(&self) -> &str {
        "symbol_group_by"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn rewrite(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(agg) = plan.downcast_ref::<AggregateExec>() else { return Ok(None) };
    if !matches!(agg.mode(), AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned)
        || !agg.group_expr().is_single()
        || agg.input_order_mode() != &datafusion::physical_plan::InputOrderMode::Linear
        // A top-N aggregate (`GROUP BY k ORDER BY k LIMIT n`) keeps the first keys in order: codes are
        // not in the text's order.
        || agg.limit_options().is_some_and(|l| l.descending().is_some())
    {
        return Ok(None);
    }
    // The scan, possibly under a cooperative wrapper.
    let (cooperative, ds) = match agg.input().downcast_ref::<CooperativeExec>() {
        Some(c) => (true, c.input().clone()),
        None => (false, agg.input().clone()),
    };
    let Some(scan) =
        ds.downcast_ref::<DataSourceExec>().and_then(|d| d.data_source().downcast_ref::<TableScanSource>())
    else {
        return Ok(None);
    };
    if scan.latest.is_some() || !scan.symbols.is_empty() {
        return Ok(None);
    }
    // Columns an aggregate reads, orders by or filters on stay text.
    let mut used = Vec::new();
    let mut note = |e: &Arc<dyn PhysicalExpr>| {
        e.apply(|n| {
            if let Some(c) = n.downcast_ref::<Column>() {
                used.push(c.index());
            }
            Ok(TreeNodeRecursion::Continue)
        })
    };
    for a in agg.aggr_expr() {
        for e in a.expressions() {
            note(&e)?;
        }
        for o in a.order_bys() {
            note(&o.expr)?;
        }
    }
    for f in agg.filter_expr().iter().flatten() {
        note(f)?;
    }
    // So do the columns of group keys that are expressions (`upper(k)`, `CASE ... k ...`).
    for (e, _) in agg.group_expr().expr() {
        if e.downcast_ref::<Column>().is_none() {
            note(e)?;
        }
    }
    // The largest row group: a small one (a flush of a few rows) is a dictionary whatever the column.
    let sample = (scan.units.iter())
        .filter_map(|u| match u {
            Unit::RowGroup { seg, rg } => Some((seg, *rg)),
            Unit::Mem { .. } => None,
        })
        .max_by_key(|(seg, rg)| seg.segment.footer.row_groups[*rg].rows);
    let Some((seg, rg)) = sample else { return Ok(None) };
    let mut picked = Vec::new();
    for (i, (e, _)) in agg.group_expr().expr().iter().enumerate() {
        let Some(c) = e.downcast_ref::<Column>() else { continue };
        let p = c.index();
        if used.contains(&p) || picked.iter().any(|&(_, q)| q == p) {
            continue;
        }
        let Some(&col) = scan.projection.get(p) else { continue };
        if scan.projected_schema.field(p).data_type() != &DataType::Utf8 {
            continue;
        }
        // The cardinality test (see the module documentation); a damaged chunk is for the scan to report.
        if seg.segment.text_is_dictionary(rg, col).unwrap_or(false) {
            picked.push((i, p));
        }
    }
    if picked.is_empty() {
        return Ok(None);
    }
    let mut src = scan.clone();
    let mut symbols: Vec<Option<Arc<Symbols>>> = vec![None; src.projection.len()];
    let mut fields: Vec<Field> = src.projected_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for &(_, p) in &picked {
        symbols[p] = Some(Arc::new(Symbols::default()));
        fields[p] = fields[p].clone().with_data_type(DataType::Int32);
    }
    src.symbols = symbols.clone();
    src.projected_schema = Arc::new(Schema::new_with_metadata(fields, src.projected_schema.metadata().clone()));
    let mut input: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(src);
    if cooperative {
        input = Arc::new(CooperativeExec::new(input));
    }
    let schema = input.schema();
    // A plan DataFusion will not build over codes keeps its text.
    let Ok(grouped) = AggregateExec::try_new(
        *agg.mode(),
        agg.group_expr().clone(),
        agg.aggr_expr().to_vec(),
        agg.filter_expr().to_vec(),
        input,
        schema,
    ) else {
        return Ok(None);
    };
    let grouped: Arc<dyn ExecutionPlan> = Arc::new(grouped.with_limit_options(agg.limit_options()));
    // Back to text right above the aggregate: the same names, types and order as before.
    let out = grouped.schema();
    let exprs = out
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(f.name(), i));
            let p = picked.iter().find(|&&(g, _)| g == i).map(|&(_, p)| p);
            let expr = match p.and_then(|p| symbols[p].clone()) {
                Some(symbols) => Arc::new(SymbolText { codes: column, symbols }) as Arc<dyn PhysicalExpr>,
                None => column,
            };
            ProjectionExpr::new(expr, f.name().clone())
        })
        .collect::<Vec<_>>();
    match ProjectionExec::try_new(exprs, grouped) {
        Ok(p) if p.schema().fields() == plan.schema().fields() => Ok(Some(Arc::new(p))),
        _ => Ok(None),
    }
}
