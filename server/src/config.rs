//! The server's configuration: a TOML file (`--config FILE`), every setting of `[server]` overridable
//! on the command line or by a `TRAFFICDB_*` environment variable, and the users with their roles and
//! password hashes. See `docs/server.md` for the file format.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{Role, Secret};

/// Everything `trafficdb serve` needs besides the database itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address for PostgreSQL clients.
    pub listen: String,
    /// Address for HTTP (`/health`, `/v1/predict/retry`); none by default.
    pub http: Option<String>,
    /// `trust` (every client is who it says it is) or `password` (SCRAM-SHA-256, or MD5 for users whose
    /// stored hash is MD5).
    pub auth: AuthMode,
    /// The role of users not listed in `[[users]]` when `auth = "trust"`.
    pub trust_role: Role,
    /// Connections beyond this are refused with SQLSTATE 53300.
    pub max_connections: usize,
    /// Statements running longer are cancelled with SQLSTATE 57014; `0` means no limit. A session may
    /// change it with `SET statement_timeout`.
    #[serde(deserialize_with = "de_duration")]
    pub statement_timeout: Duration,
    /// Memory one connection's query may hold in operators that track it (sorts, aggregations, joins)
    /// before it fails with SQLSTATE 53200; `0` means no limit.
    #[serde(deserialize_with = "de_bytes")]
    pub query_memory_limit: u64,
    /// PEM certificate chain and private key; with both, clients may (and `require_tls` makes them)
    /// use TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not use TLS (SQLSTATE 28000).
    pub require_tls: bool,
    /// Users and their roles (see [`UserConfig`]).
    pub users: Vec<UserConfig>,
    /// The `[audit]` section.
    #[serde(skip)]
    pub audit: AuditConfig,
}

/// `[audit]`: the audit log, off unless `path` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The log file; rotated files get `.1`, `.2`, ... appended.
    pub path: Option<PathBuf>,
    /// Rotate before the file passes this size.
    #[serde(deserialize_with = "de_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept.
    pub max_files: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { path: None, max_bytes: 100 << 20, max_files: 10 }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:5432".into(),
            http: None,
            auth: AuthMode::Trust,
            trust_role: Role::Admin,
            max_connections: 100,
            statement_timeout: Duration::ZERO,
            query_memory_limit: 4 << 30,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            users: Vec::new(),
            audit: AuditConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Trust,
    Password,
}

/// One `[[users]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub role: Role,
    /// A SCRAM-SHA-256 verifier (`SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey`, as PostgreSQL
    /// stores it) or an MD5 hash (`md5` + hex, as PostgreSQL stores it); `trafficdb passwd` makes one.
    /// Never the password itself.
    #[serde(default, deserialize_with = "de_secret")]
    pub password: Option<Secret>,
}

/// The file as a whole: `[server]` and `[[users]]`; other sections belong to other parts of trafficdb.
#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    users: Vec<UserConfig>,
    #[serde(default)]
    audit: AuditConfig,
}

impl ServerConfig {
    /// Reads `path`; unknown settings in `[server]` and `[[users]]` are errors, so that a typo does not
    /// silently leave a default in place.
    pub fn load(path: &Path) -> anyhow::Result<ServerConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<ServerConfig> {
        let file: File = toml::from_str(text)?;
        let mut config = file.server;
        config.users.extend(file.users);
        config.audit = file.audit;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: TLS files come in pairs, user names are unique, password mode has
    /// users with passwords.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            anyhow::bail!("tls_cert and tls_key must be given together");
        }
        if self.require_tls && self.tls_cert.is_none() {
            anyhow::bail!("require_tls needs tls_cert and tls_key");
        }
        let mut names = std::collections::HashSet::new();
        for u in &self.users {
            if !names.insert(u.name.as_str()) {
                anyhow::bail!("user \"{}\" is listed twice", u.name);
            }
        }
        if self.auth == AuthMode::Password && !self.users.iter().any(|u| u.password.is_some()) {
            anyhow::bail!("auth = \"password\" needs at least one [[users]] entry with a password hash");
        }
        if self.max_connections == 0 {
            anyhow::bail!("max_connections must be at least 1");
        }
        Ok(())
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// Parses `0`, `500ms`, `30s`, `5min`, `1h` (a bare number is milliseconds, as in PostgreSQL).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let t = s.trim();
    if let Ok(ms) = t.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    let us = trafficdb::types::parse_duration_us(t).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Duration::from_micros(us as u64))
}

/// Parses `0`, `1048576`, `512MiB`, `4GB`, `2g` into bytes (powers of 1024 whatever the spelling, as
/// PostgreSQL's memory settings).
pub fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| anyhow::anyhow!("invalid size \"{s}\": expected e.g. 512MiB or 4GiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => anyhow::bail!("invalid size \"{s}\": unknown unit \"{unit}\" (use B, kB, MB, GB, TB)"),
    };
    n.checked_mul(mult).ok_or_else(|| anyhow::anyhow!("invalid size \"{s}\": too large"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(u64),
    Text(String),
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(ms) => Ok(Duration::from_millis(ms)),
        NumOrText::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

fn de_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => Ok(n),
        NumOrText::Text(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

fn de_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<Secret>().map(Some).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let c = ServerConfig::parse(
            r#"
            [server]
            listen = "127.0.0.1:6543"
            auth = "password"
            max_connections = 5
            statement_timeout = "30s"
            query_memory_limit = "512MiB"

            [[users]]
            name = "ops"
            role = "reader"
            password = "md5a3556571e93b0d20722ba62be61e8c2d"
            "#,
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:6543");
        assert_eq!(c.auth, AuthMode::Password);
        assert_eq!(c.statement_timeout, Duration::from_secs(30));
        assert_eq!(c.query_memory_limit, 512 << 20);
        assert_eq!(c.user("ops").unwrap().role, Role::Reader);
    }

    #[test]
    fn refuses_typos_plain_passwords_and_half_tls() {
        assert!(ServerConfig::parse("[server]\nlisten_addr = \"x\"").is_err());
        let plain = "[[users]]\nname = \"a\"\nrole = \"admin\"\npassword = \"hunter2\"";
        let err = ServerConfig::parse(plain).unwrap_err().to_string();
        assert!(err.contains("trafficdb passwd"), "{err}");
        assert!(ServerConfig::parse("[server]\ntls_cert = \"a.pem\"").is_err());
        assert!(ServerConfig::parse("[server]\nauth = \"password\"").is_err());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("0").unwrap(), 0);
        assert_eq!(parse_bytes("4GB").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("64 kB").unwrap(), 64 << 10);
        assert!(parse_bytes("12 parsecs").is_err());
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2min").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
    }
}
