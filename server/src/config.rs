//! The configuration: one TOML file (`--config FILE`) with `[server]`, `[storage]`, `[audit]` and
//! `[[users]]`. Every setting can be overridden by an environment variable (`TRAFFICDB_<KEY>` for
//! `[server]`, `TRAFFICDB_<SECTION>_<KEY>` for the others; see [`OPTIONS`]), and the `[server]` ones on
//! the command line too. `docs/configuration.md` lists them all; a test checks that it does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use trafficdb::shard::{Owns, ShardRule};

use crate::security::roles::Role;
use crate::security::secret::Secret;

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
    /// Authenticated connections beyond this are refused with SQLSTATE 53300 (a slot is taken when a
    /// connection has authenticated, not before).
    pub max_connections: usize,
    /// HTTP connections held at once; more wait to be accepted until one closes.
    pub max_http_connections: usize,
    /// Connections still starting up or authenticating beyond this are closed as soon as they are
    /// accepted, so idle or slow clients cannot hold the server's sockets.
    pub max_pending_connections: usize,
    /// A client that has not finished TLS negotiation, startup and authentication in this long is
    /// disconnected.
    #[serde(deserialize_with = "de_duration")]
    pub authentication_timeout: Duration,
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
    /// The `[storage]` section.
    #[serde(skip)]
    pub storage: StorageConfig,
    /// The `[cluster]` section.
    #[serde(skip)]
    pub cluster: ClusterConfig,
}

/// `[cluster]`: this server as the coordinator of workers that run its queries' stages
/// (docs/scale-out.md). Off unless `workers` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The workers' URLs (`http://host:port` of `trafficdb worker --listen`), a list or one
    /// comma-separated string.
    #[serde(deserialize_with = "de_list")]
    pub workers: Vec<String>,
    /// Address of this server's own worker service: the workers read the results of the stages it
    /// runs from it.
    pub listen: String,
    /// The URL workers reach that service by [default: `http://` and the address bound].
    pub advertise: Option<String>,
    /// A table scan runs as one task per this many rows, at most one per worker.
    pub rows_per_task: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            workers: Vec::new(),
            listen: "127.0.0.1:0".into(),
            advertise: None,
            rows_per_task: trafficdb::cluster::ClusterOptions::default().rows_per_task as u64,
        }
    }
}

/// `[storage]`: when memtables are flushed and segments compacted (the engine's [`trafficdb::Options`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Flush when the memtables hold this much.
    #[serde(deserialize_with = "de_bytes")]
    pub flush_bytes: u64,
    /// Flush when the oldest unflushed row has waited this long.
    #[serde(deserialize_with = "de_duration")]
    pub flush_interval: Duration,
    /// Writers wait for a flush beyond this (backpressure).
    #[serde(deserialize_with = "de_bytes")]
    pub max_memtable_bytes: u64,
    /// Compact a partition once it has this many small segments.
    pub compaction_min_segments: usize,
    /// Segments of at least this many rows are left alone by compaction.
    pub compaction_max_rows: u64,
    /// An object store URL (`file:///absolute/path`): sealed segments are put there before the catalog
    /// names them, and the catalog after each commit (docs/scale-out.md).
    pub object_store: Option<String>,
    /// This writer's shard of `object_store` (it then writes under `<object_store>/shards/<shard>`);
    /// without one, the node reads the shards published under `object_store` with its own rows.
    pub shard: Option<String>,
    /// The column that routes a row to its shard.
    pub shard_key: String,
    /// The key values this shard owns (a list or one comma-separated string)...
    #[serde(deserialize_with = "de_list")]
    pub shard_values: Vec<String>,
    /// ...or `"i/n"`: the keys whose CRC-32 modulo n is i.
    pub shard_hash: Option<String>,
    /// Bytes of segments fetched from other shards kept on local disk.
    #[serde(deserialize_with = "de_bytes")]
    pub cache_size: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let o = trafficdb::Options::default();
        StorageConfig {
            flush_bytes: o.flush_bytes as u64,
            flush_interval: o.flush_interval,
            max_memtable_bytes: o.max_memtable_bytes as u64,
            compaction_min_segments: o.compaction_min_segments,
            compaction_max_rows: o.compaction_max_rows,
            object_store: None,
            shard: None,
            shard_key: "lb".into(),
            shard_values: Vec::new(),
            shard_hash: None,
            cache_size: o.cache_bytes,
        }
    }
}

impl StorageConfig {
    /// The shard this writer owns, if `shard` is set.
    pub fn shard_rule(&self) -> anyhow::Result<Option<ShardRule>> {
        let Some(name) = &self.shard else {
            if !self.shard_values.is_empty() || self.shard_hash.is_some() {
                anyhow::bail!("[storage] shard_values and shard_hash need shard (this writer's shard name)");
            }
            return Ok(None);
        };
        let owns = match (&self.shard_hash, self.shard_values.is_empty()) {
            (Some(h), true) => {
                let parsed =
                    h.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
                let Some((index, of)) = parsed else {
                    anyhow::bail!("[storage] shard_hash = \"{h}\": expected \"i/n\", such as \"0/2\"");
                };
                Owns::Hash { of, index }
            }
            (None, false) => Owns::Values(self.shard_values.clone()),
            _ => anyhow::bail!("[storage] shard \"{name}\" needs one of shard_values or shard_hash"),
        };
        let rule = ShardRule { name: name.clone(), key: self.shard_key.clone(), owns };
        rule.validate()?;
        Ok(Some(rule))
    }

    /// The engine's options; opens the object store when one is configured.
    pub fn options(&self) -> anyhow::Result<trafficdb::Options> {
        let shard = self.shard_rule()?;
        let url = match (&self.object_store, &shard) {
            (Some(url), Some(rule)) => Some(rule.store_url(url)),
            (Some(url), None) => Some(url.clone()),
            (None, Some(_)) => anyhow::bail!("[storage] shard needs object_store (the prefix the shards share)"),
            (None, None) => None,
        };
        let store = url.as_deref().map(trafficdb::store::ObjectStorage::open).transpose()?;
        Ok(trafficdb::Options {
            shard,
            cache_bytes: self.cache_size,
            flush_bytes: self.flush_bytes as usize,
            flush_interval: self.flush_interval,
            max_memtable_bytes: self.max_memtable_bytes as usize,
            compaction_min_segments: self.compaction_min_segments,
            compaction_max_rows: self.compaction_max_rows,
            store,
            ..trafficdb::Options::default()
        })
    }
}

/// Every setting: (section, key). Its environment variable is [`env_name`].
pub const OPTIONS: &[(&str, &str)] = &[
    ("server", "listen"),
    ("server", "http"),
    ("server", "auth"),
    ("server", "trust_role"),
    ("server", "max_connections"),
    ("server", "max_pending_connections"),
    ("server", "max_http_connections"),
    ("server", "authentication_timeout"),
    ("server", "statement_timeout"),
    ("server", "query_memory_limit"),
    ("server", "tls_cert"),
    ("server", "tls_key"),
    ("server", "require_tls"),
    ("storage", "flush_bytes"),
    ("storage", "flush_interval"),
    ("storage", "max_memtable_bytes"),
    ("storage", "compaction_min_segments"),
    ("storage", "compaction_max_rows"),
    ("storage", "object_store"),
    ("storage", "shard"),
    ("storage", "shard_key"),
    ("storage", "shard_values"),
    ("storage", "shard_hash"),
    ("storage", "cache_size"),
    ("cluster", "workers"),
    ("cluster", "listen"),
    ("cluster", "advertise"),
    ("cluster", "rows_per_task"),
    ("audit", "path"),
    ("audit", "max_bytes"),
    ("audit", "max_files"),
];

/// The environment variable that overrides a setting.
pub fn env_name(section: &str, key: &str) -> String {
    if section == "server" {
        format!("TRAFFICDB_{}", key.to_ascii_uppercase())
    } else {
        format!("TRAFFICDB_{}_{}", section.to_ascii_uppercase(), key.to_ascii_uppercase())
    }
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
            max_pending_connections: 64,
            max_http_connections: 64,
            authentication_timeout: Duration::from_secs(10),
            statement_timeout: Duration::ZERO,
            query_memory_limit: 4 << 30,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            users: Vec::new(),
            audit: AuditConfig::default(),
            storage: StorageConfig::default(),
            cluster: ClusterConfig::default(),
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

/// The file as a whole.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    users: Vec<UserConfig>,
    #[serde(default)]
    audit: AuditConfig,
    #[serde(default)]
    storage: StorageConfig,
    #[serde(default)]
    cluster: ClusterConfig,
}

impl ServerConfig {
    /// Reads `path`; unknown settings and sections are errors, so that a typo does not silently leave a
    /// default in place.
    pub fn load(path: &Path) -> anyhow::Result<ServerConfig> {
        Self::load_with_env(Some(path), |_| None)
    }

    /// The file (if any) with the environment's overrides on top; `env` looks a variable up.
    pub fn load_with_env(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<ServerConfig> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
            None => String::new(),
        };
        let named = |e: anyhow::Error| match path {
            Some(p) => anyhow::anyhow!("{}: {e}", p.display()),
            None => e,
        };
        Self::parse_with_env(&text, env).map_err(named)
    }

    pub fn parse(text: &str) -> anyhow::Result<ServerConfig> {
        Self::parse_with_env(text, |_| None)
    }

    fn parse_with_env(text: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<ServerConfig> {
        let mut table: toml::Table = toml::from_str(text)?;
        for (section, key) in OPTIONS {
            let name = env_name(section, key);
            let Some(raw) = env(&name) else { continue };
            // Numbers and booleans as TOML reads them; anything else as text.
            let value = format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(|v| !v.is_table() && !v.is_array())
                .unwrap_or(toml::Value::String(raw));
            let entry = table.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(section_table) = entry.as_table_mut() else {
                anyhow::bail!("[{section}] must be a table");
            };
            section_table.insert(key.to_string(), value);
        }
        let file: File = table.try_into()?;
        let mut config = file.server;
        config.users.extend(file.users);
        config.audit = file.audit;
        config.storage = file.storage;
        config.cluster = file.cluster;
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
        if self.max_pending_connections == 0 || self.max_http_connections == 0 || self.authentication_timeout.is_zero()
        {
            anyhow::bail!("max_pending_connections, max_http_connections and authentication_timeout must be above 0");
        }
        if self.storage.flush_bytes == 0 || self.storage.max_memtable_bytes < self.storage.flush_bytes {
            anyhow::bail!("[storage] needs 0 < flush_bytes <= max_memtable_bytes");
        }
        if self.storage.compaction_min_segments < 2 {
            anyhow::bail!("[storage] compaction_min_segments must be at least 2");
        }
        if self.storage.shard_rule()?.is_some() && self.storage.object_store.is_none() {
            anyhow::bail!("[storage] shard needs object_store (the prefix the shards share)");
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

fn de_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<String>),
        Text(String),
    }
    Ok(match ListOrText::deserialize(d)? {
        ListOrText::List(v) => v,
        ListOrText::Text(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
    })
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
    fn environment_overrides_the_file() {
        let file = "[server]\nlisten = \"127.0.0.1:6000\"\nmax_connections = 5\n[storage]\nflush_bytes = \"64MiB\"\n";
        let env = |name: &str| match name {
            "TRAFFICDB_MAX_CONNECTIONS" => Some("7".to_string()),
            "TRAFFICDB_STORAGE_FLUSH_INTERVAL" => Some("10s".to_string()),
            "TRAFFICDB_AUDIT_PATH" => Some("/var/log/trafficdb/audit.log".to_string()),
            "TRAFFICDB_AUDIT_MAX_FILES" => Some("3".to_string()),
            "TRAFFICDB_REQUIRE_TLS" => Some("false".to_string()),
            _ => None,
        };
        let c = ServerConfig::parse_with_env(file, env).unwrap();
        assert_eq!(c.listen, "127.0.0.1:6000");
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.storage.flush_bytes, 64 << 20);
        assert_eq!(c.storage.flush_interval, Duration::from_secs(10));
        assert_eq!(c.audit.path.as_deref(), Some(Path::new("/var/log/trafficdb/audit.log")));
        assert_eq!(c.audit.max_files, 3);
        assert_eq!(c.storage.options().expect("options").flush_bytes, 64 << 20);
        // A bad value in the environment is an error naming the setting, not a silent default.
        let err = ServerConfig::parse_with_env("", |n| (n == "TRAFFICDB_STORAGE_FLUSH_BYTES").then(|| "lots".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lots"), "{err}");
        assert!(ServerConfig::parse("[storage]\nflush_byte = 1").is_err());
        assert!(ServerConfig::parse("[nonsense]\nx = 1").is_err());
    }

    /// A writer's shard: its store below the shared prefix, its rule from values or a hash, and the
    /// mistakes refused at load.
    #[test]
    fn shard_settings() {
        let c = ServerConfig::parse_with_env("[storage]\nobject_store = \"file:///tmp/x/\"\nshard = \"east\"\n", |n| {
            (n == "TRAFFICDB_STORAGE_SHARD_VALUES").then(|| "lb-01, lb-02".to_string())
        })
        .expect("values from the environment");
        let rule = c.storage.shard_rule().expect("rule").expect("a shard");
        assert_eq!(rule.owns, Owns::Values(vec!["lb-01".into(), "lb-02".into()]));
        assert_eq!(rule.key, "lb");
        assert_eq!(rule.store_url(c.storage.object_store.as_deref().expect("store")), "file:///tmp/x/shards/east");
        let c =
            ServerConfig::parse("[storage]\nobject_store = \"file:///tmp/x\"\nshard = \"h1\"\nshard_hash = \"1/3\"\n")
                .expect("a hash");
        assert_eq!(c.storage.shard_rule().expect("rule").expect("a shard").owns, Owns::Hash { of: 3, index: 1 });
        for bad in [
            "[storage]\nshard = \"a\"\nshard_hash = \"0/2\"\n",
            "[storage]\nobject_store = \"file:///tmp/x\"\nshard = \"a\"\n",
            "[storage]\nobject_store = \"file:///tmp/x\"\nshard = \"a\"\nshard_hash = \"2/2\"\n",
            "[storage]\nobject_store = \"file:///tmp/x\"\nshard = \"a/b\"\nshard_hash = \"0/2\"\n",
            "[storage]\nobject_store = \"file:///tmp/x\"\nshard_values = [\"lb-01\"]\n",
            "[storage]\nobject_store = \"file:///tmp/x\"\nshard = \"a\"\nshard_hash = \"0/2\"\nshard_values = \"x\"\n",
        ] {
            assert!(ServerConfig::parse(bad).is_err(), "accepted: {bad}");
        }
    }

    /// docs/configuration.md names every setting and its environment variable.
    #[test]
    fn every_setting_is_documented() {
        let doc = include_str!("../../docs/configuration.md");
        for (section, key) in OPTIONS {
            assert!(doc.contains(&format!("[{section}]")), "docs/configuration.md lacks [{section}]");
            assert!(doc.contains(&format!("`{key}`")), "docs/configuration.md lacks `{key}`");
            assert!(doc.contains(&env_name(section, key)), "docs/configuration.md lacks {}", env_name(section, key));
        }
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
