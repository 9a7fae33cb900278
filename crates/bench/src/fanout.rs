//! `fanout` and `fanout-max`: N Socket.IO receivers in one room of the bench app; one
//! publisher (not in the room) sends `broadcast` events at R per second, each carrying
//! a phase, a sequence number and its send time; the server emits `msg` to the room.
//! Receivers record delivery latency (HdrHistogram), and count lost, out-of-order and
//! duplicated packets and disconnects. The server's memory is sampled throughout.
//!
//! A packet is lost when its sequence number never reached a receiver: each receiver
//! keeps the set of numbers it got in the phase, so a packet that arrives after a later
//! one is counted out of order, not lost (a server may reorder broadcasts: socketioxide
//! runs each event handler in a task of its own).
//!
//! `fanout-max` runs phases at rising rates on the same receivers until the p99
//! latency passes a bound, a packet is lost or duplicated, or a receiver disconnects,
//! and reports the highest rate sustained (and why the next step failed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::client::{fanout_fields, Conn};
use crate::idle::open_many;
use crate::proc::{rss_bytes, CpuMeter};
use crate::report::{latency_json, Report};
use crate::shard::{self, hist_json, Children};
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
    /// The other servers of a cluster: their CPU and memory count with the server's.
    pub also_pids: Vec<u32>,
    /// The cluster's bus (redis-server): its CPU is reported on its own.
    pub bus_pid: Option<u32>,
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
    /// Deliveries of a sequence number the receiver had not had yet in the phase.
    unique: AtomicU64,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
    disconnected: AtomicU64,
    last_us: AtomicU64,
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

struct Shared {
    phases: Vec<Phase>,
    alive: AtomicU64,
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
    // The sequence numbers had in this phase, one bit each.
    let mut seen: Vec<u64> = Vec::new();
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
        let Some((p, seq, t)) = fanout_fields(&packet) else {
            continue;
        };
        let p = p as usize;
        let Some(stats) = shared.phases.get(p) else {
            continue;
        };
        if p != phase {
            phase = p;
            expect = 0;
            seen.clear();
        }
        stats.deliveries.fetch_add(1, Ordering::Relaxed);
        stats.record(i, now.saturating_sub(t));
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= seen.len() {
            // Bounded by what a phase sends (rate × duration).
            seen.resize(word + 1, 0);
        }
        if seen[word] & bit != 0 {
            stats.duplicates.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        seen[word] |= bit;
        stats.unique.fetch_add(1, Ordering::Relaxed);
        if seq < expect {
            stats.out_of_order.fetch_add(1, Ordering::Relaxed);
        } else {
            expect = seq + 1;
        }
        stats.last_us.fetch_max(now, Ordering::Relaxed);
    }
}

/// The receivers of one process, and what they measured.
pub struct Receivers {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Connections that opened.
    pub connected: usize,
    /// Connections that failed, by reason.
    pub failures: crate::report::Failures,
}

impl Receivers {
    /// Opens `n` receivers (connection indices from the target's offset) and waits
    /// until they joined the room.
    pub async fn open(target: &Target, n: usize, connect_rate: u32) -> Receivers {
        let shared = Arc::new(Shared {
            phases: (0..MAX_PHASES).map(|_| Phase::default()).collect(),
            alive: AtomicU64::new(0),
        });
        let recv = {
            let shared = shared.clone();
            move |i: usize, conn: Conn| receive(i, conn, shared.clone())
        };
        let opened = open_many(target, n, connect_rate, 256, true, recv).await;
        for _ in 0..200 {
            if shared.alive.load(Ordering::Relaxed) as usize >= opened.connected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Receivers {
            shared,
            tasks: opened.tasks,
            connected: opened.connected,
            failures: opened.failures,
        }
    }

    /// Receivers still connected.
    pub fn alive(&self) -> u64 {
        self.shared.alive.load(Ordering::Relaxed)
    }

    /// Waits until phase `p` (with `sent` messages) is delivered to every live receiver
    /// or `drain` is up, and says what it delivered, histogram included.
    pub async fn phase(&self, p: usize, sent: u64, drain: Duration) -> Value {
        let Some(phase) = self.shared.phases.get(p) else {
            return Value::Null;
        };
        let deadline = Instant::now() + drain;
        while Instant::now() < deadline {
            let unique = phase.unique.load(Ordering::Relaxed);
            if unique >= sent * self.alive() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        json!({
            "alive": self.alive(),
            "deliveries": phase.deliveries.load(Ordering::Relaxed),
            "unique": phase.unique.load(Ordering::Relaxed),
            "duplicates": phase.duplicates.load(Ordering::Relaxed),
            "out_of_order": phase.out_of_order.load(Ordering::Relaxed),
            "disconnected": phase.disconnected.load(Ordering::Relaxed),
            "last_us": phase.last_us.load(Ordering::Relaxed),
            "hist": hist_json(&phase.merged()),
        })
    }

    /// Closes every receiver.
    pub fn close(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Sends phase `p` at `rate` for `duration`; returns how many were sent and when the
/// first one went (µs since the epoch).
async fn publish(
    conn: &crate::client::Writer,
    p: usize,
    rate: f64,
    duration: Duration,
    pad: &str,
) -> (u64, u64) {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let start = Instant::now();
    let started_us = now_us();
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
    (sent, started_us)
}

/// Where the receivers are: in this process, or in child processes.
enum Group {
    Local(Receivers),
    Children(Children, u64),
}

impl Group {
    fn cpu_meters(&self) -> Vec<CpuMeter> {
        let mut meters = vec![CpuMeter::start(std::process::id())];
        if let Group::Children(c, _) = self {
            meters.extend(c.cpu_meters());
        }
        meters
    }

    fn alive(&self) -> u64 {
        match self {
            Group::Local(r) => r.alive(),
            Group::Children(_, alive) => *alive,
        }
    }

    async fn phase(&mut self, p: usize, sent: u64, drain: Duration) -> Vec<Value> {
        match self {
            Group::Local(r) => vec![r.phase(p, sent, drain).await],
            Group::Children(c, alive) => {
                c.tell(&format!("PHASE {p} {sent} {}", drain.as_millis()))
                    .await;
                let results = c.collect("RESULT", drain + Duration::from_secs(30)).await;
                *alive = shard::sum(&results, "alive");
                results
            }
        }
    }

    async fn close(self) {
        match self {
            Group::Local(r) => r.close(),
            Group::Children(c, _) => c.stop().await,
        }
    }
}

/// Runs as shard `shard` of a multi-process run: this process's share of the receivers,
/// answering the parent's commands (see [`shard`]).
pub async fn run_shard(target: &Target, opts: &FanoutOptions, procs: usize, shard: usize) {
    let (count, first) = shard::share(opts.receivers, procs, shard);
    let target = Target {
        offset: first,
        ..target.clone()
    };
    let receivers = Receivers::open(&target, count, opts.connect_rate).await;
    shard::say(&format!(
        "READY {}",
        json!({
            "alive": receivers.alive(),
            "connected": receivers.connected,
            "failures": receivers.failures,
        })
    ));
    let mut commands = shard::Commands::default();
    while let Some(line) = commands.next().await {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("PHASE") => {
                let p = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let sent = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let drain = words.next().and_then(|w| w.parse().ok()).unwrap_or(5000);
                let result = receivers.phase(p, sent, Duration::from_millis(drain)).await;
                shard::say(&format!("RESULT {result}"));
            }
            _ => break,
        }
    }
    receivers.close();
}

/// Runs `fanout` (one phase) or `fanout-max` (rising phases) and reports. With `procs`
/// above 1 the receivers live in child processes.
pub async fn run(target: &Target, opts: &FanoutOptions, procs: usize) -> Report {
    let mode = if opts.max.is_some() {
        "fanout-max"
    } else {
        "fanout"
    };
    let mut report = Report::new(mode);
    report.set("target", json!(target.addr.to_string()));
    report.set("procs", json!(procs));
    let servers: Vec<u32> = opts
        .server_pid
        .into_iter()
        .chain(opts.also_pids.iter().copied())
        .collect();
    let rss_of = |pids: &[u32]| -> Option<u64> {
        let all: Vec<u64> = pids.iter().filter_map(|p| rss_bytes(*p)).collect();
        (!all.is_empty()).then(|| all.iter().sum())
    };
    let rss_idle = rss_of(&servers);
    let mut group = if procs > 1 {
        let mut children = match Children::spawn(procs) {
            Ok(c) => c,
            Err(e) => {
                report.set("error", json!(format!("cannot start the children: {e}")));
                return report;
            }
        };
        let ready = children.collect("READY", Duration::from_secs(600)).await;
        report.set("connect_failures", shard::merge_counts(&ready, "failures"));
        let alive = shard::sum(&ready, "alive");
        Group::Children(children, alive)
    } else {
        let r = Receivers::open(target, opts.receivers, opts.connect_rate).await;
        report.set("connect_failures", json!(r.failures));
        Group::Local(r)
    };
    let publisher_target = Target {
        offset: opts.receivers,
        ..target.clone()
    };
    let publisher = match Conn::connect_socketio(&publisher_target, 0).await {
        Ok(c) => c,
        Err(e) => {
            report.set(
                "error",
                json!(format!("the publisher did not connect: {e}")),
            );
            group.close().await;
            return report;
        }
    };
    // The publisher only sends; a task of its own reads, so that the server's pings are
    // answered (a publisher that never pongs is dropped after the ping timeout, 45 s with
    // the defaults, and every later step would count its packets as lost).
    let (mut publisher_reader, publisher) = publisher.split();
    let publisher_pongs =
        tokio::spawn(async move { while publisher_reader.recv_message().await.is_ok() {} });
    report.set("receivers", json!(group.alive()));
    let rss_ready = rss_of(&servers);
    if let (Some(idle), Some(ready)) = (rss_idle, rss_ready) {
        report.set("server_rss_idle_bytes", json!(idle));
        report.set("server_rss_ready_bytes", json!(ready));
    }
    let pad = "x".repeat(opts.size);

    // Server memory, sampled over each phase.
    let rss_max = Arc::new(AtomicU64::new(0));
    let sampler = opts.server_pid.map(|_| {
        let rss_max = rss_max.clone();
        let servers = servers.clone();
        tokio::spawn(async move {
            loop {
                let rss: u64 = servers.iter().filter_map(|p| rss_bytes(*p)).sum();
                if rss > 0 {
                    rss_max.fetch_max(rss, Ordering::Relaxed);
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
        rss_max.store(0, Ordering::Relaxed);
        let alive_before = group.alive();
        let server_cpu: Vec<CpuMeter> = servers.iter().map(|p| CpuMeter::start(*p)).collect();
        let bus_cpu = opts.bus_pid.map(CpuMeter::start);
        let client_cpu = group.cpu_meters();
        let (sent, started_us) = publish(&publisher, p, rate, opts.duration, &pad).await;
        let parts = group.phase(p, sent, opts.drain).await;
        let deliveries = shard::sum(&parts, "deliveries");
        let unique = shard::sum(&parts, "unique");
        let duplicates = shard::sum(&parts, "duplicates");
        let out_of_order = shard::sum(&parts, "out_of_order");
        let disconnected = shard::sum(&parts, "disconnected");
        let last_us = parts
            .iter()
            .filter_map(|v| v["last_us"].as_u64())
            .max()
            .unwrap_or(started_us);
        let mut hist = new_histogram();
        for part in &parts {
            shard::hist_add(&mut hist, &part["hist"]);
        }
        let expected = sent * alive_before;
        let lost = expected.saturating_sub(unique);
        let span_s = (last_us.saturating_sub(started_us).max(1)) as f64 / 1e6;
        let mut step = json!({
            "rate_msgs_per_s": rate,
            "sent": sent,
            "receivers": alive_before,
            "offered_deliveries_per_s": (rate * alive_before as f64).round(),
            "deliveries": deliveries,
            "deliveries_per_s": (deliveries as f64 / span_s).round(),
            "lost": lost,
            "duplicates": duplicates,
            "out_of_order": out_of_order,
            "disconnected": disconnected,
            "latency": latency_json(&hist),
            "client_cpu_cores": (client_cpu.iter().map(CpuMeter::cores).sum::<f64>() * 100.0)
                .round()
                / 100.0,
        });
        if !server_cpu.is_empty() {
            let cores: f64 = server_cpu.iter().map(CpuMeter::cores).sum();
            step["server_cpu_cores"] = json!((cores * 100.0).round() / 100.0);
            if deliveries > 0 {
                let secs: f64 = server_cpu.iter().map(CpuMeter::seconds).sum();
                step["server_cpu_us_per_delivery"] =
                    json!((secs * 1e6 / deliveries as f64 * 1000.0).round() / 1000.0);
            }
        }
        if let Some(cpu) = &bus_cpu {
            step["bus_cpu_cores"] = json!((cpu.cores() * 100.0).round() / 100.0);
        }
        if opts.server_pid.is_some() {
            step["server_rss_max_bytes"] = json!(rss_max.load(Ordering::Relaxed));
        }
        let p99 = hist.value_at_quantile(0.99);
        let mut failed = Vec::new();
        if lost > 0 {
            failed.push("lost");
        }
        if duplicates > 0 {
            failed.push("duplicates");
        }
        if disconnected > 0 {
            failed.push("disconnected");
        }
        if opts
            .max
            .is_some_and(|m| p99 > m.p99_bound.as_micros() as u64)
        {
            failed.push("p99");
        }
        let passed = failed.is_empty();
        step["passed"] = json!(passed);
        if !passed {
            step["failed_on"] = json!(failed);
        }
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
    publisher_pongs.abort();
    group.close().await;
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

    /// Fields are read from the packet bytes, whatever the key order; a packet without
    /// them (or with a number that does not fit) gives none.
    #[test]
    fn fields() {
        use crate::client::number_after;
        let p = br#"2["msg",{"s":12,"p":3,"t":1795871247629123,"x":"pad"}]"#;
        assert_eq!(number_after(p, b"\"p\":"), Some(3));
        assert_eq!(number_after(p, b"\"s\":"), Some(12));
        assert_eq!(number_after(p, b"\"t\":"), Some(1_795_871_247_629_123));
        assert_eq!(number_after(p, b"\"q\":"), None);
        assert_eq!(fanout_fields(p), Some((3, 12, 1_795_871_247_629_123)));
        let q = br#"2["msg",{"t":5,"x":"\"s\":9","p":1,"s":2}]"#;
        assert_eq!(fanout_fields(q), Some((1, 2, 5)));
        assert_eq!(fanout_fields(br#"2["msg",{"p":1,"s":2}]"#), None);
        assert_eq!(
            fanout_fields(br#"{"p":1,"s":2,"t":99999999999999999999}"#),
            None
        );
        assert_eq!(fanout_fields(b""), None);
    }
}
