//! Alert webhooks: each firing or resolving is POSTed as JSON to the rule's `webhook` (plain
//! `http://host[:port]/path`; put a proxy in front of an HTTPS receiver), retried with exponential
//! backoff (1, 2, 4, 8 s) until the receiver answers 2xx or five attempts have failed. Delivery never
//! holds up evaluation, and the events are in `alert_events` whatever happens to the POST.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// `host:port` and path of an `http://` URL.
fn parse(url: &str) -> Result<(String, String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("webhook {url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("webhook {url}: no host"));
    }
    // The parts go into the request line and the Host header: nothing but a host name or address
    // with a port, and a path of visible ASCII (no CR / LF, spaces or controls that could add headers).
    let host_ok =
        authority.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
    let path_ok = path.bytes().all(|b| b.is_ascii_graphic());
    if !host_ok || !path_ok {
        return Err(format!("webhook {url:?}: not a plain http://host[:port]/path URL"));
    }
    let address = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    Ok((address, authority.to_string(), path.to_string()))
}

/// One POST; `Ok` for a 2xx answer.
async fn post(url: &str, body: &str) -> Result<(), String> {
    let (address, host, path) = parse(url)?;
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(&address).await.map_err(|e| format!("connect {address}: {e}"))?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             User-Agent: trafficdb\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.map_err(|e| format!("read: {e}"))?;
        let status = String::from_utf8_lossy(answer.get(9..12).unwrap_or_default()).to_string();
        if status.starts_with('2') { Ok(()) } else { Err(format!("HTTP {status}")) }
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
        assert_eq!(parse("http://hooks:8080/a/b").unwrap(), ("hooks:8080".into(), "hooks:8080".into(), "/a/b".into()));
        assert_eq!(parse("http://hooks").unwrap(), ("hooks:80".into(), "hooks".into(), "/".into()));
        assert!(parse("https://hooks/x").unwrap_err().contains("only http://"));
        assert!(parse("http:///x").is_err());
        // Nothing that could end the request line or add a header.
        for bad in ["http://h/x\r\nX-Evil: 1", "http://h\r\n/x", "http://h/a b", "http://h@evil/x", "http://h/\u{7f}"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
