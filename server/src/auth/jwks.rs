//! The public keys of a JWKS document (`--jwt-jwks-file`): which of its keys this server can
//! verify tokens with, and with which algorithms.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

/// The asymmetric algorithms a JWKS key may verify.
pub const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// One usable key of a JWKS document.
pub struct PublicKey {
    pub id: Option<String>,
    /// The key's `alg`, when the document pins one.
    pub algorithm: Option<Algorithm>,
    pub key: DecodingKey,
}

/// Parses a JWKS document. Keys of types or algorithms this server cannot use are skipped
/// (a provider's document may hold some); a document with no usable key is an error.
pub fn parse_jwks(text: &str) -> Result<Vec<PublicKey>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let id = jwk.common.key_id.clone();
        let algorithm = jwk.common.key_algorithm.and_then(|alg| Algorithm::try_from(alg).ok());
        match DecodingKey::from_jwk(jwk) {
            Ok(key) if key.family() != jsonwebtoken::AlgorithmFamily::Hmac => {
                keys.push(PublicKey { id, algorithm, key });
            }
            Ok(_) => tracing::warn!(kid = ?id, "skipping a symmetric key in the JWKS file"),
            Err(error) => tracing::warn!(kid = ?id, %error, "skipping a JWKS key this server cannot use"),
        }
    }
    if keys.is_empty() {
        return Err("it holds no usable public key".into());
    }
    Ok(keys)
}
