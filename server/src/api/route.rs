//! A call about one context, served here or sent on as it came to the node that runs it. A
//! handler parses its request, asks [`ContextApi::routed`] with what it does here, and
//! converts the answer; where the context runs and reaching that node are
//! `crate::cluster`'s.

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{ContextApi, deadline};
use crate::cluster::{self, Peer, Retry, forward};
use crate::domain::ContextKey;
use crate::telemetry::RpcMethod;

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
            cluster::route_forwarded(&self.contexts, key).await?;
            return local().await.map(Response::new);
        }
        let method =
            method.ok_or_else(|| Status::internal("the call's method is not known, so it cannot be sent on"))?;
        let deadline = deadline::from_metadata(metadata);
        let send = |peer: Peer| {
            let (forwarder, request) = (Arc::clone(forwarder), forwarder.request(metadata, message.clone(), deadline));
            async move { forwarder.unary::<Q, R>(&peer, method.path, request).await }
        };
        match cluster::reach(&self.contexts, forwarder, key, method.name, *retry, deadline, false, send).await? {
            Some(response) => Ok(Response::new(response.into_inner())),
            None => local().await.map(Response::new),
        }
    }
}
