//! Where a call about one context is served: here, or on the node that holds it, asked of
//! placement directly; and [`reach`], the one loop that looks for that node again while a
//! call does not get there.

use tokio::time::Instant;
use tonic::Status;

use super::forward::{self, Forwarder};
use super::peer::Peer;
use super::placement::Claim;
use crate::domain::ContextKey;
use crate::runtime::{Contexts, Error, Result};
use crate::telemetry::names;

/// Where calls about a context are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node runs it (now loading it, if it was free).
    Here,
    /// A live node holds it: its calls go there.
    There(Peer),
}

/// Where calls about `key` are served. A context no live node holds is taken here, so a
/// context runs on the node its first call reached (docs/cluster.md, "Spread"). `fresh`: ask
/// the engine, not this node's view of who runs what (after that view pointed at a node that
/// is gone).
pub async fn route(contexts: &Contexts, key: &ContextKey, fresh: bool) -> Result<Route> {
    if contexts.runs(key) {
        return Ok(Route::Here);
    }
    let placement = contexts.placement();
    if !fresh && let Some(peer) = placement.holder(key) {
        return Ok(Route::There(peer));
    }
    match placement.claim(key).await? {
        Claim::Mine(lease) => contexts.start_claimed(key, lease).map(|()| Route::Here),
        Claim::Elsewhere(peer) => Ok(Route::There(peer)),
    }
}

/// Whether a call another node sent on here is served here: only if this node runs the
/// context, or the engine still names this node its holder (see
/// [`super::Placement::kept`]); otherwise [`Error::NotHere`] or [`Error::Elsewhere`], and
/// the sender looks again. A free context is never taken for another node's caller: the
/// sender takes it, not a node that a stale view pointed at (say, the one that created it).
pub async fn route_forwarded(contexts: &Contexts, key: &ContextKey) -> Result<()> {
    if contexts.runs(key) {
        return Ok(());
    }
    if !contexts.placement().kept(key).await? {
        return Err(Error::NotHere(key.id));
    }
    contexts.take(key).await
}

/// Whether a call may be sent again after a failure that may have reached the other node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A read: safe to send again, whatever happened.
    Safe,
    /// A change: sent again only when it cannot have arrived (the client retries it
    /// idempotently otherwise, as after a crash).
    IfNeverSent,
}

/// Sends a call about `key` with `send` to the node that runs the context, looking for that
/// node again while the call does not reach it (the node died: its lease expires, then a
/// node takes the context over), within the forwarder's patience and the call's deadline.
/// `None`: the context runs here (or is now taken here), so the caller serves it. `fresh`:
/// ask the engine who runs it first.
#[allow(clippy::too_many_arguments)]
pub async fn reach<T, F: Future<Output = Result<T, Status>>>(
    contexts: &Contexts,
    forwarder: &Forwarder,
    key: &ContextKey,
    method: &'static str,
    retry: Retry,
    deadline: Option<Instant>,
    fresh: bool,
    send: impl Fn(Peer) -> F,
) -> Result<Option<T>, Status> {
    let give_up = Instant::now() + forwarder.patience;
    let mut attempts = forward::LOOK_AGAIN.attempts();
    let mut fresh = fresh;
    loop {
        let Route::There(peer) = route(contexts, key, fresh).await? else { return Ok(None) };
        let outcome = send(peer.clone()).await;
        let now = Instant::now();
        match outcome {
            Ok(sent) => {
                metrics::counter!(names::FORWARDED, "grpc_method" => method, "outcome" => "ok").increment(1);
                return Ok(Some(sent));
            }
            Err(status)
                if forward::retry(&status, retry == Retry::Safe)
                    && now < give_up
                    && deadline.is_none_or(|d| now < d) =>
            {
                tracing::debug!(context = %key.id, %peer, %status, "the context's node did not take the call; looking for it again");
                metrics::counter!(names::FORWARDED, "grpc_method" => method, "outcome" => "unreachable").increment(1);
                attempts.wait().await;
                fresh = true;
            }
            Err(status) => {
                metrics::counter!(names::FORWARDED, "grpc_method" => method, "outcome" => "error").increment(1);
                return Err(status);
            }
        }
    }
}
