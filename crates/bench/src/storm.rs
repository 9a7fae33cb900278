//! `connect-storm`: as many Socket.IO handshakes per second as the server takes: N
//! connections opened with no rate limit, C in flight at a time, each one a WebSocket
//! Engine.IO session that joins namespace `/`.

use std::time::Duration;

use serde_json::json;

use crate::client::Conn;
use crate::idle::open_many;
use crate::proc::CpuMeter;
use crate::report::{latency_json, Report};
use crate::shard::Children;
use crate::shard::{hist_add, hist_json, merge_counts, say, share, sum, Commands};
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

/// Runs as shard `shard` of `procs`: opens this process's share as fast as it can, says
/// `READY` with what it measured, and holds the connections until `STOP`.
pub async fn run_shard(target: &Target, opts: &StormOptions, procs: usize, shard: usize) {
    let (count, first) = share(opts.connections, procs, shard);
    let target = Target {
        offset: first,
        ..target.clone()
    };
    let (stop_tx, opened) = open(&target, count, opts.concurrency.div_ceil(procs)).await;
    say(&format!(
        "READY {}",
        json!({
            "connected": opened.connected,
            "failures": opened.failures,
            "elapsed_ms": opened.elapsed.as_secs_f64() * 1e3,
            "hist": hist_json(&opened.latency),
        })
    ));
    let _ = Commands::default().next().await;
    let _ = stop_tx.send(true);
}

async fn open(
    target: &Target,
    n: usize,
    concurrency: usize,
) -> (tokio::sync::watch::Sender<bool>, crate::idle::Opened) {
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
    let opened = open_many(target, n, u32::MAX, concurrency, true, hold).await;
    (stop_tx, opened)
}

/// Runs the storm and reports; with `procs` above 1 the clients live in child
/// processes, all started at once.
pub async fn run(target: &Target, opts: &StormOptions, procs: usize) -> Report {
    let server_cpu = opts.server_pid.map(CpuMeter::start);
    let client_cpu = CpuMeter::start(std::process::id());
    let mut r = Report::new("connect-storm");
    r.set("procs", json!(procs));
    let parts = if procs > 1 {
        let mut children = match Children::spawn(procs) {
            Ok(c) => c,
            Err(e) => {
                r.set("error", json!(format!("cannot start the children: {e}")));
                return r;
            }
        };
        let mut clients = children.cpu_meters();
        clients.push(client_cpu);
        let parts = children.collect("READY", Duration::from_secs(600)).await;
        r.set_cpu_of(server_cpu.as_ref(), &clients);
        children.stop().await;
        parts
    } else {
        let (stop_tx, opened) = open(target, opts.connections, opts.concurrency).await;
        r.set_cpu(server_cpu.as_ref(), &client_cpu);
        let part = json!({
            "connected": opened.connected,
            "failures": opened.failures,
            "elapsed_ms": opened.elapsed.as_secs_f64() * 1e3,
            "hist": hist_json(&opened.latency),
        });
        let _ = stop_tx.send(true);
        for task in opened.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        vec![part]
    };
    let connected = sum(&parts, "connected");
    let elapsed_ms = parts
        .iter()
        .filter_map(|v| v["elapsed_ms"].as_f64())
        .fold(0.0, f64::max);
    let mut latency = crate::idle::new_histogram();
    for part in &parts {
        hist_add(&mut latency, &part["hist"]);
    }
    let secs = (elapsed_ms / 1e3).max(1e-9);
    r.set("target", json!(target.addr.to_string()));
    r.set("connections", json!(opts.connections));
    r.set("connected", json!(connected));
    r.set("concurrency", json!(opts.concurrency));
    r.set("failures", merge_counts(&parts, "failures"));
    r.set("elapsed_ms", json!((elapsed_ms * 10.0).round() / 10.0));
    r.set("handshakes_per_s", json!((connected as f64 / secs).round()));
    r.set("handshake_latency", latency_json(&latency));
    r
}
