//! `burst`: N receivers on an Engine.IO server that queues one pre-encoded frame
//! `count` times on every session when told to (`eio-bench-server`); measures deliveries
//! per second at the clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::idle::open_many;

use crate::proc::CpuMeter;
use crate::report::Report;
use crate::Target;

/// Options of the burst run.
#[derive(Debug, Clone)]
pub struct BurstOptions {
    /// Receiving connections.
    pub connections: usize,
    /// Connection rate while opening.
    pub rate: u32,
    /// Frames each connection receives.
    pub count: usize,
    /// Payload bytes per frame.
    pub size: usize,
    /// Give up after this long.
    pub timeout: Duration,
    /// The server's process id, for its CPU.
    pub server_pid: Option<u32>,
}

/// Runs the burst scenario and reports.
pub async fn run(target: &Target, opts: &BurstOptions) -> Report {
    let epoch = Instant::now();
    let first = Arc::new(AtomicU64::new(u64::MAX));
    let last = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let complete = Arc::new(AtomicU64::new(0));
    // The last connection is the trigger; it is handed back rather than read.
    let (trigger_tx, trigger_rx) = tokio::sync::oneshot::channel();
    let trigger_tx = Arc::new(parking_lot::Mutex::new(Some(trigger_tx)));
    let trigger_index = opts.connections - 1;
    let count = opts.count;
    let read = {
        let (first, last, received, complete) = (
            first.clone(),
            last.clone(),
            received.clone(),
            complete.clone(),
        );
        move |i: usize, mut conn: crate::client::Conn| {
            let (first, last, received, complete) = (
                first.clone(),
                last.clone(),
                received.clone(),
                complete.clone(),
            );
            let trigger_tx = trigger_tx.clone();
            async move {
                if i == trigger_index {
                    if let Some(tx) = trigger_tx.lock().take() {
                        let _ = tx.send(conn);
                    }
                    return;
                }
                for n in 0..count {
                    if conn.recv_message().await.is_err() {
                        return;
                    }
                    let now = epoch.elapsed().as_nanos() as u64;
                    if n == 0 {
                        first.fetch_min(now, Ordering::Relaxed);
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                    last.fetch_max(now, Ordering::Relaxed);
                }
                complete.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let opened = open_many(target, opts.connections, opts.rate, 256, false, read).await;
    let connected = opened.connected;
    let Ok(mut trigger) = trigger_rx.await else {
        let mut r = Report::new("burst");
        r.set("error", json!("the trigger connection did not open"));
        r.set("failures", json!(opened.failures));
        return r;
    };
    // Let the readers reach their first read before the burst starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_cpu = opts.server_pid.map(CpuMeter::start);
    let client_cpu = CpuMeter::start(std::process::id());
    let sent_at = epoch.elapsed().as_nanos() as u64;
    let command = format!("burst {} {}", opts.count, opts.size);
    let trigger_ok = trigger.send_message(command.as_bytes()).await.is_ok();
    let waited = tokio::time::timeout(opts.timeout, async {
        for task in opened.tasks {
            let _ = task.await;
        }
    })
    .await;
    let complete = complete.load(Ordering::Relaxed);
    let received = received.load(Ordering::Relaxed);
    let (first, last) = (first.load(Ordering::Relaxed), last.load(Ordering::Relaxed));
    let span = last.saturating_sub(first).max(1) as f64 / 1e9;

    let mut r = Report::new("burst");
    r.set("target", json!(target.addr.to_string()));
    r.set("receivers", json!(connected.saturating_sub(1)));
    r.set("failures", json!(opened.failures));
    r.set("frames_per_receiver", json!(opts.count));
    r.set("payload_bytes", json!(opts.size));
    r.set("trigger_sent", json!(trigger_ok));
    r.set("timed_out", json!(waited.is_err()));
    r.set("receivers_complete", json!(complete));
    r.set("deliveries", json!(received));
    r.set(
        "first_to_last_ms",
        json!((span * 1e3 * 10.0).round() / 10.0),
    );
    r.set(
        "trigger_to_last_ms",
        json!(((last.saturating_sub(sent_at)) as f64 / 1e6 * 10.0).round() / 10.0),
    );
    r.set("deliveries_per_s", json!((received as f64 / span).round()));
    r.set_cpu(server_cpu.as_ref(), &client_cpu);
    r
}
