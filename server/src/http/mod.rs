//! Everything on the one listener besides ContextService: grpc-web translation, CORS for
//! browsers on other origins, the Host check of a server without authentication, health,
//! reflection, and the web client's static files.

use std::path::Path;

use axum::body::Body;
use http::{HeaderName, HeaderValue, Method, Request};
use tonic::service::Routes;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

mod allowed_hosts;
mod static_files;

pub use allowed_hosts::{AllowedHosts, AllowedHostsLayer};
use static_files::StaticFiles;

use crate::auth::AuthLayer;
use crate::domain::shown;
use crate::telemetry::{GrpcMetricsLayer, is_grpc};

/// Headers a browser client must be allowed to read to see a call's outcome.
const EXPOSED: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// Headers a browser client may send: grpc-web's own, its credentials, and trace context.
const ALLOWED: [&str; 7] =
    ["content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "authorization", "traceparent", "tracestate"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cors origin {origin:?} is not a valid header value")]
    Origin { origin: String },
}

/// CORS for grpc-web calls from `origins` (`*` allows any). Same-origin calls need none.
pub fn cors(origins: &[String]) -> Result<CorsLayer, Error> {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|origin| HeaderValue::from_str(origin).map_err(|_| Error::Origin { origin: origin.clone() }))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::POST, Method::GET, Method::OPTIONS])
        .allow_headers(AllowHeaders::list(ALLOWED.map(HeaderName::from_static)))
        .expose_headers(EXPOSED.map(HeaderName::from_static))
        .max_age(std::time::Duration::from_secs(24 * 3600)))
}

/// Reflection (v1, and v1alpha for grpcurl) describing ctxd's services and health.
pub fn add_reflection(routes: Routes) -> Result<Routes, Error> {
    let configure = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ctxd_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok(routes.add_service(configure().build_v1()?).add_service(configure().build_v1alpha()?))
}

/// Adds authentication and grpc-web to the gRPC routes and, with `web_dir`, serves that
/// directory to every request that is not gRPC; unknown paths get `index.html`, so a
/// single-page app can route on the client. Unknown gRPC methods still get UNIMPLEMENTED.
///
/// The layers wrap the gRPC routes only: grpc-web refuses plain HTTP/1.1 requests, which the
/// static files need, and the static files hold no data, so they need no credentials.
pub fn with_web(routes: Routes, auth: AuthLayer, web_dir: Option<&Path>) -> Routes {
    // Metrics inside grpc-web: a browser's call is counted as the method it calls. Auth inside
    // metrics: a refused call is counted with its code.
    let metrics = GrpcMetricsLayer::new(&[
        ctxd_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]);
    let router = routes.into_axum_router().layer(auth).layer(metrics).layer(tonic_web::GrpcWebLayer::new());
    let Some(dir) = web_dir else {
        return Routes::from(router);
    };
    let files = StaticFiles::new(dir);
    let router = router.fallback(move |request: Request<Body>| {
        let files = files.clone();
        async move {
            if is_grpc(request.headers()) {
                let method = shown(request.uri().path());
                return tonic::Status::unimplemented(format!("no method {method}")).into_http::<Body>();
            }
            files.serve(request).await
        }
    });
    Routes::from(router)
}
