//! An independent load generator for the same unary action: h2load (Debian's
//! `nghttp2-client`) posting a pre-encoded gRPC frame, beside this harness's own client.
//! CreateContext is the action used: every call is one synced write, and the same request
//! body can be sent again and again.

use std::process::Command;
use std::time::{Duration, Instant};

use ctxd_tests::Server;
use ctxd_tests::v1 as pb;

use crate::report::Row;
use crate::stats::Summary;

/// An empty `CreateContextRequest` in one gRPC frame: uncompressed, length 0.
const EMPTY_FRAME: [u8; 5] = [0, 0, 0, 0, 0];

pub async fn create_context(server: &Server, requests: usize, quick: bool) -> Vec<Row> {
    let mut client = server.client().await;
    let started = Instant::now();
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        client.create_context(pb::CreateContextRequest::default()).await.expect("create");
        samples.push(t.elapsed());
    }
    let mean_us = samples.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e6 / requests as f64;
    let mut rows = vec![
        Row::new("crosscheck", "CreateContext, this harness, 1 client", Summary::of(samples, started.elapsed()))
            .note("mean_us", format!("{mean_us:.0}")),
    ];
    match h2load(server, requests) {
        Ok((mean_us, throughput)) => rows.push(
            Row::new(
                "crosscheck",
                "CreateContext, h2load -c1 -m1",
                Summary { count: requests, throughput, ..Summary::default() },
            )
            .note("mean_us", format!("{mean_us:.0}")),
        ),
        // The smoke run (`--quick`, part of `make test`) does not install h2load; only
        // `make bench` does, so only a full run says it is missing.
        Err(_) if quick && !h2load_installed() => {}
        Err(reason) => eprintln!("crosscheck: h2load skipped: {reason}"),
    }
    rows
}

fn h2load_installed() -> bool {
    Command::new("h2load").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Runs h2load; returns its mean request time (µs) and requests per second.
fn h2load(server: &Server, requests: usize) -> Result<(f64, f64), String> {
    let body = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::fs::write(body.path(), EMPTY_FRAME).map_err(|e| e.to_string())?;
    let url = format!("http://{}/ctxd.v1.ContextService/CreateContext", server.addr);
    let output = Command::new("h2load")
        .args(["-n", &requests.to_string(), "-c", "1", "-m", "1"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers", "-d"])
        .arg(body.path())
        .arg(&url)
        .output()
        .map_err(|e| format!("cannot run h2load ({e}); apt-get install nghttp2-client"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let succeeded = text.contains(&format!("{requests} succeeded"));
    if !output.status.success() || !succeeded {
        return Err(format!("h2load failed:\n{text}"));
    }
    let mean = text
        .lines()
        .find(|l| l.trim_start().starts_with("time for request:"))
        .and_then(|l| l.split_whitespace().nth(5))
        .and_then(micros)
        .ok_or("no request time in h2load's output")?;
    let throughput = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.trim_end_matches(" req/s").parse().ok())
        .ok_or("no req/s in h2load's output")?;
    Ok((mean, throughput))
}

/// "594us", "1.21ms", "2.3s" → microseconds.
fn micros(value: &str) -> Option<f64> {
    let (number, scale) = if let Some(v) = value.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1e3)
    } else {
        (value.strip_suffix('s')?, 1e6)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    #[test]
    fn h2load_durations_parse() {
        assert_eq!(super::micros("594us"), Some(594.0));
        assert_eq!(super::micros("1.5ms"), Some(1500.0));
        assert_eq!(super::micros("2s"), Some(2e6));
        assert_eq!(super::micros("fast"), None);
    }
}
