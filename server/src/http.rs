//! The HTTP listener (`--http`): `GET /health`, and `POST /v1/predict/retry`, which scores feature rows
//! given as JSON with the same model, validation and kernel as `predict_retry` in SQL.
//!
//! With `auth = "password"` every request needs HTTP Basic credentials of a configured user (checked
//! against the same SCRAM or MD5 verifiers as the PostgreSQL port); with `trust` none are asked for.
//! The listener speaks plain HTTP: keep it on loopback, or behind a TLS-terminating proxy.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use trafficdb::Database;
use trafficdb_udfs::SqlError;

use crate::auth::{SCRAM_ITERATIONS, Secret};
use crate::config::{AuthMode, ServerConfig};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 16 << 20;

#[derive(Clone)]
struct App {
    db: Arc<Database>,
    config: Arc<ServerConfig>,
}

/// The routes, over `db`.
pub fn router(db: Arc<Database>, config: Arc<ServerConfig>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/predict/retry", post(predict))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(App { db, config })
}

async fn health() -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"status\":\"ok\"}")
}

fn error(status: StatusCode, sqlstate: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": message.into(), "sqlstate": sqlstate });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `None` when the request may go on; else the 401 to send.
async fn authenticate(app: &App, headers: &HeaderMap) -> Option<Response> {
    if app.config.auth == AuthMode::Trust {
        return None;
    }
    let refuse = || {
        let mut r = error(StatusCode::UNAUTHORIZED, "28P01", "password authentication failed");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, "Basic realm=\"trafficdb\"".parse().expect("valid header"));
        Some(r)
    };
    let Some(credentials) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.trim()).ok())
        .and_then(|v| String::from_utf8(v).ok())
    else {
        return refuse();
    };
    let Some((user, password)) = credentials.split_once(':') else { return refuse() };
    let (config, user, password) = (app.config.clone(), user.to_string(), password.to_string());
    // The key derivation is deliberately slow: off the async threads, and done for unknown users too,
    // so the time taken does not tell which users exist.
    let verified = tokio::task::spawn_blocking(move || match config.user(&user).and_then(|u| u.password.as_ref()) {
        Some(secret) => secret.verify(&user, &password),
        None => {
            let _ = Secret::scram_with(&password, b"trafficdb-no-user", SCRAM_ITERATIONS);
            false
        }
    })
    .await
    .unwrap_or(false);
    if verified { None } else { refuse() }
}

/// The body: `{"rows": [row, ...], "model": "retry", "version": 3}` (model and version optional), a
/// JSON array of rows, or one row; a row is an object keyed by feature name or an array in feature
/// order. The answer: `{"model": ..., "version": ..., "probabilities": [...]}`.
async fn predict(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = authenticate(&app, &headers).await {
        return refused;
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "22P02", format!("the body is not JSON: {e}")),
    };
    let (rows, name, version) = match body {
        Value::Array(rows) => (rows, "retry".to_string(), None),
        Value::Object(mut o) if o.contains_key("rows") => {
            let name = match o.remove("model") {
                None | Some(Value::Null) => "retry".to_string(),
                Some(Value::String(s)) => s,
                Some(_) => return error(StatusCode::BAD_REQUEST, "22023", "\"model\" must be a string"),
            };
            let version = match o.remove("version") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64().and_then(|v| u32::try_from(v).ok()).filter(|&v| v > 0) {
                    Some(v) => Some(v),
                    None => return error(StatusCode::BAD_REQUEST, "22023", "\"version\" must be a positive integer"),
                },
            };
            if let Some(extra) = o.keys().find(|k| k.as_str() != "rows") {
                return error(
                    StatusCode::BAD_REQUEST,
                    "22023",
                    format!("unknown field \"{extra}\" (rows, model, version)"),
                );
            }
            match o.remove("rows") {
                Some(Value::Array(rows)) => (rows, name, version),
                _ => return error(StatusCode::BAD_REQUEST, "22023", "\"rows\" must be an array of rows"),
            }
        }
        row @ Value::Object(_) => (vec![row], "retry".to_string(), None),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "22023",
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
        return error(StatusCode::INTERNAL_SERVER_ERROR, "XX000", "the prediction task failed");
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
            let status = if *code == trafficdb_udfs::model::UNDEFINED_OBJECT {
                StatusCode::NOT_FOUND
            } else if code.starts_with("22") {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            error(status, code, message.clone())
        }
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "XX000", e.to_string()),
    }
}
