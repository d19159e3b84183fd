//! What a running ctxd shows of itself: Prometheus metrics on their own listener, and the
//! gRPC layer that counts (and, with tracing on, traces) every call, native and grpc-web
//! alike; OpenTelemetry trace export.

mod exporter;
mod grpc;
mod log_fields;
mod log_limit;
pub mod names;
pub mod traces;

pub use exporter::{Error as MetricsError, Exporter, serve};
pub use grpc::{GrpcMetricsLayer, RpcMethod, is_grpc};
pub use log_fields::escaped_fields;
pub use log_limit::LogLimiter;
