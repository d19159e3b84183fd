//! Where a context's actor may run. On one node it is always here (`Solo`); on a cluster of
//! nodes sharing one store, the node that holds the lease of a context's partition runs it
//! and the others send its calls there (`nats` implements that on NATS). The runtime only asks the questions
//! below and never names the engine; their errors are the engine's.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::peer::Peer;
use crate::domain::ContextKey;
use crate::store::Result;

/// This node's right to run a context, as the engine recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The engine's revision of the record that says so (for giving it up by compare-and-set).
    pub revision: u64,
    /// The standing it was taken under (see [`Placement::standing`]).
    pub standing: u64,
}

/// The outcome of asking for a context.
#[derive(Debug, Clone)]
pub enum Claim {
    Mine(Lease),
    /// A live node holds it: its calls go there.
    Elsewhere(Peer),
}

#[async_trait]
pub trait Placement: Send + Sync {
    /// Takes `key` for this node unless a live node holds it (compare-and-set in the engine:
    /// of two nodes asking at once, one gets it).
    async fn claim(&self, key: &ContextKey) -> Result<Claim>;

    /// Gives `key` up; called once its last save is written in full.
    async fn release(&self, key: &ContextKey, lease: Lease);

    /// Whether `lease` of `key` still lets this node run it: asked by its actor whenever the
    /// standing changes (a partition given up or lost, or the node's standing lost).
    fn valid(&self, key: &ContextKey, lease: Lease) -> bool;

    /// The live node that holds `key`, if it is not this one, as far as this node knows
    /// without asking the engine (a hint: the holder may have let it go since).
    fn holder(&self, key: &ContextKey) -> Option<Peer>;

    /// Whether the engine names this node the holder of `key` though this node holds no lease
    /// of it (giving it up failed): every other node sends its calls here, so this node must
    /// run it again.
    async fn kept(&self, key: &ContextKey) -> Result<bool>;

    /// Of `candidates` (contexts saved mid-run that no actor here runs), those whose holder is
    /// gone and that this node should take over. Spread over the live nodes, so that the runs
    /// of a node that died do not all land on one survivor.
    fn orphans(&self, candidates: Vec<ContextKey>) -> Vec<ContextKey>;

    /// Changes whenever a node joins, leaves or is found dead, or a lease is given up: time to
    /// look for orphans. `None` on one node (nothing to look for).
    fn changes(&self) -> Option<watch::Receiver<u64>>;

    /// How often to look for orphans even when nothing was seen to change.
    fn sweep_every(&self) -> Duration;

    /// The standing under which this node holds its leases. It changes when the node lost it
    /// (it could not tell the cluster it was alive in time): every lease taken before is then
    /// void, and its actors must stop at once, since another node may take their contexts.
    fn standing(&self) -> watch::Receiver<u64>;

    /// Leaves the cluster: called at shutdown once every lease was given up, so that the other
    /// nodes take over at once instead of waiting for this one's to expire.
    async fn leave(&self);
}

/// One node: every context is run here.
pub struct Solo {
    standing: watch::Sender<u64>,
}

impl Solo {
    pub fn new() -> Self {
        Self { standing: watch::channel(0).0 }
    }
}

impl Default for Solo {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Placement for Solo {
    async fn claim(&self, _key: &ContextKey) -> Result<Claim> {
        Ok(Claim::Mine(Lease { revision: 0, standing: 0 }))
    }

    async fn release(&self, _key: &ContextKey, _lease: Lease) {}

    fn valid(&self, _key: &ContextKey, _lease: Lease) -> bool {
        true
    }

    fn holder(&self, _key: &ContextKey) -> Option<Peer> {
        None
    }

    async fn kept(&self, _key: &ContextKey) -> Result<bool> {
        // Every context is this node's.
        Ok(true)
    }

    fn orphans(&self, _candidates: Vec<ContextKey>) -> Vec<ContextKey> {
        Vec::new()
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        None
    }

    fn sweep_every(&self) -> Duration {
        Duration::MAX
    }

    fn standing(&self) -> watch::Receiver<u64> {
        self.standing.subscribe()
    }

    async fn leave(&self) {}
}
