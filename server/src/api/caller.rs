//! The caller of a request, as the auth layer authenticated it, checked for the scope the
//! call needs.

use tonic::{Request, Status};

use crate::auth::{Credential, Principal, Scope};
use crate::domain::{ContextId, ContextKey};

/// The request's caller, if it holds `needed`; PERMISSION_DENIED naming the scope if not.
pub fn caller<T>(request: &Request<T>, needed: Scope) -> Result<Principal, Status> {
    // The auth layer wraps every route; a request without a principal did not pass it.
    let principal = request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated("the request was not authenticated"))?;
    if !principal.scopes.allow(needed) {
        return Err(Status::permission_denied(format!(
            "this call needs the scope {}; the credentials grant {}",
            needed.name(),
            principal.scopes
        )));
    }
    Ok(principal.clone())
}

/// The credential the request was authenticated with, for a stream to end when it lapses.
pub fn credential<T>(request: &Request<T>) -> Result<Credential, Status> {
    request
        .extensions()
        .get::<Credential>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the request was not authenticated"))
}

/// The context `id` of the caller's tenant: another tenant's context of the same id is a
/// different context, and the caller never reaches it.
pub fn key(principal: &Principal, id: ContextId) -> ContextKey {
    ContextKey::new(principal.tenant.clone(), id)
}
