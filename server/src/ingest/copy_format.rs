//! COPY text and CSV, decoded without the protocol: [`Format`] (the options), [`CopyDecoder`]
//! (bytes in pieces of any size in, batches of a table's types out into a bulk load, every value
//! checked, the line of each error named). The PostgreSQL server's `COPY ... FROM STDIN` feeds it CopyData messages
//! (`crate::pgwire::copy`); the fuzz target `copy` feeds it anything.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

use chrono::{TimeZone, Utc};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    ArrayRef, ArrowPrimitiveType, BooleanBuilder, NullBufferBuilder, PrimitiveBuilder, RecordBatch, StringArray,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::kernels::cast::cast_single_string_to_boolean_default;
use datafusion::arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, Field, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Schema, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::arrow::error::ArrowError;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption};
use trafficdb::engine::{BulkLoad, Table};
use trafficdb::{Error, SqlState};

/// Rows per Arrow batch built from COPY input.
const BATCH_ROWS: usize = 65_536;

/// The longest line (record) of a COPY FROM; a longer one fails the COPY with 54000.
const MAX_LINE: usize = 64 << 20;

/// How COPY text or CSV is laid out (its options).
#[derive(Debug, Clone)]
pub struct Format {
    pub csv: bool,
    pub delimiter: u8,
    pub null: String,
    pub header: bool,
    pub quote: u8,
    pub escape: u8,
}

impl Format {
    pub fn from_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<Format, Error> {
        let mut csv = false;
        let (mut delimiter, mut null, mut header, mut quote, mut escape) = (None, None, false, b'"', None);
        let one_byte = |c: char, what: &str| -> Result<u8, Error> {
            u8::try_from(c as u32).ok().filter(|b| b.is_ascii()).ok_or_else(|| {
                Error::invalid(SqlState::InvalidParameter, format!("COPY {what} must be a single one-byte character"))
            })
        };
        for o in options {
            match o {
                CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                    "text" => csv = false,
                    "csv" => csv = true,
                    other => {
                        return Err(Error::invalid(
                            SqlState::NotSupported,
                            format!("COPY format \"{other}\" is not supported (text, csv)"),
                        ));
                    }
                },
                CopyOption::Delimiter(c) => delimiter = Some(one_byte(*c, "delimiter")?),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Header(h) => header = *h,
                CopyOption::Quote(c) => quote = one_byte(*c, "quote")?,
                CopyOption::Escape(c) => escape = Some(one_byte(*c, "escape")?),
                CopyOption::Encoding(e) if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                other => {
                    return Err(Error::invalid(
                        SqlState::NotSupported,
                        format!("COPY option {other} is not supported"),
                    ));
                }
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Csv(opts) => {
                    csv = true;
                    for c in opts {
                        match c {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(q) => quote = one_byte(*q, "quote")?,
                            CopyLegacyCsvOption::Escape(e) => escape = Some(one_byte(*e, "escape")?),
                            other => {
                                return Err(Error::invalid(
                                    SqlState::NotSupported,
                                    format!("COPY option {other} is not supported"),
                                ));
                            }
                        }
                    }
                }
                CopyLegacyOption::Delimiter(c) => delimiter = Some(one_byte(*c, "delimiter")?),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                other => {
                    return Err(Error::invalid(
                        SqlState::NotSupported,
                        format!("COPY option {other} is not supported"),
                    ));
                }
            }
        }
        Ok(Format {
            csv,
            delimiter: delimiter.unwrap_or(if csv { b',' } else { b'\t' }),
            null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() }),
            header,
            quote,
            escape: escape.unwrap_or(quote),
        })
    }
}

/// The decoder of one COPY FROM: bytes in, in pieces of any size, batches of the table's types out.
///
/// Records are found in order as the bytes arrive (a quoted CSV field may hold newlines); a batch of
/// them is then split into fields and parsed in as many pieces as there are cores, and handed to the
/// bulk load, which sorts and writes on a thread of its own.
pub struct CopyDecoder {
    table: Arc<Table>,
    /// Where the rows go: written to segments as they fill, published when the COPY ends.
    load: Loader,
    /// Names of the columns the input holds, in input order, and the table's type of each.
    columns: Vec<String>,
    types: Vec<DataType>,
    format: Format,
    /// The records found and not yet parsed, then the bytes of the next ones.
    buf: Vec<u8>,
    /// Where each record found and not yet parsed starts and ends in `buf`.
    records: Vec<(usize, usize)>,
    /// Where the next record starts in `buf`.
    next: usize,
    /// Where the search for the end of the next record has got.
    scan: Scan,
    /// Lines consumed so far (for error messages).
    line: usize,
    skip_header: bool,
    /// Line number of the first record in `records`.
    first_line: usize,
    error: Option<CopyError>,
    finished: bool,
}

impl CopyDecoder {
    /// A decoder of `format` for the `columns` of the load's table (names, in input order), pushing
    /// its rows into `load` and accounting what the load holds in `memory`.
    pub fn new(load: BulkLoad, columns: Vec<String>, format: Format, memory: MemoryReservation) -> CopyDecoder {
        let table = load.table().clone();
        // A name the table lacks reaches the batch as text, and the batch's check names it.
        let types =
            columns.iter().map(|c| table.schema.field_with_name(c).map_or(DataType::Utf8, |f| f.data_type().clone()));
        CopyDecoder {
            types: types.collect(),
            table,
            load: Loader::start(load, memory),
            skip_header: format.header,
            columns,
            format,
            buf: Vec::new(),
            records: Vec::new(),
            next: 0,
            scan: Scan::default(),
            line: 0,
            first_line: 1,
            error: None,
            finished: false,
        }
    }

    /// Decodes the records `data` completes; after an error or the end marker (`\.`) it is ignored.
    pub fn feed(&mut self, data: &[u8]) {
        if self.take(data) {
            self.parse();
        }
    }

    /// The first half of [`CopyDecoder::feed`], cheap: takes `data` in and finds the records it
    /// completes, parsing none. `true` when a batch of them is ready for [`CopyDecoder::parse`].
    pub fn take(&mut self, data: &[u8]) -> bool {
        if self.error.is_none() && !self.finished {
            self.buf.extend_from_slice(data);
            self.find_records();
        }
        self.batch_full()
    }

    /// The second half of [`CopyDecoder::feed`]: parses the batches of records that are ready and
    /// hands them to the load (on every core, and the load may be writing a run meanwhile).
    pub fn parse(&mut self) {
        while self.batch_full() && self.error.is_none() {
            let buf = std::mem::take(&mut self.buf);
            self.seal_batch(&buf);
            self.buf = buf;
            self.buf.drain(..self.next);
            self.scan.pos -= self.next;
            self.next = 0;
            self.find_records();
        }
    }

    /// The input has ended: the load holding every row, to commit; or the first error.
    pub fn finish(mut self) -> Result<BulkLoad, CopyError> {
        // A last line without a newline.
        if self.buf.len() > self.next && self.error.is_none() && !self.finished {
            self.buf.push(b'\n');
            self.find_records();
        }
        self.parse();
        let buf = std::mem::take(&mut self.buf);
        self.seal_batch(&buf);
        let loaded = self.load.finish();
        match self.error.take() {
            Some(e) => Err(e),
            None => loaded.map_err(|e| engine_error(&self.table, e)),
        }
    }

    /// Whether the records found make a batch.
    fn batch_full(&self) -> bool {
        self.records.len() >= BATCH_ROWS
            || self.records.first().is_some_and(|&(start, _)| self.next - start >= BATCH_BYTES)
    }

    /// Finds the complete records in the buffer, up to a batch of them.
    fn find_records(&mut self) {
        while self.error.is_none() && !self.finished && !self.batch_full() {
            let Some((end, next)) = next_record(&self.format, &self.buf, &mut self.scan) else {
                if self.buf.len() - self.next > MAX_LINE {
                    self.line += 1;
                    self.error = Some(too_long(&self.table, self.line));
                }
                return;
            };
            self.scan = Scan { pos: next, in_quotes: false };
            self.line += 1;
            let (start, rec) = (self.next, &self.buf[self.next..end]);
            self.next = next;
            if !self.format.csv && (rec == b"\\." || rec == b"\\.\r") {
                self.finished = true;
                return;
            }
            if self.skip_header {
                self.skip_header = false;
                continue;
            }
            if self.records.is_empty() {
                self.first_line = self.line;
            }
            self.records.push((start, end));
        }
    }

    /// Parses the records found into batches of the table's types, every value checked (in a piece per
    /// core), and hands them to the load.
    fn seal_batch(&mut self, buf: &[u8]) {
        let records = std::mem::take(&mut self.records);
        if records.is_empty() || self.error.is_some() {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let piece = records.len().div_ceil(cores).max(MIN_PIECE_ROWS);
        let pieces: Vec<(usize, &[(usize, usize)])> =
            records.chunks(piece).enumerate().map(|(i, p)| (self.first_line + i * piece, p)).collect();
        let parsed = trafficdb::segment::parallel_map(&pieces, |&(first_line, records)| {
            let rows = Rows { format: &self.format, table: &self.table, columns: &self.columns, types: &self.types };
            rows.parse(buf, records, first_line)
        });
        for batch in parsed {
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            };
            if !self.load.push(batch) {
                let e = self.load.finish().err().unwrap_or_else(|| Error::Internal("the COPY's load stopped".into()));
                self.error = Some(engine_error(&self.table, e));
                return;
            }
        }
    }
}

/// The bulk load of a COPY, fed batches on a thread of its own: the next rows are received and parsed
/// while a run is sorted and written.
struct Loader {
    batches: Option<SyncSender<RecordBatch>>,
    thread: Option<JoinHandle<Result<BulkLoad, Error>>>,
    /// Why the thread did not start.
    failed: Option<Error>,
}

impl Loader {
    /// `memory` accounts the rows the load holds, in the session's memory pool; past it, the load
    /// writes them out.
    fn start(mut load: BulkLoad, memory: MemoryReservation) -> Loader {
        // One batch waits while the thread pushes another: the parser runs at most a batch ahead.
        let (batches, received) = std::sync::mpsc::sync_channel::<RecordBatch>(1);
        let thread = std::thread::Builder::new().name("copy-load".into()).spawn(move || {
            for batch in received {
                load.push(&batch)?;
                if memory.try_resize(load.pending_bytes()).is_err() {
                    load.write_pending()?;
                    memory.resize(0);
                }
            }
            Ok(load)
        });
        match thread {
            Ok(thread) => Loader { batches: Some(batches), thread: Some(thread), failed: None },
            Err(e) => Loader {
                batches: None,
                thread: None,
                failed: Some(Error::Internal(format!("could not start the COPY's load: {e}"))),
            },
        }
    }

    /// Hands `batch` to the load; `false` when the load has stopped (on an error [`Loader::finish`]
    /// returns).
    fn push(&mut self, batch: RecordBatch) -> bool {
        self.batches.as_ref().is_some_and(|b| b.send(batch).is_ok())
    }

    /// The load holding every batch pushed, or its error.
    fn finish(&mut self) -> Result<BulkLoad, Error> {
        self.batches = None;
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| Err(Error::Internal("the COPY's load panicked".into()))),
            None => Err(self.failed.take().unwrap_or_else(|| Error::Internal("the COPY's load has ended".into()))),
        }
    }
}

/// Why a COPY failed: the input's fault (with its SQLSTATE), or a value the table's types refuse.
#[derive(Debug)]
pub enum CopyError {
    Own(SqlState, String),
    Engine(Error, String),
}

/// A text-format field appended to `out`: `\N` (or the NULL string) is NULL (nothing appended),
/// backslash escapes are decoded.
fn text_field(raw: &[u8], null: &str, out: &mut Vec<u8>) -> Option<()> {
    if raw == null.as_bytes() {
        return None;
    }
    if memchr::memchr(b'\\', raw).is_none() {
        out.extend_from_slice(raw);
        return Some(());
    }
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'\\' && i + 1 < raw.len() {
            i += 1;
            let c = raw[i];
            match c {
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'v' => out.push(11),
                b'0'..=b'7' => {
                    let mut v: u32 = 0;
                    let mut n = 0;
                    while n < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                        v = v * 8 + (raw[i] - b'0') as u32;
                        i += 1;
                        n += 1;
                    }
                    out.push(v as u8);
                    continue;
                }
                b'x' if i + 1 < raw.len() && raw[i + 1].is_ascii_hexdigit() => {
                    let mut v: u32 = 0;
                    let mut n = 0;
                    i += 1;
                    while n < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                        v = v * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                        i += 1;
                        n += 1;
                    }
                    out.push(v as u8);
                    continue;
                }
                other => out.push(other),
            }
            i += 1;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(())
}

/// How far the search for the end of the current record has got: `pos` in the buffer, and whether
/// it is inside a quoted CSV field there. Each byte is looked at once, however the data is split
/// into CopyData messages (a record that arrives a byte at a time is not scanned again per byte).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Scan {
    pub(crate) pos: usize,
    pub(crate) in_quotes: bool,
}

/// The end of the record that starts at or before `scan.pos`, and where the record after it starts;
/// `None` when the buffer holds no whole record yet (`scan` then says where to go on from).
pub(crate) fn next_record(format: &Format, buf: &[u8], scan: &mut Scan) -> Option<(usize, usize)> {
    if !format.csv {
        return match buf[scan.pos..].iter().position(|&c| c == b'\n') {
            Some(nl) => Some((scan.pos + nl, scan.pos + nl + 1)),
            None => {
                scan.pos = buf.len();
                None
            }
        };
    }
    let mut i = scan.pos;
    while i < buf.len() {
        // Straight to the next byte that matters: a quote or a newline outside quotes, a quote or the
        // escape inside them.
        let next = if !scan.in_quotes {
            memchr::memchr2(b'\n', format.quote, &buf[i..])
        } else if format.escape != format.quote {
            memchr::memchr2(format.quote, format.escape, &buf[i..])
        } else {
            memchr::memchr(format.quote, &buf[i..])
        };
        let Some(skip) = next else {
            i = buf.len();
            break;
        };
        i += skip;
        let c = buf[i];
        if scan.in_quotes {
            if c == format.escape && format.escape != format.quote {
                if i + 1 >= buf.len() {
                    break; // the escaped byte has not arrived
                }
                i += 2;
                continue;
            }
            if c == format.quote {
                if format.escape == format.quote {
                    match buf.get(i + 1) {
                        None => break, // a doubled quote or the closing one: the next byte decides
                        Some(&n) if n == format.quote => {
                            i += 2;
                            continue;
                        }
                        Some(_) => {}
                    }
                }
                scan.in_quotes = false;
            }
        } else if c == format.quote {
            scan.in_quotes = true;
        } else if c == b'\n' {
            return Some((i, i + 1));
        }
        i += 1;
    }
    scan.pos = i;
    None
}

/// What parsing a piece of a COPY's records needs: how they are written, and the table's columns
/// they fill.
struct Rows<'a> {
    format: &'a Format,
    table: &'a Table,
    columns: &'a [String],
    types: &'a [DataType],
}

impl Rows<'_> {
    /// The `records` of `buf` (the first at line `first_line`) as a batch of the table's types; or the
    /// first error among them.
    fn parse(&self, buf: &[u8], records: &[(usize, usize)], first_line: usize) -> Result<RecordBatch, CopyError> {
        let width = self.columns.len();
        // The piece's input: field ranges are offsets into it (it spans less than `SIDE` bytes: a batch
        // of `BATCH_BYTES` and a last record of at most `MAX_LINE`).
        let base = records.first().map_or(0, |r| r.0);
        let input = &buf[base..records.last().map_or(base, |r| r.1)];
        let mut pending = Pending::new(width, records.len());
        // A record with the wrong number of fields ends the piece; the error is reported unless the
        // records before it hold one.
        let mut malformed = None;
        for (i, &(start, end)) in records.iter().enumerate() {
            let line = first_line + i;
            if end - start > MAX_LINE {
                malformed = Some(too_long(self.table, line));
                break;
            }
            let side_before = pending.side.len();
            let n = split(self.format, input, start - base, end - base, &mut pending);
            if n != width {
                pending.side.truncate(side_before);
                pending.columns.iter_mut().for_each(|c| c.truncate(i));
                let message = if n < width {
                    format!("missing data for column \"{}\"", self.columns[n])
                } else {
                    "extra data after last expected column".to_string()
                };
                malformed = Some(own_error(self.table, line, SqlState::BadCopyFileFormat, message));
                break;
            }
        }
        let rows = pending.columns.first().map_or(0, Vec::len);
        let batch = self.typed(input, &pending, rows, first_line)?;
        match malformed {
            Some(e) => Err(e),
            None => Ok(batch),
        }
    }

    /// The pending rows of `input` as a batch of the table's types.
    fn typed(&self, input: &[u8], pending: &Pending, rows: usize, first_line: usize) -> Result<RecordBatch, CopyError> {
        // The input and the unquoted fields are checked as UTF-8 at once (its delimiters are ASCII, so a
        // field of valid input is valid; a field that splits a character, as an escape may, is not
        // UTF-8 on its own and is refused); one by one only when the whole is not.
        let (whole, side) = (std::str::from_utf8(input).ok(), std::str::from_utf8(&pending.side).ok());
        let text = |&(start, end): &(u32, u32)| -> Option<&str> {
            let (bytes, all, start) = match start & SIDE {
                0 => (input, whole, start as usize),
                _ => (&pending.side[..], side, (start & !SIDE) as usize),
            };
            let end = end as usize;
            match all {
                Some(all) => all.get(start..end),
                None => std::str::from_utf8(&bytes[start..end]).ok(),
            }
        };
        // The first field that is not UTF-8, in input order: the least row, then the least column.
        if whole.is_none() || pending.unquoted {
            let bad = pending
                .columns
                .iter()
                .enumerate()
                .filter_map(|(c, fields)| {
                    fields.iter().position(|f| *f != NULL_FIELD && text(f).is_none()).map(|r| (r, c))
                })
                .min();
            if let Some((row, c)) = bad {
                let message = format!("invalid byte sequence for encoding \"UTF8\" in column \"{}\"", self.columns[c]);
                return Err(own_error(self.table, first_line + row, SqlState::CharacterNotInRepertoire, message));
            }
        }
        let bytes = |&(start, end): &(u32, u32)| match start & SIDE {
            0 => &input[start as usize..end as usize],
            _ => &pending.side[(start & !SIDE) as usize..end as usize],
        };
        let mut fields = Vec::with_capacity(self.columns.len());
        let mut arrays = Vec::with_capacity(self.columns.len());
        for ((name, ty), column) in self.columns.iter().zip(self.types).zip(&pending.columns) {
            let values = column.iter().map(|f| (*f != NULL_FIELD).then(|| text(f).unwrap_or_default()));
            let (ty, array) = match typed_column(ty, values, rows) {
                Some(array) => (ty.clone(), array),
                // Text, or a column the check below names the value of that the cast refuses.
                None => (DataType::Utf8, text_column(column, bytes).map_err(|e| engine_error(self.table, e.into()))?),
            };
            fields.push(Field::new(name, ty, true));
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| engine_error(self.table, Error::from(e)))?;
        trafficdb::types::coerce_batch_numbered(&self.table.def, &self.table.schema, &batch, first_line)
            .map_err(|e| engine_error(self.table, e))
    }
}

/// Splits the record `input[start..end]` into fields appended to `pending` (field k in column k): a
/// field of a record that quotes and escapes nothing is a range of `input`, the others are unquoted
/// (unescaped) into `pending.side`. Returns how many fields the record has.
fn split(f: &Format, input: &[u8], start: usize, end: usize, pending: &mut Pending) -> usize {
    let rec = &input[start..end];
    let rec = rec.strip_suffix(b"\r").unwrap_or(rec);
    let Pending { side, columns, unquoted } = pending;
    let null = f.null.as_bytes();
    let is_null = |field: &[u8]| field.len() == null.len() && field == null;
    let mut k = 0;
    let mut push = |field: (u32, u32)| {
        if let Some(column) = columns.get_mut(k) {
            column.push(field);
        }
        k += 1;
    };
    // Most records quote and escape nothing: their fields are the record cut at each delimiter, found
    // in one pass with the byte that would say otherwise.
    let special = if f.csv { f.quote } else { b'\\' };
    let mut from = 0;
    let plain = delimiters(rec, f.delimiter, special, |at| {
        push(if is_null(&rec[from..at]) { NULL_FIELD } else { ((start + from) as u32, (start + at) as u32) });
        from = at + 1;
    });
    if plain {
        push(if is_null(&rec[from..]) { NULL_FIELD } else { ((start + from) as u32, (start + rec.len()) as u32) });
        return k;
    }
    // Taken back: the record is unquoted into `side`.
    columns.iter_mut().take(k).for_each(|c| {
        c.pop();
    });
    k = 0;
    *unquoted = true;
    let mut push = |field: (u32, u32)| {
        if let Some(column) = columns.get_mut(k) {
            column.push(field);
        }
        k += 1;
    };
    let range = |start: usize, end: usize| (start as u32 | SIDE, end as u32);
    if !f.csv {
        for raw in rec.split(|&c| c == f.delimiter) {
            let start = side.len();
            let field = text_field(raw, &f.null, side).map_or(NULL_FIELD, |()| range(start, side.len()));
            push(field);
        }
        return k;
    }
    let mut i = 0;
    loop {
        let start = side.len();
        let mut quoted = false;
        if rec.get(i) == Some(&f.quote) {
            quoted = true;
            i += 1;
            while i < rec.len() {
                let c = rec[i];
                if c == f.escape
                    && rec.get(i + 1).is_some_and(|&n| n == f.quote || (f.escape != f.quote && n == f.escape))
                {
                    side.push(rec[i + 1]);
                    i += 2;
                } else if c == f.quote {
                    i += 1;
                    break;
                } else {
                    side.push(c);
                    i += 1;
                }
            }
        }
        let rest = memchr::memchr(f.delimiter, &rec[i..]).map_or(rec.len(), |p| i + p);
        side.extend_from_slice(&rec[i..rest]);
        i = rest;
        let null_field = !quoted && is_null(&side[start..]);
        push(if null_field { NULL_FIELD } else { range(start, side.len()) });
        if i >= rec.len() {
            return k;
        }
        i += 1; // the delimiter
    }
}

/// Calls `found` with the position of each `delimiter` in `rec`, in order, unless `rec` holds `special`
/// (then `false`, maybe after some calls). Eight bytes at a time: fields are a few bytes long, too
/// short for a search call per field to pay.
fn delimiters(rec: &[u8], delimiter: u8, special: u8, mut found: impl FnMut(usize)) -> bool {
    const LOW: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // The high bit of each byte of `word` equal to the byte of `pattern`, and no other bit.
    let equal = |word: u64, pattern: u64| {
        let x = word ^ pattern;
        !(((x & LOW).wrapping_add(LOW)) | x) & !LOW
    };
    let (d, s) = (u64::from_ne_bytes([delimiter; 8]), u64::from_ne_bytes([special; 8]));
    let words = rec.chunks_exact(8);
    let tail = words.remainder();
    for (w, word) in words.enumerate() {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or_default());
        if equal(word, s) != 0 {
            return false;
        }
        let mut hits = equal(word, d);
        while hits != 0 {
            found(w * 8 + hits.trailing_zeros() as usize / 8);
            hits &= hits - 1;
        }
    }
    let base = rec.len() - tail.len();
    for (i, &c) in tail.iter().enumerate() {
        if c == special {
            return false;
        }
        if c == delimiter {
            found(base + i);
        }
    }
    true
}

fn own_error(table: &Table, line: usize, code: SqlState, message: String) -> CopyError {
    CopyError::Own(code, format!("{message}\nCONTEXT:  COPY {}, line {line}", table.name()))
}

fn too_long(table: &Table, line: usize) -> CopyError {
    own_error(table, line, SqlState::ProgramLimitExceeded, format!("a COPY line is longer than {} MiB", MAX_LINE >> 20))
}

fn engine_error(table: &Table, e: Error) -> CopyError {
    let message = format!("{e}\nCONTEXT:  COPY {}", table.name());
    CopyError::Engine(e, message)
}

/// Rows parsed and not yet in a batch: where each field's text is (see [`split`]), and the text of
/// the fields that had to be unquoted or unescaped. Values become the table's types a column at a time.
struct Pending {
    side: Vec<u8>,
    /// Field r of `columns[c]` is column c of row r: a range of the input, a range of `side` (its start
    /// has [`SIDE`] set), or [`NULL_FIELD`].
    columns: Vec<Vec<(u32, u32)>>,
    /// Whether a field is in `side`.
    unquoted: bool,
}

impl Pending {
    fn new(width: usize, rows: usize) -> Pending {
        Pending { side: Vec::new(), columns: vec![Vec::with_capacity(rows); width], unquoted: false }
    }
}

/// Set in the start of a field's range when the range is of the unquoted text beside the input.
const SIDE: u32 = 1 << 31;

/// The range of a NULL field.
const NULL_FIELD: (u32, u32) = (u32::MAX, u32::MAX);

/// A batch is sealed once its records span this many bytes (ranges in a piece of it, records of at most
/// [`MAX_LINE`], fit `u32`).
const BATCH_BYTES: usize = 64 << 20;

/// A batch is parsed in pieces of at least this many rows.
const MIN_PIECE_ROWS: usize = 4096;

/// The `fields` as text: their bytes copied once into the array's buffer (sized from the ranges), whose
/// UTF-8 the array checks as a whole.
fn text_column<'a>(fields: &[(u32, u32)], bytes: impl Fn(&(u32, u32)) -> &'a [u8]) -> Result<ArrayRef, ArrowError> {
    let present = || fields.iter().filter(|f| **f != NULL_FIELD);
    let mut values = Vec::with_capacity(present().map(|&(start, end)| (end - (start & !SIDE)) as usize).sum());
    let mut offsets = Vec::with_capacity(fields.len() + 1);
    offsets.push(0i32);
    let mut nulls = NullBufferBuilder::new(fields.len());
    for f in fields {
        if *f == NULL_FIELD {
            nulls.append_null();
        } else {
            values.extend_from_slice(bytes(f));
            nulls.append_non_null();
        }
        let end = i32::try_from(values.len()).map_err(|_| ArrowError::OffsetOverflowError(values.len()))?;
        offsets.push(end);
    }
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    Ok(Arc::new(StringArray::try_new(offsets, Buffer::from(values), nulls.finish())?))
}

/// Column `values` as an array of `ty`, each value parsed by the function Arrow's cast from text
/// calls for it, so the result is the cast's; `None` for text, when a value does not parse, or when the
/// type is not one a table holds (the column then goes to the cast as text, which names the value it
/// refuses).
fn typed_column<'a>(ty: &DataType, values: impl Iterator<Item = Option<&'a str>>, rows: usize) -> Option<ArrayRef> {
    Some(match ty {
        DataType::Int16 => primitive::<Int16Type>(values, rows)?,
        DataType::Int32 => primitive::<Int32Type>(values, rows)?,
        DataType::Int64 => primitive::<Int64Type>(values, rows)?,
        DataType::Float32 => primitive::<Float32Type>(values, rows)?,
        DataType::Float64 => primitive::<Float64Type>(values, rows)?,
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(rows);
            for v in values {
                match v {
                    None => b.append_null(),
                    Some(s) => b.append_value(parse_bool(s)?),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => timestamps(values, rows, &Utc, None)?,
        DataType::Timestamp(TimeUnit::Microsecond, Some(zone)) => {
            timestamps(values, rows, &zone.parse::<Tz>().ok()?, Some(zone.clone()))?
        }
        _ => return None,
    })
}

/// A boolean as Arrow's cast reads it (`cast_single_string_to_boolean_default`: `t`, `true`, `yes`,
/// `on`, `1` and their prefixes, any case, around white space), without its allocation for the short
/// words that are most of them.
fn parse_bool(s: &str) -> Option<bool> {
    let mut word = [0u8; 5];
    if s.len() > word.len() || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return cast_single_string_to_boolean_default(s);
    }
    // Byte by byte: a copy of a few bytes of any length is a call.
    for (w, c) in word.iter_mut().zip(s.bytes()) {
        *w = c.to_ascii_lowercase();
    }
    match &word[..s.len()] {
        b"t" | b"tr" | b"tru" | b"true" | b"y" | b"ye" | b"yes" | b"on" | b"1" => Some(true),
        b"f" | b"fa" | b"fal" | b"fals" | b"false" | b"n" | b"no" | b"of" | b"off" | b"0" => Some(false),
        _ => None,
    }
}

fn primitive<'a, T: ArrowPrimitiveType + Parser>(
    values: impl Iterator<Item = Option<&'a str>>,
    rows: usize,
) -> Option<ArrayRef> {
    let mut b = PrimitiveBuilder::<T>::with_capacity(rows);
    for v in values {
        match v {
            None => b.append_null(),
            Some(s) => b.append_value(T::parse(s)?),
        }
    }
    Some(Arc::new(b.finish()))
}

fn timestamps<'a, Z: TimeZone>(
    values: impl Iterator<Item = Option<&'a str>>,
    rows: usize,
    zone: &Z,
    name: Option<Arc<str>>,
) -> Option<ArrayRef> {
    let mut b = TimestampMicrosecondBuilder::with_capacity(rows);
    for v in values {
        match v {
            None => b.append_null(),
            Some(s) => {
                let naive = string_to_datetime(zone, s).ok()?.naive_utc();
                b.append_value(TimestampMicrosecondType::from_naive_datetime(naive, None)?);
            }
        }
    }
    Some(Arc::new(b.finish().with_timezone_opt(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records of `chunks` as `CopyDecoder::find_records` finds them, a chunk at a time.
    fn records(format: &Format, chunks: &[&[u8]]) -> Vec<String> {
        let (mut buf, mut scan, mut out) = (Vec::new(), Scan::default(), Vec::new());
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            let mut start = 0;
            while let Some((end, next)) = next_record(format, &buf, &mut scan) {
                out.push(String::from_utf8_lossy(&buf[start..end]).to_string());
                start = next;
                scan = Scan { pos: next, in_quotes: false };
            }
            buf.drain(..start);
            scan.pos -= start;
        }
        out
    }

    #[test]
    fn records_split_anywhere_are_found_once_and_the_same() {
        let csv =
            |escape: u8| Format { csv: true, delimiter: b',', null: String::new(), header: false, quote: b'"', escape };
        let text =
            Format { csv: false, delimiter: b'\t', null: "\\N".into(), header: false, quote: b'"', escape: b'"' };
        let input: &[u8] = b"1,\"a\nb\",\"say \"\"hi\"\"\"\n2,\"\"\"\"\n3,\"x\\\"y\n\",z\n4,plain\n";
        for format in [csv(b'"'), csv(b'\\'), text.clone()] {
            let whole = records(&format, &[input]);
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(records(&format, &bytes), whole, "byte by byte, {format:?}");
            for at in 0..input.len() {
                assert_eq!(records(&format, &[&input[..at], &input[at..]]), whole, "split at {at}, {format:?}");
            }
        }
        assert_eq!(records(&csv(b'\\'), &[input]).len(), 4);
        assert_eq!(records(&csv(b'"'), &[input]).len(), 3, "with \" as the escape, the last quote opens a field");
        assert_eq!(records(&text, &[input]).len(), 6);
    }

    /// What each value parses to on the way in is what Arrow's cast from text gives it: the same value,
    /// or a refusal (then the cast, run on the column as text, names it).
    #[test]
    fn values_parse_as_the_cast_from_text_parses_them() {
        use datafusion::arrow::array::StringArray;
        use datafusion::arrow::compute::{CastOptions, cast_with_options};
        let values = [
            "0",
            "1",
            "-1",
            "+7",
            " 7",
            "7 ",
            "32767",
            "32768",
            "-32769",
            "2147483648",
            "9223372036854775807",
            "9223372036854775808",
            "1.5",
            "-2e3",
            "1e400",
            "inf",
            "-Infinity",
            "NaN",
            "nan",
            ".5",
            "5.",
            "0x10",
            "",
            " ",
            "t",
            "T",
            "tr",
            "TRUE",
            "yes",
            "Y",
            "on",
            "ON",
            "of",
            "off",
            "1",
            "0",
            " true ",
            "true\t",
            "maybe",
            "truee",
            "2024-01-01 00:00:00",
            "2024-01-01T00:00:00.123456",
            "2024-01-01 00:00:00.1234567",
            "2024-02-29 23:59:59",
            "2023-02-29 00:00:00",
            "2024-01-01 24:00:00",
            "2024-01-01",
            "2024-01-01 00:00",
            "2024-01-01 00:00:00Z",
            "2024-01-01 00:00:00+02:00",
            "2024-01-01T00:00:00-0530",
            "1969-12-31 23:59:59.9",
            "9999-12-31 23:59:59",
            "10000-01-01 00:00:00",
            "ä",
            "é1",
            "１",
        ];
        let types = [
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::Float32,
            DataType::Float64,
            DataType::Boolean,
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        ];
        let options = CastOptions { safe: false, ..Default::default() };
        for ty in &types {
            for v in values {
                let cast = cast_with_options(&StringArray::from(vec![Some(v)]), ty, &options).ok();
                let parsed = typed_column(ty, std::iter::once(Some(v)), 1);
                match (&cast, &parsed) {
                    (Some(c), Some(p)) => assert_eq!(c.as_ref(), p.as_ref(), "{v:?} as {ty}"),
                    (None, None) => {}
                    _ => panic!("{v:?} as {ty}: the cast gives {cast:?}, the parse {parsed:?}"),
                }
            }
        }
    }

    /// The delimiters found eight bytes at a time are those a byte-by-byte scan finds, and a record
    /// holding the special byte anywhere is refused.
    #[test]
    fn delimiters_are_found_as_a_scan_finds_them() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(5);
        let alphabet = [b',', b'\t', b'"', b'a', 0x80, 0xff, 0x2b, 0x2d, b'\\', 0];
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let rec: Vec<u8> = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            let (delimiter, special) = if rng.random() { (b',', b'"') } else { (b'\t', b'\\') };
            let mut found = Vec::new();
            let plain = delimiters(&rec, delimiter, special, |at| found.push(at));
            assert_eq!(plain, !rec.contains(&special), "{rec:?}");
            if plain {
                let expected: Vec<usize> = (0..rec.len()).filter(|&i| rec[i] == delimiter).collect();
                assert_eq!(found, expected, "{rec:?}");
            }
        }
    }

    /// Text that is not UTF-8 fails the COPY naming its line and column, whether the field is cut from
    /// the input or unquoted (or unescaped) beside it; escapes that spell a character whole are taken.
    #[test]
    fn text_that_is_not_utf8_is_refused_where_it_is() {
        use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryPool};
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let db = rt.block_on(trafficdb::Database::open(dir.path())).expect("open");
        rt.block_on(db.sql("CREATE TABLE u (ts TIMESTAMP NOT NULL, txt TEXT) WITH (time_column = 'ts')"))
            .expect("create");
        let t = db.engine().table("u").expect("table");
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        let format = |csv: bool| Format {
            csv,
            delimiter: if csv { b',' } else { b'\t' },
            null: if csv { String::new() } else { "\\N".into() },
            header: false,
            quote: b'"',
            escape: b'"',
        };
        let ok = "2024-01-01 00:00:00";
        let cases: [(bool, Vec<u8>, Option<usize>); 7] = [
            (true, format!("{ok},é\n{ok},\"ü, \"\"q\"\"\"\n").into_bytes(), None),
            (true, [format!("{ok},a\n{ok},").as_bytes(), b"\xff\n"].concat(), Some(2)),
            (true, [format!("{ok},\"a\n").as_bytes(), b"\xe2\x82\"\n"].concat(), Some(1)),
            (true, [format!("{ok},x\n{ok},\"y\"\n{ok},").as_bytes(), b"z\xc3\n"].concat(), Some(3)),
            (false, format!("{ok}\t\\xc3\\xa9\n{ok}\tplain é\n").into_bytes(), None),
            (false, format!("{ok}\tok\n{ok}\t\\xe2\n").into_bytes(), Some(2)),
            (false, [format!("{ok}\t\\ta").as_bytes(), b"\xff\n"].concat(), Some(1)),
        ];
        for (i, (csv, input, bad)) in cases.into_iter().enumerate() {
            let memory = MemoryConsumer::new("test").register(&pool);
            let load = db.engine().bulk_load(&t).expect("load");
            let mut decoder = CopyDecoder::new(load, vec!["ts".into(), "txt".into()], format(csv), memory);
            decoder.feed(&input);
            match (decoder.finish(), bad) {
                (Ok(_), None) => {}
                (Err(CopyError::Own(state, message)), Some(line)) => {
                    assert_eq!(state, SqlState::CharacterNotInRepertoire, "case {i}");
                    assert!(
                        message.contains(&format!("line {line}")) && message.contains("\"txt\""),
                        "case {i}: {message}"
                    );
                }
                (Ok(_), Some(_)) => panic!("case {i}: text that is not UTF-8 was taken"),
                (Err(e), _) => panic!("case {i}: {e:?}"),
            }
        }
    }

    /// A random COPY, in text or CSV, fed in random pieces: the table holds what the values give when
    /// cast from text (the reference), or the COPY fails naming the one bad line.
    #[test]
    fn copies_hold_what_the_cast_of_their_values_gives() {
        use datafusion::arrow::compute::concat_batches;
        use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryPool};
        use rand::{Rng, SeedableRng, rngs::StdRng};

        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let db = rt.block_on(trafficdb::Database::open(dir.path())).expect("open");
        let texts = ["", "a,b", "say \"hi\"", "two\nlines", "back\\slash", "tab\there", "é ü", "\\N", "NULL", "x"];
        let bools = ["t", "FALSE", "yes", "Off", "1", "0", " true ", "n"];
        let floats = ["1.5", "-2e3", "inf", "NaN", "0.1", "-0", "1e-7"];
        for case in 0..12u64 {
            let mut rng = StdRng::seed_from_u64(case);
            let table = format!("c{case}");
            rt.block_on(db.sql(&format!(
                "CREATE TABLE {table} (ts TIMESTAMP NOT NULL, i INT, b BIGINT, s SMALLINT, d DOUBLE, r REAL, \
                 f BOOLEAN, txt TEXT, tz TIMESTAMPTZ) WITH (time_column = 'ts')"
            )))
            .expect("create");
            let csv = case % 2 == 0;
            // Over a batch of rows; over a piece of one (parsed on one core); any number.
            let rows = match case {
                0 | 1 => 70_000,
                _ if case % 3 == 2 => rng.random_range(2 * MIN_PIECE_ROWS..12_000),
                _ => rng.random_range(1..12_000),
            };
            // A bad value, in the first or the last of the pieces a batch is parsed in.
            let bad = (case % 3 == 2).then(|| if case % 2 == 0 { rng.random_range(0..rows) } else { rows - 1 });
            let mut values: Vec<Vec<Option<String>>> = Vec::new();
            for r in 0..rows {
                let ts = format!(
                    "2024-01-01{}{:02}:{:02}:{:02}.{:06}",
                    if r % 5 == 0 { 'T' } else { ' ' },
                    r / 3_600_000 % 24,
                    r / 60_000 % 60,
                    r / 1000 % 60,
                    r % 1000 * 997
                );
                let row = [
                    ts,
                    if Some(r) == bad { "x1".into() } else { rng.random::<i32>().to_string() },
                    rng.random::<i64>().to_string(),
                    rng.random::<i16>().to_string(),
                    floats[rng.random_range(0..floats.len())].to_string(),
                    floats[rng.random_range(0..floats.len())].to_string(),
                    bools[rng.random_range(0..bools.len())].to_string(),
                    texts[rng.random_range(0..texts.len())].to_string(),
                    format!("2024-01-01 00:00:{:02}{}", r % 60, ["", "Z", "+02:00"][r % 3]),
                ];
                // A tenth of the values are NULL (not the time, nor the bad one).
                let row: Vec<Option<String>> = row
                    .into_iter()
                    .enumerate()
                    .map(|(c, v)| (c == 0 || (c == 1 && Some(r) == bad) || rng.random_range(0..10) > 0).then_some(v))
                    .collect();
                values.push(row);
            }
            let header = csv && case % 4 == 0;
            let mut input = Vec::new();
            if header {
                input.extend_from_slice(b"ts,i,b,s,d,r,f,txt,tz\n");
            }
            for row in &values {
                for (c, v) in row.iter().enumerate() {
                    if c > 0 {
                        input.push(if csv { b',' } else { b'\t' });
                    }
                    match (v, csv) {
                        (None, true) => {}
                        (None, false) => input.extend_from_slice(b"\\N"),
                        (Some(v), true) if v.is_empty() || v.contains([',', '"', '\n', '\\']) || v == "\\N" => {
                            input.push(b'"');
                            input.extend_from_slice(v.replace('"', "\"\"").as_bytes());
                            input.push(b'"');
                        }
                        (Some(v), true) => input.extend_from_slice(v.as_bytes()),
                        (Some(v), false) => {
                            let escaped = v.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n");
                            input.extend_from_slice(escaped.as_bytes());
                        }
                    }
                }
                input.extend_from_slice(if rng.random_range(0..4) == 0 { b"\r\n" } else { b"\n" });
            }
            let format = Format {
                csv,
                delimiter: if csv { b',' } else { b'\t' },
                null: if csv { String::new() } else { "\\N".into() },
                header,
                quote: b'"',
                escape: b'"',
            };
            let t = db.engine().table(&table).expect("table");
            let columns: Vec<String> = t.def.columns.iter().map(|c| c.name.clone()).collect();
            let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
            let memory = MemoryConsumer::new("test").register(&pool);
            let mut decoder =
                CopyDecoder::new(db.engine().bulk_load(&t).expect("load"), columns.clone(), format, memory);
            let mut rest = &input[..];
            while !rest.is_empty() {
                let longest = if rng.random() { 16 } else { 200_000 };
                let n = rng.random_range(1..=rest.len().min(longest));
                decoder.feed(&rest[..n]);
                rest = &rest[n..];
            }
            let loaded = decoder.finish();
            if let Some(bad) = bad {
                let Err(CopyError::Engine(e, message)) = loaded else { panic!("case {case}: the bad value passed") };
                assert_eq!(e.sqlstate(), "22P02", "case {case}: {message}");
                let line = bad + 1 + usize::from(header);
                assert!(
                    message.contains(&format!("line {line}:")) && message.contains("\"i\""),
                    "case {case}, line {line}: {message}"
                );
                continue;
            }
            let mut load = loaded.unwrap_or_else(|e| panic!("case {case}: {e:?}"));
            assert_eq!(load.commit().expect("commit"), rows as u64, "case {case}");
            let fields: Vec<Field> = columns.iter().map(|c| Field::new(c, DataType::Utf8, true)).collect();
            let text: Vec<ArrayRef> = (0..columns.len())
                .map(|c| {
                    Arc::new(values.iter().map(|r| r[c].clone()).collect::<datafusion::arrow::array::StringArray>())
                        as ArrayRef
                })
                .collect();
            let reference = RecordBatch::try_new(Arc::new(Schema::new(fields)), text).expect("text batch");
            let expected =
                trafficdb::types::coerce_batch_numbered(&t.def, &t.schema, &reference, 1).expect("reference cast");
            let stored = rt.block_on(db.sql(&format!("SELECT * FROM {table} ORDER BY ts"))).expect("select");
            let stored = concat_batches(&t.schema, &stored).expect("concat");
            for (c, name) in columns.iter().enumerate() {
                assert_eq!(stored.column(c).as_ref(), expected.column(c).as_ref(), "case {case}, column {name}");
            }
        }
    }
}
