//! The credential a call was authenticated with, kept by a stream for as long as it lives:
//! a stream ends when its credential would no longer open it — a JWT past its expiry, an API
//! key taken out of the keys file, a JWKS key removed — not when the client next calls.
//!
//! No per-stream polling: a stream waits on one timer (its credential's expiry) and on the
//! authenticator's change counter (a keys or JWKS file re-read), and checks the credential
//! again only when one of them fires.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use super::authenticator::Authenticator;
use super::error::AuthError;
use super::principal::{Principal, Scope};

#[derive(Clone)]
pub struct Credential {
    authenticator: Arc<Authenticator>,
    /// The request's `authorization` header; never logged (see `Debug`).
    header: Option<HeaderValue>,
    principal: Principal,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential").field("principal", &self.principal).finish_non_exhaustive()
    }
}

impl Credential {
    pub fn new(authenticator: Arc<Authenticator>, header: Option<HeaderValue>, principal: Principal) -> Self {
        Self { authenticator, header, principal }
    }

    /// Resolves, with the reason, once the credential no longer authenticates the caller it
    /// did (expired, revoked, or now naming another tenant or fewer scopes than reading
    /// needs); never, when authentication is off.
    pub async fn lapsed(&self) -> AuthError {
        if !self.authenticator.is_on() {
            return std::future::pending().await;
        }
        let mut changes = self.authenticator.changes();
        let mut valid_until = self.principal.valid_until;
        loop {
            let expiry = async {
                match valid_until {
                    Some(until) => tokio::time::sleep(until_then(until)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = expiry => {}
                changed = changes.changed() => if changed.is_err() {
                    // The authenticator is gone: the server is stopping.
                    return std::future::pending().await;
                },
            }
            match self.authenticator.authenticate(self.header.as_ref()) {
                Err(error) => return error,
                Ok(now) if now.tenant != self.principal.tenant || !now.scopes.allow(Scope::Read) => {
                    return AuthError::Revoked;
                }
                Ok(now) => valid_until = now.valid_until,
            }
        }
    }
}

/// How long until `until` (seconds since the epoch) has passed, plus a moment, so the check
/// that follows sees it passed.
fn until_then(until: u64) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Duration::from_secs(until.saturating_add(1)).saturating_sub(now)
}
