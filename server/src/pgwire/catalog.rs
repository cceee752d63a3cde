//! What clients read to learn the schema, as PostgreSQL answers it.
//!
//! - `pg_catalog` is datafusion-pg-catalog's, fed through [`Metadata`] so that `pg_attribute.attnotnull`
//!   reflects the engine's NOT NULL columns (the Arrow schemas the query engine sees are all nullable;
//!   the engine enforces NOT NULL itself).
//! - `information_schema` is ours (DataFusion's has Arrow type names and 0-based positions):
//!   `schemata`, `tables`, `views`, `columns` with PostgreSQL type names, `YES` / `NO` and 1-based
//!   `ordinal_position`, `character_sets`, and the constraint tables (empty: there are no keys).
//!   Only the user schema's tables and views are listed, not the catalogs' own tables.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, Expr, ScalarUDF, Volatility, create_udf};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use trafficdb::Database;
use trafficdb::engine::Engine;

const USER_SCHEMA: &str = trafficdb::database::SCHEMA_NAME;
const CATALOG: &str = trafficdb::database::CATALOG_NAME;
const SYSTEM_SCHEMAS: [&str; 2] = ["pg_catalog", "information_schema"];

/// Installs `pg_catalog` and `information_schema` for the server's sessions. The server's sessions
/// must have DataFusion's own information_schema switched off (see [`crate::pgwire::session`]).
pub fn install(db: &Database, ctx: &SessionContext) -> anyhow::Result<()> {
    use datafusion_postgres::datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables};
    datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog(
        ctx,
        CATALOG,
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| anyhow::anyhow!("setting up pg_catalog: {e}"))?;
    let metadata = Metadata { list: ctx.state().catalog_list().clone(), engine: db.engine().clone() };
    let static_tables = Arc::new(PgCatalogStaticTables::try_new()?);
    ctx.register_udf(regproc_oid_udf(function_oids(static_tables.pg_proc.data())?));
    let pg_catalog = PgCatalogSchemaProvider::try_new(
        metadata.clone(),
        static_tables,
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )?;
    let catalog = ctx.catalog(CATALOG).ok_or_else(|| anyhow::anyhow!("catalog {CATALOG} missing"))?;
    catalog
        .register_schema("pg_catalog", Arc::new(PgCatalog { inner: Arc::new(pg_catalog), settings: pg_settings()? }))?;
    catalog.register_schema("information_schema", Arc::new(InformationSchema { metadata }))?;
    Ok(())
}

/// `pg_catalog` as datafusion-pg-catalog serves it, but `pg_settings`, which lists the settings
/// `SHOW` and `current_setting` answer (the catalog's lists one).
#[derive(Debug)]
struct PgCatalog {
    inner: Arc<dyn SchemaProvider>,
    settings: Arc<dyn TableProvider>,
}

#[async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name.eq_ignore_ascii_case("pg_settings") {
            return Ok(Some(self.settings.clone()));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `pg_settings`: one row per setting of [`crate::pgwire::compat::settings`], with its value as a
/// session starts with it.
fn pg_settings() -> Result<Arc<dyn TableProvider>> {
    let text = ["name", "setting", "unit", "category", "short_desc", "extra_desc", "context", "vartype", "source"];
    let more = ["min_val", "max_val", "enumvals", "boot_val", "reset_val", "sourcefile"];
    let mut fields: Vec<Field> = text.iter().chain(&more).map(|n| Field::new(*n, DataType::Utf8, true)).collect();
    fields.push(Field::new("sourceline", DataType::Int32, true));
    fields.push(Field::new("pending_restart", DataType::Boolean, true));
    let schema = Arc::new(Schema::new(fields));
    let settings = crate::pgwire::compat::settings();
    let text = |values: Vec<Option<String>>| -> ArrayRef { Arc::new(values.into_iter().collect::<StringArray>()) };
    let each = |f: fn(&(String, String, bool)) -> Option<String>| text(settings.iter().map(f).collect());
    let vartype = |v: &str| {
        if v.parse::<i64>().is_ok() {
            "integer"
        } else if matches!(v, "on" | "off") {
            "bool"
        } else {
            "string"
        }
    };
    let none = || text(vec![None; settings.len()]);
    let mut columns: Vec<ArrayRef> = vec![
        each(|s| Some(s.0.clone())),
        each(|s| Some(s.1.clone())),
        none(),
        none(),
        none(),
        none(),
        each(|s| Some(if s.2 { "user" } else { "internal" }.to_string())),
        text(settings.iter().map(|s| Some(vartype(&s.1).to_string())).collect()),
        each(|_| Some("default".to_string())),
        none(),
        none(),
        none(),
        each(|s| Some(s.1.clone())),
        each(|s| Some(s.1.clone())),
        none(),
    ];
    columns.push(Arc::new(Int32Array::new_null(settings.len())));
    columns.push(Arc::new(datafusion::arrow::array::BooleanArray::from(vec![false; settings.len()])));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])?))
}

/// The function that turns the name in a regproc column of `pg_type` into the function's OID (see
/// `crate::pgwire::compat`, which rewrites comparisons of such columns with OIDs to call it).
pub const REGPROC_OID: &str = "trafficdb_regproc_oid";

/// `pg_proc`'s function names and OIDs. Where a name is overloaded the smallest OID stands for it
/// (the regproc columns of `pg_type` name functions that are not overloaded).
fn function_oids(pg_proc: &[RecordBatch]) -> Result<HashMap<String, i32>> {
    use datafusion::arrow::compute::cast;
    let mut oids = HashMap::new();
    for batch in pg_proc {
        let column = |name: &str, ty: &DataType| -> Result<ArrayRef> {
            let c = batch
                .column_by_name(name)
                .ok_or_else(|| DataFusionError::Internal(format!("pg_proc has no column {name}")))?;
            Ok(cast(c, ty)?)
        };
        let (names, ids) = (column("proname", &DataType::Utf8)?, column("oid", &DataType::Int32)?);
        let names = datafusion::common::cast::as_string_array(&names)?;
        let ids = datafusion::common::cast::as_int32_array(&ids)?;
        for (name, oid) in names.iter().zip(ids.iter()) {
            if let (Some(name), Some(oid)) = (name, oid) {
                let e = oids.entry(name.to_string()).or_insert(oid);
                *e = (*e).min(oid);
            }
        }
    }
    Ok(oids)
}

/// `trafficdb_regproc_oid(name)`: the OID of the function a regproc column names; NULL for `-`
/// (PostgreSQL's display of "no function") and names no function has.
fn regproc_oid_udf(oids: HashMap<String, i32>) -> ScalarUDF {
    create_udf(
        REGPROC_OID,
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let names = args[0].to_array(1)?;
            let names = datafusion::common::cast::as_string_array(&names)?;
            let out: Int32Array = names.iter().map(|n| n.and_then(|n| oids.get(n).copied())).collect();
            Ok(match &args[0] {
                ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?),
                ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(out)),
            })
        }),
    )
}

/// The catalog as the emulated system tables see it: the session's catalogs, with stored tables'
/// columns nullable only where the table definition allows NULL.
#[derive(Clone)]
pub struct Metadata {
    list: Arc<dyn CatalogProviderList>,
    engine: Arc<Engine>,
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metadata")
    }
}

#[async_trait]
impl CatalogInfo for Metadata {
    async fn catalog_names(&self) -> Result<Vec<String>> {
        CatalogInfo::catalog_names(&self.list).await
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>> {
        CatalogInfo::schema_names(&self.list, catalog).await
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> Result<Option<Vec<String>>> {
        if schema == "information_schema" && catalog == CATALOG {
            return Ok(Some(Vec::new()));
        }
        CatalogInfo::table_names(&self.list, catalog, schema).await
    }

    async fn table_schema(&self, catalog: &str, schema: &str, table: &str) -> Result<Option<SchemaRef>> {
        if catalog == CATALOG
            && let Some(s) = self.stored_schema(schema, table)
        {
            return Ok(Some(s));
        }
        CatalogInfo::table_schema(&self.list, catalog, schema, table).await
    }

    async fn table_type(&self, catalog: &str, schema: &str, table: &str) -> Result<Option<TableType>> {
        CatalogInfo::table_type(&self.list, catalog, schema, table).await
    }
}

impl Metadata {
    /// A stored table's schema with the nullability of its definition.
    fn stored_schema(&self, schema: &str, table: &str) -> Option<SchemaRef> {
        if schema != USER_SCHEMA {
            return None;
        }
        let t = self.engine.table(table)?;
        let fields: Vec<Field> = t
            .schema
            .fields()
            .iter()
            .zip(&t.def.columns)
            .map(|(f, c)| f.as_ref().clone().with_nullable(c.nullable))
            .collect();
        Some(Arc::new(Schema::new(fields)))
    }

    /// (schema, table, type, provider) of every user table and view, sorted by name.
    async fn relations(&self) -> Result<Vec<(String, String, TableType, Arc<dyn TableProvider>)>> {
        let mut out = Vec::new();
        let Some(catalog) = self.list.catalog(CATALOG) else { return Ok(out) };
        for schema_name in catalog.schema_names() {
            if SYSTEM_SCHEMAS.contains(&schema_name.as_str()) {
                continue;
            }
            let Some(schema) = catalog.schema(&schema_name) else { continue };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                if let Some(t) = schema.table(&name).await? {
                    out.push((schema_name.clone(), name, t.table_type(), t));
                }
            }
        }
        Ok(out)
    }
}

/// PostgreSQL's description of an Arrow type: (data_type, udt_name, numeric_precision,
/// numeric_precision_radix, numeric_scale, datetime_precision).
pub fn pg_type(t: &DataType) -> (String, String, Option<i32>, Option<i32>, Option<i32>, Option<i32>) {
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    let int = |bits: i32, n: (String, String)| (n.0, n.1, Some(bits), Some(2), Some(0), None);
    match t {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => int(16, s("smallint", "int2")),
        DataType::Int32 | DataType::UInt16 => int(32, s("integer", "int4")),
        DataType::Int64 | DataType::UInt32 => int(64, s("bigint", "int8")),
        DataType::UInt64 => ("numeric".into(), "numeric".into(), Some(20), Some(10), Some(0), None),
        DataType::Float16 | DataType::Float32 => ("real".into(), "float4".into(), Some(24), Some(2), None, None),
        DataType::Float64 => ("double precision".into(), "float8".into(), Some(53), Some(2), None, None),
        DataType::Decimal128(p, sc) | DataType::Decimal256(p, sc) => {
            ("numeric".into(), "numeric".into(), Some(i32::from(*p)), Some(10), Some(i32::from(*sc)), None)
        }
        DataType::Boolean => (s("boolean", "bool").0, "bool".into(), None, None, None, None),
        DataType::Timestamp(_, None) => {
            ("timestamp without time zone".into(), "timestamp".into(), None, None, None, Some(6))
        }
        DataType::Timestamp(_, Some(_)) => {
            ("timestamp with time zone".into(), "timestamptz".into(), None, None, None, Some(6))
        }
        DataType::Date32 | DataType::Date64 => ("date".into(), "date".into(), None, None, None, Some(0)),
        DataType::Time32(_) | DataType::Time64(_) => {
            ("time without time zone".into(), "time".into(), None, None, None, Some(6))
        }
        DataType::Interval(_) | DataType::Duration(_) => {
            ("interval".into(), "interval".into(), None, None, None, Some(6))
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            ("bytea".into(), "bytea".into(), None, None, None, None)
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            ("ARRAY".into(), format!("_{}", pg_type(f.data_type()).1), None, None, None, None)
        }
        _ => ("text".into(), "text".into(), None, None, None, None),
    }
}

/// `information_schema`, computed from the catalog at each scan.
#[derive(Debug)]
struct InformationSchema {
    metadata: Metadata,
}

const IS_TABLES: [&str; 8] = [
    "schemata",
    "tables",
    "views",
    "columns",
    "character_sets",
    "table_constraints",
    "key_column_usage",
    "referential_constraints",
];

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        IS_TABLES.iter().map(|s| s.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let name = name.to_ascii_lowercase();
        if !IS_TABLES.contains(&name.as_str()) {
            return Ok(None);
        }
        Ok(Some(Arc::new(InfoTable { schema: info_schema(&name), name, metadata: self.metadata.clone() })))
    }

    fn table_exist(&self, name: &str) -> bool {
        IS_TABLES.contains(&name.to_ascii_lowercase().as_str())
    }
}

/// The columns of each `information_schema` table (text unless named in `ints`).
fn info_schema(name: &str) -> SchemaRef {
    let (cols, ints): (&[&str], &[&str]) = match name {
        "schemata" => (
            &[
                "catalog_name",
                "schema_name",
                "schema_owner",
                "default_character_set_catalog",
                "default_character_set_schema",
                "default_character_set_name",
                "sql_path",
            ],
            &[],
        ),
        "tables" => (
            &[
                "table_catalog",
                "table_schema",
                "table_name",
                "table_type",
                "self_referencing_column_name",
                "reference_generation",
                "user_defined_type_catalog",
                "user_defined_type_schema",
                "user_defined_type_name",
                "is_insertable_into",
                "is_typed",
                "commit_action",
            ],
            &[],
        ),
        "views" => (
            &[
                "table_catalog",
                "table_schema",
                "table_name",
                "view_definition",
                "check_option",
                "is_updatable",
                "is_insertable_into",
                "is_trigger_updatable",
                "is_trigger_deletable",
                "is_trigger_insertable_into",
            ],
            &[],
        ),
        "columns" => (
            &[
                "table_catalog",
                "table_schema",
                "table_name",
                "column_name",
                "ordinal_position",
                "column_default",
                "is_nullable",
                "data_type",
                "character_maximum_length",
                "character_octet_length",
                "numeric_precision",
                "numeric_precision_radix",
                "numeric_scale",
                "datetime_precision",
                "interval_type",
                "interval_precision",
                "character_set_catalog",
                "character_set_schema",
                "character_set_name",
                "collation_catalog",
                "collation_schema",
                "collation_name",
                "domain_catalog",
                "domain_schema",
                "domain_name",
                "udt_catalog",
                "udt_schema",
                "udt_name",
                "scope_catalog",
                "scope_schema",
                "scope_name",
                "maximum_cardinality",
                "dtd_identifier",
                "is_self_referencing",
                "is_identity",
                "identity_generation",
                "identity_start",
                "identity_increment",
                "identity_maximum",
                "identity_minimum",
                "identity_cycle",
                "is_generated",
                "generation_expression",
                "is_updatable",
            ],
            &[
                "ordinal_position",
                "character_maximum_length",
                "character_octet_length",
                "numeric_precision",
                "numeric_precision_radix",
                "numeric_scale",
                "datetime_precision",
                "interval_precision",
                "maximum_cardinality",
            ],
        ),
        "character_sets" => (
            &[
                "character_set_catalog",
                "character_set_schema",
                "character_set_name",
                "character_repertoire",
                "form_of_use",
                "default_collate_catalog",
                "default_collate_schema",
                "default_collate_name",
            ],
            &[],
        ),
        "table_constraints" => (
            &[
                "constraint_catalog",
                "constraint_schema",
                "constraint_name",
                "table_catalog",
                "table_schema",
                "table_name",
                "constraint_type",
                "is_deferrable",
                "initially_deferred",
                "enforced",
                "nulls_distinct",
            ],
            &[],
        ),
        "key_column_usage" => (
            &[
                "constraint_catalog",
                "constraint_schema",
                "constraint_name",
                "table_catalog",
                "table_schema",
                "table_name",
                "column_name",
                "ordinal_position",
                "position_in_unique_constraint",
            ],
            &["ordinal_position", "position_in_unique_constraint"],
        ),
        _ => (
            &[
                "constraint_catalog",
                "constraint_schema",
                "constraint_name",
                "unique_constraint_catalog",
                "unique_constraint_schema",
                "unique_constraint_name",
                "match_option",
                "update_rule",
                "delete_rule",
            ],
            &[],
        ),
    };
    Arc::new(Schema::new(
        cols.iter()
            .map(|c| Field::new(*c, if ints.contains(c) { DataType::Int32 } else { DataType::Utf8 }, true))
            .collect::<Vec<_>>(),
    ))
}

#[derive(Debug)]
struct InfoTable {
    name: String,
    schema: SchemaRef,
    metadata: Metadata,
}

/// Rows as columns of optional text / integers, filled in schema order.
struct Rows {
    schema: SchemaRef,
    cols: Vec<Vec<Cell>>,
}

#[derive(Clone)]
enum Cell {
    Text(Option<String>),
    Int(Option<i32>),
}

impl Rows {
    fn new(schema: &SchemaRef) -> Rows {
        Rows { schema: schema.clone(), cols: (0..schema.fields().len()).map(|_| Vec::new()).collect() }
    }

    /// Appends one row given as (column, value) pairs; columns not named are NULL.
    fn push(&mut self, values: &[(&str, Cell)]) {
        for (i, f) in self.schema.fields().iter().enumerate() {
            let v = values.iter().find(|(n, _)| *n == f.name()).map(|(_, v)| v.clone());
            let is_int = f.data_type() == &DataType::Int32;
            self.cols[i].push(v.unwrap_or(if is_int { Cell::Int(None) } else { Cell::Text(None) }));
        }
    }

    fn finish(self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .cols
            .into_iter()
            .zip(self.schema.fields())
            .map(|(col, f)| -> ArrayRef {
                if f.data_type() == &DataType::Int32 {
                    Arc::new(
                        col.into_iter().map(|c| if let Cell::Int(n) = c { n } else { None }).collect::<Int32Array>(),
                    )
                } else {
                    Arc::new(
                        col.into_iter().map(|c| if let Cell::Text(t) = c { t } else { None }).collect::<StringArray>(),
                    )
                }
            })
            .collect();
        Ok(RecordBatch::try_new(self.schema, arrays)?)
    }
}

fn t(s: &str) -> Cell {
    Cell::Text(Some(s.to_string()))
}

fn n(v: Option<i32>) -> Cell {
    Cell::Int(v)
}

impl InfoTable {
    async fn rows(&self) -> Result<RecordBatch> {
        let mut rows = Rows::new(&self.schema);
        let relations = match self.name.as_str() {
            "tables" | "views" | "columns" => self.metadata.relations().await?,
            _ => Vec::new(),
        };
        match self.name.as_str() {
            "schemata" => {
                for s in ["information_schema", "pg_catalog", USER_SCHEMA] {
                    rows.push(&[("catalog_name", t(CATALOG)), ("schema_name", t(s)), ("schema_owner", t("trafficdb"))]);
                }
            }
            "tables" => {
                for (schema, name, ty, _) in &relations {
                    let (kind, insertable) =
                        if *ty == TableType::View { ("VIEW", "NO") } else { ("BASE TABLE", "YES") };
                    rows.push(&[
                        ("table_catalog", t(CATALOG)),
                        ("table_schema", t(schema)),
                        ("table_name", t(name)),
                        ("table_type", t(kind)),
                        ("is_insertable_into", t(insertable)),
                        ("is_typed", t("NO")),
                    ]);
                }
            }
            "views" => {
                for (schema, name, ty, provider) in &relations {
                    if *ty != TableType::View {
                        continue;
                    }
                    rows.push(&[
                        ("table_catalog", t(CATALOG)),
                        ("table_schema", t(schema)),
                        ("table_name", t(name)),
                        ("view_definition", Cell::Text(provider.get_table_definition().map(view_query))),
                        ("check_option", t("NONE")),
                        ("is_updatable", t("NO")),
                        ("is_insertable_into", t("NO")),
                        ("is_trigger_updatable", t("NO")),
                        ("is_trigger_deletable", t("NO")),
                        ("is_trigger_insertable_into", t("NO")),
                    ]);
                }
            }
            "columns" => {
                for (schema, name, _, provider) in &relations {
                    let fields = self.metadata.stored_schema(schema, name).unwrap_or_else(|| provider.schema());
                    for (i, f) in fields.fields().iter().enumerate() {
                        let (data_type, udt, precision, radix, scale, dt_precision) = pg_type(f.data_type());
                        let text_len = (data_type == "text").then_some(1_073_741_824);
                        rows.push(&[
                            ("table_catalog", t(CATALOG)),
                            ("table_schema", t(schema)),
                            ("table_name", t(name)),
                            ("column_name", t(f.name())),
                            ("ordinal_position", n(Some(i as i32 + 1))),
                            ("is_nullable", t(if f.is_nullable() { "YES" } else { "NO" })),
                            ("data_type", t(&data_type)),
                            ("character_octet_length", n(text_len)),
                            ("numeric_precision", n(precision)),
                            ("numeric_precision_radix", n(radix)),
                            ("numeric_scale", n(scale)),
                            ("datetime_precision", n(dt_precision)),
                            ("udt_catalog", t(CATALOG)),
                            ("udt_schema", t("pg_catalog")),
                            ("udt_name", t(&udt)),
                            ("dtd_identifier", t(&(i + 1).to_string())),
                            ("is_self_referencing", t("NO")),
                            ("is_identity", t("NO")),
                            ("identity_cycle", t("NO")),
                            ("is_generated", t("NEVER")),
                            ("is_updatable", t("YES")),
                        ]);
                    }
                }
            }
            "character_sets" => rows.push(&[
                ("character_set_name", t("UTF8")),
                ("character_repertoire", t("UCS")),
                ("form_of_use", t("UTF8")),
                ("default_collate_catalog", t(CATALOG)),
                ("default_collate_schema", t("pg_catalog")),
                ("default_collate_name", t("C")),
            ]),
            // No primary, unique or foreign keys exist: the constraint tables are empty.
            _ => {}
        }
        rows.finish()
    }
}

/// The query of a `CREATE VIEW name AS query` statement, as PostgreSQL shows a view's definition.
fn view_query(definition: &str) -> String {
    let upper = definition.to_ascii_uppercase();
    match upper.find(" AS ") {
        Some(i) if upper.trim_start().starts_with("CREATE") => definition[i + 4..].trim().to_string(),
        _ => definition.to_string(),
    }
}

#[async_trait]
impl TableProvider for InfoTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.rows().await?;
        MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema.clone(), projection.cloned())
            .map(|e| e as Arc<dyn ExecutionPlan>)
            .map_err(|e| DataFusionError::Context(format!("information_schema.{}", self.name), Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_oids_from_the_shipped_pg_proc() {
        use datafusion_postgres::datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables;
        let tables = PgCatalogStaticTables::try_new().expect("static pg_catalog tables");
        let oids = function_oids(tables.pg_proc.data()).expect("pg_proc has proname and oid");
        // SELECT oid FROM pg_proc WHERE proname = ... on PostgreSQL 15.
        assert_eq!(oids.get("boolrecv"), Some(&2436));
        assert_eq!(oids.get("int4recv"), Some(&2406));
        assert_eq!(oids.get("array_recv"), Some(&2400));
        assert_eq!(oids.get("timestamp_recv"), Some(&2474));
        assert_eq!(oids.get("-"), None);
    }

    #[test]
    fn function_oids_keep_the_smallest_oid_of_an_overloaded_name() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("oid", DataType::Int32, false),
            Field::new("proname", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int32Array::from(vec![7, 3, 5])), Arc::new(StringArray::from(vec!["f", "f", "g"]))],
        )
        .expect("batch");
        let oids = function_oids(&[batch]).expect("oids");
        assert_eq!((oids.get("f"), oids.get("g")), (Some(&3), Some(&5)));
    }
}
