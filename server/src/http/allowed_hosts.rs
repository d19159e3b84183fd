//! Without authentication, ctxd answers only requests addressed to it by a loopback name or
//! address (or a host the operator allowed). A web page whose domain an attacker rebinds to
//! 127.0.0.1 ("DNS rebinding") sends its own domain as `Host`, so it is refused here before
//! it reaches a handler or a static file; browsers' `Origin` is limited by the CORS list too.
//! With authentication on, a credential is what protects the data, and every host is served.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::domain::shown;
use crate::telemetry::{LogLimiter, is_grpc};

/// The hosts a server without authentication answers.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    /// Names, `host` or `host:port` (compared ignoring ASCII case).
    names: Vec<String>,
    any: bool,
}

impl AllowedHosts {
    /// Loopback names and addresses, plus `allowed` (`*`: any host) and `also` (the
    /// addresses this node listens on and is advertised at).
    pub fn new(allowed: &[String], also: &[String]) -> Self {
        let names = allowed.iter().chain(also).map(|name| name.trim().to_owned()).collect();
        Self { names, any: allowed.iter().any(|name| name.trim() == "*") }
    }

    /// Whether a request addressed to `authority` (host, or host:port) is answered.
    pub fn allows(&self, authority: &str) -> bool {
        if self.any {
            return true;
        }
        let authority = authority.trim();
        let host = host_of(authority);
        is_loopback(host)
            || self.names.iter().any(|name| name.eq_ignore_ascii_case(authority) || name.eq_ignore_ascii_case(host))
    }
}

/// The host of `host[:port]`, `[v6]:port` or a bare IPv6 address.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

fn is_loopback(host: &str) -> bool {
    const LOCALHOST: &str = "localhost";
    let host = host.trim_end_matches('.');
    let subdomain = host.len() > LOCALHOST.len()
        && host.is_char_boundary(host.len() - LOCALHOST.len() - 1)
        && host[host.len() - LOCALHOST.len() - 1..].eq_ignore_ascii_case(".localhost");
    host.eq_ignore_ascii_case(LOCALHOST) || subdomain || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[derive(Clone)]
pub struct AllowedHostsLayer {
    hosts: Arc<AllowedHosts>,
    refusals: Arc<LogLimiter>,
}

impl AllowedHostsLayer {
    pub fn new(hosts: AllowedHosts) -> Self {
        Self { hosts: Arc::new(hosts), refusals: Arc::default() }
    }
}

impl<S> Layer<S> for AllowedHostsLayer {
    type Service = HostChecked<S>;

    fn layer(&self, inner: S) -> HostChecked<S> {
        HostChecked { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct HostChecked<S> {
    inner: S,
    layer: AllowedHostsLayer,
}

impl<S, B> Service<Request<B>> for HostChecked<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // HTTP/2 carries the host as :authority (in the URI), HTTP/1.1 as the Host header.
        let authority = match request.uri().authority() {
            Some(authority) => Some(authority.as_str()),
            None => request.headers().get(HOST).and_then(|h| h.to_str().ok()),
        };
        if authority.is_some_and(|a| self.layer.hosts.allows(a)) {
            return Either::Right(self.inner.call(request));
        }
        let host = authority.unwrap_or_default().to_owned();
        metrics::counter!(crate::telemetry::names::HOSTS_REFUSED).increment(1);
        if let Some(suppressed) = self.layer.refusals.admit("host") {
            tracing::warn!(host = %shown(&host), suppressed, "refused a request for a host this server does not answer");
        }
        let message = format!(
            "this server has no authentication and answers only requests for localhost or a loopback address, not \
             for host {}: pass --allowed-hosts to name the hosts it is reached by, or configure authentication",
            shown(&host)
        );
        Either::Left(ready(Ok(refusal(&request, message))))
    }
}

/// PERMISSION_DENIED for a gRPC (or grpc-web) call, 403 for anything else.
fn refusal<B>(request: &Request<B>, message: String) -> Response<tonic::body::Body> {
    if is_grpc(request.headers()) {
        let mut response = tonic::Status::permission_denied(message).into_http::<tonic::body::Body>();
        if let Some(content_type) = request.headers().get(CONTENT_TYPE) {
            response.headers_mut().insert(CONTENT_TYPE, content_type.clone());
        }
        return response;
    }
    let mut response = Response::new(tonic::body::Body::new(message + "\n"));
    *response.status_mut() = StatusCode::FORBIDDEN;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_hosts_are_answered_and_nothing_else() {
        let hosts =
            AllowedHosts::new(&["chat.example.com".into(), "10.0.0.5:8080".into()], &["192.168.1.2:50051".into()]);
        for ok in [
            "localhost",
            "localhost:50051",
            "app.localhost:1",
            "127.0.0.1:50051",
            "127.9.9.9",
            "[::1]:50051",
            "::1",
            "CHAT.example.com",
            "chat.example.com:443",
            "10.0.0.5:8080",
            "192.168.1.2:50051",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for refused in [
            "evil.com",
            "evil.com:50051",
            "localhost.evil.com",
            "10.0.0.5:9090",
            "192.168.1.2:1",
            "",
            "127.0.0.1.evil.com",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
        assert!(AllowedHosts::new(&["*".into()], &[]).allows("anything.example"));
    }
}
