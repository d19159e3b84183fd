//! Calls about a context another node runs are sent on to that node, over the same public
//! API: with the caller's credentials (the node that runs the context checks them again) and
//! what is left of its deadline, marked as forwarded so they go no further.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ctxd_proto::v1::context_service_client::ContextServiceClient;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::peer::Peer;
use crate::auth::{FORWARDED_HEADER, PEER_AUTH_HEADER, PeerKey};
use crate::backoff::Backoff;

pub type Client = ContextServiceClient<Channel>;

/// On the status a forwarded call gets from a node that does not run its context (any more):
/// the sender should look for the context's node again.
pub const MOVED: &str = "ctxd-moved";
/// The caller's headers a forwarded call carries.
const CARRIED: [&str; 4] = ["authorization", "traceparent", "tracestate", "x-request-id"];

pub struct Forwarder {
    node: String,
    /// How long a call may wait for a context's node to be found again (it died, and its
    /// lease has to expire first).
    pub patience: Duration,
    /// Signs each call sent on, so the receiving node knows it comes from a peer.
    key: Option<Arc<PeerKey>>,
    /// With it, calls go to the other nodes over TLS, their certificates checked.
    tls: Option<ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    pub fn new(node: String, patience: Duration, key: Option<Arc<PeerKey>>, tls: Option<ClientTlsConfig>) -> Self {
        Self { node, patience, key, tls, channels: Mutex::new(HashMap::new()) }
    }

    /// Sends `request` on to `peer` as the unary call `method` (its path, as the descriptors
    /// name it): one way for every RPC, so no handler writes its own forwarding.
    pub async fn unary<Q, R>(
        &self,
        peer: &Peer,
        method: &'static str,
        request: Request<Q>,
    ) -> Result<Response<R>, Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel(peer)?).max_decoding_message_size(usize::MAX);
        grpc.ready().await.map_err(|e| Status::unavailable(format!("node {peer} cannot be reached: {e}")))?;
        let path = http::uri::PathAndQuery::from_static(method);
        grpc.unary(request, path, tonic_prost::ProstCodec::default()).await
    }

    /// A client of `peer` (for the streaming calls).
    pub fn client(&self, peer: &Peer) -> Result<Client, Status> {
        Ok(ContextServiceClient::new(self.channel(peer)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// The connection to `peer`, made on first use and kept.
    fn channel(&self, peer: &Peer) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(&peer.addr) {
            return Ok(channel.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let unusable = |e: tonic::transport::Error| {
            Status::internal(format!("node {} advertises an address that cannot be used: {e}", peer.node))
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", peer.addr))
            .map_err(unusable)?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(unusable)?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(peer.addr.clone(), channel.clone());
        Ok(channel)
    }

    /// `message` as the call to send on, with the caller's headers and deadline.
    pub fn request<T>(&self, metadata: &MetadataMap, message: T, deadline: Option<Instant>) -> Request<T> {
        let mut request = Request::new(message);
        let headers = request.metadata_mut();
        for name in CARRIED {
            if let Some(value) = metadata.get(name) {
                headers.insert(name, value.clone());
            }
        }
        if let Ok(node) = self.node.parse() {
            headers.insert(FORWARDED_HEADER, node);
        }
        if let Some(proof) = self.key.as_ref().and_then(|key| key.sign_call(&self.node).parse().ok()) {
            headers.insert(PEER_AUTH_HEADER, proof);
        }
        if let Some(deadline) = deadline {
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        request
    }
}

/// Whether a call was forwarded to this node.
pub fn is_forwarded(metadata: &MetadataMap) -> bool {
    metadata.contains_key(FORWARDED_HEADER)
}

/// Whether a failed forward is worth sending again once the context's node is found anew:
/// the node said the context moved, or the call never reached it (nothing could have
/// happened). `idempotent`: a read, safe to send again whatever happened.
pub fn retry(status: &Status, idempotent: bool) -> bool {
    // A status tonic made of a transport failure carries its cause (the other node sends no
    // cause); some (a connection reset as the call started) come as UNKNOWN, and a
    // connection dropped under a stream as CANCELLED, not UNAVAILABLE: a read is as safe to
    // send again after those.
    let transport = std::error::Error::source(status).is_some();
    match status.code() {
        Code::Unavailable => status.metadata().contains_key(MOVED) || idempotent || never_sent(status),
        Code::Unknown | Code::Cancelled => idempotent && transport,
        _ => false,
    }
}

/// The call failed connecting: the node is not there, so it cannot have seen the call.
fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::TimedOut
            )
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// Pauses between looks for a context's node: none before the first look again (this node's
/// view was only stale, say: the engine answers at once), then 50 ms, doubling, at most 500 ms
/// apart (a lease has to expire, or a node to finish giving the context up).
pub const LOOK_AGAIN: Backoff =
    Backoff { immediate: 1, first: Duration::from_millis(50), max: Duration::from_millis(500), jitter: false };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_sent_again_after_transport_failures_and_changes_only_when_never_sent() {
        let moved = {
            let mut status = Status::unavailable("not here");
            status.metadata_mut().insert(MOVED, "1".parse().expect("header"));
            status
        };
        assert!(retry(&moved, false) && retry(&moved, true));
        assert!(retry(&Status::unavailable("gone"), true) && !retry(&Status::unavailable("gone"), false));
        let refused = Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        assert_eq!(refused.code(), Code::Unknown);
        assert!(retry(&refused, true), "a read, after a transport failure");
        assert!(!retry(&refused, false), "a change is not sent again unless it cannot have arrived");
        // A status the other node answered carries no cause: never sent again.
        assert!(!retry(&Status::unknown("the node said so"), true));
        assert!(!retry(&Status::not_found("no such context"), true));
    }
}
