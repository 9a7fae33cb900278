//! `/metrics` in the Prometheus text format (version 0.0.4), read from the layers'
//! atomic counters at scrape time: nothing is recorded twice, and no global registry.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::auth::AuthError;
use crate::state::{AppState, EVENT_REFUSAL_CODES};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Renders every metric.
pub fn render(state: &AppState) -> String {
    let engine = state.io.engine().stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let sessions = engine.sessions.load(Ordering::Relaxed).max(0);
    let websocket = engine.websocket_sessions.load(Ordering::Relaxed).max(0);
    let s = &state.shared.stats;
    let mut out = Out(String::with_capacity(4096));

    out.family(
        "herald_connections",
        "gauge",
        "Open Engine.IO connections, by transport.",
    );
    out.sample(
        "herald_connections",
        &[("transport", "websocket")],
        websocket,
    );
    out.sample(
        "herald_connections",
        &[("transport", "polling")],
        sessions - websocket,
    );
    out.one(
        "herald_sockets",
        "gauge",
        "Sockets connected to namespace /.",
        state.root.len(),
    );
    out.one(
        "herald_handshakes_total",
        "counter",
        "Engine.IO sessions opened.",
        load(&engine.handshakes),
    );
    out.one(
        "herald_upgrades_total",
        "counter",
        "Upgrades from polling to WebSocket.",
        load(&engine.upgrades),
    );
    out.one(
        "herald_packets_received_total",
        "counter",
        "Engine.IO packets received.",
        load(&engine.packets_in),
    );
    out.one(
        "herald_packets_sent_total",
        "counter",
        "Engine.IO packets sent.",
        load(&engine.packets_out),
    );
    out.one(
        "herald_bytes_received_total",
        "counter",
        "Bytes received in messages.",
        load(&engine.bytes_in),
    );
    out.one(
        "herald_bytes_sent_total",
        "counter",
        "Bytes written to sockets and poll responses.",
        load(&engine.bytes_out),
    );
    out.family(
        "herald_auth_refusals_total",
        "counter",
        "Connections refused by auth, by reason.",
    );
    for (code, n) in AuthError::CODES.iter().zip(&s.auth_refusals) {
        out.sample("herald_auth_refusals_total", &[("reason", code)], load(n));
    }
    out.family(
        "herald_client_refusals_total",
        "counter",
        "Client subscribe, unsubscribe and publish requests refused, by code.",
    );
    for (code, n) in EVENT_REFUSAL_CODES.iter().zip(&s.event_refusals) {
        out.sample("herald_client_refusals_total", &[("code", code)], load(n));
    }
    out.one(
        "herald_subscribes_total",
        "counter",
        "Rooms subscribed to by clients.",
        load(&s.subscribes),
    );
    out.one(
        "herald_publishes_total",
        "counter",
        "Publishes by clients.",
        load(&s.publishes),
    );
    out.one(
        "herald_api_emits_total",
        "counter",
        "Emits through the HTTP API.",
        load(&s.api_emits),
    );
    out.one(
        "herald_deliveries_total",
        "counter",
        "Packets queued to sockets by publishes and API emits.",
        load(&s.deliveries),
    );
    out.one(
        "herald_api_unauthorized_total",
        "counter",
        "HTTP API calls refused for a missing or wrong key.",
        load(&s.api_unauthorized),
    );
    out.one(
        "herald_open_fds_limit",
        "gauge",
        "The open-file limit of the process.",
        state.fd_limit,
    );
    if let Some(open) = open_fds() {
        out.one(
            "herald_open_fds",
            "gauge",
            "Open file descriptors of the process.",
            open,
        );
    }
    out.one(
        "herald_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        state.started.elapsed().as_secs(),
    );
    out.family("herald_build_info", "gauge", "The running version.");
    out.sample(
        "herald_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    out.0
}

/// Open file descriptors, counted in `/proc/self/fd` (Linux).
fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count)
}
