//! Turns a request's `authorization` header into a `Principal`, with whichever verifiers are
//! configured: JWTs (HS256 secret, JWKS file) and API keys. With none, every caller is the
//! default tenant with every scope (allowed only on loopback, see `Config::validate`).

use std::path::Path;
use std::sync::Arc;

use http::HeaderValue;
use jsonwebtoken::DecodingKey;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::api_keys::ApiKeys;
use super::error::AuthError;
use super::jwks;
use super::jwt::{JwtRules, JwtVerifier};
use super::principal::Principal;
use super::verified::Verified;
use super::watched::Watched;
use crate::config::Config;

pub struct Authenticator {
    jwt: Option<JwtVerifier>,
    api_keys: Option<Arc<Watched<ApiKeys>>>,
    /// Every caller when no verifier is configured, built once rather than per call.
    unauthenticated: Principal,
    /// Counts changes of the keys and JWKS files in force, for streams to check their
    /// credentials again.
    changes: watch::Sender<u64>,
}

impl Authenticator {
    /// The verifiers `config` asks for, their files read now (an unreadable or invalid file
    /// stops the server from starting) and re-read on change until `stop`.
    pub fn start(config: &Config, stop: &CancellationToken) -> Result<Self, String> {
        let hs256 = match &config.jwt_hs256_secret_file {
            Some(path) => Some(read_secret(path)?),
            None => None,
        };
        let changes = watch::Sender::new(0);
        let jwks = match &config.jwt_jwks_file {
            Some(path) => Some(Watched::start("JWKS file", path, jwks::parse_jwks, changes.clone(), stop.clone())?),
            None => None,
        };
        let jwt = (hs256.is_some() || jwks.is_some()).then(|| JwtVerifier {
            hs256,
            jwks,
            rules: JwtRules {
                issuer: config.jwt_issuer.clone(),
                audience: config.jwt_audience.clone(),
                tenant_claim: config.jwt_tenant_claim.clone(),
                leeway_secs: config.jwt_leeway_secs,
            },
            verified: Verified::default(),
        });
        let api_keys = match &config.api_keys_file {
            Some(path) => Some(Watched::start("API keys file", path, ApiKeys::parse, changes.clone(), stop.clone())?),
            None => None,
        };
        Ok(Self { jwt, api_keys, unauthenticated: Principal::unauthenticated(), changes })
    }

    /// Changes whenever a keys or JWKS file change is put in force.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether callers must authenticate.
    pub fn is_on(&self) -> bool {
        self.jwt.is_some() || self.api_keys.is_some()
    }

    /// The caller a request's `authorization` header stands for.
    pub fn authenticate(&self, header: Option<&HeaderValue>) -> Result<Principal, AuthError> {
        if !self.is_on() {
            return Ok(self.unauthenticated.clone());
        }
        let value = header.ok_or(AuthError::Missing)?.to_str().map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(AuthError::Malformed);
        }
        // A JWT has three dot-separated parts; an API key has no dot.
        if token.contains('.') {
            return match &self.jwt {
                Some(jwt) => jwt.verify(token),
                None => Err(AuthError::NotAccepted("JWTs")),
            };
        }
        match &self.api_keys {
            Some(keys) => keys.current().verify(token).ok_or(AuthError::UnknownApiKey),
            None => Err(AuthError::NotAccepted("API keys")),
        }
    }
}

/// The HS256 secret: the file's bytes without a trailing newline.
fn read_secret(path: &Path) -> Result<DecodingKey, String> {
    let secret = super::secret_file::read_secret_file("JWT secret", path)?;
    DecodingKey::from_secret(&secret).map_err(|e| format!("JWT secret file {}: {e}", path.display()))
}
