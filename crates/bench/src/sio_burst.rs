//! `sio-burst`: N Socket.IO receivers in one room; a publisher sends `count` `broadcast`
//! events at once to the bench app, which emits `msg` to the room for each. Measures
//! deliveries per second and checks that every receiver gets every packet, in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::client::{number_after, Conn};
use crate::idle::open_many;
use crate::proc::CpuMeter;
use crate::report::Report;
use crate::Target;

/// Options of the run: as the engine-level burst (`count` is the broadcasts sent, `size`
/// the padding of each message).
pub type SioBurstOptions = crate::burst::BurstOptions;

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    out_of_order: AtomicU64,
    complete: AtomicU64,
    first: AtomicU64,
    last: AtomicU64,
}

/// Runs the scenario and reports.
pub async fn run(target: &Target, opts: &SioBurstOptions) -> Report {
    let counts = Arc::new(Counts {
        first: AtomicU64::new(u64::MAX),
        ..Counts::default()
    });
    let epoch = Instant::now();
    let count = opts.count as u64;
    let (trigger_tx, trigger_rx) = tokio::sync::oneshot::channel::<Conn>();
    let trigger_tx = Arc::new(parking_lot::Mutex::new(Some(trigger_tx)));
    let publisher = opts.connections - 1;
    let read = {
        let counts = counts.clone();
        move |i: usize, mut conn: Conn| {
            let counts = counts.clone();
            let trigger_tx = trigger_tx.clone();
            async move {
                if conn.send_message(br#"21["join","bench"]"#).await.is_err()
                    || conn.recv_message().await.is_err()
                {
                    return;
                }
                if i == publisher {
                    if let Some(tx) = trigger_tx.lock().take() {
                        let _ = tx.send(conn);
                    }
                    return;
                }
                let mut expect = 0;
                while expect < count {
                    let Ok(packet) = conn.recv_message().await else {
                        return;
                    };
                    let Some(seq) = number_after(&packet, b"\"seq\":") else {
                        continue;
                    };
                    let now = epoch.elapsed().as_nanos() as u64;
                    counts.first.fetch_min(now, Ordering::Relaxed);
                    counts.last.fetch_max(now, Ordering::Relaxed);
                    counts.received.fetch_add(1, Ordering::Relaxed);
                    if seq != expect {
                        counts.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    expect = seq + 1;
                }
                counts.complete.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let opened = open_many(target, opts.connections, opts.rate, 256, true, read).await;
    let mut report = Report::new("sio-burst");
    let Ok(mut publisher) = trigger_rx.await else {
        report.set("error", json!("the publisher did not connect"));
        report.set("failures", json!(opened.failures));
        return report;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_cpu = opts.server_pid.map(CpuMeter::start);
    let client_cpu = CpuMeter::start(std::process::id());
    let pad = "x".repeat(opts.size);
    let mut sent = 0;
    for seq in 0..opts.count {
        let packet = format!(r#"2["broadcast","bench",{{"seq":{seq},"pad":"{pad}"}}]"#);
        if publisher.send_message(packet.as_bytes()).await.is_err() {
            break;
        }
        sent += 1;
    }
    let waited = tokio::time::timeout(opts.timeout, async {
        for task in opened.tasks {
            let _ = task.await;
        }
    })
    .await;
    let received = counts.received.load(Ordering::Relaxed);
    let span = counts
        .last
        .load(Ordering::Relaxed)
        .saturating_sub(counts.first.load(Ordering::Relaxed))
        .max(1) as f64
        / 1e9;
    let receivers = opened.connected.saturating_sub(1);
    report.set("target", json!(target.addr.to_string()));
    report.set("receivers", json!(receivers));
    report.set("failures", json!(opened.failures));
    report.set("broadcasts_sent", json!(sent));
    report.set("timed_out", json!(waited.is_err()));
    report.set(
        "receivers_complete",
        json!(counts.complete.load(Ordering::Relaxed)),
    );
    report.set("deliveries", json!(received));
    report.set(
        "lost",
        json!((receivers as u64 * sent as u64).saturating_sub(received)),
    );
    report.set(
        "out_of_order",
        json!(counts.out_of_order.load(Ordering::Relaxed)),
    );
    report.set("first_to_last_ms", json!((span * 1e4).round() / 10.0));
    report.set("deliveries_per_s", json!((received as f64 / span).round()));
    if let Some(cpu) = &server_cpu {
        let seconds = cpu.seconds();
        report.set("server_cpu_ms", json!((seconds * 1e4).round() / 10.0));
        if received > 0 {
            // What the server spent per delivery and per broadcast, whatever limited
            // the rate.
            let per_delivery = seconds * 1e9 / received as f64;
            let per_broadcast = seconds * 1e6 / sent.max(1) as f64;
            report.set("server_cpu_ns_per_delivery", json!(per_delivery.round()));
            report.set("server_cpu_us_per_broadcast", json!(per_broadcast.round()));
        }
    }
    report.set_cpu(server_cpu.as_ref(), &client_cpu);
    report
}
