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
use crate::telemetry::names;

/// Services any caller may use.
const OPEN_SERVICES: [&str; 3] =
    ["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated { inner, authenticator: Arc::clone(&self.authenticator) }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
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
        match self.authenticator.authenticate(request.headers().get(AUTHORIZATION)) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                Either::Right(self.inner.call(request))
            }
            Err(error) => {
                metrics::counter!(names::AUTH_FAILURES, "reason" => error.reason()).increment(1);
                // The method and why; never the credential.
                tracing::warn!(method = %path, reason = %error.reason(), "refused unauthenticated call: {error}");
                Either::Left(ready(Ok(tonic::Status::unauthenticated(error.to_string()).into_http())))
            }
        }
    }
}
