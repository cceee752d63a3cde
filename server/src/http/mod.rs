//! The HTTP listener (`--http`): the web console (`GET /`), `GET /health`, `POST /api/v1/query` (SQL in, rows out: see
//! [`query`]), and `POST /v1/predict/retry`, which scores feature rows given as JSON with the same
//! model, validation and kernel as `predict_retry` in SQL.
//!
//! With `auth = "password"` every request needs HTTP Basic credentials of a configured user (checked
//! against the same SCRAM or MD5 verifiers as the PostgreSQL port); with `trust` none are asked for.
//! The listener speaks plain HTTP: keep it on loopback, or behind a TLS-terminating proxy.

mod console;
pub mod errors;
mod query;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use trafficdb::Database;
use trafficdb_udfs::SqlError;

use std::collections::HashMap;

use crate::config::{AuthMode, ServerConfig};
use crate::http::errors::Shape;
use crate::ingest::dedup::Dedup;
use crate::ingest::line_protocol::Precision;
use crate::ops::metrics::ServerMetrics;
use crate::security::audit::Audit;
use crate::security::roles::Role;
use crate::security::secret::{SCRAM_ITERATIONS, Secret};
use trafficdb::SqlState;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// What the handlers share.
#[derive(Clone)]
pub struct App {
    pub db: Arc<Database>,
    pub config: Arc<ServerConfig>,
    pub audit: Arc<Audit>,
    pub dedup: Arc<Dedup>,
    pub metrics: Arc<ServerMetrics>,
}

/// The routes, over `db`.
pub fn router(app: App) -> Router {
    // These need credentials, checked from the headers before the body is read: a client that has
    // not logged in cannot make the server hold its body.
    let authenticated = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/query", post(query::query))
        .route("/v1/predict/retry", post(predict))
        .route("/api/v2/write", post(write_route))
        .route("/write", post(write_route))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), require_caller));
    Router::new()
        .route("/", get(console::page))
        .route("/console/app.js", get(console::script))
        .route("/console/app.css", get(console::style))
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/ping", get(ping).head(ping))
        .merge(authenticated)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// Authenticates a request from its headers (and `u` / `p` query parameters) before its body is read;
/// the handler finds the [`Caller`] in the request's extensions.
async fn require_caller(
    State(app): State<App>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let query = parse_query(request.uri().query().unwrap_or(""));
    match authenticate(&app, request.headers(), &query).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refused) => refused,
    }
}

/// A TCP listener that holds at most `max` HTTP connections: the next is accepted when one closes
/// (until then it waits in the kernel's backlog).
pub struct LimitedListener {
    inner: tokio::net::TcpListener,
    permits: Arc<tokio::sync::Semaphore>,
}

impl LimitedListener {
    pub fn new(inner: tokio::net::TcpListener, max: usize) -> LimitedListener {
        LimitedListener { inner, permits: Arc::new(tokio::sync::Semaphore::new(max.max(1))) }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = Limited;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (Limited { io, _permit: permit }, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An HTTP connection holding one of the listener's permits until it closes.
pub struct Limited {
    io: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Limited {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Limited {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What InfluxDB clients call to check the server is there.
async fn ping() -> Response {
    (StatusCode::NO_CONTENT, [("X-Influxdb-Version", "trafficdb")]).into_response()
}

/// `POST /api/v2/write?bucket=...&precision=ns|us|ms|s` (InfluxDB v2; `bucket` and `org` are
/// accepted and ignored: there is one database) and `POST /write?db=...&precision=n|u|ms|s|m|h`
/// (InfluxDB v1; `db` and `rp` are ignored).
async fn write_route(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(app, caller, parse_query(query.as_deref().unwrap_or("")), headers, body).await
}

/// The parameters of a query string (`a=1&b=x%20y`; `+` is a space). The last of repeated names wins.
pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                out.push(hex(b[i + 1]).unwrap_or(0) * 16 + hex(b[i + 2]).unwrap_or(0));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Line-protocol bodies may expand to at most this many bytes when gzipped.
pub const MAX_DECODED_BYTES: u64 = 256 << 20;

fn write_error(status: StatusCode, sqlstate: &str, message: impl Into<String>) -> Response {
    errors::error(Shape::Write, status, sqlstate, message)
}

async fn write(app: App, caller: Caller, query: HashMap<String, String>, headers: HeaderMap, body: Bytes) -> Response {
    if caller.role < Role::Writer {
        return write_error(
            StatusCode::FORBIDDEN,
            SqlState::InsufficientPrivilege.code(),
            format!(
                "permission denied: user \"{}\" has role {}, writes need role writer",
                caller.user,
                caller.role.name()
            ),
        );
    }
    let precision = match query.get("precision").map(String::as_str) {
        None | Some("") => Precision::Nanoseconds,
        Some(p) => match Precision::parse(p) {
            Some(p) => p,
            None => {
                return write_error(
                    StatusCode::BAD_REQUEST,
                    SqlState::InvalidParameter.code(),
                    format!("invalid precision \"{p}\" (ns, us, ms, s; /write also n, u, m, h)"),
                );
            }
        },
    };
    let gzip = match headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        None | Some("identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return write_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                SqlState::NotSupported.code(),
                format!("Content-Encoding \"{other}\" is not supported (gzip or identity)"),
            );
        }
    };
    let body = match decode_body(body, gzip).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let started = tokio::time::Instant::now();
    let written = crate::ingest::batch::write(&app.db, body, precision, caller.role >= Role::Admin, &app.dedup).await;
    app.metrics.line_protocol_seconds.observe(started.elapsed());
    app.metrics.line_protocol_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Ok(r) = &written {
        app.metrics.line_protocol_lines.fetch_add(r.points as u64, std::sync::atomic::Ordering::Relaxed);
        app.metrics.line_protocol_rejected.fetch_add(r.failed as u64, std::sync::atomic::Ordering::Relaxed);
    }
    match written {
        Ok(report) => {
            app.audit.write(&caller.user, caller.role, "line protocol", &report.tables, report.written);
            if report.failed == 0 {
                return StatusCode::NO_CONTENT.into_response();
            }
            let first = &report.failures[0];
            let message = format!(
                "partial write: {} of {} lines refused, {} rows written; line {}: {}",
                report.failed, report.points, report.written, first.line, first.message
            );
            let failures: Vec<Value> = report
                .failures
                .iter()
                .map(|f| json!({ "line": f.line, "sqlstate": f.sqlstate, "message": f.message }))
                .collect();
            let body = json!({
                "code": "invalid",
                "message": message,
                "sqlstate": first.sqlstate,
                "line": first.line,
                "written": report.written,
                "failed": report.failed,
                "errors": failures,
            });
            errors::with_json(StatusCode::BAD_REQUEST, body)
        }
        Err(e) if e.sqlstate() == SqlState::InvalidText.code() => {
            write_error(StatusCode::BAD_REQUEST, SqlState::InvalidText.code(), e.to_string())
        }
        Err(e) => {
            tracing::error!("line-protocol write failed: {e}");
            write_error(StatusCode::INTERNAL_SERVER_ERROR, e.sqlstate(), e.to_string())
        }
    }
}

/// The body, gunzipped when it says so.
async fn decode_body(body: Bytes, gzip: bool) -> Result<Bytes, Response> {
    if !gzip {
        return Ok(body);
    }
    let bad = |m: String| write_error(StatusCode::BAD_REQUEST, SqlState::InvalidText.code(), m);
    let r = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut out = Vec::with_capacity(body.len() * 4);
        flate2::read::MultiGzDecoder::new(&body[..]).take(MAX_DECODED_BYTES + 1).read_to_end(&mut out).map(|_| out)
    })
    .await;
    match r {
        Ok(Ok(b)) if b.len() as u64 > MAX_DECODED_BYTES => Err(write_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            SqlState::ProgramLimitExceeded.code(),
            format!("the body expands to more than {MAX_DECODED_BYTES} bytes"),
        )),
        Ok(Ok(b)) => Ok(Bytes::from(b)),
        Ok(Err(e)) => Err(bad(format!("the body is not valid gzip: {e}"))),
        Err(e) => Err(bad(format!("the body could not be decoded: {e}"))),
    }
}

/// Why the server is not ready, if it is not: shutting down, or the database refuses writes.
fn not_ready(app: &App) -> Option<String> {
    if !app.metrics.ready.load(std::sync::atomic::Ordering::Acquire) {
        return Some("the server is starting or shutting down".into());
    }
    app.db.engine().health().err()
}

/// `GET /health`: `{"status": "ok", "live": true, "ready": true}`; 503 when not ready.
async fn health(State(app): State<App>) -> Response {
    let problem = not_ready(&app);
    let status = if problem.is_none() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = json!({ "status": if problem.is_none() { "ok" } else { "unavailable" }, "live": true, "ready": problem.is_none() });
    if let Some(p) = problem {
        body["reason"] = json!(p);
    }
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `GET /health/live`: 200 while the process answers (a liveness probe).
async fn live() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"live\":true}").into_response()
}

/// `GET /health/ready`: 200 when the server takes queries and writes, else 503 (a readiness probe).
async fn ready(State(app): State<App>) -> Response {
    match not_ready(&app) {
        None => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"ready\":true}").into_response(),
        Some(reason) => {
            let body = json!({ "ready": false, "reason": reason });
            (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "application/json")], body.to_string())
                .into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text; the same samples as `SELECT * FROM system_metrics`. Open to any
/// authenticated user (with `trust`, to anyone).
async fn metrics(State(app): State<App>) -> Response {
    let engine = app.db.engine().clone();
    let m = app.metrics.clone();
    let text = match tokio::task::spawn_blocking(move || crate::ops::metrics::prometheus(&m.samples(&engine))).await {
        Ok(t) => t,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, SqlState::Internal.code(), e.to_string()),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// `GET /api/v1/status`: tables, rows, disk use and retention, as JSON.
async fn status(State(app): State<App>) -> Response {
    let engine = app.db.engine().clone();
    let metrics = app.metrics.clone();
    let body = tokio::task::spawn_blocking(move || status_json(&engine, &metrics)).await;
    match body {
        Ok(b) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], b.to_string()).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, SqlState::Internal.code(), e.to_string()),
    }
}

fn status_json(engine: &trafficdb::Engine, metrics: &ServerMetrics) -> Value {
    let time = |us: Option<i64>| {
        us.and_then(chrono::DateTime::from_timestamp_micros).map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
    };
    let tables = engine.table_status();
    let wal = engine.wal_bytes();
    let segment_bytes: u64 = tables.iter().map(|t| t.segment_bytes).sum();
    let tables: Vec<Value> = tables
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "time_column": t.time_column,
                "rows": t.segment_rows + t.memtable_rows,
                "unflushed_rows": t.memtable_rows,
                "partitions": t.partitions,
                "segments": t.segments,
                "disk_bytes": t.segment_bytes,
                "oldest": time(t.min_ts),
                "newest": time(t.max_ts),
                "retention": t.retention_us.map(trafficdb::types::format_duration_us),
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": metrics.uptime_seconds(),
        "ready": metrics.ready.load(std::sync::atomic::Ordering::Acquire),
        "connections": metrics.connections.active.load(std::sync::atomic::Ordering::Relaxed),
        "disk_bytes": segment_bytes + wal,
        "wal_bytes": wal,
        "tables": tables,
    })
}

fn error(status: StatusCode, sqlstate: &str, message: impl Into<String>) -> Response {
    errors::error(Shape::Api, status, sqlstate, message)
}

/// Who sent a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub role: Role,
}

/// The user and password a request carries: HTTP Basic, `Authorization: Token user:password` (what
/// InfluxDB v2 clients send), or the `u` and `p` query parameters (InfluxDB v1 clients).
fn credentials(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<(String, String)> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let pair = if let Some(b) = auth.and_then(|v| v.strip_prefix("Basic ")) {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()?).ok()?
    } else if let Some(t) = auth.and_then(|v| v.strip_prefix("Token ")) {
        t.trim().to_string()
    } else if let (Some(u), Some(p)) = (query.get("u"), query.get("p")) {
        return Some((u.clone(), p.clone()));
    } else {
        return None;
    };
    let (user, password) = pair.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The caller, or the 401 to send. With `trust`, a named user listed in the configuration has its
/// role and anyone else `trust_role`.
async fn authenticate(app: &App, headers: &HeaderMap, query: &HashMap<String, String>) -> Result<Caller, Response> {
    let given = credentials(headers, query);
    if app.config.auth == AuthMode::Trust {
        let user = given.map(|(u, _)| u).unwrap_or_default();
        let role = app.config.user(&user).map_or(app.config.trust_role, |u| u.role);
        return Ok(Caller { user, role });
    }
    let refuse = |user: &str| {
        app.audit.auth_failed(user, "http");
        let mut r = error(StatusCode::UNAUTHORIZED, SqlState::InvalidPassword.code(), "password authentication failed");
        // The console asks for credentials in its own form: no browser dialog for its requests.
        if !headers.contains_key("x-trafficdb-console") {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Basic realm=\"trafficdb\"".parse().expect("valid header"));
        }
        r
    };
    let Some((user, password)) = given else { return Err(refuse("")) };
    let (config, name, password) = (app.config.clone(), user.clone(), password);
    // The key derivation is deliberately slow: off the async threads, and done for unknown users too,
    // so the time taken does not tell which users exist.
    let verified = tokio::task::spawn_blocking(move || match config.user(&name).and_then(|u| u.password.as_ref()) {
        Some(secret) => secret.verify(&name, &password),
        None => {
            let _ = Secret::scram_with(&password, b"trafficdb-no-user", SCRAM_ITERATIONS);
            false
        }
    })
    .await
    .unwrap_or(false);
    match app.config.user(&user) {
        Some(u) if verified => Ok(Caller { user, role: u.role }),
        _ => Err(refuse(&user)),
    }
}

/// The body: `{"rows": [row, ...], "model": "retry", "version": 3}` (model and version optional), a
/// JSON array of rows, or one row; a row is an object keyed by feature name or an array in feature
/// order. The answer: `{"model": ..., "version": ..., "probabilities": [...]}`.
async fn predict(State(app): State<App>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, SqlState::InvalidText.code(), format!("the body is not JSON: {e}"));
        }
    };
    let (rows, name, version) = match body {
        Value::Array(rows) => (rows, "retry".to_string(), None),
        Value::Object(mut o) if o.contains_key("rows") => {
            let name = match o.remove("model") {
                None | Some(Value::Null) => "retry".to_string(),
                Some(Value::String(s)) => s,
                Some(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        SqlState::InvalidParameter.code(),
                        "\"model\" must be a string",
                    );
                }
            };
            let version = match o.remove("version") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64().and_then(|v| u32::try_from(v).ok()).filter(|&v| v > 0) {
                    Some(v) => Some(v),
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            SqlState::InvalidParameter.code(),
                            "\"version\" must be a positive integer",
                        );
                    }
                },
            };
            if let Some(extra) = o.keys().find(|k| k.as_str() != "rows") {
                return error(
                    StatusCode::BAD_REQUEST,
                    SqlState::InvalidParameter.code(),
                    format!("unknown field \"{extra}\" (rows, model, version)"),
                );
            }
            match o.remove("rows") {
                Some(Value::Array(rows)) => (rows, name, version),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        SqlState::InvalidParameter.code(),
                        "\"rows\" must be an array of rows",
                    );
                }
            }
        }
        row @ Value::Object(_) => (vec![row], "retry".to_string(), None),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                SqlState::InvalidParameter.code(),
                "the body must be a row, an array of rows, or {\"rows\": [...]}",
            );
        }
    };
    let model = match app.db.models().resolve(&name, version) {
        Ok(m) => m,
        Err(e) => return sql_failure(&e),
    };
    let scored = tokio::task::spawn_blocking(move || {
        let p = trafficdb_udfs::model::sql::predict_json(&model, &rows);
        (model, p)
    })
    .await;
    let Ok((model, scored)) = scored else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, SqlState::Internal.code(), "the prediction task failed");
    };
    match scored {
        Ok(p) => {
            let body = json!({ "model": model.name, "version": model.version, "probabilities": p });
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
        Err(e) => sql_failure(&e),
    }
}

/// A model function's error as an HTTP answer: unknown model or version 404, bad input 400.
fn sql_failure(e: &datafusion::error::DataFusionError) -> Response {
    let found = match e {
        datafusion::error::DataFusionError::External(inner) => inner.downcast_ref::<SqlError>(),
        _ => None,
    };
    match found {
        Some(SqlError { code, message }) => {
            let status = if *code == SqlState::UndefinedObject {
                StatusCode::NOT_FOUND
            } else if code.code().starts_with("22") {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            error(status, code.code(), message.clone())
        }
        None => error(StatusCode::INTERNAL_SERVER_ERROR, SqlState::Internal.code(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let q = parse_query("db=my%20db&precision=s&u=a+b&p=p%3D1%25&flag&bad=%zz%4");
        assert_eq!(q["db"], "my db");
        assert_eq!(q["precision"], "s");
        assert_eq!(q["u"], "a b");
        assert_eq!(q["p"], "p=1%");
        assert_eq!(q["flag"], "");
        assert_eq!(q["bad"], "%zz%4");
        assert!(parse_query("").is_empty());
    }
}
