//! `connect-storm`: as many Socket.IO handshakes per second as the server takes: N
//! connections opened with no rate limit, C in flight at a time, each one a WebSocket
//! Engine.IO session that joins namespace `/`.

use std::time::Duration;

use serde_json::json;

use crate::client::Conn;
use crate::idle::open_many;
use crate::proc::CpuMeter;
use crate::report::{latency_json, Report};
use crate::Target;

/// Options of the storm.
#[derive(Debug, Clone)]
pub struct StormOptions {
    /// Connections to open.
    pub connections: usize,
    /// Handshakes in flight at most.
    pub concurrency: usize,
    /// The server's process id, for its CPU.
    pub server_pid: Option<u32>,
}

/// Runs the storm and reports.
pub async fn run(target: &Target, opts: &StormOptions) -> Report {
    let server_cpu = opts.server_pid.map(CpuMeter::start);
    let client_cpu = CpuMeter::start(std::process::id());
    // Each connection is held until the storm is over, so the server holds them all.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let hold = move |_i: usize, mut conn: Conn| {
        let mut stop = stop_rx.clone();
        async move {
            tokio::select! {
                _ = stop.changed() => {}
                _ = async { while conn.recv_message().await.is_ok() {} } => {}
            }
        }
    };
    let opened = open_many(
        target,
        opts.connections,
        u32::MAX,
        opts.concurrency,
        true,
        hold,
    )
    .await;
    let mut r = Report::new("connect-storm");
    let secs = opened.elapsed.as_secs_f64().max(1e-9);
    r.set("target", json!(target.addr.to_string()));
    r.set("connections", json!(opts.connections));
    r.set("connected", json!(opened.connected));
    r.set("concurrency", json!(opts.concurrency));
    r.set("failures", json!(opened.failures));
    r.set("elapsed_ms", json!((secs * 1e4).round() / 10.0));
    r.set(
        "handshakes_per_s",
        json!((opened.connected as f64 / secs).round()),
    );
    r.set("handshake_latency", latency_json(&opened.latency));
    r.set_cpu(server_cpu.as_ref(), &client_cpu);
    let _ = stop_tx.send(true);
    for task in opened.tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    r
}
