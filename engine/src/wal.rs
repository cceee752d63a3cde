//! The write-ahead log, with group commit.
//!
//! Files `wal/<seq>.wal`: a header (magic "TDBWAL01", version u32, reserved u32, seq u64), then records
//! `len u32 | crc32 u32 | payload`. A payload is `txn u64 | flags u8 | table_id u64 | Arrow IPC stream`,
//! the stream zstd-compressed when flag [`FLAG_ZSTD`] is set (older logs have no compressed records).
//! One append is one transaction: its records are written contiguously and the last carries flag
//! [`FLAG_LAST`]; replay applies a transaction only when its last record is present, so a crash in the
//! middle of an append leaves no part of it.
//!
//! Durability: [`Wal::append`] returns only after the bytes are fsynced. Appends from many threads are
//! written and fsynced together by one thread (group commit): the cost of an fsync is shared by every
//! writer waiting at that moment.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{Receiver, Sender, bounded, unbounded};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use parking_lot::Mutex;

use crate::bytes::PutLe;
use crate::error::{Error, Result};
use crate::io::{File, Fs};

pub const WAL_MAGIC: &[u8; 8] = b"TDBWAL01";
pub const WAL_VERSION: u32 = 1;
const HEADER_LEN: usize = 24;
pub const FLAG_LAST: u8 = 1;
/// The record's Arrow IPC stream is one zstd frame.
pub const FLAG_ZSTD: u8 = 2;
/// zstd level of WAL records: the fastest that still shrinks Arrow IPC several times.
const ZSTD_LEVEL: i32 = 1;
/// Records larger than this are refused at replay as corrupt (the writer never produces them).
const MAX_RECORD: usize = 1 << 31;
/// How many bytes one group commit gathers at most before it writes.
const GROUP_BYTES: usize = 64 << 20;

pub fn wal_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.wal"))
}

/// Lists the WAL files of `dir` as (seq, path), sorted by seq.
pub fn list_wal_files(fs: &dyn Fs, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for p in fs.list_dir(dir).map_err(|e| Error::io(dir, e))? {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(seq) = name.strip_suffix(".wal").and_then(|s| s.parse::<u64>().ok()) {
            out.push((seq, p));
        }
    }
    out.sort();
    Ok(out)
}

/// Encodes one transaction (one append of batches to one table) as framed records.
pub fn encode_txn(txn: u64, table_id: u64, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let nonempty: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    for (i, batch) in nonempty.iter().enumerate() {
        let mut ipc = Vec::with_capacity(batch.get_array_memory_size() + 64);
        {
            let mut w = StreamWriter::try_new(&mut ipc, &batch.schema())?;
            w.write(batch)?;
            w.finish()?;
        }
        // Compressed when that is smaller, as it nearly always is (text columns shrink most).
        let compressed = (ipc.len() <= MAX_RECORD)
            .then(|| zstd::bulk::compress(&ipc, ZSTD_LEVEL).ok())
            .flatten()
            .filter(|c| c.len() < ipc.len());
        let last = if i + 1 == nonempty.len() { FLAG_LAST } else { 0 };
        let body = compressed.as_deref().unwrap_or(&ipc);
        let mut payload = Vec::with_capacity(body.len() + 17);
        payload.extend_from_slice(&txn.to_le_bytes());
        payload.put_u8(if compressed.is_some() { last | FLAG_ZSTD } else { last });
        payload.put_u64(table_id);
        payload.extend_from_slice(body);
        out.put_u32(payload.len() as u32);
        out.put_u32(crc32fast::hash(&payload));
        out.extend_from_slice(&payload);
    }
    Ok(out)
}

enum Request {
    Append { data: Vec<u8>, reply: Sender<Result<()>> },
    Rotate { reply: Sender<Result<u64>> },
    Stop,
}

/// The log writer. Dropping it stops the writer thread after it has written what it was given.
pub struct Wal {
    tx: Sender<Request>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub stats: Arc<WalStats>,
}

/// What the writer thread measures.
#[derive(Debug, Default)]
pub struct WalStats {
    /// The time each group commit's fsync took.
    pub fsync: crate::metrics::Histogram,
    /// Bytes written.
    pub bytes: std::sync::atomic::AtomicU64,
    /// Why the log refuses writes, once it does.
    pub poisoned: Mutex<Option<String>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wal")
    }
}

fn create_file(fs: &dyn Fs, dir: &Path, seq: u64) -> Result<Box<dyn File>> {
    let path = wal_path(dir, seq);
    let mut f = fs.create(&path).map_err(|e| Error::io(&path, e))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(WAL_MAGIC);
    header.put_u32(WAL_VERSION);
    header.put_u32(0);
    header.put_u64(seq);
    f.write_all(&header).map_err(|e| Error::io(&path, e))?;
    f.sync().map_err(|e| Error::io(&path, e))?;
    fs.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(f)
}

impl Wal {
    /// Starts a new log file `seq` in `dir` and the writer thread.
    pub fn start(fs: Arc<dyn Fs>, dir: PathBuf, seq: u64) -> Result<Wal> {
        let file = create_file(fs.as_ref(), &dir, seq)?;
        let (tx, rx) = unbounded();
        let stats = Arc::new(WalStats::default());
        let writer_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("trafficdb-wal".into())
            .spawn(move || writer_loop(fs, dir, seq, file, rx, &writer_stats))
            .map_err(|e| Error::io("wal thread", e))?;
        Ok(Wal { tx, thread: Mutex::new(Some(thread)), stats })
    }

    /// Writes framed records (from [`encode_txn`]). When this returns `Ok`, they are durable.
    pub fn append(&self, data: Vec<u8>) -> Result<()> {
        let (reply, rx) = bounded(1);
        self.tx.send(Request::Append { data, reply }).map_err(|_| Error::Closed)?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Closes the current file (fsynced) and starts the next one; returns the new file's seq.
    /// Every append that returned before this call is in an earlier file.
    pub fn rotate(&self) -> Result<u64> {
        let (reply, rx) = bounded(1);
        self.tx.send(Request::Rotate { reply }).map_err(|_| Error::Closed)?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Stops the writer thread.
    pub fn stop(&self) {
        let _ = self.tx.send(Request::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop();
    }
}

fn writer_loop(
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    mut seq: u64,
    mut file: Box<dyn File>,
    rx: Receiver<Request>,
    stats: &WalStats,
) {
    let mut poisoned: Option<String> = None;
    let mut buf: Vec<u8> = Vec::new();
    let mut waiting: Vec<Sender<Result<()>>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut requests = vec![first];
        let mut bytes = 0;
        while bytes < GROUP_BYTES {
            match rx.try_recv() {
                Ok(r) => {
                    if let Request::Append { data, .. } = &r {
                        bytes += data.len();
                    }
                    requests.push(r);
                }
                Err(_) => break,
            }
        }
        let mut stop = false;
        for r in requests {
            match r {
                Request::Append { data, reply } => {
                    if let Some(p) = &poisoned {
                        let _ = reply.send(Err(Error::WalPoisoned(p.clone())));
                    } else {
                        buf.extend_from_slice(&data);
                        waiting.push(reply);
                    }
                }
                Request::Rotate { reply } => {
                    commit(&mut file, &mut buf, &mut waiting, &mut poisoned, &dir, seq, stats);
                    if let Some(p) = &poisoned {
                        let _ = reply.send(Err(Error::WalPoisoned(p.clone())));
                        continue;
                    }
                    match create_file(fs.as_ref(), &dir, seq + 1) {
                        Ok(f) => {
                            seq += 1;
                            file = f;
                            let _ = reply.send(Ok(seq));
                        }
                        Err(e) => {
                            poisoned = Some(e.to_string());
                            *stats.poisoned.lock() = poisoned.clone();
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Request::Stop => stop = true,
            }
        }
        commit(&mut file, &mut buf, &mut waiting, &mut poisoned, &dir, seq, stats);
        if stop {
            break;
        }
    }
}

/// Writes and fsyncs the gathered records, then answers every waiting appender.
fn commit(
    file: &mut Box<dyn File>,
    buf: &mut Vec<u8>,
    waiting: &mut Vec<Sender<Result<()>>>,
    poisoned: &mut Option<String>,
    dir: &Path,
    seq: u64,
    stats: &WalStats,
) {
    if waiting.is_empty() {
        return;
    }
    let result = file.write_all(buf).and_then(|_| {
        let started = std::time::Instant::now();
        let r = file.sync();
        stats.fsync.observe(started.elapsed());
        r
    });
    stats.bytes.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
    buf.clear();
    match result {
        Ok(()) => {
            for w in waiting.drain(..) {
                let _ = w.send(Ok(()));
            }
        }
        Err(e) => {
            let err = Error::io(wal_path(dir, seq), e);
            let msg = err.to_string();
            tracing::error!("write-ahead log failed, refusing further writes: {msg}");
            *poisoned = Some(msg.clone());
            *stats.poisoned.lock() = Some(msg.clone());
            for w in waiting.drain(..) {
                let _ = w.send(Err(Error::WalPoisoned(msg.clone())));
            }
        }
    }
}

/// What replay found.
#[derive(Debug, Default, Clone)]
pub struct ReplayStats {
    pub files: usize,
    pub transactions: u64,
    pub rows: u64,
    /// Bytes cut from the end of the last file (a torn, never acknowledged write).
    pub truncated_bytes: u64,
    pub last_seq: Option<u64>,
    /// Files that held no committed transaction (safe to remove).
    pub empty_files: Vec<PathBuf>,
}

/// Replays every WAL file of `dir` with seq >= `from`, calling `apply` with each committed transaction
/// in order. A torn tail of the last file is cut off; any other damage is an error naming the file and
/// offset.
pub fn replay(
    fs: &dyn Fs,
    dir: &Path,
    from: u64,
    mut apply: impl FnMut(u64, Vec<RecordBatch>) -> Result<()>,
) -> Result<ReplayStats> {
    let files: Vec<(u64, PathBuf)> = list_wal_files(fs, dir)?.into_iter().filter(|(s, _)| *s >= from).collect();
    let mut stats = ReplayStats { files: files.len(), ..Default::default() };
    for (i, (seq, path)) in files.iter().enumerate() {
        let is_last = i + 1 == files.len();
        let data = fs.read(path).map_err(|e| Error::io(path, e))?;
        let corrupt = |off: usize, reason: &str| Error::corrupt(path, off as u64, reason.to_string());
        if data.len() < HEADER_LEN {
            // A file whose header never became durable holds no acknowledged record.
            if is_last {
                stats.truncated_bytes += data.len() as u64;
                stats.empty_files.push(path.clone());
                continue;
            }
            return Err(corrupt(0, "WAL file shorter than its header"));
        }
        if &data[..8] != WAL_MAGIC {
            return Err(corrupt(0, "bad WAL magic"));
        }
        let version = u32::from_le_bytes(data[8..12].try_into().expect("4"));
        if version != WAL_VERSION {
            return Err(corrupt(8, &format!("unsupported WAL version {version}")));
        }
        let file_seq = u64::from_le_bytes(data[16..24].try_into().expect("8"));
        if file_seq != *seq {
            return Err(corrupt(16, &format!("header says seq {file_seq}, name says {seq}")));
        }
        let txns_before = stats.transactions;
        let mut pos = HEADER_LEN;
        let mut pending: Vec<RecordBatch> = Vec::new();
        let mut pending_txn: Option<(u64, u64)> = None;
        // Offset where the last complete transaction ended: a torn tail is cut back to here.
        let mut committed_end = pos;
        let mut torn = false;
        while pos < data.len() {
            if data.len() - pos < 8 {
                torn = true;
                break;
            }
            let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4")) as usize;
            let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4"));
            let body_start = pos + 8;
            if !(17..=MAX_RECORD).contains(&len) || body_start + len > data.len() {
                // A length that runs past the end is a torn write if it is the tail of the last file;
                // zeros from a preallocated or torn page look the same.
                if is_last && (body_start + len > data.len() || data[pos..].iter().all(|&b| b == 0)) {
                    torn = true;
                    break;
                }
                return Err(corrupt(pos, &format!("bad record length {len}")));
            }
            let payload = &data[body_start..body_start + len];
            if crate::bytes::VERIFY_CHECKSUMS && crc32fast::hash(payload) != crc {
                if is_last && body_start + len == data.len() {
                    torn = true;
                    break;
                }
                return Err(corrupt(pos, "WAL record checksum mismatch"));
            }
            let txn = u64::from_le_bytes(payload[0..8].try_into().expect("8"));
            let flags = payload[8];
            let table_id = u64::from_le_bytes(payload[9..17].try_into().expect("8"));
            if let Some((t, tab)) = pending_txn
                && (t != txn || tab != table_id)
            {
                return Err(corrupt(pos, "WAL transaction interleaved with another"));
            }
            pending_txn = Some((txn, table_id));
            let body = &payload[17..];
            let batches =
                if flags & FLAG_ZSTD != 0 { decompress(body).and_then(|b| decode_ipc(&b)) } else { decode_ipc(body) }
                    .map_err(|e| corrupt(pos, &format!("undecodable record: {e}")))?;
            pending.extend(batches);
            pos = body_start + len;
            if flags & FLAG_LAST != 0 {
                stats.transactions += 1;
                stats.rows += pending.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                apply(table_id, std::mem::take(&mut pending))?;
                pending_txn = None;
                committed_end = pos;
            }
        }
        if pending_txn.is_some() && !is_last {
            return Err(corrupt(committed_end, "unfinished transaction in the middle of the log"));
        }
        if torn || pending_txn.is_some() {
            // Only the last file can end torn: nothing after it was ever acknowledged.
            if !is_last {
                return Err(corrupt(pos, "truncated record in the middle of the log"));
            }
            stats.truncated_bytes += (data.len() - committed_end) as u64;
            fs.truncate(path, committed_end as u64).map_err(|e| Error::io(path, e))?;
            tracing::warn!(
                "cut {} bytes of an unacknowledged, torn write from the end of {}",
                data.len() - committed_end,
                path.display()
            );
        }
        stats.last_seq = Some(*seq);
        if stats.transactions == txns_before {
            stats.empty_files.push(path.clone());
        }
    }
    Ok(stats)
}

/// A compressed record's Arrow IPC stream, at most [`MAX_RECORD`] bytes (the writer compresses no larger
/// ones), read without trusting the size the frame declares.
fn decompress(body: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(body)
        .and_then(|d| d.take(MAX_RECORD as u64 + 1).read_to_end(&mut out))
        .map_err(|e| format!("zstd: {e}"))?;
    if out.len() > MAX_RECORD {
        return Err("a compressed record larger than any the writer makes".into());
    }
    Ok(out)
}

/// The batches of a record's Arrow IPC stream, or why they do not decode.
///
/// arrow-ipc's reader is not written for hostile bytes: it slices buffers where a message says they
/// are (and panics past the end of the body) and unwraps parts of a schema message. A record's
/// checksum makes such bytes all but impossible here, but a panic must not be how a damaged log
/// is reported (found by the `wal_replay` fuzz target, which skips checksums): the framing is checked
/// first ([`check_ipc_stream`]), and a panic of the reader is caught and becomes the error.
fn decode_ipc(bytes: &[u8]) -> std::result::Result<Vec<RecordBatch>, String> {
    check_ipc_stream(bytes)?;
    let read = || -> std::result::Result<Vec<RecordBatch>, String> {
        let reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(|e| e.to_string())?;
        reader.map(|b| b.map_err(|e| e.to_string())).collect()
    };
    std::panic::catch_unwind(read).unwrap_or_else(|_| Err("the Arrow IPC reader failed on it".into()))
}

/// Checks the framing of an Arrow IPC stream before the reader decodes it: each message's metadata
/// parses, its body lies inside the stream, and each buffer of a batch lies inside its body.
fn check_ipc_stream(mut b: &[u8]) -> std::result::Result<(), String> {
    use datafusion::arrow::ipc::{RecordBatch as IpcBatch, root_as_message};
    fn take_i32(b: &mut &[u8]) -> std::result::Result<i32, String> {
        let (head, rest) = b.split_first_chunk::<4>().ok_or("message cut short")?;
        *b = rest;
        Ok(i32::from_le_bytes(*head))
    }
    let inside = |batch: Option<IpcBatch<'_>>, body: usize| -> std::result::Result<(), String> {
        for buf in batch.and_then(|r| r.buffers()).into_iter().flatten() {
            let end = buf.offset().checked_add(buf.length());
            if buf.offset() < 0 || buf.length() < 0 || end.is_none_or(|e| e as u64 > body as u64) {
                return Err(format!(
                    "a buffer at {} of {} bytes is outside its {body}-byte body",
                    buf.offset(),
                    buf.length()
                ));
            }
        }
        Ok(())
    };
    while !b.is_empty() {
        let mut len = take_i32(&mut b)?;
        if len == -1 {
            len = take_i32(&mut b)?; // the continuation marker, then the length
        }
        if len == 0 {
            return Ok(()); // end of stream
        }
        let len = usize::try_from(len).map_err(|_| format!("negative metadata length {len}"))?;
        let meta = b.get(..len).ok_or("metadata past the end of the record")?;
        let message = root_as_message(meta).map_err(|e| format!("metadata: {e}"))?;
        b = &b[len..];
        let body = usize::try_from(message.bodyLength()).map_err(|_| "negative body length".to_string())?;
        if body > b.len() {
            return Err(format!("a body of {body} bytes past the end of the record"));
        }
        inside(message.header_as_record_batch(), body)?;
        inside(message.header_as_dictionary_batch().and_then(|d| d.data()), body)?;
        b = &b[body..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::ipc::writer::StreamWriter;

    /// Every one-byte change of an IPC stream decodes to batches or to an error, never to a panic
    /// out of [`super::decode_ipc`].
    #[test]
    fn damaged_ipc_streams_are_errors_not_panics() {
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]));
        let names: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("bc"), None]));
        let batch = RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap();
        let mut bytes = Vec::new();
        let mut w = StreamWriter::try_new(&mut bytes, &batch.schema()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        assert_eq!(super::check_ipc_stream(&bytes), Ok(()));
        let decode = |b: &[u8]| super::decode_ipc(b).map(|batches| batches.iter().map(|b| b.num_rows()).sum::<usize>());
        assert_eq!(decode(&bytes), Ok(3));
        let mut refused = 0;
        for i in 0..bytes.len() {
            for mask in [0x01, 0x10, 0x80, 0xFF] {
                let mut damaged = bytes.clone();
                damaged[i] ^= mask;
                let outcome = std::panic::catch_unwind(|| decode(&damaged));
                assert!(outcome.is_ok(), "byte {i} ^ {mask:#x} panicked the decoder");
                refused += usize::from(outcome.is_ok_and(|r| r.is_err()));
            }
        }
        assert!(refused > 0);
        assert!(decode(&bytes[..bytes.len() - 9]).is_err(), "a stream cut short");
    }

    /// Records are written compressed, and a log of uncompressed records (as written before
    /// compression) replays as it did.
    #[test]
    fn compressed_and_uncompressed_records_replay() {
        use std::path::Path;

        use crate::bytes::PutLe;
        use crate::io::{Fs, sim::SimFs};

        let n = 1000;
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..n));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("backend-{}", i % 7))));
        let batch = RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap();
        let new = super::encode_txn(1, 7, std::slice::from_ref(&batch)).unwrap();
        // flags: after length (4), checksum (4) and txn (8)
        assert_eq!(new[16], super::FLAG_LAST | super::FLAG_ZSTD);
        let mut ipc = Vec::new();
        let mut w = StreamWriter::try_new(&mut ipc, &batch.schema()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        assert!(new.len() * 3 < ipc.len(), "{} bytes compressed, {} as Arrow IPC", new.len(), ipc.len());
        let mut payload = Vec::new();
        payload.put_u64(2);
        payload.put_u8(super::FLAG_LAST);
        payload.put_u64(7);
        payload.extend_from_slice(&ipc);
        let mut old = Vec::new();
        old.put_u32(payload.len() as u32);
        old.put_u32(crc32fast::hash(&payload));
        old.extend_from_slice(&payload);

        let fs = SimFs::new();
        let dir = Path::new("/wal");
        fs.create_dir_all(dir).unwrap();
        let mut f = super::create_file(&fs, dir, 1).unwrap();
        f.write_all(&new).unwrap();
        f.write_all(&old).unwrap();
        f.sync().unwrap();
        let mut got = Vec::new();
        let stats = super::replay(&fs, dir, 0, |table, batches| {
            got.push((table, batches));
            Ok(())
        })
        .unwrap();
        assert_eq!((stats.transactions, stats.rows), (2, 2 * n as u64));
        for (table, batches) in got {
            assert_eq!((table, batches), (7, vec![batch.clone()]));
        }
    }
}
