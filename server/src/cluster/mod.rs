//! How a context moves between nodes, all in one place (docs/cluster.md).
//!
//! - `placement`: the questions the runtime asks about where a context runs (take it, give
//!   it up, who holds it, whose runs lost their node), and `Solo`, one node's answers.
//! - `nats`: the answers on a NATS cluster: membership (heartbeats: who is alive), partitions
//!   (each held by one node, taken and handed over by compare-and-set on its lease), and what
//!   a heartbeat holds.
//! - `route`: where a call about one context is served — here, or on the node that holds
//!   it — and looking for that node again while it cannot be reached.
//! - `forward`: sending a call on to that node, as it came.
//! - `sweep`: taking over this node's share of the runs whose node died or left.
//! - `peer`: another node, as calls are sent to it.

pub mod forward;
mod nats;
mod peer;
mod placement;
mod route;
mod sweep;

pub use forward::Forwarder;
pub use nats::{Cluster, ClusterOptions};
pub use peer::Peer;
pub use placement::{Claim, Lease, Placement, Solo};
pub use route::{Retry, Route, reach, route, route_forwarded};
pub use sweep::sweep;
