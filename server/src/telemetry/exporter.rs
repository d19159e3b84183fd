//! The Prometheus exporter: one process-wide recorder, rendered in the text exposition
//! format at `GET /metrics` on a listener of its own, never the API's, so metrics are not
//! exposed with the API by accident (and the API never answers there).

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::names::{self, BYTES_BUCKETS, SAVE_BYTES, SAVES_PER_WRITE, SAVES_PER_WRITE_BUCKETS, SECONDS_BUCKETS};

/// How often histograms and expired entries are tidied (the exporter asks for it).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The Prometheus text format, version 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metrics: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    #[error("metrics: a recorder is already installed in this process")]
    AlreadyInstalled,
}

/// Something that sets gauges from a source read when scraped (the process, the store).
pub type Collector = Arc<dyn Fn() + Send + Sync>;

/// The installed recorder's handle.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    collectors: Vec<Collector>,
}

impl Exporter {
    /// Installs the process-wide recorder and describes every metric. Until this is called,
    /// recording a metric costs nothing and goes nowhere.
    pub fn install() -> Result<Self, Error> {
        let recorder = PrometheusBuilder::new()
            .set_buckets(SECONDS_BUCKETS)?
            .set_buckets_for_metric(Matcher::Full(SAVES_PER_WRITE.into()), SAVES_PER_WRITE_BUCKETS)?
            .set_buckets_for_metric(Matcher::Full(SAVE_BYTES.into()), BYTES_BUCKETS)?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| Error::AlreadyInstalled)?;
        names::describe();
        let process = Arc::new(metrics_process::Collector::default());
        process.describe();
        Ok(Self { handle, collectors: vec![Arc::new(move || process.collect())] })
    }

    /// Adds a collector, run before every scrape.
    pub fn collect_with(&mut self, collector: Collector) {
        self.collectors.push(collector);
    }

    /// Everything recorded so far, in the text exposition format, with every collector's
    /// figures read now.
    pub fn render(&self) -> String {
        for collect in &self.collectors {
            collect();
        }
        self.handle.render()
    }
}

/// Serves `GET /metrics` on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, exporter: Exporter, stop: CancellationToken) -> std::io::Result<()> {
    let upkeep = {
        let (handle, stop) = (exporter.handle.clone(), stop.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = every.tick() => handle.run_upkeep(),
                }
            }
        })
    };
    let router = axum::Router::new().route(
        "/metrics",
        get(move || {
            let exporter = exporter.clone();
            // Collectors read /proc and RocksDB's properties: quick, but not for the executor.
            async move {
                let text = tokio::task::spawn_blocking(move || exporter.render()).await.unwrap_or_default();
                ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
            }
        }),
    );
    let served = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
    upkeep.abort();
    served
}
