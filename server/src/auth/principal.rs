//! Who is calling, and what they may do.

use std::fmt;

use crate::domain::TenantId;

/// What a caller may do. `Write` implies `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read contexts and tools: GetState, ListContexts, WatchState, WatchContexts, ListTools.
    Read,
    /// Everything that changes a context.
    Write,
    /// Reserved for administration; nothing needs it yet.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "ctxd:read",
            Scope::Write => "ctxd:write",
            Scope::Admin => "ctxd:admin",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Self::ALL.into_iter().find(|scope| scope.name() == name)
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// What a caller gets when its credential names no scopes: read and write.
    pub const READ_WRITE: Scopes = Scopes(1 | 2);

    pub fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }

    /// Whether these scopes allow what `needed` guards (`Write` implies `Read`).
    pub fn allow(self, needed: Scope) -> bool {
        self.0 & needed.bit() != 0 || (needed == Scope::Read && self.0 & Scope::Write.bit() != 0)
    }

    /// Collects scope names, ignoring names that are not ctxd's (an
    /// identity provider's token often carries scopes for other services too).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names.into_iter().filter_map(Scope::parse).fold(Self::default(), Self::with)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = Scope::ALL.into_iter().filter(|s| self.0 & s.bit() != 0).map(Scope::name).collect();
        if names.is_empty() { f.write_str("no ctxd scope") } else { f.write_str(&names.join(" ")) }
    }
}

/// The authenticated caller of one request, put into its extensions by the auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    /// The user or service (a JWT's `sub`; `api-key:<first hex digits of its hash>` for a key).
    pub subject: String,
    pub scopes: Scopes,
    /// When the credential stops being accepted, in seconds since the epoch (a JWT's `exp`
    /// plus the clock-skew leeway); none: until it is revoked.
    pub valid_until: Option<u64>,
}

impl Principal {
    /// The caller of a server without authentication: the default tenant, every scope.
    pub fn unauthenticated() -> Self {
        Self {
            tenant: TenantId::default_tenant(),
            subject: String::new(),
            scopes: Scopes::READ_WRITE,
            valid_until: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_implies_read_and_unknown_scopes_are_ignored() {
        let read = Scopes::from_names("openid ctxd:read profile".split(' '));
        assert!(read.allow(Scope::Read) && !read.allow(Scope::Write) && !read.allow(Scope::Admin));
        let write = Scopes::from_names(["ctxd:write"]);
        assert!(write.allow(Scope::Read) && write.allow(Scope::Write) && !write.allow(Scope::Admin));
        assert!(!Scopes::from_names(["email"]).allow(Scope::Read));
        assert_eq!(Scopes::READ_WRITE.to_string(), "ctxd:read ctxd:write");
        assert_eq!(Scopes::default().to_string(), "no ctxd scope");
    }
}
