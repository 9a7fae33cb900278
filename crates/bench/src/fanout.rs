//! `fanout` and `fanout-max`: N Socket.IO receivers in one room of the bench app; one
//! publisher (not in the room) sends `broadcast` events at R per second, each carrying
//! a phase, a sequence number and its send time; the server emits `msg` to the room.
//! Receivers record delivery latency (HdrHistogram), and count lost, out-of-order and
//! duplicated packets and disconnects. The server's memory is sampled throughout.
//!
//! `fanout-max` runs phases at rising rates on the same receivers until the p99
//! latency passes a bound or a packet is lost, and reports the highest rate sustained.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::client::Conn;
use crate::idle::open_many;
use crate::proc::{rss_bytes, CpuMeter};
use crate::report::{latency_json, Report};
use crate::Target;

/// Histogram shards: receivers record into shard `i % SHARDS`, so they rarely share a
/// lock even on a multi-threaded runtime.
const SHARDS: usize = 16;
/// Phases a run may have at most.
const MAX_PHASES: usize = 64;

/// Options of a fanout run.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    /// Receivers in the room.
    pub receivers: usize,
    /// Connections opened per second while setting up.
    pub connect_rate: u32,
    /// Messages per second the publisher sends (a fixed-rate run, or the first step).
    pub rate: f64,
    /// How long each phase sends.
    pub duration: Duration,
    /// Padding bytes in each message.
    pub size: usize,
    /// How long to wait after a phase's last send for its deliveries.
    pub drain: Duration,
    /// The server's process id, for its memory and CPU.
    pub server_pid: Option<u32>,
    /// `fanout-max`: the p99 latency a step may have, and the factor between steps.
    pub max: Option<MaxOptions>,
}

/// How `fanout-max` raises the rate.
#[derive(Debug, Clone, Copy)]
pub struct MaxOptions {
    /// The p99 bound a sustained step keeps under.
    pub p99_bound: Duration,
    /// Rate multiplier between steps.
    pub factor: f64,
    /// Steps at most.
    pub steps: usize,
}

#[derive(Default)]
struct Phase {
    deliveries: AtomicU64,
    out_of_order: AtomicU64,
    disconnected: AtomicU64,
    last_ns: AtomicU64,
    rss_max: AtomicU64,
    hist: [Mutex<Option<Histogram<u64>>>; SHARDS],
}

impl Phase {
    fn record(&self, shard: usize, latency_us: u64) {
        let mut h = self.hist[shard % SHARDS].lock();
        let _ = h
            .get_or_insert_with(new_histogram)
            .record(latency_us.max(1));
    }

    fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.hist {
            if let Some(h) = shard.lock().as_ref() {
                let _ = all.add(h);
            }
        }
        all
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The number after `"key":` in a packet, scanning the bytes (no JSON parse per
/// delivery).
fn field(packet: &[u8], key: &[u8]) -> Option<u64> {
    let at = packet
        .windows(key.len())
        .position(|w| w == key)
        .map(|p| p + key.len())?;
    let digits = packet[at..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    std::str::from_utf8(&packet[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

struct Shared {
    phases: Vec<Phase>,
    alive: AtomicU64,
    epoch: Instant,
}

/// A receiver: joins the room, then reads until the run ends.
async fn receive(i: usize, mut conn: Conn, shared: Arc<Shared>) {
    if conn.send_message(br#"20["join","bench"]"#).await.is_err()
        || conn.recv_message().await.is_err()
    {
        return;
    }
    shared.alive.fetch_add(1, Ordering::Relaxed);
    let mut phase = usize::MAX;
    let mut expect = 0u64;
    loop {
        let packet = match conn.recv_message().await {
            Ok(p) => p,
            Err(_) => {
                shared.alive.fetch_sub(1, Ordering::Relaxed);
                if let Some(p) = shared.phases.get(phase) {
                    p.disconnected.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        let now = now_us();
        let (Some(p), Some(seq), Some(t)) = (
            field(&packet, b"\"p\":"),
            field(&packet, b"\"s\":"),
            field(&packet, b"\"t\":"),
        ) else {
            continue;
        };
        let p = p as usize;
        let Some(stats) = shared.phases.get(p) else {
            continue;
        };
        if p != phase {
            phase = p;
            expect = 0;
        }
        stats.deliveries.fetch_add(1, Ordering::Relaxed);
        stats.record(i, now.saturating_sub(t));
        if seq < expect {
            stats.out_of_order.fetch_add(1, Ordering::Relaxed);
        } else {
            expect = seq + 1;
        }
        stats
            .last_ns
            .fetch_max(shared.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Sends phase `p` at `rate` for `duration`; returns how many were sent and when the
/// first one went (ns on the run's clock).
async fn publish(
    conn: &mut Conn,
    p: usize,
    rate: f64,
    duration: Duration,
    pad: &str,
    epoch: Instant,
) -> (u64, u64) {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let start = Instant::now();
    let started_ns = epoch.elapsed().as_nanos() as u64;
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        if due <= sent {
            continue;
        }
        let packets: Vec<Vec<u8>> = (sent..due)
            .map(|seq| {
                format!(
                    r#"42["broadcast","bench",{{"p":{p},"s":{seq},"t":{},"x":"{pad}"}}]"#,
                    now_us()
                )
                .into_bytes()
            })
            .collect();
        if conn
            .send_raw_batch(packets.iter().map(Vec::as_slice))
            .await
            .is_err()
        {
            break;
        }
        sent = due;
    }
    (sent, started_ns)
}

/// Runs `fanout` (one phase) or `fanout-max` (rising phases) and reports.
pub async fn run(target: &Target, opts: &FanoutOptions) -> Report {
    let epoch = Instant::now();
    let shared = Arc::new(Shared {
        phases: (0..MAX_PHASES).map(|_| Phase::default()).collect(),
        alive: AtomicU64::new(0),
        epoch,
    });
    let mode = if opts.max.is_some() {
        "fanout-max"
    } else {
        "fanout"
    };
    let mut report = Report::new(mode);
    report.set("target", json!(target.addr.to_string()));
    let rss_idle = opts.server_pid.and_then(rss_bytes);
    let recv = {
        let shared = shared.clone();
        move |i: usize, conn: Conn| receive(i, conn, shared.clone())
    };
    let opened = open_many(target, opts.receivers, opts.connect_rate, 256, true, recv).await;
    let mut publisher = match Conn::connect_socketio(target, opts.receivers).await {
        Ok(c) => c,
        Err(e) => {
            report.set(
                "error",
                json!(format!("the publisher did not connect: {e}")),
            );
            return report;
        }
    };
    // Let every receiver's join land.
    for _ in 0..100 {
        if shared.alive.load(Ordering::Relaxed) as usize >= opened.connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let receivers = shared.alive.load(Ordering::Relaxed);
    report.set("receivers", json!(receivers));
    report.set("connect_failures", json!(opened.failures));
    let rss_ready = opts.server_pid.and_then(rss_bytes);
    if let (Some(idle), Some(ready)) = (rss_idle, rss_ready) {
        report.set("server_rss_idle_bytes", json!(idle));
        report.set("server_rss_ready_bytes", json!(ready));
    }
    let pad = "x".repeat(opts.size);

    // Server memory, sampled into the phase running.
    let current = Arc::new(AtomicU64::new(0));
    let sampler = opts.server_pid.map(|pid| {
        let shared = shared.clone();
        let current = current.clone();
        tokio::spawn(async move {
            loop {
                if let Some(rss) = rss_bytes(pid) {
                    let p = current.load(Ordering::Relaxed) as usize;
                    shared.phases[p].rss_max.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });

    let steps = opts.max.map_or(1, |m| m.steps.min(MAX_PHASES));
    let mut rate = opts.rate;
    let mut results = Vec::new();
    let mut best: Option<Value> = None;
    for p in 0..steps {
        current.store(p as u64, Ordering::Relaxed);
        let alive_before = shared.alive.load(Ordering::Relaxed);
        let server_cpu = opts.server_pid.map(CpuMeter::start);
        let client_cpu = CpuMeter::start(std::process::id());
        let (sent, started_ns) = publish(&mut publisher, p, rate, opts.duration, &pad, epoch).await;
        let phase = &shared.phases[p];
        // Deliveries still on their way: wait until every live receiver has all, or
        // the drain time is up.
        let deadline = Instant::now() + opts.drain;
        while Instant::now() < deadline {
            let unique = phase.deliveries.load(Ordering::Relaxed)
                - phase.out_of_order.load(Ordering::Relaxed);
            if unique >= sent * shared.alive.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deliveries = phase.deliveries.load(Ordering::Relaxed);
        let out_of_order = phase.out_of_order.load(Ordering::Relaxed);
        let expected = sent * alive_before;
        let lost = expected.saturating_sub(deliveries.saturating_sub(out_of_order));
        let span_s = (phase
            .last_ns
            .load(Ordering::Relaxed)
            .saturating_sub(started_ns)
            .max(1)) as f64
            / 1e9;
        let hist = phase.merged();
        let mut step = json!({
            "rate_msgs_per_s": rate,
            "sent": sent,
            "receivers": alive_before,
            "offered_deliveries_per_s": (rate * alive_before as f64).round(),
            "deliveries": deliveries,
            "deliveries_per_s": (deliveries as f64 / span_s).round(),
            "lost": lost,
            "out_of_order": out_of_order,
            "disconnected": phase.disconnected.load(Ordering::Relaxed),
            "latency": latency_json(&hist),
            "client_cpu_cores": (client_cpu.cores() * 100.0).round() / 100.0,
        });
        if let Some(cpu) = &server_cpu {
            step["server_cpu_cores"] = json!((cpu.cores() * 100.0).round() / 100.0);
        }
        if opts.server_pid.is_some() {
            step["server_rss_max_bytes"] = json!(phase.rss_max.load(Ordering::Relaxed));
        }
        let p99 = hist.value_at_quantile(0.99);
        let passed = lost == 0
            && out_of_order == 0
            && phase.disconnected.load(Ordering::Relaxed) == 0
            && opts
                .max
                .is_none_or(|m| p99 <= m.p99_bound.as_micros() as u64);
        step["passed"] = json!(passed);
        eprintln!("{mode} step {p}: {step}");
        results.push(step.clone());
        match opts.max {
            None => break,
            Some(m) => {
                if !passed {
                    break;
                }
                best = Some(step);
                rate *= m.factor;
                // Let queues settle between steps.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    if let Some(s) = sampler {
        s.abort();
    }
    for task in opened.tasks {
        task.abort();
    }
    match opts.max {
        None => {
            if let Some(Value::Object(step)) = results.pop() {
                for (k, v) in step {
                    report.set(&k, v);
                }
            }
        }
        Some(m) => {
            report.set("p99_bound_us", json!(m.p99_bound.as_micros() as u64));
            report.set("steps", json!(results));
            match best {
                Some(b) => {
                    report.set("max_deliveries_per_s", b["deliveries_per_s"].clone());
                    report.set("max_rate_msgs_per_s", b["rate_msgs_per_s"].clone());
                    report.set("at_p99_us", b["latency"]["p99_us"].clone());
                }
                None => report.set("max_deliveries_per_s", json!(0)),
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields are read from the packet bytes, whatever the key order.
    #[test]
    fn fields() {
        let p = br#"2["msg",{"s":12,"p":3,"t":1795871247629123,"x":"pad"}]"#;
        assert_eq!(field(p, b"\"p\":"), Some(3));
        assert_eq!(field(p, b"\"s\":"), Some(12));
        assert_eq!(field(p, b"\"t\":"), Some(1_795_871_247_629_123));
        assert_eq!(field(p, b"\"q\":"), None);
    }
}
