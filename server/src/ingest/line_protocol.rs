//! The InfluxDB line protocol (v1 and v2 share it), as Telegraf, InfluxDB and QuestDB clients send it:
//!
//! ```text
//! measurement[,tag=value...] field=value[,field=value...] [timestamp]
//! ```
//!
//! Field values are floats (`1`, `-1.5e3`), signed integers (`12i`), unsigned integers (`12u`), strings
//! (`"text"`, which may span lines) and booleans (`t`, `true`, `F`, `FALSE`, ...). Commas and spaces in
//! measurements, and commas, equals signs and spaces in tag keys, tag values and field keys, are
//! escaped with a backslash; in strings, `\"` and `\\` are. Blank lines and lines starting with `#` are
//! skipped. The parser borrows from the body and allocates only for values that contain escapes.

use std::borrow::Cow;

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Float(f64),
    Int(i64),
    UInt(u64),
    Str(Cow<'a, str>),
    Bool(bool),
}

impl Value<'_> {
    /// The line-protocol name of the value's type, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Float(_) => "float",
            Value::Int(_) => "integer",
            Value::UInt(_) => "unsigned integer",
            Value::Str(_) => "string",
            Value::Bool(_) => "boolean",
        }
    }
}

/// One parsed line. Reused from line to line (its vectors keep their capacity).
#[derive(Debug, Default)]
pub struct Point<'a> {
    pub measurement: Cow<'a, str>,
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub fields: Vec<(Cow<'a, str>, Value<'a>)>,
    /// As written, in the request's precision.
    pub timestamp: Option<i64>,
}

/// The unit of the timestamps in a request (`precision=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// `ns`/`n`, `us`/`u`/`µ`, `ms`, `s`, and (v1) `m`, `h`.
    pub fn parse(s: &str) -> Option<Precision> {
        Some(match s {
            "ns" | "n" => Precision::Nanoseconds,
            "us" | "u" | "µ" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => return None,
        })
    }

    /// A timestamp in this unit as microseconds since the epoch (nanoseconds are truncated towards
    /// the past); `None` when out of range.
    pub fn to_micros(self, t: i64) -> Option<i64> {
        match self {
            Precision::Nanoseconds => Some(t.div_euclid(1000)),
            Precision::Microseconds => Some(t),
            Precision::Milliseconds => t.checked_mul(1_000),
            Precision::Seconds => t.checked_mul(1_000_000),
            Precision::Minutes => t.checked_mul(60_000_000),
            Precision::Hours => t.checked_mul(3_600_000_000),
        }
    }
}

/// Walks a body line by line.
pub struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// The number of the line the next point starts on (1-based).
    line: usize,
}

/// Why a line was refused.
pub type LineError = String;

impl<'a> Parser<'a> {
    pub fn new(text: &'a str) -> Parser<'a> {
        Self::starting_at(text, 1)
    }

    /// A parser of `text` whose first line is line `line` of the body.
    pub fn starting_at(text: &'a str, line: usize) -> Parser<'a> {
        Parser { text, pos: 0, line }
    }

    /// Parses the next point into `point`. Returns the number of the line it started on and whether
    /// it parsed; `None` at the end of the body. After an error the parser goes on at the next line.
    pub fn next_point(&mut self, point: &mut Point<'a>) -> Option<(usize, Result<(), LineError>)> {
        let bytes = self.text.as_bytes();
        // Skip blank lines, indentation and comments.
        loop {
            while self.pos < bytes.len() && matches!(bytes[self.pos], b' ' | b'\t' | b'\r') {
                self.pos += 1;
            }
            if self.pos >= bytes.len() {
                return None;
            }
            match bytes[self.pos] {
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                }
                b'#' => self.skip_line(),
                _ => break,
            }
        }
        let line = self.line;
        point.tags.clear();
        point.fields.clear();
        point.timestamp = None;
        let r = self.parse_point(point);
        if r.is_err() {
            self.skip_line();
        }
        Some((line, r))
    }

    /// Moves past the next newline.
    fn skip_line(&mut self) {
        let bytes = self.text.as_bytes();
        match memchr::memchr(b'\n', &bytes[self.pos..]) {
            Some(i) => {
                self.pos += i + 1;
                self.line += 1;
            }
            None => self.pos = bytes.len(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn parse_point(&mut self, point: &mut Point<'a>) -> Result<(), LineError> {
        point.measurement = self.token(&MEASUREMENT);
        if point.measurement.is_empty() {
            return Err("missing measurement".into());
        }
        while self.peek() == Some(b',') {
            self.pos += 1;
            let key = self.token(&KEY);
            if self.peek() != Some(b'=') {
                return Err(format!("missing tag value after tag key \"{key}\""));
            }
            self.pos += 1;
            let value = self.token(&KEY);
            if key.is_empty() || value.is_empty() {
                return Err(format!("empty tag key or value (\"{key}={value}\")"));
            }
            point.tags.push((key, value));
        }
        if self.peek() != Some(b' ') {
            return Err(format!("missing fields after measurement \"{}\"", point.measurement));
        }
        self.skip_spaces();
        loop {
            let key = self.token(&KEY);
            if key.is_empty() {
                return Err("missing field key".into());
            }
            if self.peek() != Some(b'=') {
                return Err(format!("missing field value for field key \"{key}\""));
            }
            self.pos += 1;
            let value = self.field_value(&key)?;
            point.fields.push((key, value));
            match self.peek() {
                Some(b',') => self.pos += 1,
                _ => break,
            }
        }
        match self.peek() {
            None | Some(b'\n') => return self.end_of_line(),
            Some(b' ' | b'\t' | b'\r') => self.skip_spaces(),
            Some(c) => return Err(format!("unexpected \"{}\" after field values", c as char)),
        }
        if matches!(self.peek(), None | Some(b'\n')) {
            return self.end_of_line();
        }
        let start = self.pos;
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && !matches!(bytes[self.pos], b' ' | b'\t' | b'\r' | b'\n') {
            self.pos += 1;
        }
        let ts = &self.text[start..self.pos];
        point.timestamp = Some(parse_int(ts).ok_or_else(|| format!("invalid timestamp \"{ts}\""))?);
        self.skip_spaces();
        match self.peek() {
            None | Some(b'\n') => self.end_of_line(),
            Some(_) => Err(format!("unexpected text after the timestamp \"{ts}\"")),
        }
    }

    fn end_of_line(&mut self) -> Result<(), LineError> {
        if self.peek() == Some(b'\n') {
            self.pos += 1;
            self.line += 1;
        }
        Ok(())
    }

    fn skip_spaces(&mut self) {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && matches!(bytes[self.pos], b' ' | b'\t' | b'\r') {
            self.pos += 1;
        }
    }

    /// A name or tag value up to one of `stops` (unescaped) or the end of the line.
    fn token(&mut self, stops: &Stops) -> Cow<'a, str> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let mut escaped = false;
        loop {
            while self.pos < bytes.len() && !stops.interesting[bytes[self.pos] as usize] {
                self.pos += 1;
            }
            let Some(&c) = bytes.get(self.pos) else { break };
            match c {
                b'\\' => {
                    if bytes.get(self.pos + 1).is_some_and(|&n| stops.escapable(n)) {
                        escaped = true;
                        self.pos += 2;
                    } else {
                        self.pos += 1;
                    }
                }
                // A carriage return ends the token only before a newline.
                b'\r' if bytes.get(self.pos + 1) != Some(&b'\n') => self.pos += 1,
                _ => break,
            }
        }
        let raw = &self.text[start..self.pos];
        if !escaped {
            return Cow::Borrowed(raw);
        }
        let mut out = String::with_capacity(raw.len());
        let rb = raw.as_bytes();
        let mut i = 0;
        let mut from = 0;
        while i < rb.len() {
            if rb[i] == b'\\' && i + 1 < rb.len() && stops.escapable(rb[i + 1]) {
                out.push_str(&raw[from..i]);
                from = i + 1;
                i += 2;
                continue;
            }
            i += 1;
        }
        out.push_str(&raw[from..]);
        Cow::Owned(out)
    }

    fn field_value(&mut self, key: &str) -> Result<Value<'a>, LineError> {
        let bytes = self.text.as_bytes();
        if self.peek() == Some(b'"') {
            self.pos += 1;
            let start = self.pos;
            let mut escaped = false;
            loop {
                match bytes.get(self.pos) {
                    None => return Err(format!("unterminated string in field \"{key}\"")),
                    Some(b'\\') if matches!(bytes.get(self.pos + 1), Some(b'"' | b'\\')) => {
                        escaped = true;
                        self.pos += 2;
                    }
                    Some(b'"') => break,
                    Some(b'\n') => {
                        self.line += 1;
                        self.pos += 1;
                    }
                    Some(_) => self.pos += 1,
                }
            }
            let raw = &self.text[start..self.pos];
            self.pos += 1;
            if !matches!(self.peek(), None | Some(b',' | b' ' | b'\t' | b'\r' | b'\n')) {
                return Err(format!("unexpected text after the string in field \"{key}\""));
            }
            if !escaped {
                return Ok(Value::Str(Cow::Borrowed(raw)));
            }
            let mut out = String::with_capacity(raw.len());
            let mut chars = raw.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '\\' && matches!(chars.peek(), Some('"' | '\\')) {
                    out.push(chars.next().expect("peeked"));
                } else {
                    out.push(c);
                }
            }
            return Ok(Value::Str(Cow::Owned(out)));
        }
        let start = self.pos;
        while self.pos < bytes.len() && !matches!(bytes[self.pos], b',' | b' ' | b'\t' | b'\r' | b'\n') {
            self.pos += 1;
        }
        let raw = &self.text[start..self.pos];
        parse_scalar(raw).ok_or_else(|| {
            if raw.is_empty() {
                format!("missing value for field \"{key}\"")
            } else {
                format!(
                    "invalid value \"{raw}\" for field \"{key}\" (expected a float, 12i, 12u, \"text\" or a boolean)"
                )
            }
        })
    }
}

/// The characters that end a token of one kind. A backslash escapes them and itself; before anything
/// else it is kept as written.
struct Stops {
    /// The stops, the backslash, and line ends: the bytes the scan must look at.
    interesting: [bool; 256],
    stops: &'static [u8],
}

impl Stops {
    const fn new(stops: &'static [u8]) -> Stops {
        let mut interesting = [false; 256];
        let mut i = 0;
        while i < stops.len() {
            interesting[stops[i] as usize] = true;
            i += 1;
        }
        interesting[b'\\' as usize] = true;
        interesting[b'\n' as usize] = true;
        interesting[b'\r' as usize] = true;
        Stops { interesting, stops }
    }

    fn escapable(&self, c: u8) -> bool {
        c == b'\\' || self.stops.contains(&c)
    }
}

/// Measurements end at a comma or space; keys and tag values also at an equals sign.
static MEASUREMENT: Stops = Stops::new(b", ");
static KEY: Stops = Stops::new(b",= ");

/// A number or boolean field value.
fn parse_scalar(raw: &str) -> Option<Value<'static>> {
    let b = raw.as_bytes();
    match *b.last()? {
        b'i' => return parse_int(&raw[..raw.len() - 1]).map(Value::Int),
        b'u' => return parse_digits(&b[..b.len() - 1]).map(Value::UInt),
        _ => {}
    }
    match b[0] {
        b't' | b'T' | b'f' | b'F' => {
            return match raw {
                "t" | "T" | "true" | "True" | "TRUE" => Some(Value::Bool(true)),
                "f" | "F" | "false" | "False" | "FALSE" => Some(Value::Bool(false)),
                _ => None,
            };
        }
        _ => {}
    }
    if let Some(v) = fast_float(b) {
        return Some(Value::Float(v));
    }
    // Only digits, a sign, a point and an exponent: Rust's parser would also take `inf` and `NaN`.
    if !b.iter().all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')) {
        return None;
    }
    if !b.iter().any(|c| c.is_ascii_digit()) {
        return None;
    }
    raw.parse::<f64>().ok().filter(|v| v.is_finite()).map(Value::Float)
}

/// `[-]digits[.digits]` with at most 15 significant digits, parsed exactly: the digits form an integer
/// below 2^53 and dividing it by an exact power of ten rounds correctly. `None` for anything else
/// (the caller then uses the full parser).
fn fast_float(b: &[u8]) -> Option<f64> {
    const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
    let (negative, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    let mut m: u64 = 0;
    let mut count = 0usize;
    let mut frac: Option<usize> = None;
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                m = m * 10 + u64::from(c - b'0');
                count += 1;
                if let Some(f) = frac.as_mut() {
                    *f += 1;
                }
                if count > 15 {
                    return None;
                }
            }
            b'.' if frac.is_none() => frac = Some(0),
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    let v = m as f64 / POW10[frac.unwrap_or(0)];
    Some(if negative { -v } else { v })
}

/// Unsigned decimal digits, refusing overflow.
fn parse_digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// An optionally negative run of digits.
fn parse_int(raw: &str) -> Option<i64> {
    match raw.strip_prefix('-') {
        Some(d) => {
            let v = parse_digits(d.as_bytes())?;
            if v == 1 << 63 { Some(i64::MIN) } else { i64::try_from(v).ok().map(|v| -v) }
        }
        None => parse_digits(raw.as_bytes()).and_then(|v| i64::try_from(v).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(text: &str) -> Vec<(usize, Result<String, String>)> {
        let mut p = Parser::new(text);
        let mut point = Point::default();
        let mut out = Vec::new();
        while let Some((line, r)) = p.next_point(&mut point) {
            out.push((line, r.map(|()| show(&point))));
        }
        out
    }

    fn show(p: &Point<'_>) -> String {
        let mut s = format!("{}", p.measurement);
        for (k, v) in &p.tags {
            s.push_str(&format!("|{k}={v}"));
        }
        for (k, v) in &p.fields {
            s.push_str(&format!(" {k}:{v:?}"));
        }
        if let Some(t) = p.timestamp {
            s.push_str(&format!(" @{t}"));
        }
        s
    }

    fn one(text: &str) -> Result<String, String> {
        let mut all = parse_all(text);
        assert_eq!(all.len(), 1, "{text:?} gave {all:?}");
        all.remove(0).1
    }

    // The cases of InfluxDB's line-protocol reference (syntax, data types, quoting and special
    // characters), and what its parser refuses.
    #[test]
    fn the_reference_examples() {
        assert_eq!(
            one("myMeasurement,tag1=value1,tag2=value2 fieldKey=\"fieldValue\" 1556813561098000000").unwrap(),
            "myMeasurement|tag1=value1|tag2=value2 fieldKey:Str(\"fieldValue\") @1556813561098000000"
        );
        assert_eq!(
            one("home,room=Kitchen temp=22.5,hum=36.2,co=0i").unwrap(),
            "home|room=Kitchen temp:Float(22.5) hum:Float(36.2) co:Int(0)"
        );
        assert_eq!(one("m f=1").unwrap(), "m f:Float(1.0)");
        assert_eq!(one("m f=-1.234456e+78").unwrap(), "m f:Float(-1.234456e78)");
        assert_eq!(one("m f=1.").unwrap(), "m f:Float(1.0)");
        assert_eq!(one("m f=-12485903i").unwrap(), "m f:Int(-12485903)");
        assert_eq!(one("m f=12485903u").unwrap(), "m f:UInt(12485903)");
        assert_eq!(one("m f=9223372036854775807i").unwrap(), "m f:Int(9223372036854775807)");
        assert_eq!(one("m f=18446744073709551615u").unwrap(), "m f:UInt(18446744073709551615)");
        for t in ["t", "T", "true", "True", "TRUE"] {
            assert_eq!(one(&format!("m f={t}")).unwrap(), "m f:Bool(true)");
        }
        for f in ["f", "F", "false", "False", "FALSE"] {
            assert_eq!(one(&format!("m f={f}")).unwrap(), "m f:Bool(false)");
        }
        assert_eq!(one("m f=-1 -1000").unwrap(), "m f:Float(-1.0) @-1000");
    }

    #[test]
    fn escaping() {
        // Measurement: commas and spaces.
        assert_eq!(one("my\\ Measurement f=1").unwrap(), "my Measurement f:Float(1.0)");
        assert_eq!(one("my\\,Measurement f=1").unwrap(), "my,Measurement f:Float(1.0)");
        // Tag keys and values, field keys: commas, equals signs, spaces.
        assert_eq!(
            one("m,tag\\ Key1=tag\\ Value1,tag\\,Key2=tag\\,Value2 f=1").unwrap(),
            "m|tag Key1=tag Value1|tag,Key2=tag,Value2 f:Float(1.0)"
        );
        assert_eq!(
            one("m,tag\\=Key=tag\\=Value field\\=Key=1,field\\ 2=2").unwrap(),
            "m|tag=Key=tag=Value field=Key:Float(1.0) field 2:Float(2.0)"
        );
        // Strings: double quotes and backslashes; other characters as written.
        assert_eq!(one(r#"m f="\"quoted\" and \\ and \n""#).unwrap(), r#"m f:Str("\"quoted\" and \\ and \\n")"#);
        assert_eq!(one("m f=\"a,b c=d\"").unwrap(), "m f:Str(\"a,b c=d\")");
        // A backslash before any other character is kept.
        assert_eq!(one("m\\x,t=a\\b f=1").unwrap(), "m\\x|t=a\\b f:Float(1.0)");
        // Emoji and other UTF-8.
        assert_eq!(one("cpu,host=h\u{00e9}st f=\"\u{1f600}\"").unwrap(), "cpu|host=h\u{00e9}st f:Str(\"\u{1f600}\")");
    }

    #[test]
    fn lines_comments_and_multiline_strings() {
        let text = "# a comment\n\n  m f=1 10\r\nm f=2 20\n\nm f=\"two\nlines\" 30\nm f=3";
        let all = parse_all(text);
        let shown: Vec<_> = all.iter().map(|(l, r)| (*l, r.clone().unwrap())).collect();
        assert_eq!(
            shown,
            vec![
                (3, "m f:Float(1.0) @10".to_string()),
                (4, "m f:Float(2.0) @20".to_string()),
                (6, "m f:Str(\"two\\nlines\") @30".to_string()),
                (8, "m f:Float(3.0)".to_string()),
            ]
        );
    }

    #[test]
    fn errors_name_the_problem_and_parsing_goes_on() {
        let text =
            "m\nm,t=1\nm f\nm f=\nm f=abc\nm f=1 12x\nm f=1 1 2\nm f=\"open\nm,t f=1\nm f=1i2\nm f=nan\nm f=1 1\n";
        let all = parse_all(text);
        let errors: Vec<_> = all.iter().filter(|(_, r)| r.is_err()).map(|(l, _)| *l).collect();
        // The unterminated string on line 8 runs to the end of the body.
        assert_eq!(errors, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(all[0].1.as_ref().unwrap_err().contains("measurement"), "{all:?}");
        assert!(all[4].1.as_ref().unwrap_err().contains("invalid value \"abc\""), "{all:?}");
        assert!(all[5].1.as_ref().unwrap_err().contains("timestamp"), "{all:?}");
        let text = "m,t f=1\nm f=1i2\nm f=nan\nm f=inf\nm f=1u-\nm f=-1u\nm,t= f=1\nm f=1 1\n";
        let all = parse_all(text);
        let errors: Vec<_> = all.iter().filter(|(_, r)| r.is_err()).map(|(l, _)| *l).collect();
        assert_eq!(errors, vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(all.last().unwrap().1.as_ref().unwrap(), "m f:Float(1.0) @1");
        // Out of range integers.
        assert!(one("m f=9223372036854775808i").is_err());
        assert!(one("m f=18446744073709551616u").is_err());
        assert!(one("m f=1 9223372036854775808").is_err());
    }

    #[test]
    fn numbers_parse_exactly() {
        for text in
            ["0", "-0", "1.5", "-12.25", "0.1", "123456789012345", "1.00000000000001", "99.99", "-0.000001", "7."]
        {
            let fast = fast_float(text.as_bytes()).unwrap();
            assert_eq!(fast.to_bits(), text.parse::<f64>().unwrap().to_bits(), "{text}");
        }
        // Too many digits, exponents, and anything else go to the full parser.
        for text in ["1234567890123456", "1e5", ".", "-", "1.2.3", "+1"] {
            assert!(fast_float(text.as_bytes()).is_none(), "{text}");
        }
        assert_eq!(parse_scalar("1234567890123456789"), Some(Value::Float(1234567890123456789.0)));
        assert_eq!(parse_scalar("+1"), Some(Value::Float(1.0)));
        assert_eq!(parse_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int("-9223372036854775809"), None);
        assert_eq!(parse_int("-"), None);
    }

    #[test]
    fn precision() {
        assert_eq!(Precision::parse("ns").unwrap().to_micros(1_556_813_561_098_000_123), Some(1_556_813_561_098_000));
        assert_eq!(Precision::Nanoseconds.to_micros(-1), Some(-1));
        assert_eq!(Precision::parse("ms").unwrap().to_micros(1_556_813_561_098), Some(1_556_813_561_098_000));
        assert_eq!(Precision::parse("s").unwrap().to_micros(2), Some(2_000_000));
        assert_eq!(Precision::parse("h").unwrap().to_micros(1), Some(3_600_000_000));
        assert_eq!(Precision::Seconds.to_micros(i64::MAX), None);
        assert!(Precision::parse("d").is_none());
    }
}
