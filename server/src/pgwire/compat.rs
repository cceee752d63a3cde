//! Functions of PostgreSQL that clients' catalog queries call and the query engine lacks, and the
//! settings `SHOW` reads (the statements answered by an equivalent one are in
//! [`crate::pgwire::rewrite`]).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, BooleanArray, Int16Builder, Int32Array, ListArray, ListBuilder, StringArray, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::DFParser;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use pgwire::error::PgWireResult;
use trafficdb::SqlState;

use crate::pgwire::results::user_error;

/// The PostgreSQL version clients are told (ParameterStatus `server_version` says the same).
pub const PG_VERSION: &str = "16.6";

/// Functions of PostgreSQL's catalog that datafusion-pg-catalog does not define.
pub fn register_functions(ctx: &SessionContext, engine: Arc<trafficdb::engine::Engine>) {
    // The bytes a stored table's segments take on disk (rows not yet flushed are in the write-ahead
    // log, which belongs to no table); 0 for views and unknown names. pg_table_size(oid) and its
    // siblings are answered through it (see `substitute`).
    ctx.register_udf(create_udf(
        "trafficdb_table_size",
        vec![DataType::Utf8],
        DataType::Int64,
        Volatility::Volatile,
        Arc::new(move |args: &[ColumnarValue]| {
            let names = args[0].to_array(1)?;
            let names = datafusion::common::cast::as_string_array(&names)?;
            let sizes: datafusion::arrow::array::Int64Array = names
                .iter()
                .map(|n| {
                    let t = n.and_then(|n| engine.table(n))?;
                    let bytes: u64 =
                        t.snapshot().partitions.iter().flat_map(|p| &p.segments).map(|s| s.entry.bytes).sum();
                    Some(i64::try_from(bytes).unwrap_or(i64::MAX))
                })
                .map(|b| Some(b.unwrap_or(0)))
                .collect();
            like(&args[0], Arc::new(sizes))
        }),
    ));
    // version() in PostgreSQL's form: drivers and ORMs parse "PostgreSQL X.Y" from it.
    let text = format!(
        "PostgreSQL {PG_VERSION} (trafficdb {}, Apache DataFusion {}) on {}-{}",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS
    );
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_args: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    ));
    // Every function is in a schema on the search path (there is one user schema), so every function
    // is visible, as pg_table_is_visible answers for tables.
    for name in ["pg_function_is_visible", "pg_collation_is_visible", "pg_type_is_visible"] {
        ctx.register_udf(create_udf(
            name,
            vec![DataType::Int32],
            DataType::Boolean,
            Volatility::Stable,
            Arc::new(|args: &[ColumnarValue]| {
                Ok(match &args[0] {
                    ColumnarValue::Array(a) => {
                        ColumnarValue::Array(Arc::new(BooleanArray::from(vec![true; a.len()])) as Arc<dyn Array>)
                    }
                    ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))),
                })
            }),
        ));
    }
    ctx.register_udf(create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let sizes = args[0].to_array(1)?;
            let sizes = datafusion::common::cast::as_int64_array(&sizes)?;
            let out: StringArray = sizes.iter().map(|v| v.map(size_pretty)).collect();
            like(&args[0], Arc::new(out))
        }),
    ));
    // to_regtype(name): the OID of a built-in type by any of its names, NULL for types that do not
    // exist here (drivers probe for extension types such as hstore this way).
    ctx.register_udf(create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let names = args[0].to_array(1)?;
            let names = datafusion::common::cast::as_string_array(&names)?;
            let oids: datafusion::arrow::array::Int32Array = names.iter().map(|n| n.and_then(type_oid)).collect();
            like(&args[0], Arc::new(oids))
        }),
    ));
    // The library's sessions read the server's settings; a connection's have its own (see
    // `register_session_functions`).
    ctx.register_udf(ScalarUDF::new_from_impl(CurrentSetting::new(Settings::default())));
    // PostgreSQL's quoting (the catalog's own leaves `Name` unquoted).
    ctx.register_udf(trafficdb_udfs::pg::text_fn("quote_ident", trafficdb_udfs::pg::quote_ident));
    // A server with no standby: never in recovery.
    ctx.register_udf(create_udf(
        "pg_is_in_recovery",
        vec![],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(false))))),
    ));
    // When this server started.
    let started = chrono::Utc::now().timestamp_micros();
    ctx.register_udf(create_udf(
        "pg_postmaster_start_time",
        vec![],
        DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, Some("+00:00".into())),
        Volatility::Stable,
        Arc::new(move |_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(Some(started), Some("+00:00".into()))))
        }),
    ));
    // The name of an encoding number (psql's \l asks): UTF8 is the only one used here.
    ctx.register_udf(create_udf(
        "pg_encoding_to_char",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let n = args[0].to_array(1)?;
            let n = n
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .ok_or_else(|| DataFusionError::Internal("pg_encoding_to_char of a non-integer".into()))?;
            let names: StringArray = n
                .iter()
                .map(|v| {
                    v.map(|v| match v {
                        0 => "SQL_ASCII",
                        6 => "UTF8",
                        _ => "",
                    })
                })
                .collect();
            like(&args[0], Arc::new(names))
        }),
    ));
    // Objects are owned by the one superuser the catalog shows (the catalog's own takes only int4).
    ctx.register_udf(create_udf(
        "pg_get_userbyid",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let oids = args[0].to_array(1)?;
            let oids = datafusion::common::cast::as_int64_array(&oids)?;
            let names: StringArray = oids.iter().map(|o| o.map(|_| "postgres")).collect();
            like(&args[0], Arc::new(names))
        }),
    ));
    // Each statement is its own transaction (there are no transaction blocks that keep one open):
    // a new, growing number per call, from where the server started.
    let next_xid = Arc::new(std::sync::atomic::AtomicI64::new(1000));
    ctx.register_udf(create_udf(
        "txid_current",
        vec![],
        DataType::Int64,
        Volatility::Volatile,
        Arc::new(move |_: &[ColumnarValue]| {
            let xid = next_xid.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(ColumnarValue::Scalar(ScalarValue::Int64(Some(xid))))
        }),
    ));
    // There are no indexes: no index has a definition.
    ctx.register_udf(create_udf(
        "pg_get_indexdef",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let n = args[0].to_array(1)?.len();
            like(&args[0], Arc::new(StringArray::new_null(n)))
        }),
    ));
    // _pg_expandarray's rows, as one list per call (see `substitute`).
    ctx.register_udf(ScalarUDF::new_from_impl(ExpandArray::new()));
    // pg_proc carries no argument or result types for its functions, and nothing here has a comment
    // (there is no COMMENT ON): these answer NULL, as PostgreSQL does for an object without one.
    for name in [
        "pg_get_function_result",
        "pg_get_function_arguments",
        "pg_get_function_identity_arguments",
        "col_description",
        "obj_description",
        "shobj_description",
        // There are no sequences, so no column is backed by one.
        "pg_get_serial_sequence",
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(NullText::new(name)));
    }
}

/// `inet_server_addr()` and `inet_server_port()`: the address the server listens on (PostgreSQL
/// answers with the connection's local end, the same address unless it listens on all of them).
pub fn register_listen_address(ctx: &SessionContext, address: std::net::SocketAddr) {
    let ip = address.ip().to_string();
    ctx.register_udf(create_udf(
        "inet_server_addr",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(ip.clone()))))),
    ));
    let port = i32::from(address.port());
    ctx.register_udf(create_udf(
        "inet_server_port",
        vec![],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Int32(Some(port))))),
    ));
}

/// `result` as a scalar when the argument was one, else as an array.
fn like(arg: &ColumnarValue, result: datafusion::arrow::array::ArrayRef) -> datafusion::common::Result<ColumnarValue> {
    Ok(match arg {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?),
        ColumnarValue::Array(_) => ColumnarValue::Array(result),
    })
}

/// The OID of a built-in PostgreSQL type named `name` (any spelling PostgreSQL accepts, schema
/// qualified or not, arrays as `name[]`).
fn type_oid(name: &str) -> Option<i32> {
    let n = name.trim().trim_matches('"').to_ascii_lowercase();
    let n = n.strip_prefix("pg_catalog.").unwrap_or(&n);
    let (base, array) = match n.strip_suffix("[]") {
        Some(b) => (b.trim(), true),
        None => (n, false),
    };
    // (oid, array oid, names)
    const TYPES: &[(i32, i32, &[&str])] = &[
        (16, 1000, &["bool", "boolean"]),
        (17, 1001, &["bytea"]),
        (18, 1002, &["char"]),
        (19, 1003, &["name"]),
        (20, 1016, &["int8", "bigint"]),
        (21, 1005, &["int2", "smallint"]),
        (23, 1007, &["int4", "integer", "int"]),
        (25, 1009, &["text"]),
        (26, 1028, &["oid"]),
        (114, 199, &["json"]),
        (700, 1021, &["float4", "real"]),
        (701, 1022, &["float8", "double precision"]),
        (1042, 1014, &["bpchar", "character"]),
        (1043, 1015, &["varchar", "character varying"]),
        (1082, 1182, &["date"]),
        (1083, 1183, &["time", "time without time zone"]),
        (1114, 1115, &["timestamp", "timestamp without time zone"]),
        (1184, 1185, &["timestamptz", "timestamp with time zone"]),
        (1186, 1187, &["interval"]),
        (1700, 1231, &["numeric", "decimal"]),
        (2950, 2951, &["uuid"]),
        (3802, 3807, &["jsonb"]),
    ];
    TYPES.iter().find(|(_, _, names)| names.contains(&base)).map(|(oid, arr, _)| if array { *arr } else { *oid })
}

/// PostgreSQL's pg_size_pretty(bigint): bytes below 10 kB, then kB, MB, GB, TB, PB rounded half up
/// with one extra bit kept for the rounding, as PostgreSQL computes it.
fn size_pretty(size: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    const LIMIT2: i64 = LIMIT * 2 - 1;
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    if size.abs() < LIMIT {
        return format!("{size} bytes");
    }
    let mut size = size >> 9; // half kilobytes
    for unit in ["kB", "MB", "GB", "TB"] {
        if size.abs() < LIMIT2 {
            return format!("{} {unit}", half_rounded(size));
        }
        size >>= 10;
    }
    format!("{} PB", half_rounded(size))
}

#[cfg(test)]
mod tests {
    #[test]
    fn size_pretty_as_postgresql() {
        // Values checked against PostgreSQL 15's pg_size_pretty.
        assert_eq!(super::size_pretty(0), "0 bytes");
        assert_eq!(super::size_pretty(10239), "10239 bytes");
        assert_eq!(super::size_pretty(10240), "10 kB");
        assert_eq!(super::size_pretty(1_000_000), "977 kB");
        assert_eq!(super::size_pretty(123_456_789), "118 MB");
        assert_eq!(super::size_pretty(10_i64.pow(12)), "931 GB");
    }

    #[test]
    fn settings_as_a_session_starts() {
        assert_eq!(super::setting("server_version_num").as_deref(), Some("160006"));
        assert_eq!(super::setting("Search_Path").as_deref(), Some("\"$user\", public"));
        assert_eq!(super::setting("DateStyle").as_deref(), Some("ISO, MDY"));
        let rows = super::settings();
        assert!(rows.iter().any(|(name, value, session)| name == "TimeZone" && !value.is_empty() && *session));
        assert!(rows.iter().any(|(name, value, session)| name == "max_connections" && value == "100" && !*session));
        assert_eq!(super::setting("no_such_setting"), None);
    }

    #[test]
    fn type_oids_as_postgresql() {
        // SELECT 'int8'::regtype::oid, ... on PostgreSQL 15.
        assert_eq!(super::type_oid("bigint"), Some(20));
        assert_eq!(super::type_oid("pg_catalog.timestamptz"), Some(1184));
        assert_eq!(super::type_oid("double precision"), Some(701));
        assert_eq!(super::type_oid("text[]"), Some(1009));
        assert_eq!(super::type_oid("hstore"), None);
    }

    #[test]
    fn expandarray_of_int2vectors() {
        use datafusion::arrow::array::{Array, AsArray, StringArray};
        use datafusion::arrow::datatypes::{Int16Type, Int32Type};
        let text = StringArray::from(vec![Some("3 1"), None, Some(""), Some("{7,8}")]);
        let lists = super::expand(&super::int2vectors(&text).expect("valid"));
        assert_eq!(lists.len(), 4);
        assert!(lists.is_null(1));
        assert_eq!(lists.value_length(2), 0);
        let rows = |i: usize| {
            let v = lists.value(i);
            let s = v.as_struct();
            let x: Vec<i16> = s.column(0).as_primitive::<Int16Type>().values().to_vec();
            let n: Vec<i32> = s.column(1).as_primitive::<Int32Type>().values().to_vec();
            x.into_iter().zip(n).collect::<Vec<_>>()
        };
        assert_eq!(rows(0), vec![(3, 1), (1, 2)]);
        assert_eq!(rows(3), vec![(7, 1), (8, 2)]);
        assert!(super::int2vectors(&StringArray::from(vec!["1 x"])).is_err());
    }
}

/// A function of any arguments whose answer is a NULL text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NullText {
    name: &'static str,
    signature: Signature,
}

impl NullText {
    fn new(name: &'static str) -> NullText {
        NullText { name, signature: Signature::variadic_any(Volatility::Stable) }
    }
}

impl ScalarUDFImpl for NullText {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        Ok(ColumnarValue::Array(Arc::new(StringArray::new_null(args.number_rows))))
    }
}

/// A connection's PostgreSQL settings as its statements see them: what `SET` and the startup
/// parameters gave (copied from the connection before each statement, [`sync_settings`]) and what
/// `set_config` gave since (copied back before the next one).
#[derive(Debug, Default)]
pub struct SessionSettings {
    values: HashMap<String, String>,
    set: Vec<(String, String)>,
}

/// One connection's settings, shared by its functions; equal only to itself.
#[derive(Debug, Clone, Default)]
struct Settings(Arc<parking_lot::Mutex<SessionSettings>>);

impl Settings {
    fn lock(&self) -> parking_lot::MutexGuard<'_, SessionSettings> {
        self.0.lock()
    }
}

impl PartialEq for Settings {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Settings {}

impl std::hash::Hash for Settings {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state)
    }
}

/// Registers `current_setting` and `set_config` on one connection's context, over settings of its own.
pub fn register_session_functions(ctx: &SessionContext) {
    let settings = Settings::default();
    ctx.register_udf(ScalarUDF::new_from_impl(CurrentSetting::new(settings.clone())));
    ctx.register_udf(ScalarUDF::new_from_impl(SetConfig::new(settings)));
}

/// Before a statement of the connection of `ctx`: what `set_config` set for the session goes into
/// the connection's settings (`metadata`, which `SET` and `SHOW` use), and the connection's settings
/// into what `current_setting` reads.
pub fn sync_settings(ctx: &SessionContext, metadata: &mut HashMap<String, String>) {
    let Some(settings) = session_settings(ctx) else { return };
    let mut s = settings.lock();
    for (name, value) in s.set.drain(..) {
        metadata.retain(|k, _| !k.eq_ignore_ascii_case(&name));
        metadata.insert(name, value);
    }
    s.values = session_values(metadata);
}

/// As [`sync_settings`], where the connection's settings cannot be written (a statement being
/// parsed): they are read, what `set_config` set waits for the next statement that runs.
pub fn read_settings(ctx: &SessionContext, metadata: &HashMap<String, String>) {
    let Some(settings) = session_settings(ctx) else { return };
    let mut s = settings.lock();
    let mut values = session_values(metadata);
    for (name, value) in &s.set {
        values.insert(name.clone(), value.clone());
    }
    s.values = values;
}

fn session_settings(ctx: &SessionContext) -> Option<Settings> {
    let udf = ctx.udf("set_config").ok()?;
    udf.inner().downcast_ref::<SetConfig>().map(|f| f.settings.clone())
}

fn session_values(metadata: &HashMap<String, String>) -> HashMap<String, String> {
    metadata
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| SESSION_SETTINGS.contains(&k.as_str()))
        .map(|(k, v)| (k, v.clone()))
        .collect()
}

/// `current_setting(name [, missing_ok])`: the session's value of a setting (its `SET`, startup
/// parameter or `set_config`), else the server's (ParameterStatus at startup and the read-only
/// settings clients probe, such as `server_version_num`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
    settings: Settings,
}

impl CurrentSetting {
    fn new(settings: Settings) -> CurrentSetting {
        use datafusion::logical_expr::TypeSignature;
        CurrentSetting {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
                ],
                // Read when the row is, after a `set_config` before it in the same statement (a
                // stable function would be read once, when the statement is planned).
                Volatility::Volatile,
            ),
            settings,
        }
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        let names = args.args[0].to_array(args.number_rows)?;
        let names = datafusion::common::cast::as_string_array(&names)?;
        let missing_ok = match args.args.get(1) {
            Some(m) => {
                let m = m.to_array(args.number_rows)?;
                datafusion::common::cast::as_boolean_array(&m)?.clone()
            }
            None => BooleanArray::from(vec![false; args.number_rows]),
        };
        let session = self.settings.lock();
        let mut out = Vec::with_capacity(names.len());
        for (name, missing_ok) in names.iter().zip(missing_ok.iter()) {
            let Some(name) = name else {
                out.push(None);
                continue;
            };
            match session.values.get(&name.to_ascii_lowercase()).cloned().or_else(|| setting(name)) {
                Some(v) => out.push(Some(v)),
                None if missing_ok == Some(true) => out.push(None),
                None => return Err(unrecognized(name)),
            }
        }
        let out: StringArray = out.into_iter().collect();
        like(&args.args[0], Arc::new(out))
    }
}

fn unrecognized(name: &str) -> DataFusionError {
    DataFusionError::External(Box::new(trafficdb_udfs::SqlError {
        code: SqlState::UndefinedObject,
        message: format!("unrecognized configuration parameter \"{name}\""),
    }))
}

/// `set_config(name, value, is_local)`: sets one of the session's settings ([`SESSION_SETTINGS`]) as
/// `SET` does and answers the value; with `is_local` only for the statement (outside a transaction
/// block, PostgreSQL's transaction is the statement). Other settings are changed with `SET`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SetConfig {
    signature: Signature,
    settings: Settings,
}

impl SetConfig {
    fn new(settings: Settings) -> SetConfig {
        SetConfig {
            signature: Signature::exact(vec![DataType::Utf8, DataType::Utf8, DataType::Boolean], Volatility::Volatile),
            settings,
        }
    }
}

impl ScalarUDFImpl for SetConfig {
    fn name(&self) -> &str {
        "set_config"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        let (a, _) = trafficdb_udfs::pg::arrays(&args.args)?;
        let names = datafusion::common::cast::as_string_array(&a[0])?;
        let values = datafusion::common::cast::as_string_array(&a[1])?;
        let local = datafusion::common::cast::as_boolean_array(&a[2])?;
        let mut session = self.settings.lock();
        let mut out = Vec::with_capacity(names.len());
        for row in 0..names.len() {
            if names.is_null(row) {
                return Err(DataFusionError::Execution("set_config: the setting name is NULL".into()));
            }
            let name = names.value(row).to_ascii_lowercase();
            if !SESSION_SETTINGS.contains(&name.as_str()) {
                if setting(&name).is_none() && !name.starts_with("datafusion.") && name != "statement_timeout" {
                    return Err(unrecognized(&name));
                }
                return Err(DataFusionError::External(Box::new(trafficdb_udfs::SqlError {
                    code: SqlState::NotSupported,
                    message: format!("set_config cannot change \"{name}\" here: use SET"),
                })));
            }
            // PostgreSQL's NULL value resets to the default; here, to the value the session began with.
            let value =
                if values.is_null(row) { setting(&name).unwrap_or_default() } else { values.value(row).to_string() };
            session.values.insert(name.clone(), value.clone());
            if !(local.is_valid(row) && local.value(row)) {
                session.set.push((name, value.clone()));
            }
            out.push(Some(value));
        }
        let out: StringArray = out.into_iter().collect();
        like(&args.args[0], Arc::new(out))
    }
}

/// The settings a session may change (`SET`, or a startup parameter); `SHOW` reads the session's
/// value of these first.
const SESSION_SETTINGS: &[&str] = &[
    "application_name",
    "bytea_output",
    "client_encoding",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "search_path",
    "timezone",
];

/// `SHOW name` as PostgreSQL answers it: one text column named as PostgreSQL names the setting, with
/// the session's value (its `SET` or startup parameter) or the server's; 42704 for a name PostgreSQL
/// does not know either. `None` for what is answered elsewhere: `statement_timeout` (the session's
/// limit), DataFusion's settings, `SHOW ALL`.
pub fn show_query(s: &Statement, session: &HashMap<String, String>) -> Option<PgWireResult<Statement>> {
    let Statement::ShowVariable { variable } = s else { return None };
    let words = variable.iter().map(|i| i.value.to_ascii_lowercase()).collect::<Vec<_>>().join(" ");
    let name = match words.as_str() {
        "time zone" => "timezone",
        "transaction isolation level" => "transaction_isolation",
        "all" | "statement_timeout" => return None,
        n if n.starts_with("datafusion.") => return None,
        n => n,
    };
    let in_session = SESSION_SETTINGS
        .contains(&name)
        .then(|| session.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()))
        .flatten();
    let Some(value) = in_session.or_else(|| setting(name)) else {
        return Some(Err(user_error(
            SqlState::UndefinedObject,
            format!("unrecognized configuration parameter \"{name}\""),
        )));
    };
    let column = match name {
        "datestyle" => "DateStyle",
        "timezone" => "TimeZone",
        "intervalstyle" => "IntervalStyle",
        n => n,
    };
    let sql = format!("SELECT '{}' AS \"{column}\"", value.replace('\'', "''"));
    Some(
        DFParser::parse_sql_with_dialect(&sql, &PostgreSqlDialect {})
            .ok()
            .and_then(|mut v| v.pop_front())
            .and_then(|s| match s {
                datafusion::sql::parser::Statement::Statement(s) => Some(*s),
                _ => None,
            })
            .ok_or_else(|| user_error(SqlState::Internal, format!("SHOW {name} did not make a query"))),
    )
}

/// The settings a session starts with (ParameterStatus at startup): pgwire's defaults with a plain
/// numeric `server_version`, and PostgreSQL's own defaults where pgwire's differ.
pub fn server_defaults() -> pgwire::api::auth::DefaultServerParameterProvider {
    let mut defaults = pgwire::api::auth::DefaultServerParameterProvider::default();
    defaults.server_version = PG_VERSION.to_string();
    defaults.date_style = "ISO, MDY".to_string();
    defaults.search_path = "\"$user\", public".to_string();
    defaults
}

/// The settings the server answers for, as PostgreSQL names them.
const SETTINGS: &[&str] = &[
    "application_name",
    "block_size",
    "bytea_output",
    "client_encoding",
    "DateStyle",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "extra_float_digits",
    "integer_datetimes",
    "IntervalStyle",
    "lc_collate",
    "lc_ctype",
    "max_connections",
    "max_identifier_length",
    "max_index_keys",
    "search_path",
    "server_encoding",
    "server_version",
    "server_version_num",
    "standard_conforming_strings",
    "TimeZone",
    "transaction_isolation",
    "transaction_read_only",
];

/// `pg_settings`' rows: each setting's name, value as a session starts, and whether a session may
/// change it.
pub fn settings() -> Vec<(String, String, bool)> {
    SETTINGS
        .iter()
        .filter_map(|name| {
            let value = setting(name)?;
            Some((name.to_string(), value, SESSION_SETTINGS.contains(&name.to_ascii_lowercase().as_str())))
        })
        .collect()
}

/// The value `current_setting` answers for `name` (case-insensitive), as PostgreSQL spells it.
fn setting(name: &str) -> Option<String> {
    let defaults = server_defaults();
    let on = |b: bool| if b { "on" } else { "off" }.to_string();
    Some(match name.to_ascii_lowercase().as_str() {
        "server_version" => PG_VERSION.to_string(),
        "server_version_num" => version_num().to_string(),
        "server_encoding" | "client_encoding" => "UTF8".to_string(),
        "search_path" => defaults.search_path,
        "timezone" => defaults.time_zone,
        "datestyle" => defaults.date_style,
        "intervalstyle" => defaults.interval_style,
        "integer_datetimes" => on(defaults.integer_datetimes),
        "standard_conforming_strings" => on(defaults.standard_conforming_strings),
        "transaction_isolation" | "default_transaction_isolation" => "read committed".to_string(),
        "max_identifier_length" => "63".to_string(),
        "max_index_keys" => "32".to_string(),
        "block_size" => "8192".to_string(),
        "lc_collate" | "lc_ctype" => "C".to_string(),
        "application_name" => String::new(),
        "extra_float_digits" => "1".to_string(),
        "bytea_output" => "hex".to_string(),
        "default_transaction_read_only" | "transaction_read_only" => on(false),
        "max_connections" => "100".to_string(),
        _ => return None,
    })
}

/// `server_version_num`: PostgreSQL's major * 10000 + minor.
pub(crate) fn version_num() -> u32 {
    let (major, minor) = PG_VERSION.split_once('.').unwrap_or((PG_VERSION, "0"));
    major.parse::<u32>().unwrap_or(16) * 10_000 + minor.parse::<u32>().unwrap_or(0)
}

/// `trafficdb_expandarray(array)`: the elements of each array as a list of `(x, n)` structs, `n`
/// counting from 1 (what PostgreSQL's `_pg_expandarray` returns as rows; `unnest` makes them rows).
/// Takes arrays, and the text of an `int2vector` (`pg_index.indkey` is text here: `"1 2"`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ExpandArray {
    signature: Signature,
}

impl ExpandArray {
    fn new() -> ExpandArray {
        ExpandArray { signature: Signature::any(1, Volatility::Immutable) }
    }

    fn element(arg: &DataType) -> datafusion::common::Result<DataType> {
        match arg {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => Ok(DataType::Int16),
            DataType::List(f) => Ok(f.data_type().clone()),
            other => datafusion::common::plan_err!("_pg_expandarray takes an array, not {other}"),
        }
    }

    fn fields(element: DataType) -> Fields {
        Fields::from(vec![Field::new("x", element, true), Field::new("n", DataType::Int32, false)])
    }
}

impl ScalarUDFImpl for ExpandArray {
    fn name(&self) -> &str {
        "trafficdb_expandarray"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::common::Result<DataType> {
        let fields = ExpandArray::fields(ExpandArray::element(&args[0])?);
        Ok(DataType::List(Arc::new(Field::new_list_field(DataType::Struct(fields), true))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        let input = args.args[0].to_array(args.number_rows)?;
        let list = match input.data_type() {
            DataType::List(_) => datafusion::common::cast::as_list_array(&input)?.clone(),
            _ => {
                let text = datafusion::arrow::compute::cast(&input, &DataType::Utf8)?;
                int2vectors(datafusion::common::cast::as_string_array(&text)?)?
            }
        };
        like(&args.args[0], Arc::new(expand(&list)))
    }
}

/// The text of `int2vector`s (`"1 2"`; PostgreSQL's array form `{1,2}` too) as lists of smallints.
fn int2vectors(text: &StringArray) -> datafusion::common::Result<ListArray> {
    let mut builder = ListBuilder::new(Int16Builder::new());
    for v in text.iter() {
        match v {
            None => builder.append_null(),
            Some(v) => {
                let items = v.trim().trim_start_matches('{').trim_end_matches('}');
                for item in items.split(|c: char| c == ',' || c.is_whitespace()).filter(|i| !i.is_empty()) {
                    let n = item.parse::<i16>().map_err(|_| {
                        DataFusionError::Execution(format!("invalid input syntax for type int2vector: \"{v}\""))
                    })?;
                    builder.values().append_value(n);
                }
                builder.append(true);
            }
        }
    }
    Ok(builder.finish())
}

/// Each list's elements `x` as `(x, n)` structs, `n` their 1-based position; the lists keep their
/// offsets and NULLs (a NULL array expands to no rows).
fn expand(list: &ListArray) -> ListArray {
    let values = list.values().clone();
    let mut positions = vec![0i32; values.len()];
    for w in list.offsets().windows(2) {
        let (start, end) = (w[0] as usize, w[1] as usize);
        for (k, p) in positions[start..end].iter_mut().enumerate() {
            *p = k as i32 + 1;
        }
    }
    let fields = ExpandArray::fields(values.data_type().clone());
    let structs = StructArray::new(fields.clone(), vec![values, Arc::new(Int32Array::from(positions))], None);
    ListArray::new(
        Arc::new(Field::new_list_field(DataType::Struct(fields), true)),
        list.offsets().clone(),
        Arc::new(structs),
        list.nulls().cloned(),
    )
}
