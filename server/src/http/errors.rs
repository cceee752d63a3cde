//! Every error the HTTP listener answers is built here ([`error`]), in one of two JSON shapes, both
//! with the SQLSTATE a PostgreSQL client would get; internal errors are masked (see
//! [`crate::ops::incident`]).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use trafficdb::SqlState;

/// The shape of an error body.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// InfluxDB's write API (`/write`, `/api/v2/write`): `{"code": "invalid", "message": ...}`, what
    /// Telegraf and the InfluxDB client libraries read.
    Write,
    /// The rest of the API: `{"error": ...}`.
    Api,
}

/// An error answer: `status`, the SQLSTATE `sqlstate` and `message` in `shape`. A server error
/// with SQLSTATE XX000 is internal: logged, and answered with its number only.
pub fn error(shape: Shape, status: StatusCode, sqlstate: &str, message: impl Into<String>) -> Response {
    let mut message = message.into();
    if status.is_server_error() && sqlstate == SqlState::Internal.code() {
        message = crate::ops::incident::internal_message(&message);
    }
    let body = match shape {
        Shape::Write => json!({ "code": influx_code(status), "message": message, "sqlstate": sqlstate }),
        Shape::Api => json!({ "error": message, "sqlstate": sqlstate }),
    };
    with_json(status, body)
}

/// A JSON answer.
pub fn with_json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// InfluxDB's error code for an HTTP status.
fn influx_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not found",
        StatusCode::PAYLOAD_TOO_LARGE => "request too large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported media type",
        s if s.is_server_error() => "internal error",
        _ => "invalid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn both_shapes_carry_the_sqlstate_and_internal_errors_are_masked() {
        let r = error(Shape::Write, StatusCode::FORBIDDEN, "42501", "permission denied");
        assert_eq!(body(r).await, json!({ "code": "forbidden", "message": "permission denied", "sqlstate": "42501" }));
        let r = error(Shape::Api, StatusCode::BAD_REQUEST, "22P02", "the body is not JSON");
        assert_eq!(body(r).await, json!({ "error": "the body is not JSON", "sqlstate": "22P02" }));
        let r = error(Shape::Api, StatusCode::INTERNAL_SERVER_ERROR, "XX000", "task 7 panicked at src/x.rs:12");
        let b = body(r).await;
        assert!(b["error"].as_str().unwrap().starts_with("internal error #"), "{b}");
        // An I/O failure is the environment's, not a bug: its text stays.
        let r = error(Shape::Write, StatusCode::INTERNAL_SERVER_ERROR, "58030", "No space left on device");
        assert_eq!(body(r).await["message"], "No space left on device");
    }
}
