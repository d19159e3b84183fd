//! Where a call about one context is served: here, or on the node that runs the context
//! (on a cluster). A handler parses its request, asks [`ContextApi::routed`] with what it
//! does here, and converts the answer; sending the call on, looking for the context's node
//! again while it cannot be reached, and the one-hop rule are all here, once.

use std::sync::Arc;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::forward::{self, Forwarder};
use super::{ContextApi, deadline};
use crate::domain::ContextKey;
use crate::runtime::{Contexts, Peer};
use crate::telemetry::{RpcMethod, names};

/// Whether a call may be sent again after a failure that may have reached the other node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// A read: safe to send again, whatever happened.
    Safe,
    /// A change: sent again only when it cannot have arrived (the client retries it
    /// idempotently otherwise, as after a crash).
    IfNeverSent,
}

/// A unary call as it came, kept to be sent on when its context runs on another node.
pub(super) struct Call<Q> {
    pub metadata: MetadataMap,
    method: Option<RpcMethod>,
    /// A copy of the message, on a cluster only.
    message: Option<Q>,
    retry: Retry,
}

impl ContextApi {
    /// Splits `request` into the call (kept to be sent on) and its message (to parse).
    pub(super) fn call<Q: Clone>(&self, request: Request<Q>, retry: Retry) -> (Call<Q>, Q) {
        let method = request.extensions().get::<RpcMethod>().copied();
        let (metadata, _, message) = request.into_parts();
        let kept = self.forwarder.as_ref().map(|_| message.clone());
        (Call { metadata, method, message: kept, retry }, message)
    }

    /// Serves `call` about `key` here (`local`), or sends it on, as it came, to the node that
    /// runs the context.
    pub(super) async fn routed<Q, R>(
        &self,
        call: &Call<Q>,
        key: &ContextKey,
        local: impl AsyncFnOnce() -> Result<R, Status>,
    ) -> Result<Response<R>, Status>
    where
        Q: prost::Message + Clone + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let Call { metadata, method, message, retry } = call;
        let (Some(forwarder), Some(message)) = (&self.forwarder, message) else {
            return local().await.map(Response::new);
        };
        if forward::is_forwarded(metadata) {
            // One hop only: if the context is not run here, the sender looks for it again.
            self.contexts.serve_forwarded(key).await?;
            return local().await.map(Response::new);
        }
        let method =
            method.ok_or_else(|| Status::internal("the call's method is not known, so it cannot be sent on"))?;
        let deadline = deadline::from_metadata(metadata);
        let send = |peer: Peer| {
            let (forwarder, request) = (Arc::clone(forwarder), forwarder.request(metadata, message.clone(), deadline));
            async move { forwarder.unary::<Q, R>(&peer, method.path, request).await }
        };
        match reach(&self.contexts, forwarder, key, method.name, *retry, deadline, false, send).await? {
            Some(response) => Ok(Response::new(response.into_inner())),
            None => local().await.map(Response::new),
        }
    }
}

/// Sends a call about `key` with `send` to the node that runs the context, looking for that
/// node again while the call does not reach it (the node died: its lease expires, then a
/// node takes the context over), within the forwarder's patience and the call's deadline.
/// `None`: the context runs here (or is now taken here), so the caller serves it. `fresh`:
/// ask the engine who runs it, not this node's view (which pointed at a node that is gone).
#[allow(clippy::too_many_arguments)]
pub(super) async fn reach<T, F: Future<Output = Result<T, Status>>>(
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
        let Some(peer) = contexts.locate(key, fresh).await? else { return Ok(None) };
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
