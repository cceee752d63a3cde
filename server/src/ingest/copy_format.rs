//! COPY text and CSV, decoded without the protocol: [`Format`] (the options), [`CopyDecoder`]
//! (bytes in pieces of any size in, batches of a table's types out into a bulk load, every value
//! checked, the line of each error named). The PostgreSQL server's `COPY ... FROM STDIN` feeds it CopyData messages
//! (`crate::pgwire::copy`); the fuzz target `copy` feeds it anything.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
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
pub struct CopyDecoder {
    table: Arc<Table>,
    /// Where the rows go: written to segments as they fill, published when the COPY ends.
    load: BulkLoad,
    /// Names of the columns the input holds, in input order.
    columns: Vec<String>,
    format: Format,
    buf: Vec<u8>,
    /// Where the search for the end of the record at the start of `buf` has got.
    scan: Scan,
    /// The rows the load holds in memory, accounted in the session's memory pool.
    memory: MemoryReservation,
    /// Lines consumed so far (for error messages).
    line: usize,
    skip_header: bool,
    builders: Vec<StringBuilder>,
    /// The fields of the record being parsed (see `split`), reused from row to row.
    scratch: Vec<u8>,
    spans: Vec<Option<(usize, usize)>>,
    pending_rows: usize,
    /// Line number of the first pending row.
    pending_first_line: usize,
    error: Option<CopyError>,
    finished: bool,
}

impl CopyDecoder {
    /// A decoder of `format` for the `columns` of the load's table (names, in input order), pushing
    /// its rows into `load` and accounting what the load holds in `memory`.
    pub fn new(load: BulkLoad, columns: Vec<String>, format: Format, memory: MemoryReservation) -> CopyDecoder {
        CopyDecoder {
            table: load.table().clone(),
            load,
            builders: (0..columns.len()).map(|_| StringBuilder::new()).collect(),
            scratch: Vec::new(),
            spans: Vec::new(),
            skip_header: format.header,
            columns,
            format,
            buf: Vec::new(),
            scan: Scan::default(),
            memory,
            line: 0,
            pending_rows: 0,
            pending_first_line: 1,
            error: None,
            finished: false,
        }
    }

    /// Decodes the records `data` completes; after an error or the end marker (`\.`) it is ignored.
    pub fn feed(&mut self, data: &[u8]) {
        if self.error.is_none() && !self.finished {
            self.buf.extend_from_slice(data);
            self.consume();
        }
    }

    /// The input has ended: the load holding every row, to commit; or the first error.
    pub fn finish(mut self) -> Result<BulkLoad, CopyError> {
        // A last line without a newline.
        if !self.buf.is_empty() && self.error.is_none() && !self.finished {
            self.buf.push(b'\n');
            self.consume();
        }
        self.seal_batch();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(self.load),
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

impl CopyDecoder {
    fn fail(&mut self, code: SqlState, msg: String) {
        if self.error.is_none() {
            self.error =
                Some(CopyError::Own(code, format!("{msg}\nCONTEXT:  COPY {}, line {}", self.table.name(), self.line)));
        }
    }

    /// Splits one record into fields, written one after another into `self.scratch`: `self.spans[i]` is
    /// field i's byte range there, or `None` for NULL. Nothing is allocated per row.
    fn split(&mut self, rec: &[u8]) {
        let rec = rec.strip_suffix(b"\r").unwrap_or(rec);
        let f = &self.format;
        let (scratch, spans) = (&mut self.scratch, &mut self.spans);
        scratch.clear();
        spans.clear();
        if !f.csv {
            for raw in rec.split(|&c| c == f.delimiter) {
                let start = scratch.len();
                spans.push(text_field(raw, &f.null, scratch).map(|()| (start, scratch.len())));
            }
            return;
        }
        let mut i = 0;
        loop {
            let start = scratch.len();
            let mut quoted = false;
            if rec.get(i) == Some(&f.quote) {
                quoted = true;
                i += 1;
                while i < rec.len() {
                    let c = rec[i];
                    if c == f.escape
                        && rec.get(i + 1).is_some_and(|&n| n == f.quote || (f.escape != f.quote && n == f.escape))
                    {
                        scratch.push(rec[i + 1]);
                        i += 2;
                    } else if c == f.quote {
                        i += 1;
                        break;
                    } else {
                        scratch.push(c);
                        i += 1;
                    }
                }
            }
            let rest = memchr::memchr(f.delimiter, &rec[i..]).map_or(rec.len(), |p| i + p);
            scratch.extend_from_slice(&rec[i..rest]);
            i = rest;
            let null = !quoted && &scratch[start..] == f.null.as_bytes();
            spans.push((!null).then_some((start, scratch.len())));
            if i >= rec.len() {
                break;
            }
            i += 1; // the delimiter
        }
    }

    /// Parses every complete record in the buffer.
    fn consume(&mut self) {
        // The buffer is taken out while its records are parsed, so they need not be copied.
        let buf = std::mem::take(&mut self.buf);
        let mut start = 0;
        while self.error.is_none() && !self.finished {
            let Some((end, next)) = next_record(&self.format, &buf, &mut self.scan) else {
                if buf.len() - start > MAX_LINE {
                    self.line += 1;
                    self.fail(
                        SqlState::ProgramLimitExceeded,
                        format!("a COPY line is longer than {} MiB", MAX_LINE >> 20),
                    );
                }
                break;
            };
            self.scan = Scan { pos: next, in_quotes: false };
            self.line += 1;
            let rec = &buf[start..end];
            start = next;
            if !self.format.csv && (rec == b"\\." || rec == b"\\.\r") {
                self.finished = true;
                break;
            }
            if self.skip_header {
                self.skip_header = false;
                continue;
            }
            self.push_record(rec);
        }
        self.buf = buf;
        self.buf.drain(..start);
        self.scan.pos -= start.min(self.scan.pos);
    }

    fn push_record(&mut self, rec: &[u8]) {
        self.split(rec);
        let n = self.spans.len();
        if n != self.columns.len() {
            let msg = if n < self.columns.len() {
                format!("missing data for column \"{}\"", self.columns[n])
            } else {
                "extra data after last expected column".to_string()
            };
            return self.fail(SqlState::BadCopyFileFormat, msg);
        }
        if self.pending_rows == 0 {
            self.pending_first_line = self.line;
        }
        // The record's fields are checked as UTF-8 at once (a field that splits a character of it, as an
        // escape may, is not UTF-8 on its own and is refused); one by one only to name a bad one.
        let whole = std::str::from_utf8(&self.scratch).ok();
        for i in 0..n {
            match self.spans[i] {
                None => self.builders[i].append_null(),
                Some((start, end)) => match whole
                    .map_or_else(|| std::str::from_utf8(&self.scratch[start..end]).ok(), |text| text.get(start..end))
                {
                    Some(s) => self.builders[i].append_value(s),
                    None => {
                        return self.fail(
                            SqlState::CharacterNotInRepertoire,
                            format!("invalid byte sequence for encoding \"UTF8\" in column \"{}\"", self.columns[i]),
                        );
                    }
                },
            }
        }
        self.pending_rows += 1;
        if self.pending_rows >= BATCH_ROWS {
            self.seal_batch();
        }
    }

    /// Turns the pending rows into a batch of the table's types, checking every value.
    fn seal_batch(&mut self) {
        if self.pending_rows == 0 || self.error.is_some() {
            return;
        }
        let fields: Vec<Field> = self.columns.iter().map(|c| Field::new(c, DataType::Utf8, true)).collect();
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        self.pending_rows = 0;
        let batch = match RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays) {
            Ok(b) => b,
            Err(e) => return self.fail(SqlState::Internal, e.to_string()),
        };
        let coerced = trafficdb::types::coerce_batch_numbered(
            &self.table.def,
            &self.table.schema,
            &batch,
            self.pending_first_line,
        );
        let pushed = coerced.and_then(|b| self.load.push(&b)).and_then(|()| {
            // What the load holds counts against the session's memory; past that, it writes it out.
            if self.memory.try_resize(self.load.pending_bytes()).is_err() {
                self.load.write_pending()?;
                self.memory.resize(0);
            }
            Ok(())
        });
        if let Err(e) = pushed {
            let message = format!("{e}\nCONTEXT:  COPY {}", self.table.name());
            self.error = Some(CopyError::Engine(e, message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records of `chunks` as `CopyDecoder::consume` finds them, a chunk at a time.
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
}
