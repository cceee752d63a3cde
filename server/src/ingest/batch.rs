//! Line-protocol writes (`POST /api/v2/write`, `POST /write`): points become one Arrow batch per
//! table, and each batch one durable append. See `docs/line-protocol.md` for the mapping.
//!
//! - The measurement names the table. A table that does not exist is created (when the caller may
//!   create tables) with a `ts TIMESTAMP NOT NULL` time column, a TEXT column per tag and a column per
//!   field typed by its first value (float DOUBLE PRECISION, integer BIGINT, string TEXT, boolean
//!   BOOLEAN), partitioned by day.
//! - In an existing table, tags and fields are matched to columns by name. A value must fit its column
//!   (an integer or integral float in an integer column, a number in a float column, `true` in a
//!   boolean, a string or tag in text; tags are parsed for other types). A key that is not a column,
//!   a value that does not fit, or a NOT NULL column left empty refuses that line only.
//! - A line without a timestamp gets the time the request arrived.
//! - Lines that parse are written even when others do not (InfluxDB's partial write); each table's
//!   rows are one append, so they are all durable, or none are, when the answer is sent.
//! - A table with `dedup_keys` drops rows whose time and keys are already stored, or repeated in the
//!   request: a client may resend a batch after a timeout without doubling it.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{Field, Schema};
use trafficdb::engine::Table;
use trafficdb::types::{ColumnDef, ColumnType};
use trafficdb::{Database, Engine};

use crate::ingest::line_protocol::{Parser, Point, Precision, Value};
use trafficdb::SqlState;

/// The time column of tables created by a write.
pub const TIME_COLUMN: &str = "ts";
/// At most this many refused lines are listed in an answer (all are counted).
pub const MAX_LISTED_ERRORS: usize = 100;

/// A refused line.
#[derive(Debug, Clone, PartialEq)]
pub struct LineFailure {
    pub line: usize,
    pub sqlstate: &'static str,
    pub message: String,
}

/// What a write did.
#[derive(Debug, Default)]
pub struct Report {
    /// Points read (lines that were not blank or comments).
    pub points: usize,
    /// Rows durable in tables.
    pub written: u64,
    /// Rows dropped as already stored (tables with `dedup_keys`).
    pub duplicates: u64,
    /// Refused lines (the first [`MAX_LISTED_ERRORS`]).
    pub failures: Vec<LineFailure>,
    /// How many lines were refused.
    pub failed: usize,
    /// Tables written to, and those created.
    pub tables: Vec<String>,
    pub created: Vec<String>,
}

impl Report {
    fn fail(&mut self, f: LineFailure) {
        self.failed += 1;
        if self.failures.len() < MAX_LISTED_ERRORS {
            self.failures.push(f);
        }
    }
}

/// A value converted for its column; text stays in the point (tag or field by position).
#[derive(Debug, Clone, Copy)]
enum Cell {
    Int(i64),
    Float(f64),
    Bool(bool),
    Tag(usize),
    Field(usize),
}

/// The values of one column.
enum Data {
    Timestamp(TimestampMicrosecondBuilder),
    SmallInt(Int16Builder),
    Int(Int32Builder),
    BigInt(Int64Builder),
    Real(Float32Builder),
    Double(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
}

impl Data {
    /// A column with `rows` NULLs, with room for `capacity` values.
    fn new(ty: ColumnType, rows: usize, capacity: usize) -> Data {
        let n = capacity.max(rows);
        let mut d = match ty {
            ColumnType::Timestamp => Data::Timestamp(TimestampMicrosecondBuilder::with_capacity(n)),
            ColumnType::TimestampTz => {
                Data::Timestamp(TimestampMicrosecondBuilder::with_capacity(n).with_timezone("+00:00".to_string()))
            }
            ColumnType::SmallInt => Data::SmallInt(Int16Builder::with_capacity(n)),
            ColumnType::Int => Data::Int(Int32Builder::with_capacity(n)),
            ColumnType::BigInt => Data::BigInt(Int64Builder::with_capacity(n)),
            ColumnType::Real => Data::Real(Float32Builder::with_capacity(n)),
            ColumnType::Double => Data::Double(Float64Builder::with_capacity(n)),
            ColumnType::Boolean => Data::Bool(BooleanBuilder::with_capacity(n)),
            ColumnType::Text => Data::Text(StringBuilder::with_capacity(n, n * 16)),
        };
        for _ in 0..rows {
            d.push(None, &Point::default());
        }
        d
    }

    /// Appends a value already converted by [`convert`] for this column's type.
    fn push(&mut self, cell: Option<Cell>, p: &Point<'_>) {
        match (self, cell) {
            (Data::Timestamp(b), Some(Cell::Int(v))) => b.append_value(v),
            (Data::SmallInt(b), Some(Cell::Int(v))) => b.append_value(v as i16),
            (Data::Int(b), Some(Cell::Int(v))) => b.append_value(v as i32),
            (Data::BigInt(b), Some(Cell::Int(v))) => b.append_value(v),
            (Data::Real(b), Some(Cell::Float(v))) => b.append_value(v as f32),
            (Data::Double(b), Some(Cell::Float(v))) => b.append_value(v),
            (Data::Bool(b), Some(Cell::Bool(v))) => b.append_value(v),
            (Data::Text(b), Some(Cell::Tag(i))) => b.append_value(&p.tags[i].1),
            (Data::Text(b), Some(Cell::Field(i))) => match &p.fields[i].1 {
                Value::Str(s) => b.append_value(s),
                _ => b.append_null(),
            },
            (Data::Timestamp(b), _) => b.append_null(),
            (Data::SmallInt(b), _) => b.append_null(),
            (Data::Int(b), _) => b.append_null(),
            (Data::BigInt(b), _) => b.append_null(),
            (Data::Real(b), _) => b.append_null(),
            (Data::Double(b), _) => b.append_null(),
            (Data::Bool(b), _) => b.append_null(),
            (Data::Text(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Data::Timestamp(b) => Arc::new(b.finish()),
            Data::SmallInt(b) => Arc::new(b.finish()),
            Data::Int(b) => Arc::new(b.finish()),
            Data::BigInt(b) => Arc::new(b.finish()),
            Data::Real(b) => Arc::new(b.finish()),
            Data::Double(b) => Arc::new(b.finish()),
            Data::Bool(b) => Arc::new(b.finish()),
            Data::Text(b) => Arc::new(b.finish()),
        }
    }
}

struct Column {
    name: String,
    ty: ColumnType,
    required: bool,
    data: Data,
    /// The line that last set this column (duplicate keys in a line are refused).
    stamp: usize,
}

/// The rows one request writes to one table.
struct TableRows {
    name: String,
    /// `None` for a table the write creates.
    table: Option<Arc<Table>>,
    time: usize,
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    /// The column of each tag and field key of the previous line, in order: lines of one source
    /// repeat their keys, so a comparison usually replaces the hash lookup.
    tag_hints: Vec<usize>,
    field_hints: Vec<usize>,
    rows: usize,
    /// The line of each row.
    lines: Vec<usize>,
}

impl TableRows {
    fn existing(table: Arc<Table>, capacity: usize) -> Option<TableRows> {
        let time = table.def.time_column()?;
        let columns = table
            .def
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| Column {
                name: c.name.clone(),
                ty: c.ty,
                required: i != time && !table.def.is_nullable(i),
                data: Data::new(c.ty, 0, capacity),
                stamp: 0,
            })
            .collect::<Vec<_>>();
        let index = columns.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
        Some(TableRows {
            name: table.def.name.clone(),
            table: Some(table),
            time,
            columns,
            index,
            tag_hints: Vec::new(),
            field_hints: Vec::new(),
            rows: 0,
            lines: Vec::new(),
        })
    }

    fn new_table(name: &str, capacity: usize) -> TableRows {
        let ts = Column {
            name: TIME_COLUMN.into(),
            ty: ColumnType::Timestamp,
            required: false,
            data: Data::new(ColumnType::Timestamp, 0, capacity),
            stamp: 0,
        };
        TableRows {
            name: name.to_string(),
            table: None,
            time: 0,
            columns: vec![ts],
            index: HashMap::from([(TIME_COLUMN.to_string(), 0)]),
            tag_hints: Vec::new(),
            field_hints: Vec::new(),
            rows: 0,
            lines: Vec::new(),
        }
    }

    fn lookup(&mut self, key: &str, pos: usize, tag: bool) -> Option<usize> {
        let hints = if tag { &mut self.tag_hints } else { &mut self.field_hints };
        if let Some(&i) = hints.get(pos)
            && self.columns[i].name == key
        {
            return Some(i);
        }
        let i = *self.index.get(key)?;
        if hints.len() <= pos {
            hints.resize(pos + 1, usize::MAX);
        }
        hints[pos] = i;
        Some(i)
    }

    fn batch(mut self) -> TableWrite {
        let defs: Vec<ColumnDef> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| ColumnDef { name: c.name.clone(), ty: c.ty, nullable: i != self.time })
            .collect();
        let fields: Vec<Field> = defs.iter().map(|c| Field::new(&c.name, c.ty.arrow_type(), true)).collect();
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|c| c.data.finish()).collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("columns of equal length");
        TableWrite { name: self.name, table: self.table, columns: defs, batches: vec![batch], lines: self.lines }
    }
}

/// What a body writes to one table.
pub struct TableWrite {
    pub name: String,
    /// `None` for a table the write creates.
    pub table: Option<Arc<Table>>,
    pub columns: Vec<ColumnDef>,
    /// In line order; appended as one transaction.
    pub batches: Vec<RecordBatch>,
    /// The line of each row.
    pub lines: Vec<usize>,
}

/// Rows the columns of a body's second and later tables make room for at first.
const FIRST_ROWS: usize = 1024;

fn cannot_create(table: &str) -> String {
    format!("table \"{table}\" does not exist, and this role may not create tables")
}

/// Bodies at least this large are parsed in two halves at once.
const SPLIT_BYTES: usize = 256 << 10;

/// Parses a body into rows per table. A large body is cut at a line end near its middle and the halves
/// parsed on two threads, when that cannot cut a string (which may hold a newline) and every table
/// exists (a table created by the write takes its columns from the lines in order).
pub fn parse(
    engine: &Arc<Engine>,
    body: &[u8],
    precision: Precision,
    now_us: i64,
    may_create: bool,
) -> Result<(Vec<TableWrite>, Report), String> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let at = e.valid_up_to();
        let line = memchr::memchr_iter(b'\n', &body[..at]).count() + 1;
        format!("the body is not valid UTF-8 (line {line}, byte {at})")
    })?;
    let whole = |text: &str| {
        let mut b = Batcher::new(engine.clone(), precision, now_us, may_create);
        b.add_body(text, 1);
        b.finish()
    };
    let Some(mid) = split_point(text) else { return Ok(whole(text)) };
    let (first, second) = text.split_at(mid);
    let second_line = memchr::memchr_iter(b'\n', first.as_bytes()).count() + 1;
    let half = |part: &str, line: usize| {
        let mut b = Batcher::new(engine.clone(), precision, now_us, may_create);
        b.add_body(part, line);
        b.finish()
    };
    let (a, b) = std::thread::scope(|s| {
        let other = s.spawn(|| half(second, second_line));
        let a = half(first, 1);
        (a, other.join())
    });
    let Ok(b) = b else { return Ok(whole(text)) };
    if a.0.iter().chain(b.0.iter()).any(|t| t.table.is_none()) {
        return Ok(whole(text));
    }
    Ok(merge(a, b))
}

/// A line end near the middle of a large body, if the first half holds no string.
fn split_point(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.len() < SPLIT_BYTES {
        return None;
    }
    let mid = memchr::memchr(b'\n', &bytes[bytes.len() / 2..])? + bytes.len() / 2 + 1;
    if memchr::memchr(b'"', &bytes[..mid]).is_some() {
        return None;
    }
    Some(mid)
}

/// The rows and reports of two consecutive parts of a body, as one.
fn merge(
    (mut tables, mut report): (Vec<TableWrite>, Report),
    (more, other): (Vec<TableWrite>, Report),
) -> (Vec<TableWrite>, Report) {
    for t in more {
        match tables.iter_mut().find(|x| x.name == t.name) {
            Some(x) => {
                x.batches.extend(t.batches);
                x.lines.extend(t.lines);
            }
            None => tables.push(t),
        }
    }
    report.points += other.points;
    report.failed += other.failed;
    for f in other.failures {
        if report.failures.len() < MAX_LISTED_ERRORS {
            report.failures.push(f);
        }
    }
    (tables, report)
}

/// Turns points into batches, one table at a time.
pub struct Batcher {
    engine: Arc<Engine>,
    precision: Precision,
    now_us: i64,
    tables: Vec<TableRows>,
    by_name: HashMap<String, usize>,
    /// The table of the previous line.
    last: Option<usize>,
    /// Rows each column of the body's first table makes room for at once (the lines of the body);
    /// the columns of other tables grow as rows come, so a body naming many tables reserves only
    /// what it writes.
    capacity: usize,
    /// Whether lines may name tables that do not exist (created by the write); if not, such a line
    /// fails at once (42501) and nothing is gathered for it.
    may_create: bool,
    pub report: Report,
}

/// A column index (or a column to add) and its value, for one line.
type Staged = Vec<(usize, Option<(String, ColumnType)>, Cell)>;

impl Batcher {
    pub fn new(engine: Arc<Engine>, precision: Precision, now_us: i64, may_create: bool) -> Batcher {
        Batcher {
            engine,
            precision,
            now_us,
            tables: Vec::new(),
            by_name: HashMap::new(),
            last: None,
            capacity: 0,
            may_create,
            report: Report::default(),
        }
    }

    /// Parses a body (or a part of one whose first line is line `first_line`).
    pub fn add_body(&mut self, text: &str, first_line: usize) {
        self.capacity = memchr::memchr_iter(b'\n', text.as_bytes()).count() + 1;
        let mut parser = Parser::starting_at(text, first_line);
        let mut point = Point::default();
        let mut staged: Staged = Vec::new();
        while let Some((line, parsed)) = parser.next_point(&mut point) {
            self.report.points += 1;
            let r = parsed
                .map_err(|m| (SqlState::InvalidText.code(), m))
                .and_then(|()| self.add(line, &point, &mut staged));
            if let Err((sqlstate, message)) = r {
                self.report.fail(LineFailure { line, sqlstate, message });
            }
            staged.clear();
        }
    }

    fn table_for(&mut self, measurement: &str) -> Result<usize, (&'static str, String)> {
        if let Some(i) = self.last
            && self.tables[i].name == measurement
        {
            return Ok(i);
        }
        let i = match self.by_name.get(measurement) {
            Some(&i) => i,
            None => {
                let capacity = if self.tables.is_empty() { self.capacity } else { self.capacity.min(FIRST_ROWS) };
                let rows = match self.engine.table(measurement) {
                    Some(t) => TableRows::existing(t, capacity).ok_or_else(|| {
                        (
                            SqlState::WrongObjectType.code(),
                            format!("table \"{measurement}\" has no time column; line protocol writes time series"),
                        )
                    })?,
                    None if !self.may_create => {
                        return Err((SqlState::InsufficientPrivilege.code(), cannot_create(measurement)));
                    }
                    None => TableRows::new_table(measurement, capacity),
                };
                self.tables.push(rows);
                self.by_name.insert(measurement.to_string(), self.tables.len() - 1);
                self.tables.len() - 1
            }
        };
        self.last = Some(i);
        Ok(i)
    }

    fn add(&mut self, line: usize, p: &Point<'_>, staged: &mut Staged) -> Result<(), (&'static str, String)> {
        let ti = self.table_for(&p.measurement)?;
        let ts = match p.timestamp {
            Some(t) => self
                .precision
                .to_micros(t)
                .ok_or_else(|| (SqlState::DatetimeFieldOverflow.code(), format!("timestamp {t} is out of range")))?,
            None => self.now_us,
        };
        let precision = self.precision;
        let t = &mut self.tables[ti];
        let creating = t.table.is_none();
        let mut new_names: Vec<&str> = Vec::new();
        let keys =
            p.tags.iter().map(|(k, v)| (k, None, Some(v))).chain(p.fields.iter().map(|(k, v)| (k, Some(v), None)));
        for (pos, (key, field, tag)) in keys.enumerate() {
            let is_tag = tag.is_some();
            let pos = if is_tag { pos } else { pos - p.tags.len() };
            if key.as_ref() == t.columns[t.time].name {
                return Err((
                    SqlState::DuplicateColumn.code(),
                    format!("\"{key}\" is the time column; give the time as the line's timestamp"),
                ));
            }
            let col = t.lookup(key, pos, is_tag);
            let (idx, ty, add) = match col {
                Some(i) => {
                    if t.columns[i].stamp == line {
                        return Err((SqlState::DuplicateColumn.code(), format!("\"{key}\" is given twice")));
                    }
                    t.columns[i].stamp = line;
                    (i, t.columns[i].ty, None)
                }
                None if creating => {
                    if new_names.contains(&key.as_ref()) {
                        return Err((SqlState::DuplicateColumn.code(), format!("\"{key}\" is given twice")));
                    }
                    new_names.push(key);
                    let ty = match field {
                        None => ColumnType::Text,
                        Some(Value::Float(_)) => ColumnType::Double,
                        Some(Value::Int(_) | Value::UInt(_)) => ColumnType::BigInt,
                        Some(Value::Str(_)) => ColumnType::Text,
                        Some(Value::Bool(_)) => ColumnType::Boolean,
                    };
                    (usize::MAX, ty, Some((key.to_string(), ty)))
                }
                None => {
                    return Err((
                        SqlState::UndefinedColumn.code(),
                        format!("column \"{key}\" of relation \"{}\" does not exist", t.name),
                    ));
                }
            };
            let cell = match (field, tag) {
                (Some(v), _) => convert(v, pos, ty, precision),
                (None, Some(s)) => parse_text(s, pos, ty),
                (None, None) => unreachable!("a key is a tag or a field"),
            }
            .map_err(|m| (SqlState::InvalidText.code(), format!("column \"{key}\": {m}")))?;
            staged.push((idx, add, cell));
        }
        for c in &t.columns {
            if c.required && c.stamp != line {
                return Err((
                    SqlState::NotNull.code(),
                    format!(
                        "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                        c.name, t.name
                    ),
                ));
            }
        }
        // The line is good: add its new columns, then its row.
        for (idx, add, _) in staged.iter_mut() {
            if let Some((name, ty)) = add.take() {
                *idx = t.columns.len();
                t.index.insert(name.clone(), *idx);
                t.columns.push(Column { name, ty, required: false, data: Data::new(ty, t.rows, 0), stamp: line });
            }
        }
        let time = t.time;
        for (i, c) in t.columns.iter_mut().enumerate() {
            if i == time {
                c.data.push(Some(Cell::Int(ts)), p);
            } else if c.stamp != line {
                c.data.push(None, p);
            }
        }
        for &(idx, _, cell) in staged.iter() {
            t.columns[idx].data.push(Some(cell), p);
        }
        t.rows += 1;
        t.lines.push(line);
        Ok(())
    }

    /// The rows to write, per table, and what was refused.
    pub fn finish(self) -> (Vec<TableWrite>, Report) {
        let batches = self.tables.into_iter().filter(|t| t.rows > 0).map(TableRows::batch).collect();
        (batches, self.report)
    }
}

/// The value of field `pos` for a column of type `ty`.
fn convert(v: &Value<'_>, pos: usize, ty: ColumnType, precision: Precision) -> Result<Cell, String> {
    let mismatch = || format!("a {} cannot be stored in a {} column", v.kind(), ty.sql_name());
    Ok(match ty {
        ColumnType::Double | ColumnType::Real => match v {
            Value::Float(f) => Cell::Float(*f),
            Value::Int(i) => Cell::Float(*i as f64),
            Value::UInt(u) => Cell::Float(*u as f64),
            _ => return Err(mismatch()),
        },
        ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => {
            let i = match v {
                Value::Int(i) => *i,
                Value::UInt(u) => {
                    i64::try_from(*u).map_err(|_| format!("{u} is out of range for {}", ty.sql_name()))?
                }
                Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => *f as i64,
                Value::Float(f) => return Err(format!("{f} is not an integer ({} column)", ty.sql_name())),
                _ => return Err(mismatch()),
            };
            Cell::Int(check_int(i, ty)?)
        }
        ColumnType::Boolean => match v {
            Value::Bool(b) => Cell::Bool(*b),
            _ => return Err(mismatch()),
        },
        ColumnType::Text => match v {
            Value::Str(_) => Cell::Field(pos),
            _ => return Err(mismatch()),
        },
        ColumnType::Timestamp | ColumnType::TimestampTz => match v {
            Value::Int(i) => {
                Cell::Int(precision.to_micros(*i).ok_or_else(|| format!("timestamp {i} is out of range"))?)
            }
            _ => return Err(mismatch()),
        },
    })
}

fn check_int(i: i64, ty: ColumnType) -> Result<i64, String> {
    let ok = match ty {
        ColumnType::SmallInt => i16::try_from(i).is_ok(),
        ColumnType::Int => i32::try_from(i).is_ok(),
        _ => true,
    };
    if ok { Ok(i) } else { Err(format!("{i} is out of range for {}", ty.sql_name())) }
}

/// The value `s` of tag `pos` for a column of type `ty`.
fn parse_text(s: &str, pos: usize, ty: ColumnType) -> Result<Cell, String> {
    let bad = || format!("tag value \"{s}\" is not a valid {}", ty.sql_name());
    Ok(match ty {
        ColumnType::Text => Cell::Tag(pos),
        ColumnType::Double | ColumnType::Real => Cell::Float(s.parse().map_err(|_| bad())?),
        ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => {
            Cell::Int(check_int(s.parse().map_err(|_| bad())?, ty)?)
        }
        ColumnType::Boolean => match s {
            "t" | "T" | "true" | "True" | "TRUE" => Cell::Bool(true),
            "f" | "F" | "false" | "False" | "FALSE" => Cell::Bool(false),
            _ => return Err(bad()),
        },
        ColumnType::Timestamp | ColumnType::TimestampTz => return Err(bad()),
    })
}

/// `CREATE TABLE IF NOT EXISTS` for a measurement's columns.
pub fn create_sql(name: &str, columns: &[ColumnDef]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|c| {
            let not_null = if c.nullable { "" } else { " NOT NULL" };
            format!("{} {}{not_null}", quote(&c.name), c.ty.sql_name())
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}) WITH (time_column = {}, partition = '1 day')",
        quote(name),
        cols.join(", "),
        literal(TIME_COLUMN)
    )
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Writes a body: parses it, creates the missing tables (when `may_create`), and appends each table's
/// rows durably. Returns what was written and which lines were refused.
pub async fn write(
    db: &Arc<Database>,
    body: bytes::Bytes,
    precision: Precision,
    may_create: bool,
    dedup: &crate::ingest::dedup::Dedup,
) -> Result<Report, trafficdb::Error> {
    let engine = db.engine().clone();
    // Lines without a timestamp take the database clock's time (see trafficdb::clock).
    let now_us = engine.now_us();
    let (tables, mut report) =
        tokio::task::spawn_blocking(move || parse(&engine, &body, precision, now_us, may_create))
            .await
            .map_err(crate::ingest::dedup::internal)?
            .map_err(|m| trafficdb::Error::invalid(trafficdb::SqlState::InvalidText, m))?;
    for TableWrite { name, table, columns, batches, lines } in tables {
        let table = match table {
            Some(t) => t,
            None if !may_create => {
                for line in lines {
                    report.fail(LineFailure {
                        line,
                        sqlstate: SqlState::InsufficientPrivilege.code(),
                        message: cannot_create(&name),
                    });
                }
                continue;
            }
            None => match create(db, &name, &columns).await {
                Ok(t) => {
                    report.created.push(name.clone());
                    t
                }
                Err(e) => {
                    for line in lines {
                        report.fail(LineFailure { line, sqlstate: e.sqlstate(), message: e.to_string() });
                    }
                    continue;
                }
            },
        };
        match dedup.append(db, &table, batches).await {
            Ok((written, dropped)) => {
                report.tables.push(name);
                report.written += written;
                report.duplicates += dropped;
            }
            Err(e) => {
                // The append is all or nothing: every line of this table is refused.
                if e.sqlstate().starts_with("58") || e.sqlstate() == SqlState::Internal.code() {
                    return Err(e);
                }
                for line in lines {
                    report.fail(LineFailure { line, sqlstate: e.sqlstate(), message: e.to_string() });
                }
            }
        }
    }
    report.failures.sort_by_key(|f| f.line);
    Ok(report)
}

async fn create(db: &Arc<Database>, name: &str, columns: &[ColumnDef]) -> Result<Arc<Table>, trafficdb::Error> {
    db.sql(&create_sql(name, columns)).await?;
    db.engine().table(name).ok_or_else(|| trafficdb::engine::undefined_table(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_split_at_a_line_end_unless_a_string_could_be_cut() {
        let line = "m,host=a v=1 1\n";
        let body = line.repeat(SPLIT_BYTES / line.len() + 10);
        let mid = split_point(&body).expect("a large body splits");
        assert_eq!(&body[mid - 1..mid], "\n");
        assert!(mid >= body.len() / 2);
        assert!(split_point(&body[..SPLIT_BYTES / 2]).is_none(), "small bodies are parsed whole");
        let quoted = format!("m s=\"two\nlines\" 1\n{body}");
        assert!(split_point(&quoted).is_none());
    }
}
