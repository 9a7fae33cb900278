//! `echo`: M Socket.IO connections send `echo` events with an ack, at an aggregate rate
//! spread evenly over the connections; the round trip (send to ack) goes into an
//! HdrHistogram.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::client::Conn;
use crate::idle::open_many;
use crate::proc::CpuMeter;
use crate::report::{latency_json, Report};
use crate::shard::{hist_add, hist_json, merge_counts, say, share, sum, Children, Commands};
use crate::Target;

/// Options of the echo run.
#[derive(Debug, Clone)]
pub struct EchoOptions {
    /// Connections.
    pub connections: usize,
    /// Connections opened per second while setting up.
    pub connect_rate: u32,
    /// Echoes per second, all connections together.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// Padding bytes in each echo.
    pub size: usize,
    /// The server's process id, for its CPU.
    pub server_pid: Option<u32>,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
}

/// The ack id of a `3<id>[...]` packet.
fn ack_id(packet: &[u8]) -> Option<u64> {
    let rest = packet.strip_prefix(b"3")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// One process's echo connections, opened and waiting to start.
struct Group {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    connected: usize,
    failures: crate::report::Failures,
    start_tx: tokio::sync::watch::Sender<Option<Instant>>,
    counts: Arc<Counts>,
    hist: Arc<Mutex<Histogram<u64>>>,
}

impl Group {
    /// Opens `n` connections that will send `rate` echoes per second together.
    async fn open(target: &Target, n: usize, rate: f64, opts: &EchoOptions) -> Group {
        let counts = Arc::new(Counts::default());
        let hist = Arc::new(Mutex::new(
            Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
                .expect("constant bounds are valid"),
        ));
        let (start_tx, start_rx) = tokio::sync::watch::channel(None::<Instant>);
        let per_conn = rate / n.max(1) as f64;
        let period = Duration::from_secs_f64(1.0 / per_conn.max(1e-6));
        let duration = opts.duration;
        let pad = "x".repeat(opts.size);
        let work = {
            let counts = counts.clone();
            let hist = hist.clone();
            move |i: usize, conn: Conn| {
                let counts = counts.clone();
                let hist = hist.clone();
                let mut start_rx = start_rx.clone();
                let pad = pad.clone();
                async move {
                    let start = loop {
                        if let Some(s) = *start_rx.borrow() {
                            break s;
                        }
                        if start_rx.changed().await.is_err() {
                            return;
                        }
                    };
                    let (mut reader, writer) = conn.split();
                    // Acks come back in order on one connection: the send times queue up.
                    let pending: Arc<Mutex<VecDeque<(u64, Instant)>>> = Arc::default();
                    let reading = {
                        let pending = pending.clone();
                        let counts = counts.clone();
                        let hist = hist.clone();
                        tokio::spawn(async move {
                            while let Ok(packet) = reader.recv_message().await {
                                let Some(id) = ack_id(&packet) else { continue };
                                let sent_at = {
                                    let mut q = pending.lock();
                                    let mut found = None;
                                    while let Some((pid, at)) = q.pop_front() {
                                        if pid == id {
                                            found = Some(at);
                                            break;
                                        }
                                    }
                                    found
                                };
                                if let Some(at) = sent_at {
                                    let _ =
                                        hist.lock().record(at.elapsed().as_micros().max(1) as u64);
                                    counts.acked.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        })
                    };
                    // Connections start spread over one period, so sends do not bunch.
                    let offset = period.mul_f64(i as f64 / n.max(1) as f64);
                    let mut next = start + offset;
                    let end = start + duration;
                    let mut id = 0u64;
                    while next < end {
                        tokio::time::sleep_until(next).await;
                        let packet = format!(r#"42{id}["echo",{{"i":{i},"x":"{pad}"}}]"#);
                        pending.lock().push_back((id, Instant::now()));
                        if writer.send_raw(packet.as_bytes()).await.is_err() {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        counts.sent.fetch_add(1, Ordering::Relaxed);
                        id += 1;
                        next += period;
                    }
                    // Answers still on their way.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    reading.abort();
                }
            }
        };
        let opened = open_many(target, n, opts.connect_rate, 256, true, work).await;
        Group {
            tasks: opened.tasks,
            connected: opened.connected,
            failures: opened.failures,
            start_tx,
            counts,
            hist,
        }
    }

    /// Starts sending and returns what was measured once every connection is done.
    async fn run(self) -> Value {
        let started = Instant::now() + Duration::from_millis(100);
        let _ = self.start_tx.send(Some(started));
        for task in self.tasks {
            let _ = task.await;
        }
        let hist = self.hist.lock();
        json!({
            "connected": self.connected,
            "failures": self.failures,
            "sent": self.counts.sent.load(Ordering::Relaxed),
            "acked": self.counts.acked.load(Ordering::Relaxed),
            "errors": self.counts.errors.load(Ordering::Relaxed),
            "hist": hist_json(&hist),
        })
    }
}

/// Runs as shard `shard` of `procs`: this process's share of the connections and of the
/// rate, started by the parent's `GO`.
pub async fn run_shard(target: &Target, opts: &EchoOptions, procs: usize, shard: usize) {
    let (count, first) = share(opts.connections, procs, shard);
    let target = Target {
        offset: first,
        ..target.clone()
    };
    let rate = opts.rate * count as f64 / opts.connections.max(1) as f64;
    let group = Group::open(&target, count, rate, opts).await;
    say(&format!(
        "READY {}",
        json!({ "connected": group.connected })
    ));
    let mut commands = Commands::default();
    if commands.next().await.as_deref() != Some("GO") {
        return;
    }
    let result = group.run().await;
    say(&format!("RESULT {result}"));
    let _ = commands.next().await;
}

/// Runs the scenario and reports; with `procs` above 1 the connections live in child
/// processes.
pub async fn run(target: &Target, opts: &EchoOptions, procs: usize) -> Report {
    let mut r = Report::new("echo");
    r.set("target", json!(target.addr.to_string()));
    r.set("procs", json!(procs));
    let mut client_cpu = Vec::new();
    let server_cpu;
    let parts = if procs > 1 {
        let mut children = match Children::spawn(procs) {
            Ok(c) => c,
            Err(e) => {
                r.set("error", json!(format!("cannot start the children: {e}")));
                return r;
            }
        };
        children.collect("READY", Duration::from_secs(600)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        server_cpu = opts.server_pid.map(CpuMeter::start);
        client_cpu = children.cpu_meters();
        client_cpu.push(CpuMeter::start(std::process::id()));
        children.tell("GO").await;
        let parts = children
            .collect("RESULT", opts.duration + Duration::from_secs(60))
            .await;
        // Read before the children exit and their /proc entries go.
        r.set_cpu_of(server_cpu.as_ref(), &client_cpu);
        children.stop().await;
        parts
    } else {
        let group = Group::open(target, opts.connections, opts.rate, opts).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        server_cpu = opts.server_pid.map(CpuMeter::start);
        client_cpu.push(CpuMeter::start(std::process::id()));
        let part = group.run().await;
        r.set_cpu_of(server_cpu.as_ref(), &client_cpu);
        vec![part]
    };
    let sent = sum(&parts, "sent");
    let acked = sum(&parts, "acked");
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid");
    for part in &parts {
        hist_add(&mut hist, &part["hist"]);
    }
    r.set("connections", json!(sum(&parts, "connected")));
    r.set("connect_failures", merge_counts(&parts, "failures"));
    r.set("rate_per_s", json!(opts.rate));
    r.set("sent", json!(sent));
    r.set("acked", json!(acked));
    r.set("unanswered", json!(sent.saturating_sub(acked)));
    r.set("send_errors", json!(sum(&parts, "errors")));
    r.set(
        "achieved_per_s",
        json!((sent as f64 / opts.duration.as_secs_f64()).round()),
    );
    r.set("rtt", latency_json(&hist));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ack ids are read from `3<id>[...]`.
    #[test]
    fn ack_ids() {
        assert_eq!(ack_id(br#"312[{"i":1}]"#), Some(12));
        assert_eq!(ack_id(br#"2["x"]"#), None);
    }
}
