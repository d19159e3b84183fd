//! JWT verification with `jsonwebtoken`: HS256 with a shared secret, and RS256/ES256/EdDSA
//! (and their siblings) with the public keys of a JWKS file. `exp` is required, `nbf`
//! honoured, issuer and audience checked when configured; the tenant, subject and scopes
//! come from the claims.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::error::AuthError;
use super::jwks::{ASYMMETRIC, PublicKey};
use super::principal::{Principal, Scopes};
use super::verified::{self, Verified};
use super::watched::Watched;
use crate::domain::TenantId;

/// The scopes a token grants: OAuth's space-separated `scope` string or, as identity
/// providers also emit, a list of strings in `scope` or `scp`. Only a token with neither
/// claim gets the default (read and write); a claim of any other shape (null, a number, a
/// list holding something else) is refused rather than read as "no restriction".
fn scopes(claims: &Map<String, Value>) -> Result<Scopes, AuthError> {
    let Some((name, claim)) = ["scope", "scp"].into_iter().find_map(|name| claims.get(name).map(|c| (name, c))) else {
        return Ok(Scopes::READ_WRITE);
    };
    match claim {
        Value::String(scope) => Ok(Scopes::from_names(scope.split_whitespace())),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().ok_or(AuthError::BadScope(name)))
            .collect::<Result<Vec<_>, _>>()
            .map(Scopes::from_names),
        _ => Err(AuthError::BadScope(name)),
    }
}

/// What a JWT must satisfy.
pub struct JwtRules {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub tenant_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

pub struct JwtVerifier {
    pub hs256: Option<DecodingKey>,
    pub jwks: Option<Arc<Watched<Vec<PublicKey>>>>,
    pub rules: JwtRules,
    pub verified: Verified,
}

impl JwtVerifier {
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let digest = verified::digest(token);
        let keys = self.jwks.as_ref().map(|jwks| jwks.current());
        if let Some(principal) = self.verified.get(&digest, keys.as_ref()) {
            return Ok(principal);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::NotAJwt)?;
        let algorithm = header.alg;
        let (claims, used) = if algorithm == Algorithm::HS256 {
            let key = self.hs256.as_ref().ok_or_else(|| AuthError::Algorithm(format!("{algorithm:?}")))?;
            (self.decode(token, key, algorithm)?, None)
        } else if let (true, Some(keys)) = (ASYMMETRIC.contains(&algorithm), keys) {
            (self.decode_with_jwks(token, &keys, algorithm, header.kid.as_deref())?, Some(keys))
        } else {
            return Err(AuthError::Algorithm(format!("{algorithm:?}")));
        };
        // `exp` is required, so a verified token has one (a number, by jsonwebtoken's checks).
        let expires = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0) as u64;
        let valid_until = expires.saturating_add(self.rules.leeway_secs);
        let principal = self.principal(claims, valid_until)?;
        self.verified.put(digest, principal.clone(), valid_until, used);
        Ok(principal)
    }

    /// With a key id, the key of that id; without, each key that may verify `algorithm`
    /// until one does.
    fn decode_with_jwks(
        &self,
        token: &str,
        keys: &[PublicKey],
        algorithm: Algorithm,
        kid: Option<&str>,
    ) -> Result<Map<String, Value>, AuthError> {
        let fits = |k: &&PublicKey| {
            k.key.family() == algorithm.family() && k.algorithm.is_none_or(|pinned| pinned == algorithm)
        };
        if let Some(kid) = kid {
            let key = keys.iter().filter(fits).find(|k| k.id.as_deref() == Some(kid));
            return self.decode(token, &key.ok_or(AuthError::UnknownSigningKey)?.key, algorithm);
        }
        let mut last = AuthError::UnknownSigningKey;
        for key in keys.iter().filter(fits) {
            match self.decode(token, &key.key, algorithm) {
                Err(AuthError::BadSignature) => last = AuthError::BadSignature,
                other => return other,
            }
        }
        Err(last)
    }

    fn decode(&self, token: &str, key: &DecodingKey, algorithm: Algorithm) -> Result<Map<String, Value>, AuthError> {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.rules.leeway_secs;
        validation.validate_nbf = true;
        // Configured means required: the crate checks `iss` and `aud` only when present, so a
        // token that left them out (or set them to null) would pass.
        let mut required = vec!["exp"];
        required.extend(self.rules.issuer.as_ref().map(|_| "iss"));
        required.extend(self.rules.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        match &self.rules.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.rules.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation).map(|data| data.claims).map_err(|e| match e
            .kind()
        {
            ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey => {
                AuthError::BadSignature
            }
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => AuthError::NoExpiry,
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::MissingClaim("iss"),
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::MissingClaim("aud"),
            ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
                AuthError::Algorithm(format!("{algorithm:?}"))
            }
            _ => AuthError::NotAJwt,
        })
    }

    fn principal(&self, mut claims: Map<String, Value>, valid_until: u64) -> Result<Principal, AuthError> {
        let claim = &self.rules.tenant_claim;
        let tenant = match claims.get(claim) {
            Some(Value::String(name)) => TenantId::parse(name).map_err(|_| AuthError::BadTenant(claim.clone()))?,
            Some(_) => return Err(AuthError::BadTenant(claim.clone())),
            None => return Err(AuthError::NoTenant(claim.clone())),
        };
        let subject = match claims.remove("sub") {
            Some(Value::String(sub)) => sub,
            _ => String::new(),
        };
        let scopes = scopes(&claims)?;
        Ok(Principal { tenant, subject, scopes, valid_until: Some(valid_until) })
    }
}
