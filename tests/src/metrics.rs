//! Reading the server's Prometheus metrics the way a scraper does.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use prometheus_parse::{Sample, Scrape, Value};

use crate::Server;

/// GET `path` on `addr`: the status and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{addr}{path}").parse().expect("uri");
    let response = client.get(uri).await.expect("http get");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The server's metrics, parsed (it must have been started with a metrics listener).
pub async fn scrape(server: &Server) -> Scrape {
    let (status, text) = http_get(server.metrics_addr.expect("a metrics listener"), "/metrics").await;
    assert_eq!(status, 200);
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text exposition")
}

pub fn matching<'a>(scrape: &'a Scrape, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> {
    scrape.samples.iter().filter(move |s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

/// The sum of the counters or gauges named `name` whose labels include `labels`.
pub fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(scrape, name, labels)
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is not a counter or gauge: {other:?}"),
        })
        .sum()
}

/// How many observations the histograms named `name` with `labels` hold.
pub fn observations(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(scrape, name, labels)
        .map(|s| match &s.value {
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}
