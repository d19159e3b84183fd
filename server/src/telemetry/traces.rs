//! OpenTelemetry traces, exported over OTLP/gRPC when `--otlp-endpoint` is set: a span per
//! RPC (continuing a caller's W3C `traceparent`), and for each run a span with its LLM
//! calls, tool calls and saves inside it. Export happens on the SDK's batch thread: a full
//! queue drops spans, it never blocks or slows an action. With no endpoint no span is made.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use http::HeaderMap;
use metrics::counter;
use opentelemetry::KeyValue;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::names;

static ENABLED: OnceLock<bool> = OnceLock::new();

/// Whether spans are made (an OTLP endpoint is configured).
pub fn enabled() -> bool {
    ENABLED.get().copied().unwrap_or(false)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up trace export to {endpoint}: {source}")]
pub struct Error {
    endpoint: String,
    source: opentelemetry_otlp::ExporterBuildError,
}

/// The exporting provider; [`Exporting::shutdown`] flushes what is queued.
pub struct Exporting {
    provider: SdkTracerProvider,
}

impl Exporting {
    /// Starts exporting to `endpoint` (e.g. `http://127.0.0.1:4317`). Must be called inside
    /// the Tokio runtime the gRPC exporter will use. Returns the layer that turns `tracing`
    /// spans into OpenTelemetry spans.
    pub fn start<S>(
        endpoint: &str,
        node: &str,
    ) -> Result<(Self, tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>), Error>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|source| Error { endpoint: endpoint.to_owned(), source })?;
        let resource = Resource::builder()
            .with_service_name("ctxd")
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("service.instance.id", node.to_owned()),
            ])
            .build();
        let batch = BatchSpanProcessor::builder(Counting(exporter)).build();
        let provider =
            SdkTracerProvider::builder().with_span_processor(Counting(batch)).with_resource(resource).build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("ctxd"));
        let _ = ENABLED.set(true);
        Ok((Self { provider }, layer))
    }

    /// Exports what is still queued, then stops.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("ctxd: trace export did not shut down cleanly: {error}");
        }
    }
}

/// The id of the trace `span` belongs to, as logs show it (32 hex digits).
pub fn trace_id(span: &Span) -> String {
    use opentelemetry::trace::TraceContextExt as _;
    span.context().span().span_context().trace_id().to_string()
}

/// Makes `span` continue the trace a caller named in its `traceparent` header, if any.
pub fn continue_trace(span: &Span, headers: &HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    // A span that is disabled (no subscriber wants it) has nothing to attach to.
    let _ = span.set_parent(parent);
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Counts spans on their way out: as a processor, the spans that ended (handed to the batch
/// queue); as an exporter, the spans sent or refused. The SDK's queue drops spans when full
/// rather than block, so ended − exported − failed is what was dropped or is still queued.
#[derive(Debug)]
struct Counting<T>(T);

impl<P: SpanProcessor> SpanProcessor for Counting<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        counter!(names::TRACE_SPANS_ENDED).increment(1);
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let spans = batch.len() as u64;
        let export = self.0.export(batch);
        async move {
            let result = export.await;
            let name = if result.is_ok() { names::TRACE_SPANS_EXPORTED } else { names::TRACE_SPANS_FAILED };
            counter!(name).increment(spans);
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}
