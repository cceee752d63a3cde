//! Alert webhooks: each firing or resolving is POSTed as JSON to the rule's `webhook` (plain
//! `http://host[:port]/path`; put a proxy in front of an HTTPS receiver), retried with exponential
//! backoff (1, 2, 4, 8 s) until the receiver answers 2xx or five attempts have failed. Delivery never
//! holds up evaluation, and the events are in `alert_events` whatever happens to the POST.

use std::time::Duration;

/// Attempts per event.
pub const ATTEMPTS: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The body of a webhook call.
pub fn body(e: &trafficdb::alert::Event) -> String {
    let ts = chrono::DateTime::from_timestamp_micros(e.ts_us)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default();
    let details: serde_json::Value = serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "alert": e.alert, "state": e.state, "key": e.key, "value": e.value, "ts": ts, "details": details,
    })
    .to_string()
}

/// A webhook URL checked: `http://host[:port]/path` with nothing else (no user info, fragments or
/// bytes an HTTP request line cannot hold), parsed by the `http` crate's URI parser.
fn parse(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("webhook {url:?}: not a URL ({e})"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("webhook {url}: only http:// URLs are supported"));
    }
    let authority = uri.authority().ok_or_else(|| format!("webhook {url}: no host"))?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(format!("webhook {url:?}: not a plain http://host[:port]/path URL"));
    }
    Ok(uri)
}

/// One POST; `Ok` for a 2xx answer. The request is built by the `http` crate and written by hyper's
/// HTTP/1 client, never by formatting text.
async fn post(url: &str, body: &str) -> Result<(), String> {
    use http_body_util::{BodyExt, Full};
    let uri = parse(url)?;
    let authority = uri.authority().cloned().ok_or_else(|| format!("webhook {url}: no host"))?;
    let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
    let request = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "trafficdb")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .map_err(|e| format!("webhook {url}: {e}"))?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(&address).await.map_err(|e| format!("connect {address}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        let driver = tokio::spawn(connection);
        let answer = sender.send_request(request).await.map_err(|e| format!("send: {e}"))?;
        let status = answer.status();
        // Read the answer to its end so the connection closes cleanly.
        let _ = answer.into_body().collect().await;
        driver.abort();
        if status.is_success() { Ok(()) } else { Err(format!("HTTP {}", status.as_u16())) }
    };
    tokio::time::timeout(TIMEOUT, attempt).await.map_err(|_| "timed out".to_string())?
}

/// POSTs `body` to `url`, retrying with backoff; returns the attempts made, or the last error.
pub async fn deliver(url: &str, body: &str, first_backoff: Duration) -> Result<u32, String> {
    let mut wait = first_backoff;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match post(url, body).await {
            Ok(()) => return Ok(attempt),
            Err(e) => last = e,
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    Err(format!("webhook {url}: {ATTEMPTS} attempts failed; last: {last}"))
}

/// Sends the events that have a webhook, each in a task of its own.
pub fn send_all(events: Vec<trafficdb::alert::Event>) {
    for e in events {
        let Some(url) = e.webhook.clone() else { continue };
        let body = body(&e);
        tokio::spawn(async move {
            if let Err(err) = deliver(&url, &body, Duration::from_secs(1)).await {
                tracing::warn!("alert \"{}\" ({}): {err}", e.alert, e.state);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let parts = |u: &str| {
            let uri = parse(u).unwrap();
            (uri.authority().unwrap().as_str().to_string(), uri.path().to_string())
        };
        assert_eq!(parts("http://hooks:8080/a/b"), ("hooks:8080".into(), "/a/b".into()));
        assert_eq!(parts("http://hooks"), ("hooks".into(), "/".into()));
        assert!(parse("https://hooks/x").unwrap_err().contains("only http://"));
        assert!(parse("http:///x").is_err());
        // Nothing that could end the request line or add a header.
        for bad in ["http://h/x\r\nX-Evil: 1", "http://h\r\n/x", "http://h/a b", "http://h@evil/x", "http://h/\u{7f}"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
