//! Lightweight column encodings: frame-of-reference bit-packing, delta, run-length and dictionary for
//! integers and text, decimal scaling for floats. All little-endian; described in `docs/storage.md`.
//! Decoders never trust their input: every length is checked, and a mismatch is reported as a reason
//! string that the segment reader turns into a corruption error with file and offset.

use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::common::HashMap;

use crate::bytes::{DecodeResult, PutLe, Reader};

// Integer sequence kinds.
const SEQ_PLAIN: u8 = 0;
const SEQ_FOR: u8 = 1;
const SEQ_DELTA: u8 = 2;
const SEQ_RLE: u8 = 3;

/// Bit widths above this are stored plain (a packed value must fit a 64-bit read after a 7-bit shift).
const MAX_PACK_WIDTH: u32 = 56;

fn width_of(range: u64) -> u32 {
    64 - range.leading_zeros()
}

/// Packs values below `2^w` into `n * w` bits, plus 8 bytes of padding so the decoder can always read a
/// whole u64.
fn pack(values: impl Iterator<Item = u64>, n: usize, w: u32, out: &mut Vec<u8>) {
    if w == 0 {
        return;
    }
    let bytes = (n * w as usize).div_ceil(8) + 8;
    let start = out.len();
    out.resize(start + bytes, 0);
    let buf = &mut out[start..];
    for (i, v) in values.enumerate() {
        let bit = i * w as usize;
        let at = bit / 8;
        let word = u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        let word = word | (v << (bit % 8));
        buf[at..at + 8].copy_from_slice(&word.to_le_bytes());
    }
}

/// An integer type a sequence decodes into: values are computed in 64 bits and narrowed with `as`
/// (so a delta sequence summed in the narrow type gives the narrowed 64-bit sums).
pub(crate) trait DecodeInt: Copy + Default {
    fn from_i64(v: i64) -> Self;
    fn wrapping_add(self, other: Self) -> Self;
}

macro_rules! decode_int {
    ($($t:ty),*) => {$(
        impl DecodeInt for $t {
            #[inline(always)]
            fn from_i64(v: i64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn wrapping_add(self, other: Self) -> Self {
                <$t>::wrapping_add(self, other)
            }
        }
    )*};
}
decode_int!(i16, i32, i64);

/// Unpacks `n` values of `w` bits, adding `base` (wrapping) to each.
fn unpack<T: DecodeInt>(r: &mut Reader<'_>, n: usize, w: u32, base: i64, out: &mut Vec<T>) -> DecodeResult<()> {
    if w == 0 {
        out.extend(std::iter::repeat_n(T::from_i64(base), n));
        return Ok(());
    }
    if w > MAX_PACK_WIDTH {
        return Err(format!("bit width {w} too large"));
    }
    let bytes = (n * w as usize).div_ceil(8) + 8;
    let buf = r.take(bytes)?;
    let start = out.len();
    out.resize(start + n, T::default());
    let dst = &mut out[start..];
    macro_rules! widths {
        ($($w:literal)*) => {
            match w {
                $($w => unpack_groups::<T, $w>(buf, base, dst),)*
                _ => unreachable!("bit width checked above"),
            }
        };
    }
    // Groups of 8 values, with the width a constant; the rest one by one.
    let done = widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28
        29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56);
    let (w, mask) = (w as usize, (1u64 << w) - 1);
    for (i, v) in dst.iter_mut().enumerate().skip(done) {
        let bit = i * w;
        let word = u64::from_le_bytes(buf[bit / 8..bit / 8 + 8].try_into().expect("8 bytes"));
        *v = T::from_i64(base.wrapping_add(((word >> (bit % 8)) & mask) as i64));
    }
    Ok(())
}

/// Unpacks whole groups of 8 values of `W` bits (a group is `W` bytes; its last value's 8-byte read
/// ends within `W + 8` bytes, inside the padding for the last group); returns the values written.
#[inline(always)]
fn unpack_groups<T: DecodeInt, const W: usize>(buf: &[u8], base: i64, dst: &mut [T]) -> usize {
    let mask = (1u64 << W) - 1;
    let whole = dst.len() / 8 * 8;
    let groups = dst[..whole].chunks_exact_mut(8);
    for (g, out) in groups.enumerate() {
        let src = &buf[g * W..g * W + W + 8];
        for (k, v) in out.iter_mut().enumerate() {
            let bit = k * W;
            let word = u64::from_le_bytes(src[bit / 8..bit / 8 + 8].try_into().expect("8 bytes"));
            *v = T::from_i64(base.wrapping_add(((word >> (bit % 8)) & mask) as i64));
        }
    }
    whole
}

/// Encodes an integer sequence, choosing the smallest of plain, frame-of-reference, delta and
/// run-length (run-length only at the top level).
pub(crate) fn encode_ints(values: &[i64], out: &mut Vec<u8>) {
    encode_ints_inner(values, out, true)
}

fn encode_ints_inner(values: &[i64], out: &mut Vec<u8>, allow_rle: bool) {
    let n = values.len();
    if n == 0 {
        out.put_u8(SEQ_FOR);
        out.put_i64(0);
        out.put_u8(0);
        return;
    }
    let (mut min, mut max) = (values[0], values[0]);
    let (mut dmin, mut dmax) = (i64::MAX, i64::MIN);
    let mut runs = 1usize;
    let mut max_run = 1usize;
    let mut run = 1usize;
    for w in values.windows(2) {
        let (a, b) = (w[0], w[1]);
        min = min.min(b);
        max = max.max(b);
        let d = b.wrapping_sub(a);
        dmin = dmin.min(d);
        dmax = dmax.max(d);
        if a == b {
            run += 1;
        } else {
            max_run = max_run.max(run);
            run = 1;
            runs += 1;
        }
    }
    max_run = max_run.max(run);
    let w_for = width_of(max.wrapping_sub(min) as u64);
    let cost_for = n as u64 * w_for as u64 + 72;
    let w_delta = if n > 1 { width_of(dmax.wrapping_sub(dmin) as u64) } else { 0 };
    let cost_delta = (n as u64 - 1) * w_delta as u64 + 136;
    let cost_rle =
        if allow_rle { runs as u64 * (w_for as u64 + width_of(max_run as u64) as u64) + 200 } else { u64::MAX };
    let cost_plain = n as u64 * 64;
    let best = cost_for.min(cost_delta).min(cost_rle).min(cost_plain);
    if best == cost_rle && cost_rle < cost_for && cost_rle < cost_delta {
        let mut vals = Vec::with_capacity(runs);
        let mut lens = Vec::with_capacity(runs);
        let mut cur = values[0];
        let mut len = 0i64;
        for &v in values {
            if v == cur {
                len += 1;
            } else {
                vals.push(cur);
                lens.push(len);
                cur = v;
                len = 1;
            }
        }
        vals.push(cur);
        lens.push(len);
        out.put_u8(SEQ_RLE);
        out.put_u32(runs as u32);
        encode_ints_inner(&vals, out, false);
        encode_ints_inner(&lens, out, false);
    } else if best == cost_delta && w_delta <= MAX_PACK_WIDTH && cost_delta < cost_for {
        out.put_u8(SEQ_DELTA);
        out.put_i64(values[0]);
        out.put_i64(dmin);
        out.put_u8(w_delta as u8);
        pack(values.windows(2).map(|w| w[1].wrapping_sub(w[0]).wrapping_sub(dmin) as u64), n - 1, w_delta, out);
    } else if w_for <= MAX_PACK_WIDTH {
        out.put_u8(SEQ_FOR);
        out.put_i64(min);
        out.put_u8(w_for as u8);
        pack(values.iter().map(|&v| v.wrapping_sub(min) as u64), n, w_for, out);
    } else {
        out.put_u8(SEQ_PLAIN);
        for &v in values {
            out.put_i64(v);
        }
    }
}

/// Decodes `n` integers written by [`encode_ints`], appending them to `out`.
pub(crate) fn decode_ints<T: DecodeInt>(r: &mut Reader<'_>, n: usize, out: &mut Vec<T>) -> DecodeResult<()> {
    match r.u8()? {
        SEQ_PLAIN => {
            let b = r.take(n.checked_mul(8).ok_or("length overflow")?)?;
            out.extend(b.chunks_exact(8).map(|c| T::from_i64(i64::from_le_bytes(c.try_into().expect("8 bytes")))));
            Ok(())
        }
        SEQ_FOR => {
            let base = r.i64()?;
            let w = r.u8()? as u32;
            unpack(r, n, w, base, out)
        }
        SEQ_DELTA => {
            let first = r.i64()?;
            let dmin = r.i64()?;
            let w = r.u8()? as u32;
            if n == 0 {
                return Ok(());
            }
            let start = out.len();
            out.push(T::from_i64(first));
            unpack(r, n - 1, w, dmin, out)?;
            // Prefix sum over the deltas, in place.
            let mut acc = T::from_i64(first);
            for v in &mut out[start + 1..] {
                acc = acc.wrapping_add(*v);
                *v = acc;
            }
            Ok(())
        }
        SEQ_RLE => {
            let runs = r.u32()? as usize;
            if runs > n {
                return Err(format!("{runs} runs for {n} values"));
            }
            let mut vals: Vec<i64> = Vec::with_capacity(runs);
            decode_ints(r, runs, &mut vals)?;
            let mut lens: Vec<i64> = Vec::with_capacity(runs);
            decode_ints(r, runs, &mut lens)?;
            let total: i64 = lens
                .iter()
                .try_fold(0i64, |a, &l| if l > 0 { a.checked_add(l) } else { None })
                .ok_or("bad run length")?;
            if total != n as i64 {
                return Err(format!("runs cover {total} values, expected {n}"));
            }
            // A short run (most are) is written as 8 values, one vector store spilling into the next
            // runs' places; a long run, or one near the end, is filled.
            let start = out.len();
            out.resize(start + n, T::default());
            let dst = &mut out[start..];
            let mut at = 0;
            for (v, l) in vals.into_iter().zip(lens) {
                let (v, l) = (T::from_i64(v), l as usize);
                if l <= 8 && at + 8 <= n {
                    dst[at..at + 8].fill(v);
                } else {
                    dst[at..at + l].fill(v);
                }
                at += l;
            }
            Ok(())
        }
        k => Err(format!("unknown integer encoding {k}")),
    }
}

const F_PLAIN: u8 = 0;
const F_DECIMAL: u8 = 1;
const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// The smallest `e` such that every value is exactly `integer / 10^e`, if any.
fn decimal_exponent(values: &[f64]) -> Option<usize> {
    'e: for (e, &scale) in POW10.iter().enumerate() {
        for &v in values {
            let i = (v * scale).round();
            // Check with exactly what the decoder computes (an i64 back to f64), so -0.0 and values
            // that do not survive the integer are refused.
            if i.abs() >= 9.0e15 || ((i as i64) as f64 / scale).to_bits() != v.to_bits() {
                continue 'e;
            }
        }
        return Some(e);
    }
    None
}

/// Encodes doubles: as scaled integers when every value is a short decimal (latencies rounded to 0.1 ms
/// and the like), else plain.
pub(crate) fn encode_f64(values: &[f64], out: &mut Vec<u8>) {
    if let Some(e) = decimal_exponent(values) {
        let scale = POW10[e];
        let ints: Vec<i64> = values.iter().map(|&v| (v * scale).round() as i64).collect();
        out.put_u8(F_DECIMAL);
        out.put_u8(e as u8);
        encode_ints(&ints, out);
    } else {
        out.put_u8(F_PLAIN);
        for &v in values {
            out.put_u64(v.to_bits());
        }
    }
}

pub(crate) fn decode_f64(r: &mut Reader<'_>, n: usize, out: &mut Vec<f64>) -> DecodeResult<()> {
    match r.u8()? {
        F_PLAIN => {
            let b = r.take(n.checked_mul(8).ok_or("length overflow")?)?;
            out.extend(b.chunks_exact(8).map(|c| f64::from_bits(u64::from_le_bytes(c.try_into().expect("8")))));
            Ok(())
        }
        F_DECIMAL => {
            let e = r.u8()? as usize;
            let scale = *POW10.get(e).ok_or("bad decimal exponent")?;
            let mut ints: Vec<i64> = Vec::with_capacity(n);
            decode_ints(r, n, &mut ints)?;
            out.extend(ints.into_iter().map(|i| i as f64 / scale));
            Ok(())
        }
        k => Err(format!("unknown float encoding {k}")),
    }
}

pub(crate) fn encode_f32(values: &[f32], out: &mut Vec<u8>) {
    out.put_u8(F_PLAIN);
    for &v in values {
        out.put_u32(v.to_bits());
    }
}

pub(crate) fn decode_f32(r: &mut Reader<'_>, n: usize, out: &mut Vec<f32>) -> DecodeResult<()> {
    match r.u8()? {
        F_PLAIN => {
            let b = r.take(n.checked_mul(4).ok_or("length overflow")?)?;
            out.extend(b.chunks_exact(4).map(|c| f32::from_bits(u32::from_le_bytes(c.try_into().expect("4")))));
            Ok(())
        }
        k => Err(format!("unknown float encoding {k}")),
    }
}

const T_PLAIN: u8 = 0;
const T_DICT: u8 = 1;

/// Encodes strings (NULLs, `None`, are stored as empty strings; the chunk's validity is kept apart): a
/// dictionary with run-length or bit-packed codes when the values repeat, else lengths and bytes.
/// Returns the least and greatest non-NULL value, found among the dictionary's entries when there is one.
pub(crate) fn encode_text<'a>(
    values: impl Iterator<Item = Option<&'a str>> + Clone,
    n: usize,
    out: &mut Vec<u8>,
) -> Option<(&'a str, &'a str)> {
    let mut dict: HashMap<Short<'_>, i64> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    let mut codes = Vec::with_capacity(n);
    let mut use_dict = true;
    // Whether some non-NULL value is the empty string (NULLs are stored as one too).
    let mut empty = false;
    for (i, v) in values.clone().enumerate() {
        empty |= v.is_some_and(str::is_empty);
        let v = v.unwrap_or("");
        let next = order.len() as i64;
        let code = *dict.entry(Short(v)).or_insert_with(|| {
            order.push(v);
            next
        });
        codes.push(code);
        // Mostly distinct values (ids) are stored plain: found by the first 4,096 rows, not after
        // hashing half the chunk.
        if order.len() > 65_536 || (order.len() > 256 && order.len() * 2 > n) || (i == 4095 && order.len() > 2048) {
            use_dict = false;
            break;
        }
    }
    if use_dict {
        out.put_u8(T_DICT);
        out.put_u32(order.len() as u32);
        let lens: Vec<i64> = order.iter().map(|s| s.len() as i64).collect();
        encode_ints(&lens, out);
        for s in &order {
            out.extend_from_slice(s.as_bytes());
        }
        encode_ints(&codes, out);
        min_max_text(order.iter().copied().filter(|s| empty || !s.is_empty()))
    } else {
        out.put_u8(T_PLAIN);
        let lens: Vec<i64> = values.clone().map(|s| s.map_or(0, str::len) as i64).collect();
        encode_ints(&lens, out);
        for s in values.clone().flatten() {
            out.extend_from_slice(s.as_bytes());
        }
        min_max_text(values.flatten())
    }
}

/// A dictionary key compared in line: tag values are short, and a call to `memcmp` for every row cost
/// more than the comparison itself (`perf` of `trafficdb import`: with the text bounds below, a fifth
/// of its time was in `memcmp`).
#[derive(Hash, Eq)]
struct Short<'a>(&'a str);

impl PartialEq for Short<'_> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
    }
}

/// The least and greatest of `values`, in one pass.
fn min_max_text<'a>(mut values: impl Iterator<Item = &'a str>) -> Option<(&'a str, &'a str)> {
    let first = values.next()?;
    Some(values.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
}

/// A dictionary-encoded text chunk as it is stored: the entries (Arrow offsets and bytes) and one code
/// per row, every code below the number of entries (checked as it is decoded).
pub(crate) struct TextDictionary {
    pub offsets: Vec<i32>,
    pub bytes: Vec<u8>,
    pub codes: Vec<i32>,
}

/// True when the text chunk at the reader is stored as a dictionary.
pub(crate) fn peek_is_dictionary(r: &Reader<'_>) -> bool {
    r.buf.get(r.pos) == Some(&T_DICT)
}

/// Decodes a text chunk stored as a dictionary (see [`peek_is_dictionary`]) without building a string
/// per row.
pub(crate) fn decode_text_dictionary(r: &mut Reader<'_>, n: usize) -> DecodeResult<TextDictionary> {
    match r.u8()? {
        T_DICT => read_dictionary(r, n),
        k => Err(format!("text encoding {k} is not a dictionary")),
    }
}

/// The body of a dictionary chunk, after its kind byte.
fn read_dictionary(r: &mut Reader<'_>, n: usize) -> DecodeResult<TextDictionary> {
    let k = r.u32()? as usize;
    if k > 65_536 {
        return Err(format!("dictionary of {k} entries"));
    }
    let mut lens: Vec<i64> = Vec::with_capacity(k);
    decode_ints(r, k, &mut lens)?;
    let mut offsets = Vec::with_capacity(k + 1);
    offsets.push(0i32);
    let mut total = 0i64;
    for l in lens {
        if l < 0 {
            return Err("bad dictionary entry length".into());
        }
        total += l;
        if total > i32::MAX as i64 {
            return Err("string data too large".into());
        }
        offsets.push(total as i32);
    }
    let bytes = r.take(total as usize)?.to_vec();
    let mut codes = Vec::with_capacity(n);
    decode_ints::<i32>(r, n, &mut codes)?;
    // One vectorised pass. Codes are checked after narrowing: a wider one can only come from a chunk
    // its crc32 already refused.
    if codes.iter().fold(false, |bad, &c| bad | (c as u32 >= k as u32)) {
        return Err("dictionary code out of range".into());
    }
    Ok(TextDictionary { offsets, bytes, codes })
}

/// Decodes `n` strings into Arrow offsets and bytes; with `keep`, only the strings whose flag is set.
pub(crate) fn decode_text(
    r: &mut Reader<'_>,
    n: usize,
    keep: Option<&BooleanBuffer>,
) -> DecodeResult<(Vec<i32>, Vec<u8>)> {
    let kept = keep.map_or(n, |k| k.count_set_bits());
    let mut offsets = Vec::with_capacity(kept + 1);
    offsets.push(0i32);
    let wanted = |i: usize| keep.is_none_or(|k| k.value(i));
    match r.u8()? {
        T_PLAIN => {
            let mut lens: Vec<i64> = Vec::with_capacity(n);
            decode_ints(r, n, &mut lens)?;
            let mut total: i64 = 0;
            for &l in &lens {
                if l < 0 {
                    return Err("negative string length".into());
                }
                total += l;
                if total > i32::MAX as i64 {
                    return Err("string data too large".into());
                }
            }
            let all = r.take(total as usize)?;
            if keep.is_none() {
                let mut end = 0i32;
                offsets.extend(lens.iter().map(|&l| {
                    end += l as i32;
                    end
                }));
                return Ok((offsets, all.to_vec()));
            }
            let mut bytes = Vec::new();
            let mut start = 0usize;
            for (i, &l) in lens.iter().enumerate() {
                let end = start + l as usize;
                if wanted(i) {
                    bytes.extend_from_slice(&all[start..end]);
                    offsets.push(bytes.len() as i32);
                }
                start = end;
            }
            Ok((offsets, bytes))
        }
        T_DICT => {
            let d = read_dictionary(r, n)?;
            let mut bytes = Vec::new();
            for (i, &code) in d.codes.iter().enumerate() {
                if !wanted(i) {
                    continue;
                }
                let c = code as usize;
                bytes.extend_from_slice(&d.bytes[d.offsets[c] as usize..d.offsets[c + 1] as usize]);
                if bytes.len() > i32::MAX as usize {
                    return Err("string data too large".into());
                }
                offsets.push(bytes.len() as i32);
            }
            Ok((offsets, bytes))
        }
        k => Err(format!("unknown text encoding {k}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(values: &[i64]) -> (Vec<i64>, usize) {
        let mut buf = Vec::new();
        encode_ints(values, &mut buf);
        let mut out = Vec::new();
        let mut r = Reader::new(&buf);
        decode_ints(&mut r, values.len(), &mut out).unwrap();
        assert_eq!(r.remaining(), 0);
        // Decoded straight into narrower integers: the 64-bit values narrowed.
        let mut narrow: Vec<i32> = vec![7];
        decode_ints(&mut Reader::new(&buf), values.len(), &mut narrow).unwrap();
        assert_eq!(narrow[1..], values.iter().map(|&v| v as i32).collect::<Vec<_>>()[..]);
        let mut narrow: Vec<i16> = Vec::new();
        decode_ints(&mut Reader::new(&buf), values.len(), &mut narrow).unwrap();
        assert_eq!(narrow, values.iter().map(|&v| v as i16).collect::<Vec<_>>());
        (out, buf.len())
    }

    #[test]
    fn sorted_timestamps_pack_small() {
        let ts: Vec<i64> = (0..65_536).map(|i| 1_704_067_200_000_000 + i * 8_640 + (i * 7919) % 100).collect();
        let (out, bytes) = roundtrip(&ts);
        assert_eq!(out, ts);
        assert!(bytes < 65_536 * 2, "{bytes} bytes for sorted timestamps");
    }

    #[test]
    fn runs_use_rle() {
        let v: Vec<i64> = (0..10_000).map(|i| i / 1000).collect();
        let (out, bytes) = roundtrip(&v);
        assert_eq!(out, v);
        assert!(bytes < 200, "{bytes}");
    }

    #[test]
    fn extremes_roundtrip() {
        for v in [vec![], vec![i64::MIN, i64::MAX, 0], vec![5; 100], vec![-3, 7, -1_000_000_000_000]] {
            assert_eq!(roundtrip(&v).0, v);
        }
    }

    #[test]
    fn decimals_are_exact() {
        let v = vec![12.3, 0.1, 4999.9, 20.0, -7.5];
        let mut buf = Vec::new();
        encode_f64(&v, &mut buf);
        assert_eq!(buf[0], F_DECIMAL);
        let mut out = Vec::new();
        decode_f64(&mut Reader::new(&buf), v.len(), &mut out).unwrap();
        assert_eq!(
            out.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
        );
        // -0.0 would come back as 0.0 through an integer: it keeps the plain encoding.
        let signed_zero = vec![-0.0, 1.5];
        let mut buf = Vec::new();
        encode_f64(&signed_zero, &mut buf);
        let mut out = Vec::new();
        decode_f64(&mut Reader::new(&buf), 2, &mut out).unwrap();
        assert_eq!(out[0].to_bits(), (-0.0f64).to_bits());
        let odd = vec![std::f64::consts::PI, f64::NAN, -0.0];
        let mut buf = Vec::new();
        encode_f64(&odd, &mut buf);
        assert_eq!(buf[0], F_PLAIN);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let v: Vec<i64> = (0..1000).map(|i| i * 31 % 977).collect();
        let mut buf = Vec::new();
        encode_ints(&v, &mut buf);
        for cut in [0, 1, 5, buf.len() / 2, buf.len() - 1] {
            let mut out: Vec<i64> = Vec::new();
            assert!(decode_ints(&mut Reader::new(&buf[..cut]), v.len(), &mut out).is_err());
        }
    }

    proptest! {
        #[test]
        fn ints_roundtrip(v in proptest::collection::vec(any::<i64>(), 0..300)) {
            prop_assert_eq!(roundtrip(&v).0, v);
        }

        #[test]
        fn packed_ints_of_every_width_roundtrip(
            w in 1u32..=57,
            base in any::<i64>(),
            raw in proptest::collection::vec(any::<u64>(), 0..300),
            sorted in any::<bool>(),
        ) {
            let mask = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
            let mut v: Vec<i64> = raw.iter().map(|&x| base.wrapping_add((x & mask) as i64)).collect();
            if sorted {
                v.sort_unstable();
            }
            prop_assert_eq!(roundtrip(&v).0, v);
        }

        #[test]
        fn runs_of_every_length_roundtrip(runs in proptest::collection::vec((any::<i64>(), 1usize..40), 0..60)) {
            let v: Vec<i64> = runs.iter().flat_map(|&(x, l)| std::iter::repeat_n(x, l)).collect();
            prop_assert_eq!(roundtrip(&v).0, v);
        }

        #[test]
        fn small_ints_roundtrip(v in proptest::collection::vec(-50i64..50, 0..300)) {
            prop_assert_eq!(roundtrip(&v).0, v);
        }

        #[test]
        fn floats_roundtrip(v in proptest::collection::vec(any::<f64>(), 0..100)) {
            let mut buf = Vec::new();
            encode_f64(&v, &mut buf);
            let mut out = Vec::new();
            decode_f64(&mut Reader::new(&buf), v.len(), &mut out).unwrap();
            prop_assert_eq!(out.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), v.iter().map(|f| f.to_bits()).collect::<Vec<_>>());
        }

        #[test]
        fn text_roundtrip(v in proptest::collection::vec("[a-c]{0,3}|[a-z0-9]{0,12}", 0..300)) {
            let mut buf = Vec::new();
            encode_text(v.iter().map(|s| Some(s.as_str())), v.len(), &mut buf);
            let (offsets, bytes) = decode_text(&mut Reader::new(&buf), v.len(), None).unwrap();
            let got: Vec<String> = offsets.windows(2).map(|w| String::from_utf8(bytes[w[0] as usize..w[1] as usize].to_vec()).unwrap()).collect();
            prop_assert_eq!(got, v);
        }

        #[test]
        fn text_bounds_are_those_of_the_non_null_values(
            v in proptest::collection::vec(proptest::option::of("[a-c]{0,2}|[a-z0-9]{0,12}"), 0..300)
        ) {
            let mut buf = Vec::new();
            let bounds = encode_text(v.iter().map(|s| s.as_deref()), v.len(), &mut buf);
            let valid = || v.iter().flatten().map(|s| s.as_str());
            prop_assert_eq!(bounds, valid().min().zip(valid().max()));
            let (offsets, bytes) = decode_text(&mut Reader::new(&buf), v.len(), None).unwrap();
            let got: Vec<&[u8]> = offsets.windows(2).map(|w| &bytes[w[0] as usize..w[1] as usize]).collect();
            let want: Vec<&[u8]> = v.iter().map(|s| s.as_deref().unwrap_or("").as_bytes()).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn text_selected_rows(
            v in proptest::collection::vec("[a-c]{0,3}|[a-z0-9]{0,12}", 0..300),
            seed in any::<u64>(),
        ) {
            // Dictionary (few distinct values) and plain (many) encodings both keep exactly the selected rows.
            let mut buf = Vec::new();
            encode_text(v.iter().map(|s| Some(s.as_str())), v.len(), &mut buf);
            let keep: Vec<bool> = (0..v.len()).map(|i| (seed >> (i % 64)) & 1 == 1).collect();
            let mask = BooleanBuffer::from(keep.clone());
            let (offsets, bytes) = decode_text(&mut Reader::new(&buf), v.len(), Some(&mask)).unwrap();
            let got: Vec<String> = offsets.windows(2).map(|w| String::from_utf8(bytes[w[0] as usize..w[1] as usize].to_vec()).unwrap()).collect();
            let want: Vec<String> = v.iter().zip(&keep).filter(|(_, k)| **k).map(|(s, _)| s.clone()).collect();
            prop_assert_eq!(got, want);
        }
    }
}
