//! Results: one JSON line per run (for scripts), and a human summary.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Failures counted by reason.
pub type Failures = BTreeMap<&'static str, u64>;

/// Percentiles of a latency histogram recorded in microseconds.
pub fn latency_json(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.50),
        "p95_us": h.value_at_quantile(0.95),
        "p99_us": h.value_at_quantile(0.99),
        "max_us": h.max(),
    })
}

/// A run's result: its fields in order, printed as JSON and as `key: value` lines.
#[derive(Debug, Default)]
pub struct Report {
    fields: Map<String, Value>,
}

impl Report {
    /// A report for `mode`.
    pub fn new(mode: &str) -> Report {
        let mut r = Report::default();
        r.set("mode", json!(mode));
        r
    }

    /// Sets a field.
    pub fn set(&mut self, key: &str, value: Value) {
        self.fields.insert(key.to_owned(), value);
    }

    /// Sets the CPU the server (when measured) and the load generator used, in cores, so
    /// that a client-side bottleneck shows.
    pub fn set_cpu(
        &mut self,
        server: Option<&crate::proc::CpuMeter>,
        client: &crate::proc::CpuMeter,
    ) {
        let round = |x: f64| (x * 100.0).round() / 100.0;
        if let Some(server) = server {
            self.set("server_cpu_cores", json!(round(server.cores())));
        }
        self.set("client_cpu_cores", json!(round(client.cores())));
    }

    /// As [`Report::set_cpu`], the load generator being several processes.
    pub fn set_cpu_of(
        &mut self,
        server: Option<&crate::proc::CpuMeter>,
        clients: &[crate::proc::CpuMeter],
    ) {
        let round = |x: f64| (x * 100.0).round() / 100.0;
        if let Some(server) = server {
            self.set("server_cpu_cores", json!(round(server.cores())));
        }
        let total: f64 = clients.iter().map(crate::proc::CpuMeter::cores).sum();
        self.set("client_cpu_cores", json!(round(total)));
    }

    /// The JSON line.
    pub fn json_line(&self) -> String {
        Value::Object(self.fields.clone()).to_string()
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        self.fields
            .iter()
            .map(|(k, v)| format!("{k:>28}: {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
