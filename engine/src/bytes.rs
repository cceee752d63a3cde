//! Little-endian byte helpers shared by the on-disk formats (segments, the WAL): appending
//! fixed-width values ([`PutLe`]) and reading them back with every length checked ([`Reader`]; a
//! shortfall is a reason string the format's reader turns into a corruption error).

pub(crate) type DecodeResult<T> = std::result::Result<T, String>;

/// Whether the formats' checksums are checked: always, except in fuzz builds (cargo-fuzz sets
/// `cfg(fuzzing)`), where mutated bytes must reach the decoders behind the checksums.
pub(crate) const VERIFY_CHECKSUMS: bool = !cfg!(fuzzing);

/// Appends little-endian fixed-width values.
pub(crate) trait PutLe {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_i64(&mut self, v: i64);
    fn put_bytes16(&mut self, b: &[u8]);
}

impl PutLe for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    /// A byte string with a u16 length prefix (truncated by the caller to fit).
    fn put_bytes16(&mut self, b: &[u8]) {
        self.put_u16(b.len() as u16);
        self.extend_from_slice(b);
    }
}

/// Reads little-endian fixed-width values, checking bounds.
pub(crate) struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
            format!("needs {n} bytes at {} but only {} remain", self.pos, self.buf.len() - self.pos.min(self.buf.len()))
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> DecodeResult<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| "u16")?))
    }
    pub fn u32(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "u32")?))
    }
    pub fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "u64")?))
    }
    pub fn i64(&mut self) -> DecodeResult<i64> {
        Ok(self.u64()? as i64)
    }
    pub fn bytes16(&mut self) -> DecodeResult<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}
