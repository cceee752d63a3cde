//! One client connection: TLS negotiation, then the message loop, with every frontend message checked
//! against the protocol before pgwire decodes it.
//!
//! Why the check: pgwire 0.41 decodes a message body from the connection's whole read buffer and
//! trusts the counts and lengths inside it. A Parse or Bind whose counts run past the end of the
//! message reads into the next message or panics (`advance out of bounds`, `split_to out of
//! bounds`, `capacity overflow`: all found by `tests/tests/wire.rs`), and a length field below 4
//! desynchronises the stream. [`Checked`] sits between the socket and pgwire's framing, reads whole
//! messages, checks each one's layout field by field as PostgreSQL's own `pq_getmsg*` calls do, and
//! hands pgwire only well-formed messages. The first malformed message ends the connection with
//! `FATAL 08P01`, as PostgreSQL does; the messages before it are served first.
//!
//! The loop is pgwire's `process_socket` with two changes: the checked stream, and an answer (not a
//! silent close) when a message cannot be decoded or arrives where it makes no sense.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Framed, FramedParts};
use trafficdb::SqlState;

/// Serves one connection until the client leaves, a fatal error, or `startup` passes before it has
/// authenticated.
pub async fn serve<H: PgWireServerHandlers>(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: H,
    startup: Duration,
) -> io::Result<()> {
    let startup_timeout = tokio::time::sleep(startup);
    tokio::pin!(startup_timeout);
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        s = negotiate_tls(tcp, tls) => s?,
    };
    // A client that starts TLS directly when no certificate is configured: nothing to talk about.
    let Some(socket) = negotiated else { return Ok(()) };
    // The same framing and client state over the checked stream; bytes already read (the startup
    // packet may have arrived with the SSLRequest) are checked too.
    let old = socket.into_parts();
    let mut parts = FramedParts::new(Checked::new(old.io, old.read_buf), old.codec);
    parts.write_buf = old.write_buf;
    let mut socket = Framed::from_parts(parts);

    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    loop {
        let authenticating = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
        );
        socket.get_mut().authenticated = !authenticating;
        let next = if authenticating {
            tokio::select! {
                _ = &mut startup_timeout => None,
                m = socket.next() => m,
            }
        } else {
            socket.next().await
        };
        let message = match next {
            None => break,
            Some(Ok(m)) => m,
            Some(Err(PgWireError::IoError(e))) if e.get_ref().is_none_or(|inner| !inner.is::<Malformed>()) => {
                // The connection itself failed: there is no one to answer.
                return Err(e);
            }
            Some(Err(e)) => {
                let message = match e {
                    PgWireError::IoError(e) => e.into_inner().map(|m| m.to_string()).unwrap_or_default(),
                    other => other.to_string(),
                };
                tracing::debug!("malformed message from {}: {message}", socket.socket_addr());
                return fatal(&mut socket, message).await;
            }
        };
        match &message {
            // The client is leaving; it may wait for the server to close first.
            PgWireFrontendMessage::Terminate(_) => break,
            PgWireFrontendMessage::PasswordMessageFamily(_) if !authenticating => {
                return fatal(&mut socket, "invalid frontend message type 112".into()).await;
            }
            _ => {}
        }
        let in_extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        if let Err(mut e) = process_message(
            message,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await
        {
            errors.on_error(&socket, &mut e);
            process_error(&mut socket, e, in_extended).await?;
        }
    }
    Ok(())
}

/// Sends `FATAL 08P01 message` and closes, as PostgreSQL answers a protocol violation.
async fn fatal<T, S>(
    socket: &mut Framed<T, pgwire::tokio::server::PgWireMessageServerCodec<S>>,
    message: String,
) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let info = ErrorInfo::new("FATAL".into(), SqlState::ProtocolViolation.code().into(), message);
    // The client may be gone already; the connection ends either way.
    let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
    let _ = socket.close().await;
    Ok(())
}

/// Why a frontend message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Malformed {}

fn malformed(what: impl Into<String>) -> Malformed {
    Malformed(what.into())
}

/// Largest messages accepted, as pgwire's limits (PostgreSQL's are one byte larger): queries,
/// statements, bound parameters and COPY data may be large; everything else is small.
const LARGE_MESSAGE: usize = 0x3fff_fffe;
const SMALL_MESSAGE: usize = 10_000;
/// Before authentication only the startup packet and password / SASL messages belong, and nothing
/// large: a password message is at most PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`, anything else
/// [`SMALL_MESSAGE`]. A client cannot make the server hold more than this before it has logged in.
const AUTH_MESSAGE: usize = 65_535;

/// What the next message on the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// An untagged packet: StartupMessage or CancelRequest.
    Startup,
    /// Tagged messages (after the StartupMessage).
    Tagged,
}

/// A byte stream that passes on only whole, well-formed frontend messages (see the module doc).
/// Writes go straight through.
pub struct Checked<T> {
    io: T,
    phase: Phase,
    /// Bytes read from `io` and not yet checked; they start at a message boundary.
    raw: BytesMut,
    /// Checked bytes not yet read by pgwire.
    ready: BytesMut,
    /// Set by the first malformed message; every later read fails with it.
    failed: Option<Malformed>,
    /// Whether the client has authenticated (set by the message loop); before, messages are small.
    pub authenticated: bool,
}

impl<T> Checked<T> {
    /// `read` holds bytes already taken from `io` (the stream is at the startup packet).
    pub fn new(io: T, read: BytesMut) -> Checked<T> {
        Checked { io, phase: Phase::Startup, raw: read, ready: BytesMut::new(), failed: None, authenticated: false }
    }

    /// Moves every whole message at the start of `raw` to `ready`, checking each, until a message
    /// is incomplete or malformed.
    fn check_buffered(&mut self) -> Result<(), Malformed> {
        loop {
            let header = if self.phase == Phase::Startup { 4 } else { 5 };
            if self.raw.len() < header {
                return Ok(());
            }
            let tag = (self.phase == Phase::Tagged).then(|| self.raw[0]);
            let at = header - 4;
            let len = i32::from_be_bytes([self.raw[at], self.raw[at + 1], self.raw[at + 2], self.raw[at + 3]]);
            let max = match tag {
                None => SMALL_MESSAGE,
                Some(b'p') if !self.authenticated => AUTH_MESSAGE,
                Some(b'Q' | b'P' | b'B' | b'd') if self.authenticated => LARGE_MESSAGE,
                Some(_) => SMALL_MESSAGE,
            };
            let min = if tag.is_none() { 8 } else { 4 };
            let len = usize::try_from(len).ok().filter(|l| (min..=max).contains(l)).ok_or_else(|| match tag {
                None => malformed(format!("invalid length of startup packet: {len}")),
                Some(t) => malformed(format!("invalid message length {len} for message type {:?}", char::from(t))),
            })?;
            let total = at + len;
            if self.raw.len() < total {
                return Ok(());
            }
            let body = &self.raw[header..total];
            match tag {
                None => {
                    if check_startup(body)? {
                        self.phase = Phase::Tagged;
                    }
                }
                Some(t) => check_message(t, body)?,
            }
            let message = self.raw.split_to(total);
            self.ready.extend_from_slice(&message);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Checked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(m) = &this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, m.clone())));
            }
            if let Err(m) = this.check_buffered() {
                this.failed = Some(m);
                continue;
            }
            if !this.ready.is_empty() {
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of stream; a message cut short is dropped with the connection.
                return Poll::Ready(Ok(()));
            }
            this.raw.extend_from_slice(read.filled());
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Checked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The request codes of untagged packets.
const CANCEL_REQUEST: i32 = 80_877_102;

/// Checks an untagged packet's body; true when it is a StartupMessage (tagged messages follow).
fn check_startup(body: &[u8]) -> Result<bool, Malformed> {
    let mut b = Fields(body);
    let code = b.i32()?;
    if code == CANCEL_REQUEST {
        // Process id and secret key: 4 bytes in protocol 3.0, up to 256 in 3.2.
        b.i32()?;
        if b.0.len() < 4 || b.0.len() > 256 {
            return Err(malformed("invalid length of cancel request packet"));
        }
        return Ok(false);
    }
    let (major, minor) = (code >> 16, code & 0xffff);
    if major != 3 {
        return Err(malformed(format!("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.2")));
    }
    // Name / value pairs, then an empty name.
    loop {
        if b.cstr()?.is_empty() {
            break;
        }
        b.cstr()?;
    }
    b.end().map_err(|_| malformed("invalid startup packet layout: expected terminator as last byte"))?;
    Ok(true)
}

/// Checks the body of a tagged frontend message against its layout.
fn check_message(tag: u8, body: &[u8]) -> Result<(), Malformed> {
    let mut b = Fields(body);
    match tag {
        // Query: the SQL text. CopyFail: the reason.
        b'Q' | b'f' => {
            b.cstr()?;
        }
        // Parse: statement name, SQL text, parameter type OIDs.
        b'P' => {
            b.cstr()?;
            b.cstr()?;
            let n = b.count()?;
            b.take(n * 4)?;
        }
        // Bind: portal, statement, parameter formats, parameter values, result formats.
        b'B' => {
            b.cstr()?;
            b.cstr()?;
            let formats = b.count()?;
            b.take(formats * 2)?;
            for _ in 0..b.count()? {
                let len = b.i32()?;
                if len < -1 {
                    return Err(malformed(format!("invalid length {len} of a bound parameter")));
                }
                if len > 0 {
                    b.take(len as usize)?;
                }
            }
            let results = b.count()?;
            b.take(results * 2)?;
        }
        // Execute: portal, row limit.
        b'E' => {
            b.cstr()?;
            b.i32()?;
        }
        // Describe / Close: 'S'tatement or 'P'ortal, then its name.
        b'D' | b'C' => {
            let kind = b.take(1)?[0];
            if kind != b'S' && kind != b'P' {
                return Err(malformed(format!(
                    "invalid {} message subtype {kind}",
                    if tag == b'D' { "DESCRIBE" } else { "CLOSE" }
                )));
            }
            b.cstr()?;
        }
        // Sync, Flush, CopyDone, Terminate: no body.
        b'S' | b'H' | b'c' | b'X' => {}
        // CopyData and the password / SASL family: their content is checked where it is used.
        b'd' | b'p' => return Ok(()),
        other => return Err(malformed(format!("invalid frontend message type {other}"))),
    }
    b.end()
}

/// A cursor over a message body, reading fields as PostgreSQL's `pq_getmsg*` functions do.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.0.len() {
            return Err(malformed("insufficient data left in message"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i32(&mut self) -> Result<i32, Malformed> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A 16-bit element count (unsigned on the wire, as pgwire reads it).
    fn count(&mut self) -> Result<usize, Malformed> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A NUL-terminated string, returned without its terminator.
    fn cstr(&mut self) -> Result<&'a [u8], Malformed> {
        let end = self.0.iter().position(|&c| c == 0).ok_or_else(|| malformed("invalid string in message"))?;
        let s = &self.0[..end];
        self.0 = &self.0[end + 1..];
        Ok(s)
    }

    fn end(&self) -> Result<(), Malformed> {
        if self.0.is_empty() { Ok(()) } else { Err(malformed("invalid message format")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(bytes: &[u8]) -> Result<Vec<u8>, Malformed> {
        let mut c = Checked::new((), BytesMut::from(bytes));
        c.authenticated = true;
        c.check_buffered()?;
        Ok(c.ready.to_vec())
    }

    #[test]
    fn before_authentication_every_message_is_small() {
        let header = |tag: u8, len: usize| [&[tag][..], &(len as i32).to_be_bytes()[..]].concat();
        let early = |bytes: &[u8]| {
            let mut c = Checked::new((), BytesMut::from(&startup()[..]));
            c.check_buffered().expect("startup");
            c.raw.extend_from_slice(bytes);
            c.check_buffered()
        };
        // A 1 GiB Query, Parse, Bind or CopyData is refused from its header, before its body is held.
        for tag in [b'Q', b'P', b'B', b'd'] {
            assert!(early(&header(tag, 1 << 30)).is_err(), "{}", char::from(tag));
            assert!(early(&header(tag, 10_001)).is_err(), "{}", char::from(tag));
        }
        assert!(early(&header(b'p', 65_536)).is_err());
        assert!(early(&header(b'p', 65_535)).is_ok(), "a large SASL message waits for its body");
    }

    fn startup() -> Vec<u8> {
        let body = [&196_608_i32.to_be_bytes()[..], b"user\0u\0\0"].concat();
        [&(body.len() as i32 + 4).to_be_bytes()[..], &body].concat()
    }

    fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
        [&[tag][..], &(body.len() as i32 + 4).to_be_bytes(), body].concat()
    }

    #[test]
    fn whole_messages_pass_and_a_partial_one_waits() {
        let parse = tagged(b'P', b"s\0SELECT $1\0\x00\x01\x00\x00\x00\x14");
        let input = [startup(), parse.clone(), tagged(b'S', b""), parse[..7].to_vec()].concat();
        let passed = checked(&input).expect("well formed");
        assert_eq!(passed.len(), input.len() - 7, "the partial Parse is held back");
    }

    #[test]
    fn malformed_messages_are_refused() {
        let bad: &[(&[u8], &str)] = &[
            (b"s\0SELECT 1\0\xff\xff", "insufficient data"), // 65535 types announced, none sent
            (b"s\0SELECT 1\0\x00\x00extra", "invalid message format"), // bytes after the last field
            (b"s\0SELECT 1", "invalid string"),              // no terminator
        ];
        for (body, why) in bad {
            let e = checked(&[startup(), tagged(b'P', body)].concat()).expect_err("refused");
            assert!(e.0.contains(why), "{e} should say {why}");
        }
        // Bind: a parameter longer than the message, a negative length other than -1.
        let bind = |param: &[u8]| tagged(b'B', &[b"\0s\0\x00\x00\x00\x01", param, b"\x00\x00"].concat());
        assert!(checked(&[startup(), bind(b"\x00\x0f\x42\x40ab")].concat()).is_err());
        assert!(checked(&[startup(), bind(b"\xff\xff\xff\xfb")].concat()).is_err());
        assert!(checked(&[startup(), bind(b"\xff\xff\xff\xff")].concat()).is_ok(), "-1 is NULL");
        // Lengths: below 4, above the limit for the type, an unknown type.
        assert!(checked(&[startup(), vec![b'Q', 0, 0, 0, 2]].concat()).is_err());
        assert!(checked(&[startup(), vec![b'S', 0, 0, 0x30, 0]].concat()).is_err());
        assert!(checked(&[startup(), tagged(b'!', b"")].concat()).is_err());
        // Startup: protocol 2, parameters without the final terminator.
        assert!(checked(&[0, 0, 0, 9, 0, 2, 0, 0, 0]).is_err());
        assert!(checked(&[&[0, 0, 0, 14, 0, 3, 0, 0][..], b"user\0u"].concat()).is_err());
    }

    #[test]
    fn a_cancel_request_keeps_the_startup_phase() {
        let cancel = [&[0, 0, 0, 16][..], &CANCEL_REQUEST.to_be_bytes(), &[0, 0, 0, 1, 0, 0, 0, 2]].concat();
        let mut c = Checked::new((), BytesMut::from(&cancel[..]));
        c.check_buffered().expect("valid");
        assert_eq!(c.phase, Phase::Startup);
    }
}
