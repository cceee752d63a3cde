//! Sealed segment files: immutable, columnar, checksummed. The byte layout is in `docs/storage.md`.
//!
//! ```text
//! header   magic "TDBSEG01" | version u32 | flags u32
//! chunks   one per (row group, column): [validity][encoded values], zstd-compressed where it pays
//! footer   columns, row groups, per chunk: offset, lengths, compression, crc32, null count, min / max
//! trailer  footer length u32 | footer crc32 u32 | magic "TDBSEGFT"
//! ```
//!
//! A reader checks the trailer and the footer's checksum and invariants on open, and each chunk's crc32
//! before decoding it, so a flipped byte anywhere is reported with the file and offset.

pub(crate) mod codec;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Float32Array, Float64Array, Int16Array, Int32Array,
    Int64Array, PrimitiveArray, RecordBatch, RecordBatchOptions, StringArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::{cast, concat, filter};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int32Type, Int64Type, SchemaRef, TimestampMicrosecondType,
};

use crate::bytes::{PutLe, Reader};
use crate::error::{Error, Result};
use crate::io::{Fs, Mapped};
use crate::types::{ColumnDef, ColumnType, Layout, Physical};

pub const MAGIC: &[u8; 8] = b"TDBSEG01";
pub const FOOTER_MAGIC: &[u8; 8] = b"TDBSEGFT";
pub const FORMAT_VERSION: u32 = 1;
/// Rows per row group, at most (a layout may use fewer: see [`Layout`]).
pub const MAX_ROW_GROUP_ROWS: usize = Layout::TIME.group_rows;
const HEADER_LEN: usize = 16;
const TRAILER_LEN: usize = 16;
const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_ZSTD: u8 = 1;
/// Longest text kept as a min / max statistic; longer values leave the chunk without text statistics.
const MAX_TEXT_STAT: usize = 64;

/// Minimum and maximum of a chunk's non-null values.
#[derive(Debug, Clone, PartialEq)]
pub enum Stat {
    None,
    Int { min: i64, max: i64 },
    Float { min: f64, max: f64 },
    Text { min: String, max: String },
}

#[derive(Debug, Clone)]
pub struct ChunkMeta {
    pub offset: u64,
    pub len: u32,
    pub raw_len: u32,
    pub compression: u8,
    pub crc: u32,
    pub null_count: u32,
    pub stat: Stat,
}

#[derive(Debug, Clone)]
pub struct RowGroupMeta {
    pub rows: u32,
    pub chunks: Vec<ChunkMeta>,
}

#[derive(Debug, Clone)]
pub struct Footer {
    pub columns: Vec<ColumnDef>,
    pub row_groups: Vec<RowGroupMeta>,
}

/// How segments are written.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// zstd level for chunks where compression pays.
    pub zstd_level: i32,
    /// Compress a chunk only if zstd removes at least this fraction of its bytes: decoding zstd runs far
    /// below memory bandwidth, so a chunk it barely shrinks is better left as it is.
    pub zstd_min_saving: f64,
}

impl Default for WriteOptions {
    fn default() -> Self {
        // Level 1, not 3: on the encoded chunks (already dictionary, delta and bit-packed) it wrote the
        // SF10M `lb_requests` 1.3 % smaller, with an eighth less CPU for the whole `trafficdb import`
        // (7.9 s of user CPU against 9.0), and the same scan speed.
        WriteOptions { zstd_level: 1, zstd_min_saving: 0.25 }
    }
}

/// What a written segment holds, for the catalog.
#[derive(Debug, Clone)]
pub struct WrittenSegment {
    pub rows: u64,
    pub bytes: u64,
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
}

/// Writes `batches` (already in the table's schema, and in the table's storage order one after another:
/// see [`Layout`]) to `path` as one segment and fsyncs it. Runs are cut across the batches, so the
/// caller need not concatenate them. The file's name is not durable until the caller syncs the
/// directory.
pub fn write_segment(
    fs: &dyn Fs,
    path: &Path,
    columns: &[ColumnDef],
    time_column: Option<usize>,
    layout: Layout,
    batches: &[RecordBatch],
    options: WriteOptions,
) -> Result<WrittenSegment> {
    let mut w = SegmentWriter::create(fs, path, columns, time_column, layout, options)?;
    for run in cut(batches, layout.run_rows) {
        w.write_run(&run)?;
    }
    w.finish()
}

/// A segment written a run at a time: memory holds one run, not the segment.
pub struct SegmentWriter {
    path: PathBuf,
    file: Box<dyn crate::io::File>,
    columns: Vec<ColumnDef>,
    time_column: Option<usize>,
    layout: Layout,
    options: WriteOptions,
    offset: u64,
    row_groups: Vec<RowGroupMeta>,
    rows: u64,
    min_ts: Option<i64>,
    max_ts: Option<i64>,
}

impl SegmentWriter {
    /// Creates the file at `path` and writes the header.
    pub fn create(
        fs: &dyn Fs,
        path: &Path,
        columns: &[ColumnDef],
        time_column: Option<usize>,
        layout: Layout,
        options: WriteOptions,
    ) -> Result<SegmentWriter> {
        let mut file = fs.create(path).map_err(|e| Error::io(path, e))?;
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(MAGIC);
        header.put_u32(FORMAT_VERSION);
        header.put_u32(0);
        file.write_all(&header).map_err(|e| Error::io(path, e))?;
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            file,
            columns: columns.to_vec(),
            time_column,
            layout,
            options,
            offset: header.len() as u64,
            row_groups: Vec::new(),
            rows: 0,
            min_ts: None,
            max_ts: None,
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The latest time written so far (time-series tables).
    pub fn max_ts(&self) -> Option<i64> {
        self.max_ts
    }

    /// Appends one run (see [`Layout`]): `batches` one after another, at most the layout's run of rows,
    /// in the table's storage order, and not before the rows already written. It is stored as row
    /// groups of the layout's size.
    pub fn write_run(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let len: usize = batches.iter().map(|b| b.num_rows()).sum();
        if len > self.layout.run_rows {
            return Err(Error::Internal(format!("a run of {len} rows for {}", self.path.display())));
        }
        let max_before = self.max_ts;
        let mut run_min: Option<i64> = None;
        for group in cut(batches, self.layout.group_rows) {
            if let Some((min, max)) = self.write_row_group(&group)? {
                run_min = Some(run_min.map_or(min, |m| m.min(min)));
                self.min_ts = Some(self.min_ts.map_or(min, |m| m.min(min)));
                self.max_ts = Some(self.max_ts.map_or(max, |m| m.max(max)));
            }
        }
        if let (Some(before), Some(min)) = (max_before, run_min)
            && min < before
        {
            return Err(Error::Internal(format!("rows reached {} out of time order", self.path.display())));
        }
        Ok(())
    }

    /// Appends one row group; returns its time bounds. Its chunks are encoded and compressed on all
    /// cores.
    fn write_row_group(&mut self, batches: &[RecordBatch]) -> Result<Option<(i64, i64)>> {
        let len: usize = batches.iter().map(|b| b.num_rows()).sum();
        if len == 0 {
            return Ok(None);
        }
        let columns = &self.columns;
        let options = self.options;
        let encoded = parallel_map(&(0..columns.len()).collect::<Vec<_>>(), |&c| {
            let pieces: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            let column = match pieces.as_slice() {
                [_] => batches[0].column(c).clone(),
                _ => concat(&pieces)?,
            };
            let (raw, null_count, stat) = encode_chunk(columns[c].ty, &column)?;
            let (compression, stored) = compress(raw.as_slice(), options);
            Ok::<_, Error>((raw.len(), compression, stored, null_count, stat))
        });
        let path = &self.path;
        let mut out = Vec::new();
        let mut chunks = Vec::with_capacity(columns.len());
        for chunk in encoded {
            let (raw_len, compression, stored, null_count, stat) = chunk?;
            chunks.push(ChunkMeta {
                offset: self.offset + out.len() as u64,
                len: u32::try_from(stored.len()).map_err(|_| chunk_too_large(path))?,
                raw_len: u32::try_from(raw_len).map_err(|_| chunk_too_large(path))?,
                compression,
                crc: crc32fast::hash(&stored),
                null_count: null_count as u32,
                stat,
            });
            out.extend_from_slice(&stored);
        }
        let bounds = match self.time_column.map(|t| &chunks[t].stat) {
            Some(Stat::Int { min, max }) => Some((*min, *max)),
            _ => None,
        };
        self.file.write_all(&out).map_err(|e| Error::io(path, e))?;
        self.offset += out.len() as u64;
        self.rows += len as u64;
        self.row_groups.push(RowGroupMeta { rows: len as u32, chunks });
        Ok(bounds)
    }

    /// Writes the footer and fsyncs the file.
    pub fn finish(mut self) -> Result<WrittenSegment> {
        let footer = Footer { columns: self.columns, row_groups: self.row_groups };
        let footer_bytes = encode_footer(&footer);
        let mut out = footer_bytes.clone();
        out.put_u32(footer_bytes.len() as u32);
        out.put_u32(crc32fast::hash(&footer_bytes));
        out.extend_from_slice(FOOTER_MAGIC);
        let path = &self.path;
        self.file.write_all(&out).map_err(|e| Error::io(path, e))?;
        self.file.sync().map_err(|e| Error::io(path, e))?;
        Ok(WrittenSegment {
            rows: self.rows,
            bytes: self.offset + out.len() as u64,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
        })
    }
}

/// `batches`, one after another, cut into pieces of `n` rows (the last one fewer), each a list of slices
/// (no copy).
fn cut(batches: &[RecordBatch], n: usize) -> Vec<Vec<RecordBatch>> {
    let mut pieces = Vec::new();
    let (mut current, mut filled) = (Vec::new(), 0);
    for batch in batches {
        let mut start = 0;
        while start < batch.num_rows() {
            let len = (batch.num_rows() - start).min(n - filled);
            current.push(batch.slice(start, len));
            (start, filled) = (start + len, filled + len);
            if filled == n {
                pieces.push(std::mem::take(&mut current));
                filled = 0;
            }
        }
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// `f` of every item, in order, computed on up to all cores (threads pull the next item in turn).
pub fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { return done };
            done.push((i, f(item)));
        }
    };
    let mut all: Vec<(usize, R)> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..workers).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for h in helpers {
            // A panic in a helper is the caller's panic.
            all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        all
    });
    all.sort_unstable_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

thread_local! {
    /// One zstd decompression context per thread, reused: creating one per chunk was a twentieth of the
    /// CPU of a scan of 16,384-row row groups.
    static DCTX: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
        std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
}

/// Runs `f` with this thread's decompression context, reset to start a frame.
fn with_dctx<R>(f: impl FnOnce(&mut zstd::zstd_safe::DCtx<'static>) -> R) -> R {
    DCTX.with(|cell| {
        let mut ctx = cell.borrow_mut();
        // Resetting a session cannot fail.
        let _ = ctx.reset(zstd::zstd_safe::ResetDirective::SessionOnly);
        f(&mut ctx)
    })
}

fn chunk_too_large(path: &Path) -> Error {
    Error::invalid(
        crate::error::SqlState::InvalidParameter,
        format!("a column chunk of {} exceeds 4 GiB", path.display()),
    )
}

fn compress(raw: &[u8], options: WriteOptions) -> (u8, Vec<u8>) {
    if raw.len() >= 4096
        && let Ok(z) = zstd::bulk::compress(raw, options.zstd_level)
        && (z.len() as f64) <= raw.len() as f64 * (1.0 - options.zstd_min_saving)
    {
        return (COMPRESSION_ZSTD, z);
    }
    (COMPRESSION_NONE, raw.to_vec())
}

fn encode_validity(array: &dyn Array, out: &mut Vec<u8>) {
    match array.logical_nulls().filter(|n| n.null_count() > 0) {
        Some(nulls) => {
            out.put_u8(1);
            let bits = nulls.inner().sliced();
            out.extend_from_slice(bits.as_slice());
        }
        None => out.put_u8(0),
    }
}

/// Replaces the values under NULL slots by their neighbour so they do not widen the bit-packing.
fn fill_nulls<T: Copy>(values: &mut [T], nulls: Option<&NullBuffer>) {
    let Some(nulls) = nulls else { return };
    let Some(first) = nulls.valid_indices().next() else { return };
    let mut last = values[first];
    for (i, v) in values.iter_mut().enumerate() {
        if nulls.is_valid(i) {
            last = *v;
        } else {
            *v = last;
        }
    }
}

fn encode_chunk(ty: ColumnType, array: &ArrayRef) -> Result<(Vec<u8>, usize, Stat)> {
    let mut out = Vec::new();
    encode_validity(array.as_ref(), &mut out);
    let nulls = array.logical_nulls();
    let nulls = nulls.as_ref().filter(|n| n.null_count() > 0);
    let null_count = nulls.map_or(0, |n| n.null_count());
    let stat = match ty.physical() {
        Physical::Int => {
            let as64 = cast(array, &DataType::Int64)?;
            let mut values = as64.as_primitive::<Int64Type>().values().to_vec();
            fill_nulls(&mut values, nulls);
            codec::encode_ints(&values, &mut out);
            min_max(values.iter().copied(), nulls, |a, b| a < b).map_or(Stat::None, |(min, max)| Stat::Int { min, max })
        }
        Physical::Float64 => {
            let mut values = array.as_primitive::<Float64Type>().values().to_vec();
            fill_nulls(&mut values, nulls);
            codec::encode_f64(&values, &mut out);
            float_stat(values.iter().copied(), nulls)
        }
        Physical::Float32 => {
            let mut values = array.as_primitive::<Float32Type>().values().to_vec();
            fill_nulls(&mut values, nulls);
            codec::encode_f32(&values, &mut out);
            float_stat(values.iter().map(|&v| v as f64), nulls)
        }
        Physical::Bool => {
            let b = array.as_boolean();
            let bits = b.values().sliced();
            out.extend_from_slice(bits.as_slice());
            let valid = || (0..b.len()).filter(|&i| b.is_valid(i)).map(|i| b.value(i) as i64);
            match (valid().min(), valid().max()) {
                (Some(min), Some(max)) => Stat::Int { min, max },
                _ => Stat::None,
            }
        }
        Physical::Text => {
            let s = array.as_string::<i32>();
            let values = (0..s.len()).map(|i| s.is_valid(i).then(|| s.value(i)));
            match codec::encode_text(values, s.len(), &mut out) {
                Some((min, max)) if min.len() <= MAX_TEXT_STAT && max.len() <= MAX_TEXT_STAT => {
                    Stat::Text { min: min.to_string(), max: max.to_string() }
                }
                _ => Stat::None,
            }
        }
    };
    Ok((out, null_count, stat))
}

fn min_max<T: Copy>(
    values: impl Iterator<Item = T>,
    nulls: Option<&NullBuffer>,
    lt: impl Fn(&T, &T) -> bool,
) -> Option<(T, T)> {
    let mut acc: Option<(T, T)> = None;
    for (i, v) in values.enumerate() {
        if nulls.is_some_and(|n| n.is_null(i)) {
            continue;
        }
        acc = Some(match acc {
            None => (v, v),
            Some((lo, hi)) => (if lt(&v, &lo) { v } else { lo }, if lt(&hi, &v) { v } else { hi }),
        });
    }
    acc
}

fn float_stat(values: impl Iterator<Item = f64>, nulls: Option<&NullBuffer>) -> Stat {
    // NaN sorts above everything in SQL; a chunk holding one keeps no statistics.
    let mut has_nan = false;
    let r = min_max(values.inspect(|v| has_nan |= v.is_nan()), nulls, |a, b| a < b);
    match r {
        Some((min, max)) if !has_nan => Stat::Float { min, max },
        _ => Stat::None,
    }
}

fn encode_footer(f: &Footer) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u16(f.columns.len() as u16);
    for c in &f.columns {
        out.put_bytes16(c.name.as_bytes());
        out.put_u8(c.ty.code());
        out.put_u8(c.nullable as u8);
    }
    out.put_u32(f.row_groups.len() as u32);
    for rg in &f.row_groups {
        out.put_u32(rg.rows);
        for ch in &rg.chunks {
            out.put_u64(ch.offset);
            out.put_u32(ch.len);
            out.put_u32(ch.raw_len);
            out.put_u8(ch.compression);
            out.put_u32(ch.crc);
            out.put_u32(ch.null_count);
            match &ch.stat {
                Stat::None => out.put_u8(0),
                Stat::Int { min, max } => {
                    out.put_u8(1);
                    out.put_i64(*min);
                    out.put_i64(*max);
                }
                Stat::Float { min, max } => {
                    out.put_u8(2);
                    out.put_u64(min.to_bits());
                    out.put_u64(max.to_bits());
                }
                Stat::Text { min, max } => {
                    out.put_u8(3);
                    out.put_bytes16(min.as_bytes());
                    out.put_bytes16(max.as_bytes());
                }
            }
        }
    }
    out
}

fn decode_footer(buf: &[u8], file_len: u64) -> crate::bytes::DecodeResult<Footer> {
    let mut r = Reader::new(buf);
    let ncols = r.u16()? as usize;
    let mut columns = Vec::with_capacity(ncols);
    for _ in 0..ncols {
        let name = String::from_utf8(r.bytes16()?.to_vec()).map_err(|_| "column name is not UTF-8")?;
        let ty = ColumnType::from_code(r.u8()?).ok_or("unknown column type")?;
        let nullable = r.u8()? != 0;
        columns.push(ColumnDef { name, ty, nullable });
    }
    let nrg = r.u32()? as usize;
    if nrg > buf.len() {
        return Err(format!("{nrg} row groups cannot fit in a footer of {} bytes", buf.len()));
    }
    let mut row_groups = Vec::with_capacity(nrg);
    for _ in 0..nrg {
        let rows = r.u32()?;
        if rows == 0 || rows as usize > MAX_ROW_GROUP_ROWS {
            return Err(format!("row group of {rows} rows"));
        }
        let mut chunks = Vec::with_capacity(ncols);
        for _ in 0..ncols {
            let offset = r.u64()?;
            let len = r.u32()?;
            let raw_len = r.u32()?;
            let compression = r.u8()?;
            let crc = r.u32()?;
            let null_count = r.u32()?;
            let stat = match r.u8()? {
                0 => Stat::None,
                1 => Stat::Int { min: r.i64()?, max: r.i64()? },
                2 => Stat::Float { min: f64::from_bits(r.u64()?), max: f64::from_bits(r.u64()?) },
                3 => Stat::Text {
                    min: String::from_utf8(r.bytes16()?.to_vec()).map_err(|_| "statistic is not UTF-8")?,
                    max: String::from_utf8(r.bytes16()?.to_vec()).map_err(|_| "statistic is not UTF-8")?,
                },
                k => return Err(format!("unknown statistic kind {k}")),
            };
            if offset < HEADER_LEN as u64 || offset + len as u64 > file_len {
                return Err(format!("chunk at {offset}+{len} lies outside the file"));
            }
            if compression > COMPRESSION_ZSTD || null_count > rows {
                return Err("bad chunk metadata".into());
            }
            chunks.push(ChunkMeta { offset, len, raw_len, compression, crc, null_count, stat });
        }
        row_groups.push(RowGroupMeta { rows, chunks });
    }
    if r.remaining() != 0 {
        return Err(format!("{} stray bytes after the footer", r.remaining()));
    }
    Ok(Footer { columns, row_groups })
}

/// Values derived from a row group by readers and cached with the segment (the row group never
/// changes), by (the value's type, row group, the reader's own key: e.g. the columns it read).
type DerivedCache = parking_lot::Mutex<
    std::collections::HashMap<(std::any::TypeId, usize, (usize, usize)), Arc<dyn std::any::Any + Send + Sync>>,
>;

/// An open, verified segment file.
#[derive(Debug)]
pub struct Segment {
    pub path: PathBuf,
    data: Mapped,
    pub footer: Footer,
    derived: DerivedCache,
}

impl Segment {
    /// Maps the file and checks its header, trailer, footer checksum and footer invariants.
    pub fn open(fs: &dyn Fs, path: &Path) -> Result<Segment> {
        let data = fs.map(path).map_err(|e| Error::io(path, e))?;
        let corrupt = |offset: usize, reason: String| Error::corrupt(path, offset as u64, reason);
        let len = data.len();
        if len < HEADER_LEN + TRAILER_LEN {
            return Err(corrupt(0, format!("file of {len} bytes is too short for a segment")));
        }
        if &data[..8] != MAGIC {
            return Err(corrupt(0, "bad magic".into()));
        }
        let version = u32::from_le_bytes(data[8..12].try_into().expect("4"));
        if version != FORMAT_VERSION {
            return Err(corrupt(8, format!("unsupported segment format version {version}")));
        }
        if data[12..16] != [0; 4] {
            return Err(corrupt(12, "unknown segment flags".into()));
        }
        let t = len - TRAILER_LEN;
        if &data[t + 8..] != FOOTER_MAGIC {
            return Err(corrupt(t + 8, "bad trailer magic (file cut short?)".into()));
        }
        let footer_len = u32::from_le_bytes(data[t..t + 4].try_into().expect("4")) as usize;
        let footer_crc = u32::from_le_bytes(data[t + 4..t + 8].try_into().expect("4"));
        if footer_len > t - HEADER_LEN {
            return Err(corrupt(t, format!("footer length {footer_len} exceeds the file")));
        }
        let fstart = t - footer_len;
        let fbytes = &data[fstart..t];
        if crate::bytes::VERIFY_CHECKSUMS && crc32fast::hash(fbytes) != footer_crc {
            return Err(corrupt(fstart, "footer checksum mismatch".into()));
        }
        let footer = decode_footer(fbytes, fstart as u64).map_err(|r| corrupt(fstart, r))?;
        Ok(Segment { path: path.to_path_buf(), data, footer, derived: Default::default() })
    }

    /// A value of type `T` derived from row group `rg` and cached by [`Segment::keep_derived`] under
    /// `key`, if any. What the value means is its reader's business, not the segment's.
    pub(crate) fn derived<T: std::any::Any + Send + Sync>(&self, rg: usize, key: (usize, usize)) -> Option<Arc<T>> {
        let hit = self.derived.lock().get(&(std::any::TypeId::of::<T>(), rg, key)).cloned()?;
        hit.downcast::<T>().ok()
    }

    /// Caches `value`, derived from row group `rg`, for as long as the segment is open.
    pub(crate) fn keep_derived<T: std::any::Any + Send + Sync>(&self, rg: usize, key: (usize, usize), value: Arc<T>) {
        self.derived.lock().insert((std::any::TypeId::of::<T>(), rg, key), value);
    }

    pub fn num_rows(&self) -> u64 {
        self.footer.row_groups.iter().map(|rg| rg.rows as u64).sum()
    }

    /// The file's bytes, shared (no copy).
    pub fn bytes(&self) -> Mapped {
        self.data.clone()
    }

    pub fn byte_len(&self) -> u64 {
        self.data.len() as u64
    }

    /// Decodes the columns `projection` of row group `rg` into a batch of `schema` (the projected
    /// table schema).
    pub fn read(&self, rg: usize, projection: &[usize], schema: &SchemaRef) -> Result<RecordBatch> {
        let rows = self.footer.row_groups[rg].rows as usize;
        let arrays = (0..projection.len())
            .map(|i| self.read_column(rg, projection[i], schema.field(i).data_type(), None))
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(schema.clone(), arrays, &options)?)
    }

    /// Decodes column `col` of row group `rg` as `target`; with `selection` (one flag per row, no
    /// NULLs), only the selected rows, in order. Text is then copied for the selected rows alone, so a
    /// selective filter pays little for wide text columns (late materialisation).
    pub fn read_column(
        &self,
        rg: usize,
        col: usize,
        target: &DataType,
        selection: Option<&BooleanArray>,
    ) -> Result<ArrayRef> {
        let meta = &self.footer.row_groups[rg];
        let rows = meta.rows as usize;
        debug_assert!(selection.is_none_or(|s| s.len() == rows && s.null_count() == 0));
        self.read_chunk(&meta.chunks[col], self.footer.columns[col].ty, rows, target, selection, false)
    }

    /// [`Segment::read_column`] of every row, except that a text column stored as a dictionary comes
    /// back as an Arrow `Dictionary(Int32, Utf8)` array: the codes and the entries as stored, no string
    /// built per row. Filters compare the few entries and look the codes up.
    pub fn read_column_encoded(&self, rg: usize, col: usize, target: &DataType) -> Result<ArrayRef> {
        let meta = &self.footer.row_groups[rg];
        self.read_chunk(&meta.chunks[col], self.footer.columns[col].ty, meta.rows as usize, target, None, true)
    }

    /// True when text column `col` of row group `rg` is stored as a dictionary (few distinct values):
    /// only the first bytes of the chunk are decompressed.
    pub fn text_is_dictionary(&self, rg: usize, col: usize) -> Result<bool> {
        use std::io::Read;
        let meta = &self.footer.row_groups[rg];
        let chunk = &meta.chunks[col];
        if self.footer.columns[col].ty.physical() != Physical::Text {
            return Ok(false);
        }
        let corrupt = |reason: String| Error::corrupt(&self.path, chunk.offset, reason);
        let stored = &self.data[chunk.offset as usize..(chunk.offset + chunk.len as u64) as usize];
        // The validity flag, the validity bits when present, and the text encoding's kind byte.
        let len = 2 + (meta.rows as usize).div_ceil(8);
        let mut head = Vec::with_capacity(len);
        match chunk.compression {
            COMPRESSION_NONE => head.extend_from_slice(&stored[..len.min(stored.len())]),
            _ => {
                with_dctx(|ctx| {
                    let d = zstd::stream::read::Decoder::with_context(stored, ctx);
                    d.take(len as u64).read_to_end(&mut head)
                })
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            }
        }
        let kind_at = match head.first() {
            Some(1) => 1 + (meta.rows as usize).div_ceil(8),
            _ => 1,
        };
        Ok(head.get(kind_at..).is_some_and(|kind| codec::peek_is_dictionary(&Reader::new(kind))))
    }

    fn read_chunk(
        &self,
        chunk: &ChunkMeta,
        ty: ColumnType,
        rows: usize,
        target: &DataType,
        selection: Option<&BooleanArray>,
        dictionary: bool,
    ) -> Result<ArrayRef> {
        let corrupt = |reason: String| Error::corrupt(&self.path, chunk.offset, reason);
        let stored = &self.data[chunk.offset as usize..(chunk.offset + chunk.len as u64) as usize];
        if crate::bytes::VERIFY_CHECKSUMS && crc32fast::hash(stored) != chunk.crc {
            return Err(corrupt("column chunk checksum mismatch".into()));
        }
        let decompressed;
        let raw: &[u8] = match chunk.compression {
            COMPRESSION_NONE => stored,
            _ => {
                decompressed = with_dctx(|ctx| {
                    let mut out = Vec::with_capacity(chunk.raw_len as usize);
                    ctx.decompress(&mut out, stored).map(|_| out)
                })
                .map_err(|code| corrupt(format!("zstd: {}", zstd::zstd_safe::get_error_name(code))))?;
                &decompressed
            }
        };
        let array = decode_chunk(raw, ty, rows, target, selection, dictionary).map_err(corrupt)?;
        match selection {
            // Text was decoded for the selected rows only; every other type is filtered here.
            Some(sel) if ty.physical() != Physical::Text => Ok(filter(&array, sel)?),
            _ => Ok(array),
        }
    }
}

fn decode_chunk(
    raw: &[u8],
    ty: ColumnType,
    rows: usize,
    target: &DataType,
    selection: Option<&BooleanArray>,
    dictionary: bool,
) -> crate::bytes::DecodeResult<ArrayRef> {
    let mut r = Reader::new(raw);
    let nulls = match r.u8()? {
        0 => None,
        1 => {
            let bits = r.take(rows.div_ceil(8))?;
            Some(NullBuffer::new(BooleanBuffer::new(Buffer::from(bits.to_vec()), 0, rows)))
        }
        k => return Err(format!("bad validity flag {k}")),
    };
    let array: ArrayRef = match ty.physical() {
        Physical::Int => {
            fn ints<T: codec::DecodeInt>(r: &mut Reader<'_>, rows: usize) -> crate::bytes::DecodeResult<Vec<T>> {
                let mut v = Vec::with_capacity(rows);
                codec::decode_ints(r, rows, &mut v)?;
                Ok(v)
            }
            match ty {
                ColumnType::SmallInt => Arc::new(Int16Array::new(ints::<i16>(&mut r, rows)?.into(), nulls)),
                ColumnType::Int => Arc::new(Int32Array::new(ints::<i32>(&mut r, rows)?.into(), nulls)),
                ColumnType::BigInt => Arc::new(Int64Array::new(ints::<i64>(&mut r, rows)?.into(), nulls)),
                _ => {
                    let v = ints::<i64>(&mut r, rows)?;
                    let tz = match target {
                        DataType::Timestamp(_, tz) => tz.clone(),
                        _ => None,
                    };
                    Arc::new(
                        PrimitiveArray::<TimestampMicrosecondType>::new(ScalarBuffer::from(v), nulls)
                            .with_timezone_opt(tz),
                    )
                }
            }
        }
        Physical::Float64 => {
            let mut v = Vec::with_capacity(rows);
            codec::decode_f64(&mut r, rows, &mut v)?;
            Arc::new(Float64Array::new(ScalarBuffer::from(v), nulls))
        }
        Physical::Float32 => {
            let mut v = Vec::with_capacity(rows);
            codec::decode_f32(&mut r, rows, &mut v)?;
            Arc::new(Float32Array::new(ScalarBuffer::from(v), nulls))
        }
        Physical::Bool => {
            let bits = r.take(rows.div_ceil(8))?;
            Arc::new(BooleanArray::new(BooleanBuffer::new(Buffer::from(bits.to_vec()), 0, rows), nulls))
        }
        Physical::Text if dictionary && selection.is_none() && codec::peek_is_dictionary(&r) => {
            let d = codec::decode_text_dictionary(&mut r, rows)?;
            let values =
                StringArray::try_new(OffsetBuffer::new(ScalarBuffer::from(d.offsets)), Buffer::from_vec(d.bytes), None)
                    .map_err(|e| format!("text dictionary: {e}"))?;
            let keys = Int32Array::new(ScalarBuffer::from(d.codes), nulls);
            // SAFETY: `decode_text_dictionary` checked every code, NULL rows' too, against the entries
            // (`values` has one per offset pair), in one vectorised pass; arrow's own check of each
            // valid key was a tenth of a scan grouped by codes.
            Arc::new(unsafe { DictionaryArray::<Int32Type>::new_unchecked(keys, Arc::new(values)) })
        }
        Physical::Text => {
            let keep = selection.map(|s| s.values());
            let (offsets, bytes) = codec::decode_text(&mut r, rows, keep)?;
            let nulls = match (nulls, selection) {
                (Some(n), Some(sel)) => {
                    let valid = filter(&BooleanArray::new(n.into_inner(), None), sel).map_err(|e| e.to_string())?;
                    Some(NullBuffer::new(valid.as_boolean().values().clone())).filter(|n| n.null_count() > 0)
                }
                (n, _) => n,
            };
            let a =
                StringArray::try_new(OffsetBuffer::new(ScalarBuffer::from(offsets)), Buffer::from_vec(bytes), nulls)
                    .map_err(|e| format!("text column: {e}"))?;
            Arc::new(a)
        }
    };
    if r.remaining() != 0 {
        return Err(format!("{} stray bytes after column values", r.remaining()));
    }
    Ok(array)
}
