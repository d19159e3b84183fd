//! Who is calling: the layer that authenticates every gRPC call (JWTs and API keys), the
//! `Principal` it hands to handlers, and the scopes that say what a caller may do.
//!
//! `authenticator` picks the verifier for a bearer token; `jwt` (with `jwks`' keys) and
//! `api_keys` verify one kind each; `verified` remembers verified JWTs until they expire;
//! `watched` re-reads the files when they change; `credential` ends a stream whose
//! credential lapsed; `peer_key` is what the nodes of a cluster prove themselves with;
//! `layer` is the tower layer.

mod api_keys;
mod authenticator;
mod credential;
mod error;
mod jwks;
mod jwt;
mod layer;
mod peer_key;
mod principal;
mod secret_file;
mod verified;
mod watched;

pub use api_keys::{KEY_PREFIX, new_key};
pub use authenticator::Authenticator;
pub use credential::Credential;
pub use error::AuthError;
pub use layer::AuthLayer;
pub use peer_key::{FORWARDED_HEADER, PEER_AUTH_HEADER, PeerKey};
pub use principal::{Principal, Scope, Scopes};
pub use watched::POLL_INTERVAL;
