//! Why a request could not be authenticated. Messages say what is wrong with the credential
//! without ever repeating it.

/// A refused credential; the caller is answered UNAUTHENTICATED with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this server requires authentication: send the header `authorization: Bearer <token>` (a JWT or an API key)"
    )]
    Missing,
    #[error("the authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("the token is not a well-formed JWT")]
    NotAJwt,
    #[error("the token is signed with {0}, which this server does not accept")]
    Algorithm(String),
    #[error("the token names a signing key this server does not know")]
    UnknownSigningKey,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token has no `exp` (expiry) claim")]
    NoExpiry,
    #[error("the token's issuer is not the one this server accepts")]
    WrongIssuer,
    #[error("the token's audience is not the one this server accepts")]
    WrongAudience,
    #[error("the token has no `{0}` claim, which this server requires")]
    MissingClaim(&'static str),
    #[error("the token's `{0}` claim must be a space-separated string or a list of strings")]
    BadScope(&'static str),
    #[error("the credential was revoked or no longer grants this stream")]
    Revoked,
    #[error("the token has no `{0}` claim naming its tenant")]
    NoTenant(String),
    #[error("the token's `{0}` claim is not a valid tenant name")]
    BadTenant(String),
    #[error("the API key is not known")]
    UnknownApiKey,
    #[error("this server accepts no {0}")]
    NotAccepted(&'static str),
}

impl AuthError {
    /// A short, bounded label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed_header",
            AuthError::NotAJwt => "malformed_token",
            AuthError::Algorithm(_) => "algorithm",
            AuthError::UnknownSigningKey => "unknown_signing_key",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::NoExpiry => "no_expiry",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::BadScope(_) => "bad_scope",
            AuthError::Revoked => "revoked",
            AuthError::NoTenant(_) => "no_tenant",
            AuthError::BadTenant(_) => "bad_tenant",
            AuthError::UnknownApiKey => "unknown_api_key",
            AuthError::NotAccepted(_) => "not_accepted",
        }
    }
}
