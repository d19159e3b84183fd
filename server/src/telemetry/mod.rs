//! What a running ctxd shows of itself: Prometheus metrics on their own listener, and the
//! gRPC layer that counts every call (native and grpc-web alike).

mod exporter;
mod grpc;
pub mod names;

pub use exporter::{Error as MetricsError, Exporter, serve};
pub use grpc::GrpcMetricsLayer;
