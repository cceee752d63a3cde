//! Who may connect and what they may do.
//!
//! Authentication is PostgreSQL's: `trust`, or passwords checked with SCRAM-SHA-256 (RFC 5802 / 7677)
//! or, for users whose stored hash is MD5, the MD5 challenge. Users are stored as PostgreSQL stores
//! them in `pg_authid.rolpassword`: a SCRAM verifier `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
//! or `md5` + md5(password + user). The SCRAM exchange is implemented here rather than with pgwire's
//! handler because pgwire's needs the salted password, which is enough to log in; the verifier is not.
//!
//! Authorisation is by role: `reader` runs queries, `writer` also inserts, deletes and copies in,
//! `admin` also changes the schema and the server-side settings. [`required_role`] decides per
//! statement, on an allow list: a statement it does not know needs `admin`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use datafusion::sql::sqlparser::ast::{CopySource, CopyTarget, Statement};
use futures::{Sink, SinkExt};
use parking_lot::Mutex;
use pgwire::api::auth::{DefaultServerParameterProvider, ServerParameterProvider, StartupHandler};
use pgwire::api::{ClientInfo, PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use ring::{digest, hmac, pbkdf2};

use crate::config::{AuthMode, ServerConfig};

/// What a session may do; ordered, each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries, `COPY ... TO STDOUT`, `SET` / `SHOW`, transactions, cursors.
    Reader,
    /// Also `INSERT`, `DELETE`, `UPDATE`, `TRUNCATE`, `COPY ... FROM STDIN`.
    Writer,
    /// Everything: DDL, `SET datafusion.runtime.*`, `COPY` to or from server files.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

/// The role of the authenticated user of a connection, kept in the connection's session extensions
/// (not in its metadata, which clients can write through startup parameters and `SET`).
#[derive(Debug, Clone, Copy)]
pub struct SessionRole(pub Role);

/// The role a connection runs as (`reader` if none was recorded, which cannot happen after startup).
pub fn session_role(client: &(impl ClientInfo + ?Sized)) -> Role {
    client.session_extensions().get::<SessionRole>().map_or(Role::Reader, |r| r.0)
}

/// The least role that may run `s` when the statement itself decides it: statements the server runs
/// without a DataFusion plan (the engine's DDL, `COPY`, `TRUNCATE`, settings, transactions, cursor
/// moves). `None` for every other statement: its plan decides ([`plan_role`]), so what is checked is
/// what will run, however the text is written.
pub fn statement_role(s: &Statement) -> Option<Role> {
    Some(match s {
        // What EXPLAIN or PREPARE would run decides, when that is decided on the statement.
        Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
            return statement_role(statement);
        }
        Statement::Copy { to, target, source, .. } => match (to, target) {
            // The query of `COPY (query) TO STDOUT` is checked on its plan when it runs.
            (true, CopyTarget::Stdout) => Role::Reader,
            (false, CopyTarget::Stdin) if matches!(source, CopySource::Table { .. }) => Role::Writer,
            _ => Role::Admin,
        },
        Statement::Set(_) | Statement::Reset(_) => crate::settings::statement_role(s),
        Statement::Truncate(_) => Role::Writer,
        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::AlterTable(_)
        | Statement::Drop { .. }
        | Statement::Call(_) => Role::Admin,
        Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowCreate { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Discard { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => Role::Reader,
        _ => return None,
    })
}

/// The least role that may run `plan`: what it does, wherever in it (subqueries, EXPLAIN ANALYZE,
/// PREPARE, a table function that trains a model, `SELECT ... INTO`).
pub fn plan_role(plan: &datafusion::logical_expr::LogicalPlan) -> Role {
    use trafficdb_udfs::access::Access;
    match trafficdb::query::dml::plan_access(plan) {
        Access::Read => Role::Reader,
        Access::Write => Role::Writer,
        Access::Admin => Role::Admin,
    }
}

/// The 42501 error for a session whose role is below `need`.
pub fn refusal(client: &(impl ClientInfo + ?Sized), need: Role) -> PgWireError {
    let user = client.metadata().get("user").cloned().unwrap_or_default();
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "42501".into(),
        format!(
            "permission denied: user \"{user}\" has role {}, this statement needs role {}",
            session_role(client).name(),
            need.name()
        ),
    )))
}

// ---------------------------------------------------------------------------------------------------
// Stored secrets

/// SCRAM iterations for new verifiers (PostgreSQL's default).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// A stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Scram {
        iterations: u32,
        salt: Vec<u8>,
        stored_key: [u8; 32],
        server_key: [u8; 32],
    },
    /// The hex of md5(password + user name).
    Md5(String),
}

impl Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Scram { .. } => "Secret::Scram(..)",
            Secret::Md5(_) => "Secret::Md5(..)",
        })
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            "a password must be stored as a SCRAM-SHA-256 verifier or an md5 hash, never as plain text; \
             `trafficdb passwd` makes one"
                .to_string()
        };
        if let Some(hex) = s.strip_prefix("md5") {
            if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(Secret::Md5(hex.to_ascii_lowercase()));
            }
            return Err(bad());
        }
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let iterations: u32 = iterations.parse().map_err(|_| bad())?;
        let salt = B64.decode(salt).map_err(|_| bad())?;
        let key = |k: &str| -> Result<[u8; 32], String> {
            B64.decode(k).ok().and_then(|v| v.try_into().ok()).ok_or_else(bad)
        };
        if iterations == 0 || salt.is_empty() {
            return Err(bad());
        }
        Ok(Secret::Scram { iterations, salt, stored_key: key(stored)?, server_key: key(server)? })
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Scram { iterations, salt, stored_key, server_key } => write!(
                f,
                "SCRAM-SHA-256${iterations}:{}${}:{}",
                B64.encode(salt),
                B64.encode(stored_key),
                B64.encode(server_key)
            ),
            Secret::Md5(hex) => write!(f, "md5{hex}"),
        }
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
}

fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data).as_ref().try_into().expect("SHA-256 is 32 bytes")
}

impl Secret {
    /// A SCRAM-SHA-256 verifier for `password` with a fresh random salt.
    pub fn scram(password: &str) -> Secret {
        let salt: [u8; 16] = rand::random();
        Self::scram_with(password, &salt, SCRAM_ITERATIONS)
    }

    pub fn scram_with(password: &str, salt: &[u8], iterations: u32) -> Secret {
        // PostgreSQL normalises with SASLprep and falls back to the raw bytes when that fails.
        let normalized = stringprep::saslprep(password).map(|c| c.into_owned()).unwrap_or_else(|_| password.into());
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(iterations.max(1)).expect("at least one iteration"),
            salt,
            normalized.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        Secret::Scram {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// Whether `password` is `user`'s (HTTP Basic authentication checks the same verifiers).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let same =
            |a: &[u8], b: &[u8]| a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        match self {
            Secret::Scram { iterations, salt, stored_key, .. } => match Secret::scram_with(password, salt, *iterations)
            {
                Secret::Scram { stored_key: given, .. } => same(&given, stored_key),
                Secret::Md5(_) => false,
            },
            Secret::Md5(hex) => match Secret::md5(user, password) {
                Secret::Md5(given) => same(given.as_bytes(), hex.as_bytes()),
                Secret::Scram { .. } => false,
            },
        }
    }

    /// The MD5 hash PostgreSQL stores for `user`'s `password`.
    pub fn md5(user: &str, password: &str) -> Secret {
        Secret::Md5(format!("{:x}", md5::compute(format!("{password}{user}"))))
    }
}

// ---------------------------------------------------------------------------------------------------
// The startup handler

/// ParameterStatus at startup: pgwire's defaults with a plain numeric `server_version` and the
/// session's role reflected in `is_superuser` and `default_transaction_read_only`.
pub struct Parameters {
    defaults: DefaultServerParameterProvider,
}

impl Default for Parameters {
    fn default() -> Parameters {
        let mut defaults = DefaultServerParameterProvider::default();
        defaults.server_version = crate::compat::PG_VERSION.to_string();
        Parameters { defaults }
    }
}

impl ServerParameterProvider for Parameters {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let mut p = self.defaults.server_parameters(client)?;
        let role = session_role(client);
        p.insert("is_superuser".into(), if role == Role::Admin { "on" } else { "off" }.into());
        p.insert("default_transaction_read_only".into(), if role == Role::Reader { "on" } else { "off" }.into());
        Some(p)
    }
}

/// The state of one connection's authentication.
enum Exchange {
    Start,
    Md5 { expected: String },
    ScramFirst { secret: Option<Secret> },
    ScramFinal { expected: Box<ScramFinal> },
    Done,
}

struct ScramFinal {
    secret: Option<Secret>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
}

/// Authenticates one connection (a new one per connection: it keeps the exchange's state), refuses
/// connections beyond the limit, and records the session's role.
pub struct Authenticator {
    config: Arc<ServerConfig>,
    parameters: Arc<Parameters>,
    pids: Arc<RandomPidSecretKeyGenerator>,
    cancels: Arc<crate::session::Cancels>,
    /// This connection's cancel signal (see [`crate::session::Session`]).
    cancel_signal: tokio::sync::watch::Sender<u64>,
    /// The connection's pending slot until it has authenticated; then it takes an authenticated one.
    pending: Mutex<Option<crate::pg::Slot>>,
    stats: Arc<crate::pg::Stats>,
    state: Mutex<Exchange>,
    audit: Arc<crate::audit::Audit>,
}

impl Authenticator {
    pub fn new(
        config: Arc<ServerConfig>,
        parameters: Arc<Parameters>,
        pids: Arc<RandomPidSecretKeyGenerator>,
        cancels: Arc<crate::session::Cancels>,
        cancel_signal: tokio::sync::watch::Sender<u64>,
        pending: crate::pg::Slot,
        audit: Arc<crate::audit::Audit>,
    ) -> Authenticator {
        let stats = pending.stats().clone();
        Authenticator {
            config,
            parameters,
            pids,
            cancels,
            cancel_signal,
            pending: Mutex::new(Some(pending)),
            stats,
            state: Mutex::new(Exchange::Start),
            audit,
        }
    }
}

fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message.into())))
}

fn auth_failed(user: &str) -> PgWireError {
    fatal("28P01", format!("password authentication failed for user \"{user}\""))
}

fn user_of(client: &(impl ClientInfo + ?Sized)) -> String {
    client.metadata().get("user").cloned().unwrap_or_default()
}

#[async_trait]
impl StartupHandler for Authenticator {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                pgwire::api::auth::protocol_negotiation(client, startup).await?;
                pgwire::api::auth::save_startup_parameters_to_metadata(client, startup);
                if self.config.require_tls && !client.is_secure() {
                    return Err(fatal("28000", "this server accepts only TLS connections (sslmode=require)"));
                }
                let user = user_of(client);
                if user.is_empty() {
                    return Err(fatal("28000", "no user name given"));
                }
                let entry = self.config.user(&user);
                let role = entry.map_or(self.config.trust_role, |u| u.role);
                client.session_extensions().insert(SessionRole(role));
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                if self.config.auth == AuthMode::Trust {
                    return self.finish(client).await;
                }
                // Unknown users and users without a password go through a SCRAM exchange that cannot
                // succeed, so a client cannot tell them from a wrong password.
                let secret = entry.and_then(|u| u.password.clone());
                match secret {
                    Some(Secret::Md5(hex)) => {
                        let salt: [u8; 4] = rand::random();
                        let mut inner = hex.into_bytes();
                        inner.extend_from_slice(&salt);
                        let expected = format!("md5{:x}", md5::compute(inner));
                        *self.state.lock() = Exchange::Md5 { expected };
                        client
                            .send(PgWireBackendMessage::Authentication(Authentication::MD5Password(salt.to_vec())))
                            .await?;
                    }
                    secret => {
                        *self.state.lock() = Exchange::ScramFirst { secret };
                        client
                            .send(PgWireBackendMessage::Authentication(Authentication::SASL(vec![
                                "SCRAM-SHA-256".into(),
                            ])))
                            .await?;
                    }
                }
                Ok(())
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let r = self.on_password(client, msg).await;
                if let Err(PgWireError::UserError(e)) = &r
                    && e.code == "28P01"
                {
                    self.audit.auth_failed(&user_of(client), "postgres");
                }
                r
            }
            _ => Ok(()),
        }
    }
}

impl Authenticator {
    async fn on_password<C>(&self, client: &mut C, msg: PasswordMessageFamily) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = user_of(client);
        let state = std::mem::replace(&mut *self.state.lock(), Exchange::Done);
        match state {
            Exchange::Md5 { expected } => {
                let given = msg.into_password()?;
                if constant_time_eq(given.password.as_bytes(), expected.as_bytes()) {
                    self.finish(client).await
                } else {
                    Err(auth_failed(&user))
                }
            }
            Exchange::ScramFirst { secret } => {
                let initial = msg.into_sasl_initial_response()?;
                if initial.auth_method != "SCRAM-SHA-256" {
                    return Err(fatal("28000", format!("unsupported SASL mechanism \"{}\"", initial.auth_method)));
                }
                let data = initial.data.ok_or_else(|| fatal("08P01", "empty SCRAM client-first message"))?;
                let (server_first, next) = scram_first(secret, &user, &data)?;
                *self.state.lock() = Exchange::ScramFinal { expected: Box::new(next) };
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASLContinue(
                        server_first.into_bytes().into(),
                    )))
                    .await?;
                Ok(())
            }
            Exchange::ScramFinal { expected } => {
                let response = msg.into_sasl_response()?;
                let server_final = scram_final(&expected, &response.data).ok_or_else(|| auth_failed(&user))?;
                client
                    .feed(PgWireBackendMessage::Authentication(Authentication::SASLFinal(
                        server_final.into_bytes().into(),
                    )))
                    .await?;
                self.finish(client).await
            }
            Exchange::Start | Exchange::Done => Err(fatal("08P01", "unexpected password message")),
        }
    }

    async fn finish<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        *self.state.lock() = Exchange::Done;
        // Authenticated: the pending slot is given back and a connection slot taken.
        self.pending.lock().take();
        let Some(slot) = self.stats.take_slot(true, self.config.max_connections) else {
            return Err(fatal("53300", "sorry, too many clients already"));
        };
        client.session_extensions().insert(slot);
        let (pid, secret_key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let guard = self.cancels.register(pid, &secret_key, self.cancel_signal.clone());
        client.session_extensions().insert(guard);
        let timeout = self.config.statement_timeout.as_millis();
        if timeout > 0 {
            client.metadata_mut().insert(crate::session::STATEMENT_TIMEOUT_KEY.into(), timeout.to_string());
        }
        tracing::debug!(user = %user_of(client), role = session_role(client).name(), "authenticated");
        self.audit.connected(&user_of(client), session_role(client), &client.socket_addr().to_string());
        pgwire::api::auth::finish_authentication(client, self.parameters.as_ref()).await
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Handles client-first (`n,,n=user,r=nonce`) and answers server-first.
/// The salt shown to a user without a SCRAM verifier (unknown, or with an MD5 password or none): the
/// same for the same name as long as the server runs, as a real user's is, so the salt does not tell
/// which users exist (PostgreSQL's mock authentication nonce does the same).
fn mock_salt(user: &str) -> Vec<u8> {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    hmac_sha256(key, user.as_bytes())[..16].to_vec()
}

fn scram_first(secret: Option<Secret>, user: &str, data: &[u8]) -> PgWireResult<(String, ScramFinal)> {
    let bad = || fatal("08P01", "malformed SCRAM client-first message");
    let text = std::str::from_utf8(data).map_err(|_| bad())?;
    // gs2-header: a channel-binding flag, an optional authzid, then the bare message.
    let (flag, rest) = text.split_once(',').ok_or_else(bad)?;
    let (_authzid, bare) = rest.split_once(',').ok_or_else(bad)?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => {
            return Err(fatal("28000", "SCRAM channel binding is not supported by this server"));
        }
        _ => return Err(bad()),
    }
    let gs2_header = text[..text.len() - bare.len()].to_string();
    let client_nonce = bare.split(',').find_map(|a| a.strip_prefix("r=")).filter(|n| !n.is_empty()).ok_or_else(bad)?;
    let server_nonce = B64.encode(rand::random::<[u8; 18]>());
    let nonce = format!("{client_nonce}{server_nonce}");
    let (salt, iterations) = match &secret {
        Some(Secret::Scram { salt, iterations, .. }) => (salt.clone(), *iterations),
        _ => (mock_salt(user), SCRAM_ITERATIONS),
    };
    let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
    let state = ScramFinal {
        secret,
        client_first_bare: bare.to_string(),
        server_first: server_first.clone(),
        nonce,
        gs2_header,
    };
    Ok((server_first, state))
}

/// Checks client-final (`c=...,r=...,p=proof`); answers server-final (`v=signature`) when the proof holds.
fn scram_final(s: &ScramFinal, data: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?;
    let (without_proof, proof) = text.rsplit_once(",p=")?;
    let mut binding = None;
    let mut nonce = None;
    for attr in without_proof.split(',') {
        if let Some(v) = attr.strip_prefix("c=") {
            binding = Some(v);
        } else if let Some(v) = attr.strip_prefix("r=") {
            nonce = Some(v);
        }
    }
    if binding? != B64.encode(&s.gs2_header) || nonce? != s.nonce {
        return None;
    }
    let Some(Secret::Scram { stored_key, server_key, .. }) = &s.secret else { return None };
    let proof = B64.decode(proof).ok()?;
    if proof.len() != 32 {
        return None;
    }
    let auth_message = format!("{},{},{}", s.client_first_bare, s.server_first, without_proof);
    let client_signature = hmac_sha256(stored_key, auth_message.as_bytes());
    let client_key: Vec<u8> = proof.iter().zip(client_signature).map(|(p, c)| p ^ c).collect();
    if !constant_time_eq(&sha256(&client_key), stored_key) {
        return None;
    }
    Some(format!("v={}", B64.encode(hmac_sha256(server_key, auth_message.as_bytes()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_test_vector() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let secret = Secret::scram_with("pencil", &salt, 4096);
        assert_eq!(secret.to_string().parse::<Secret>().unwrap(), secret);
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let state = ScramFinal {
            secret: Some(secret),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            nonce: nonce.into(),
            gs2_header: "n,,".into(),
        };
        let client_final = format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(
            scram_final(&state, client_final.as_bytes()).as_deref(),
            Some("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        );
        // md5 as PostgreSQL stores it: md5(password || user).
        assert_eq!(Secret::md5("alice", "secret").to_string(), format!("md5{:x}", md5::compute("secretalice")));
    }

    #[test]
    fn verifier_as_postgresql_stores_it() {
        // PostgreSQL 15: CREATE ROLE alice LOGIN PASSWORD 'secret' (password_encryption scram-sha-256),
        // then SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'.
        let pg = "SCRAM-SHA-256$4096:OUpLs8YcN2BC56h6CcTbzA==$7qGrHNgp0nrYbk2ikEY+F9cOZoYdnjCQsEY29wwisGI=:\
                  yYjx7UDy8vQnvZn7qNipw+jjEHf3O2TBUCQCQ0LSIy0=";
        let parsed: Secret = pg.parse().unwrap();
        let salt = B64.decode("OUpLs8YcN2BC56h6CcTbzA==").unwrap();
        assert_eq!(Secret::scram_with("secret", &salt, 4096), parsed);
        assert_eq!(parsed.to_string(), pg);
    }

    #[test]
    fn plain_text_is_refused() {
        assert!("hunter2".parse::<Secret>().is_err());
        assert!("md5xyz".parse::<Secret>().is_err());
        assert!("SCRAM-SHA-256$4096:abc$def".parse::<Secret>().is_err());
    }

    #[test]
    fn full_scram_exchange_with_a_client_proof() {
        let secret = Secret::scram("correct horse");
        let (server_first, state) = scram_first(Some(secret), "u", b"n,,n=,r=clientnonce").unwrap();
        let salted = {
            let Some(Secret::Scram { salt, iterations, .. }) = &state.secret else { unreachable!() };
            let mut out = [0u8; 32];
            pbkdf2::derive(
                pbkdf2::PBKDF2_HMAC_SHA256,
                std::num::NonZeroU32::new(*iterations).unwrap(),
                salt,
                b"correct horse",
                &mut out,
            );
            out
        };
        let nonce = server_first.split(',').next().unwrap().strip_prefix("r=").unwrap();
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth = format!("n=,r=clientnonce,{server_first},{without_proof}");
        let client_key = hmac_sha256(&salted, b"Client Key");
        let signature = hmac_sha256(&sha256(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(signature).map(|(a, b)| a ^ b).collect();
        let good = format!("{without_proof},p={}", B64.encode(&proof));
        let server_final = scram_final(&state, good.as_bytes()).expect("proof accepted");
        assert_eq!(
            server_final,
            format!("v={}", B64.encode(hmac_sha256(&hmac_sha256(&salted, b"Server Key"), auth.as_bytes())))
        );
        let mut wrong = proof.clone();
        wrong[0] ^= 1;
        assert!(scram_final(&state, format!("{without_proof},p={}", B64.encode(&wrong)).as_bytes()).is_none());
        // A user without a verifier never passes.
        let (_, no_user) = scram_first(None, "nobody", b"n,,n=,r=x").unwrap();
        assert!(scram_final(&no_user, good.as_bytes()).is_none());
    }

    #[test]
    fn unknown_users_get_a_stable_salt() {
        let salt = |user: &str| {
            let (first, _) = scram_first(None, user, b"n,,n=,r=x").unwrap();
            first.split(',').find_map(|a| a.strip_prefix("s=")).unwrap().to_string()
        };
        assert_eq!(salt("nobody"), salt("nobody"));
        assert_ne!(salt("nobody"), salt("somebody"));
    }

    #[test]
    fn roles_per_statement() {
        let role = |sql: &str| {
            let stmts = datafusion::sql::sqlparser::parser::Parser::parse_sql(
                &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
                sql,
            )
            .unwrap();
            statement_role(&stmts[0])
        };
        assert_eq!(role("COPY t TO STDOUT"), Some(Role::Reader));
        assert_eq!(role("COPY (SELECT 1) TO STDOUT"), Some(Role::Reader));
        assert_eq!(role("COPY t FROM STDIN"), Some(Role::Writer));
        assert_eq!(role("COPY t TO '/tmp/x.csv'"), Some(Role::Admin));
        assert_eq!(role("COPY t FROM '/etc/passwd'"), Some(Role::Admin));
        assert_eq!(role("TRUNCATE t"), Some(Role::Writer));
        assert_eq!(role("CREATE TABLE t (a INT)"), Some(Role::Admin));
        assert_eq!(role("DROP VIEW v"), Some(Role::Admin));
        assert_eq!(role("SET statement_timeout = 10"), Some(Role::Reader));
        assert_eq!(role("SET datafusion.runtime.memory_limit = '100G'"), Some(Role::Admin));
        assert_eq!(role("BEGIN"), Some(Role::Reader));
        assert_eq!(role("FETCH 10 FROM c"), Some(Role::Reader));
        // Decided on the plan: what runs, wherever it is in the statement.
        for sql in [
            "SELECT 1",
            "EXPLAIN (ANALYZE) INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (1)",
            "DELETE FROM t",
            "DECLARE c CURSOR FOR SELECT 1",
            "PREPARE p AS SELECT 1",
            "GRANT SELECT ON t TO bob",
            "SELECT * FROM train_retry_model('retry', 'SELECT 1')",
        ] {
            assert_eq!(role(sql), None, "{sql}");
        }
    }
}
