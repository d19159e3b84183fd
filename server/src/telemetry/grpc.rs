//! A tower layer that counts every gRPC call with grpc-ecosystem's metric names. It sits
//! inside the grpc-web translation, so a browser's call is counted as the same method.
//! Methods are known from the services' descriptors: a path no service has is counted as
//! `unknown`, so a client cannot grow the label set. A known method is also put into the
//! request's extensions ([`RpcMethod`]), so a handler knows the call it serves by the
//! descriptors' names (to send it on to another node, to label what it counts).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics::{counter, histogram};
use prost::Message as _;
use tower::{Layer, Service};
use tracing::{Instrument as _, Span};

use super::names::{GRPC_HANDLED, GRPC_HANDLING_SECONDS, GRPC_STARTED};
use super::traces;

/// One RPC as the descriptors name it. The names are the services' own, read once at
/// start-up and kept for the life of the process (a few dozen strings), so recording a call
/// allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcMethod {
    pub kind: &'static str,
    pub service: &'static str,
    pub name: &'static str,
    /// `/package.Service/Method`, as the call is sent.
    pub path: &'static str,
}

impl RpcMethod {
    const UNKNOWN: Self = Self { kind: "unknown", service: "unknown", name: "unknown", path: "unknown" };

    fn labels(&self) -> [(&'static str, &'static str); 3] {
        [("grpc_type", self.kind), ("grpc_service", self.service), ("grpc_method", self.name)]
    }
}

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    methods: Arc<HashMap<String, RpcMethod>>,
}

impl GrpcMetricsLayer {
    /// Knows the methods of the services in these encoded `FileDescriptorSet`s.
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        let mut methods = HashMap::new();
        for bytes in descriptor_sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*bytes) else { continue };
            for file in set.file {
                for service in &file.service {
                    let full: &'static str = Box::leak(format!("{}.{}", file.package(), service.name()).into());
                    for method in &service.method {
                        let kind = match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => "unary",
                            (false, true) => "server_stream",
                            (true, false) => "client_stream",
                            (true, true) => "bidi_stream",
                        };
                        let name: &'static str = Box::leak(method.name().into());
                        let path: &'static str = Box::leak(format!("/{full}/{name}").into());
                        methods.insert(path.to_owned(), RpcMethod { kind, service: full, name, path });
                    }
                }
            }
        }
        Self { methods: Arc::new(methods) }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner, methods: Arc::clone(&self.methods) }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    methods: Arc<HashMap<String, RpcMethod>>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let method = is_grpc(request.headers())
            .then(|| self.methods.get(request.uri().path()).copied().unwrap_or(RpcMethod::UNKNOWN));
        if let Some(known) = method.filter(|m| *m != RpcMethod::UNKNOWN) {
            request.extensions_mut().insert(known);
        }
        if let Some(method) = &method {
            counter!(GRPC_STARTED, &method.labels()).increment(1);
        }
        let started = Instant::now();
        let span = match &method {
            Some(method) if traces::enabled() => {
                let span = tracing::info_span!(
                    "grpc",
                    otel.name = %format_args!("{}/{}", method.service, method.name),
                    otel.kind = "server",
                    rpc.system = "grpc",
                    rpc.service = %method.service,
                    rpc.method = %method.name,
                    rpc.grpc.status_code = tracing::field::Empty,
                    context_id = tracing::field::Empty,
                    trace_id = tracing::field::Empty,
                );
                traces::continue_trace(&span, request.headers());
                span.record("trace_id", traces::trace_id(&span));
                span
            }
            _ => Span::none(),
        };
        let response = span.in_scope(|| self.inner.call(request));
        let span_for_body = span.clone();
        Box::pin(
            async move {
                let response = response.await?;
                let Some(method) = method else {
                    return Ok(response.map(|body| CountedBody { body, call: None }));
                };
                // A call that fails before any message answers "trailers-only": the status is
                // in the headers.
                let status = grpc_status(response.headers());
                let mut call = Call { method, started, done: false, span: span_for_body };
                if let Some(code) = status {
                    call.finish(code);
                }
                Ok(response.map(|body| CountedBody { body, call: Some(call) }))
            }
            .instrument(span),
        )
    }
}

/// Whether a request is a gRPC call (native, or grpc-web once translated).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// One call until its status is known.
struct Call {
    method: RpcMethod,
    started: Instant,
    done: bool,
    /// The RPC's span (disabled without tracing): it ends when the response does.
    span: Span,
}

impl Call {
    fn finish(&mut self, code: i32) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.span.record("rpc.grpc.status_code", code);
        let [kind, service, name] = self.method.labels();
        counter!(GRPC_HANDLED, &[kind, service, name, ("grpc_code", code_name(code))]).increment(1);
        // A stream's lifetime is not a latency: only unary calls are timed.
        if self.method.kind == "unary" {
            histogram!(GRPC_HANDLING_SECONDS, &[kind, service, name]).record(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Call {
    /// The response was dropped before it ended: the client went away.
    fn drop(&mut self) {
        self.finish(1);
    }
}

/// A response body that reports the call's status when its trailers pass (or it ends).
pub struct CountedBody<B> {
    body: B,
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(call) = &mut this.call {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                        call.finish(code);
                    }
                }
                Poll::Ready(Some(Err(_))) => call.finish(13),
                // Ended without a status: gRPC says that is UNKNOWN.
                Poll::Ready(None) => call.finish(2),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The status code's name as grpc-ecosystem labels it.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}
