//! The startup and authentication exchange of a PostgreSQL connection.
//!
//! Authentication is PostgreSQL's: `trust`, or passwords checked with SCRAM-SHA-256 (RFC 5802 / 7677)
//! or, for users whose stored hash is MD5, the MD5 challenge, against the verifiers of
//! [`crate::security::secret`]. The SCRAM exchange is implemented here rather than with pgwire's
//! handler because pgwire's needs the salted password, which is enough to log in; the verifier is not.
//! A connection takes an authenticated slot only once it has authenticated (53300 beyond
//! `max_connections`); its role is recorded in the session ([`crate::pgwire::gate::SessionRole`]).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{Sink, SinkExt};
use parking_lot::Mutex;
use pgwire::api::auth::{DefaultServerParameterProvider, ServerParameterProvider, StartupHandler};
use pgwire::api::{ClientInfo, PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::config::{AuthMode, ServerConfig};
use crate::pgwire::gate::{SessionRole, session_role};
use crate::pgwire::results::fatal;
use crate::security::roles::Role;
use crate::security::secret::{SCRAM_ITERATIONS, Secret, hmac_sha256, sha256};
use trafficdb::SqlState;

/// ParameterStatus at startup: pgwire's defaults with a plain numeric `server_version` and the
/// session's role reflected in `is_superuser` and `default_transaction_read_only`.
pub struct Parameters {
    defaults: DefaultServerParameterProvider,
}

impl Default for Parameters {
    fn default() -> Parameters {
        Parameters { defaults: crate::pgwire::compat::server_defaults() }
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
    cancels: Arc<crate::pgwire::session::Cancels>,
    /// This connection's cancel signal (see [`crate::pgwire::session::Session`]).
    cancel_signal: tokio::sync::watch::Sender<u64>,
    /// The connection's pending slot until it has authenticated; then it takes an authenticated one.
    pending: Mutex<Option<crate::ops::stats::Slot>>,
    stats: Arc<crate::ops::stats::Stats>,
    state: Mutex<Exchange>,
    audit: Arc<crate::security::audit::Audit>,
}

impl Authenticator {
    pub fn new(
        config: Arc<ServerConfig>,
        parameters: Arc<Parameters>,
        pids: Arc<RandomPidSecretKeyGenerator>,
        cancels: Arc<crate::pgwire::session::Cancels>,
        cancel_signal: tokio::sync::watch::Sender<u64>,
        pending: crate::ops::stats::Slot,
        audit: Arc<crate::security::audit::Audit>,
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

fn auth_failed(user: &str) -> PgWireError {
    fatal(SqlState::InvalidPassword, format!("password authentication failed for user \"{user}\""))
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
                    return Err(fatal(
                        SqlState::InvalidAuthorization,
                        "this server accepts only TLS connections (sslmode=require)",
                    ));
                }
                let user = user_of(client);
                if user.is_empty() {
                    return Err(fatal(SqlState::InvalidAuthorization, "no user name given"));
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
                    && e.code == SqlState::InvalidPassword.code()
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
                    return Err(fatal(
                        SqlState::InvalidAuthorization,
                        format!("unsupported SASL mechanism \"{}\"", initial.auth_method),
                    ));
                }
                let data = initial
                    .data
                    .ok_or_else(|| fatal(SqlState::ProtocolViolation, "empty SCRAM client-first message"))?;
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
            Exchange::Start | Exchange::Done => Err(fatal(SqlState::ProtocolViolation, "unexpected password message")),
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
            return Err(fatal(SqlState::TooManyConnections, "sorry, too many clients already"));
        };
        client.session_extensions().insert(slot);
        let (pid, secret_key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let guard = self.cancels.register(pid, &secret_key, self.cancel_signal.clone());
        client.session_extensions().insert(guard);
        let timeout = self.config.statement_timeout.as_millis();
        if timeout > 0 {
            client.metadata_mut().insert(crate::pgwire::session::STATEMENT_TIMEOUT_KEY.into(), timeout.to_string());
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
    let bad = || fatal(SqlState::ProtocolViolation, "malformed SCRAM client-first message");
    let text = std::str::from_utf8(data).map_err(|_| bad())?;
    // gs2-header: a channel-binding flag, an optional authzid, then the bare message.
    let (flag, rest) = text.split_once(',').ok_or_else(bad)?;
    let (_authzid, bare) = rest.split_once(',').ok_or_else(bad)?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => {
            return Err(fatal(SqlState::InvalidAuthorization, "SCRAM channel binding is not supported by this server"));
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
    use ring::pbkdf2;

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
}
