//! Stored secrets: passwords kept as PostgreSQL keeps them in `pg_authid.rolpassword`, a SCRAM
//! verifier `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` or `md5` + md5(password +
//! user), never in plain text.

use std::fmt::Debug;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2};

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

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
