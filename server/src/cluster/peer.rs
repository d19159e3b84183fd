//! Another ctxd node of a cluster, as calls are sent to it.

use std::fmt;

/// Another ctxd node, as calls are sent to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node: String,
    /// host:port of its gRPC listener.
    pub addr: String,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.node, self.addr)
    }
}
