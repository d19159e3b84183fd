//! The results: one row per measured case, as a table and as JSON.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::stats::Summary;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub case: String,
    #[serde(flatten)]
    pub latency: Summary,
    /// Server CPU time used during the case (user + system), in ms.
    pub server_cpu_ms: Option<u64>,
    /// Server peak RSS during the case, in KiB.
    pub server_peak_rss_kib: Option<u64>,
    /// Anything else the case measured (ratios to the floor, transitions per turn, ...).
    pub notes: Map<String, Value>,
}

impl Row {
    pub fn new(scenario: &'static str, case: impl Into<String>, latency: Summary) -> Self {
        Self { scenario, case: case.into(), latency, server_cpu_ms: None, server_peak_rss_kib: None, notes: Map::new() }
    }

    pub fn note(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.notes.insert(key.to_owned(), value.into());
        self
    }
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | case | n | p50 ms | p95 ms | p99 ms | max ms | ops/s | server CPU ms | peak RSS MiB | notes |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let l = &row.latency;
        let notes: Vec<String> = row.notes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |\n",
            row.scenario,
            row.case,
            l.count,
            ms(l.p50_us),
            ms(l.p95_us),
            ms(l.p99_us),
            ms(l.max_us),
            l.throughput,
            row.server_cpu_ms.map(|v| v.to_string()).unwrap_or_default(),
            row.server_peak_rss_kib.map(|v| format!("{:.1}", v as f64 / 1024.0)).unwrap_or_default(),
            notes.join(" "),
        ));
    }
    out
}
