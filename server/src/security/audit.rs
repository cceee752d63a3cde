//! The audit log (optional, `[audit] path = ...`): one JSON object per line for each connection,
//! failed authentication, DDL statement and write, with the user and role. The file is rotated when it
//! would pass `max_bytes`: `audit.log` becomes `audit.log.1`, `.1` becomes `.2`, and the oldest beyond
//! `max_files` is removed. Passwords never reach it (statements are logged; credentials are not).
//!
//! ```text
//! {"ts":"2026-12-01T10:00:00.123456Z","event":"connect","user":"grafana","role":"reader","client":"127.0.0.1:51234"}
//! {"ts":"2026-12-01T10:00:01.002000Z","event":"ddl","user":"admin","role":"admin","statement":"DROP VIEW v"}
//! {"ts":"2026-12-01T10:00:02.000000Z","event":"write","user":"telegraf","role":"writer","via":"line protocol","tables":["lb_targets"],"rows":10000}
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::security::roles::Role;

/// Where audit events go; [`Audit::disabled`] drops them.
#[derive(Debug)]
pub struct Audit {
    out: Option<Mutex<Output>>,
}

#[derive(Debug)]
struct Output {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: usize,
}

impl Audit {
    pub fn disabled() -> Audit {
        Audit { out: None }
    }

    /// Appends to `path` (created with its directory if missing), rotating at `max_bytes` and keeping
    /// `max_files` rotated files.
    pub fn open(path: &Path, max_bytes: u64, max_files: usize) -> anyhow::Result<Audit> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Audit {
            out: Some(Mutex::new(Output {
                path: path.to_path_buf(),
                file,
                size,
                max_bytes: max_bytes.max(1),
                max_files,
            })),
        })
    }

    pub fn enabled(&self) -> bool {
        self.out.is_some()
    }

    fn record(&self, event: &str, user: &str, role: Option<Role>, mut fields: Value) {
        let Some(out) = &self.out else { return };
        let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let mut entry = json!({ "ts": ts, "event": event, "user": user });
        if let Some(r) = role {
            entry["role"] = json!(r.name());
        }
        if let (Some(e), Some(f)) = (entry.as_object_mut(), fields.as_object_mut()) {
            e.append(f);
        }
        let mut line = entry.to_string();
        line.push('\n');
        let mut out = out.lock();
        if let Err(e) = out.write(line.as_bytes()) {
            tracing::error!("cannot write the audit log {}: {e}", out.path.display());
        }
    }

    /// A client connected and authenticated.
    pub fn connected(&self, user: &str, role: Role, client: &str) {
        self.record("connect", user, Some(role), json!({ "client": client }));
    }

    /// A client failed to authenticate (`via`: the PostgreSQL port or HTTP).
    pub fn auth_failed(&self, user: &str, via: &str) {
        self.record("auth_failed", user, None, json!({ "via": via }));
    }

    /// A statement that changes the schema or data (`kind`: `ddl` or `write`).
    pub fn statement(&self, user: &str, role: Role, kind: &str, statement: &str) {
        self.record(kind, user, Some(role), json!({ "statement": statement }));
    }

    /// A statement refused for the session's role (`need`: the role it needs).
    pub fn refused(&self, user: &str, role: Role, need: Role, statement: &str) {
        self.record("refused", user, Some(role), json!({ "needs": need.name(), "statement": statement }));
    }

    /// The role check of a statement, wherever it arrives: refused (recorded, and the message for the
    /// client returned) when `user`'s role `have` is below `need`; recorded when it writes or changes
    /// the schema and `record` is set. `statement` is written out only for the log.
    pub fn permit(
        &self,
        user: &str,
        have: Role,
        need: Role,
        statement: impl Fn() -> String,
        record: bool,
    ) -> Result<(), String> {
        if have < need {
            self.refused(user, have, need, &statement());
            return Err(format!(
                "permission denied: user \"{user}\" has role {}, this statement needs role {}",
                have.name(),
                need.name()
            ));
        }
        if record && self.enabled() && need > Role::Reader {
            let kind = if need == Role::Admin { "ddl" } else { "write" };
            self.statement(user, have, kind, &statement());
        }
        Ok(())
    }

    /// Rows written other than by a statement (line protocol).
    pub fn write(&self, user: &str, role: Role, via: &str, tables: &[String], rows: u64) {
        if self.out.is_some() {
            self.record("write", user, Some(role), json!({ "via": via, "tables": tables, "rows": rows }));
        }
    }
}

fn open_append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open the audit log {}: {e}", path.display()))
}

impl Output {
    fn write(&mut self, line: &[u8]) -> anyhow::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> anyhow::Result<()> {
        let rotated = |n: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.max_files == 0 {
            std::fs::remove_file(&self.path).ok();
        } else {
            std::fs::remove_file(rotated(self.max_files)).ok();
            for n in (1..self.max_files).rev() {
                let from = rotated(n);
                if from.exists() {
                    std::fs::rename(&from, rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.log");
        let audit = Audit::open(&path, 300, 2).unwrap();
        for i in 0..20 {
            audit.statement("admin", Role::Admin, "ddl", &format!("CREATE TABLE t{i} (x INT)"));
        }
        audit.auth_failed("mallory", "postgres");
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let current = read(&path);
        assert!(current.len() <= 300, "{current}");
        assert!(current.contains("\"event\":\"auth_failed\"") && current.contains("mallory"), "{current}");
        let one = path.with_file_name("audit.log.1");
        let two = path.with_file_name("audit.log.2");
        assert!(read(&one).contains("CREATE TABLE"));
        assert!(two.exists());
        assert!(!path.with_file_name("audit.log.3").exists());
        // Every line is one JSON object with the fields that identify who did what.
        for line in read(&one).lines().chain(read(&two).lines()) {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["user"], "admin");
            assert_eq!(v["role"], "admin");
            assert_eq!(v["event"], "ddl");
            assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        }
        // The newest events are in the current file: t19 was written last before the failure.
        assert!(current.contains("t19") || read(&one).contains("t19"));
        // Reopening appends to the same file.
        drop(audit);
        let audit = Audit::open(&path, 300, 2).unwrap();
        audit.connected("grafana", Role::Reader, "127.0.0.1:5000");
        assert!(read(&path).contains("grafana") || read(&one).contains("grafana"));
    }

    #[test]
    fn disabled_writes_nothing() {
        let a = Audit::disabled();
        assert!(!a.enabled());
        a.auth_failed("x", "http");
    }
}
