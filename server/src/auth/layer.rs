//! The tower layer that authenticates every gRPC call, native and grpc-web alike (it sits
//! inside the grpc-web translation), before any handler runs. It puts the caller's
//! `Principal` into the request's extensions; a refused call is answered UNAUTHENTICATED
//! here and reaches no handler. Health and reflection stay open: they reveal no data.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower::{Layer, Service};

use super::authenticator::Authenticator;
use super::credential::Credential;
use super::peer_key::{FORWARDED_HEADER, PEER_AUTH_HEADER, PeerKey};
use crate::domain::shown;
use crate::telemetry::{LogLimiter, names};

/// Services any caller may use.
const OPEN_SERVICES: [&str; 3] =
    ["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
    /// With a cluster secret, a call marked as forwarded must be signed by a node with it.
    peers: Option<Arc<PeerKey>>,
    refusals: Arc<LogLimiter>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>, peers: Option<Arc<PeerKey>>) -> Self {
        Self { authenticator, peers, refusals: Arc::default() }
    }

    /// Whether a request that says it was sent on by a node was: signed with the cluster
    /// secret, when there is one. Without one (a cluster on loopback) the mark is taken as
    /// it is; it grants nothing but "do not send this further".
    fn sent_by_a_peer(&self, headers: &http::HeaderMap) -> bool {
        let (Some(key), Some(node)) = (&self.peers, headers.get(FORWARDED_HEADER)) else { return true };
        let proof = headers.get(PEER_AUTH_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        node.to_str().is_ok_and(|node| key.verify_call(node, proof))
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B, R> Service<Request<B>> for Authenticated<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    R: Default,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<R>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        if OPEN_SERVICES.iter().any(|open| path.starts_with(open)) {
            return Either::Right(self.inner.call(request));
        }
        if !self.layer.sent_by_a_peer(request.headers()) {
            metrics::counter!(names::FORWARDS_REFUSED).increment(1);
            if let Some(suppressed) = self.layer.refusals.admit("forwarded") {
                tracing::warn!(method = %shown(path), suppressed, "refused a forwarded call no node of this cluster signed");
            }
            let status = tonic::Status::permission_denied(
                "this call is marked as sent on by another ctxd node, but no node of this cluster signed it",
            );
            return Either::Left(ready(Ok(status.into_http())));
        }
        let header = request.headers().get(AUTHORIZATION);
        match self.layer.authenticator.authenticate(header) {
            Ok(principal) => {
                // Streams keep the credential, to end when it lapses.
                let authenticator = Arc::clone(&self.layer.authenticator);
                let credential = Credential::new(authenticator, header.cloned(), principal.clone());
                request.extensions_mut().insert(principal);
                request.extensions_mut().insert(credential);
                Either::Right(self.inner.call(request))
            }
            Err(error) => {
                metrics::counter!(names::AUTH_FAILURES, "reason" => error.reason()).increment(1);
                // The method and why; never the credential. At most a line a second per
                // reason, so refused calls cannot flood the log (the counter stays exact).
                if let Some(suppressed) = self.layer.refusals.admit(error.reason()) {
                    tracing::warn!(
                        method = %shown(path),
                        reason = %error.reason(),
                        suppressed,
                        "refused unauthenticated call: {error}"
                    );
                }
                Either::Left(ready(Ok(tonic::Status::unauthenticated(error.to_string()).into_http())))
            }
        }
    }
}
