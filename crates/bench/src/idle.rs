//! `idle`: open N connections at a bounded rate, hold them, and measure what each costs
//! the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::client::{Conn, Receive};
use crate::proc::{rss_bytes, CpuMeter};
use crate::report::{latency_json, Failures, Report};
use crate::shard::{hist_add, hist_json, merge_counts, say, share, sum, Children, Commands};
use crate::Target;

/// Options of the idle run.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// Connections to open.
    pub connections: usize,
    /// New connections per second at most.
    pub rate: u32,
    /// Handshakes in flight at most.
    pub concurrency: usize,
    /// How long to hold the connections once all are open.
    pub hold: Duration,
    /// Wait after the last handshake before reading the server's memory.
    pub settle: Duration,
    /// The server's process id, to read its memory and CPU.
    pub server_pid: Option<u32>,
    /// Also join the Socket.IO namespace `/` on each connection.
    pub socketio: bool,
    /// Use HTTP long-polling instead of WebSocket (for small runs: two TCP connections
    /// per session).
    pub polling: bool,
}

/// What opening the connections took.
pub struct Opened {
    /// Connections whose handshake succeeded.
    pub connected: usize,
    /// Handshake latency in microseconds (TCP connect to open packet).
    pub latency: Histogram<u64>,
    /// Failures by reason.
    pub failures: Failures,
    /// Time from the first connect to the last handshake.
    pub elapsed: Duration,
    /// The connection tasks, each running `then` after its handshake.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens `n` connections at most `rate` per second and `concurrency` at a time, each
/// also joining the Socket.IO namespace `/` when `socketio` is set. Each runs
/// `then(index, conn)` in its own task as soon as its handshake completes, so it answers
/// pings from the start. Returns once every handshake has succeeded or failed.
pub async fn open_many<F, Fut>(
    target: &Target,
    n: usize,
    rate: u32,
    concurrency: usize,
    socketio: bool,
    then: F,
) -> Opened
where
    F: Fn(usize, Conn) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let connect = move |target: Target, i: usize| async move {
        if socketio {
            Conn::connect_socketio(&target, i).await
        } else {
            Conn::connect(&target, i).await
        }
    };
    open_many_with(target, n, rate, concurrency, connect, then).await
}

/// As [`open_many`], with any kind of connection `connect` makes (polling ones, say).
pub async fn open_many_with<C, Fc, Fcut, F, Fut>(
    target: &Target,
    n: usize,
    rate: u32,
    concurrency: usize,
    connect: Fc,
    then: F,
) -> Opened
where
    C: Send + 'static,
    Fc: Fn(Target, usize) -> Fcut + Clone + Send + 'static,
    Fcut: std::future::Future<Output = Result<C, crate::client::ClientError>> + Send + 'static,
    F: Fn(usize, C) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let semaphore = Arc::new(Semaphore::new(concurrency.max(1)));
    let (done_tx, mut done_rx) =
        tokio::sync::mpsc::unbounded_channel::<Result<u64, &'static str>>();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    // Paced in 10 ms slices: the timer has millisecond granularity.
    let per_slice = (rate as usize / 100).max(1);
    for i in 0..n {
        if i > 0 && i % per_slice == 0 {
            let due = start + Duration::from_millis((i / per_slice) as u64 * 10);
            tokio::time::sleep_until(due).await;
        }
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            break;
        };
        let target = target.clone();
        let done = done_tx.clone();
        let then = then.clone();
        let connect = connect.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(30), connect(target, i)).await;
            drop(permit);
            match result {
                Ok(Ok(conn)) => {
                    let _ = done.send(Ok(t0.elapsed().as_micros() as u64));
                    drop(done);
                    then(i, conn).await;
                }
                Ok(Err(e)) => {
                    let _ = done.send(Err(e.reason()));
                }
                Err(_) => {
                    let _ = done.send(Err("timeout"));
                }
            }
        }));
    }
    drop(done_tx);
    let mut latency = new_histogram();
    let mut failures = Failures::new();
    let mut connected = 0;
    for _ in 0..tasks.len() {
        match done_rx.recv().await {
            Some(Ok(us)) => {
                connected += 1;
                let _ = latency.record(us);
            }
            Some(Err(reason)) => *failures.entry(reason).or_default() += 1,
            None => break,
        }
    }
    Opened {
        connected,
        latency,
        failures,
        elapsed: start.elapsed(),
        tasks,
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // 1 µs to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant bounds are valid")
}

/// What each held connection runs: read (answering pings) until the stop, counting the
/// connections that end before it.
fn hold<C: Receive>(
    stop_rx: watch::Receiver<bool>,
    dropped: Arc<AtomicU64>,
) -> impl Fn(usize, C) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
       + Clone
       + Send
       + 'static {
    move |_i: usize, mut conn: C| {
        let mut stop = stop_rx.clone();
        let dropped = dropped.clone();
        Box::pin(async move {
            let held = async {
                loop {
                    if conn.recv().await.is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            };
            tokio::select! {
                _ = stop.changed() => {}
                _ = held => {}
            }
        })
    }
}

/// One process's idle connections: open, held until told to stop.
struct Held {
    opened: Opened,
    stop_tx: watch::Sender<bool>,
    dropped: Arc<AtomicU64>,
}

impl Held {
    async fn open(target: &Target, n: usize, opts: &IdleOptions) -> Held {
        // Hold: every connection answers pings until told to stop.
        let (stop_tx, stop_rx) = watch::channel(false);
        let dropped = Arc::new(AtomicU64::new(0));
        let opened = if opts.polling {
            let socketio = opts.socketio;
            let connect = move |target: Target, i: usize| async move {
                crate::polling::PollConn::connect(&target, i, socketio).await
            };
            let hold = hold(stop_rx, dropped.clone());
            open_many_with(target, n, opts.rate, opts.concurrency, connect, hold).await
        } else {
            let hold = hold(stop_rx, dropped.clone());
            open_many(target, n, opts.rate, opts.concurrency, opts.socketio, hold).await
        };
        Held {
            opened,
            stop_tx,
            dropped,
        }
    }

    /// What opening measured.
    fn opened_json(&self) -> serde_json::Value {
        json!({
            "connected": self.opened.connected,
            "failures": self.opened.failures,
            "elapsed_ms": self.opened.elapsed.as_secs_f64() * 1e3,
            "hist": hist_json(&self.opened.latency),
        })
    }

    async fn stop(self) -> u64 {
        let _ = self.stop_tx.send(true);
        for task in self.opened.tasks {
            let _ = task.await;
        }
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Runs as shard `shard` of `procs`: opens this process's share, says `READY` with what
/// opening measured, holds the connections until `GO`, answers with how many dropped,
/// then closes them on `STOP`.
pub async fn run_shard(target: &Target, opts: &IdleOptions, procs: usize, shard: usize) {
    let (count, first) = share(opts.connections, procs, shard);
    let target = Target {
        offset: first,
        ..target.clone()
    };
    let held = Held::open(&target, count, opts).await;
    say(&format!("READY {}", held.opened_json()));
    let mut commands = Commands::default();
    let _ = commands.next().await;
    let dropped = held.dropped.load(Ordering::Relaxed);
    say(&format!("RESULT {}", json!({ "dropped": dropped })));
    let _ = commands.next().await;
    held.stop().await;
}

/// Runs the idle scenario and reports; with `procs` above 1 the connections live in
/// child processes.
pub async fn run(target: &Target, opts: &IdleOptions, procs: usize) -> Report {
    let server_cpu = opts.server_pid.map(CpuMeter::start);
    let client_cpu = CpuMeter::start(std::process::id());
    let rss_before = opts.server_pid.and_then(rss_bytes);
    let mut r = Report::new(if opts.socketio {
        "idle-socketio"
    } else {
        "idle"
    });
    r.set("procs", json!(procs));
    let mut clients = vec![client_cpu];
    let (opened, rss_after, dropped) = if procs > 1 {
        let mut children = match Children::spawn(procs) {
            Ok(c) => c,
            Err(e) => {
                r.set("error", json!(format!("cannot start the children: {e}")));
                return r;
            }
        };
        clients.extend(children.cpu_meters());
        let ready = children.collect("READY", Duration::from_secs(3600)).await;
        tokio::time::sleep(opts.settle).await;
        let rss_after = opts.server_pid.and_then(rss_bytes);
        tokio::time::sleep(opts.hold.saturating_sub(opts.settle)).await;
        children.tell("GO").await;
        let results = children.collect("RESULT", Duration::from_secs(60)).await;
        // Read before the children exit and their /proc entries go.
        r.set_cpu_of(server_cpu.as_ref(), &clients);
        children.stop().await;
        (ready, rss_after, sum(&results, "dropped"))
    } else {
        let held = Held::open(target, opts.connections, opts).await;
        tokio::time::sleep(opts.settle).await;
        let rss_after = opts.server_pid.and_then(rss_bytes);
        tokio::time::sleep(opts.hold.saturating_sub(opts.settle)).await;
        let opened = vec![held.opened_json()];
        r.set_cpu_of(server_cpu.as_ref(), &clients);
        let dropped = held.stop().await;
        (opened, rss_after, dropped)
    };
    let connected = sum(&opened, "connected");
    let elapsed_ms = opened
        .iter()
        .filter_map(|v| v["elapsed_ms"].as_f64())
        .fold(0.0, f64::max);
    let mut latency = new_histogram();
    for part in &opened {
        hist_add(&mut latency, &part["hist"]);
    }
    r.set("target", json!(target.addr.to_string()));
    r.set("connections", json!(opts.connections));
    r.set("connected", json!(connected));
    r.set("failures", merge_counts(&opened, "failures"));
    r.set("dropped_while_held", json!(dropped));
    r.set(
        "connect_rate_per_s",
        json!((connected as f64 / (elapsed_ms / 1e3).max(1e-9)).round()),
    );
    r.set("handshake_latency", latency_json(&latency));
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        r.set("server_rss_before_bytes", json!(before));
        r.set("server_rss_after_bytes", json!(after));
        if let Some(per) = after.saturating_sub(before).checked_div(connected) {
            r.set("server_rss_per_connection_bytes", json!(per));
        }
    }
    r
}
