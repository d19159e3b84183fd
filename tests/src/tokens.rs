//! Credentials for the auth tests: JWTs minted with `jsonwebtoken` (HS256 with a test
//! secret, EdDSA with fixed test keys), the JWKS documents that publish those keys, and
//! requests that carry a bearer token.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The HS256 secret the tests configure (in a file, with a trailing newline).
pub const HS256_SECRET: &str = "a test secret that is at least thirty-two bytes long";

/// Two Ed25519 test keys (PKCS#8), for JWKS rotation. Test fixtures, never used elsewhere.
pub const ED25519_ONE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIPvkzgUfiRPAgIRIw1PYJn6tyB35057ceq08nTcp0JB9
-----END PRIVATE KEY-----
";
pub const ED25519_TWO: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFKUv43KcFx4R5+jIGLHwlXt9CD5k+0+5ao5DrYqilDQ
-----END PRIVATE KEY-----
";

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Claims of a good token for `tenant`: an hour to live, subject `user-<tenant>`.
pub fn claims(tenant: &str) -> Value {
    json!({"sub": format!("user-{tenant}"), "tenant": tenant, "exp": now() + 3600, "iat": now()})
}

/// `claims` with `changes` merged in (a `null` removes a claim).
pub fn with(mut claims: Value, changes: Value) -> Value {
    if let (Some(claims), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
        for (name, value) in changes {
            if value.is_null() {
                claims.remove(name);
            } else {
                claims.insert(name.clone(), value.clone());
            }
        }
    }
    claims
}

pub fn hs256(secret: &str, claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("secret");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("sign")
}

pub fn eddsa(pem: &str, kid: &str, claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("test key");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// A JWKS document publishing the public halves of `keys` (PEM, key id).
pub fn jwks(keys: &[(&str, &str)]) -> String {
    let keys = keys
        .iter()
        .map(|(pem, kid)| {
            let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("test key");
            let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).expect("jwk");
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).expect("json")
}

/// `message` as a request carrying `authorization: <value>` (none: no header).
pub fn authorized<T>(message: T, value: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = value {
        request.metadata_mut().insert("authorization", value.parse().expect("header value"));
    }
    request
}

/// `message` carrying `token` as a bearer token.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    authorized(message, Some(&format!("Bearer {token}")))
}
