//! `im-presence` and `im-kick`: what presence and the device policy cost (`IM.md`,
//! Presence and Devices).
//!
//! `im-presence`: USERS users on `/im`; the last CHURNERS of them are a pool that comes
//! and goes (half of them online at the start), the others ("watchers") each watch WATCH
//! users of the pool, spread evenly (each user of the pool has WATCH × watchers / pool
//! watchers). Then, after a quiet phase (the server's CPU with every socket idle), a churn
//! phase: CHURN state changes a minute, each one user of the pool leaving (its TCP
//! connection dropped: the grace runs) or coming back, at random; the server's CPU over
//! the quiet phase's is what presence costs. Last, FLAPPERS users of the pool flap ten
//! times in ten seconds (on for half a second, off with a Socket.IO disconnect for half
//! a second): each watcher counts what it was told about each of them.
//!
//! `im-kick`: ITERATIONS times, a user connects a device, then another one (the server
//! runs `im.device_policy = "single"`): the time from the new device's CONNECT packet to
//! the old device's `kicked`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::client::{ClientError, Conn};
use crate::idle::open_many_with;
use crate::im::{ack, connect_im, histogram, token};
use crate::proc::{rss_bytes, CpuMeter};
use crate::report::{latency_json, Report};
use crate::Target;

/// Options of `im-presence`.
#[derive(Debug, Clone)]
pub struct PresenceOptions {
    /// Users in all, watchers and pool.
    pub users: usize,
    /// Users each watcher watches.
    pub watch: usize,
    /// Users of the pool that comes and goes.
    pub churners: usize,
    /// State changes of the pool per minute during the churn phase.
    pub churn_per_min: f64,
    /// Length of the quiet phase and of the churn phase each.
    pub duration: Duration,
    /// Users of the pool that flap at the end.
    pub flappers: usize,
    /// The server's flap window (`im.presence_flap_window_ms`): how long the flap phase
    /// waits for the held pushes.
    pub flap_window: Duration,
    /// Connections opened per second while setting up.
    pub connect_rate: u32,
    /// The HS256 secret the server checks tokens with.
    pub secret: String,
    /// The server's process id, for its CPU and memory.
    pub server_pid: Option<u32>,
}

/// What the watchers count, shared by their tasks.
#[derive(Default)]
struct Counts {
    /// `presence` pushes received, by all watchers.
    pushes: AtomicU64,
    /// `presence.subscribe` answered `ok`.
    subscribed: AtomicU64,
    /// The flap phase is under way: pushes about the flappers are counted per watcher.
    flapping: AtomicBool,
    /// What each watcher was told about each flapper in the flap phase.
    told: Mutex<HashMap<(usize, String), u32>>,
}

/// Who a push is about: the `"user":"..."` of `2/im,["presence",{...}]`.
fn pushed_user(packet: &[u8]) -> Option<String> {
    let body = packet.strip_prefix(b"2/im,")?;
    if !body.starts_with(br#"["presence","#) {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    v[1]["user"].as_str().map(str::to_owned)
}

/// Runs `im-presence` and reports.
pub async fn run(target: &Target, opts: &PresenceOptions) -> Report {
    let mut r = Report::new("im-presence");
    r.set("target", json!(target.addr.to_string()));
    let n = opts.users.max(2);
    let pool = opts.churners.clamp(1, n - 1);
    let watchers = n - pool;
    let flappers = opts.flappers.min(pool / 2);
    let run: u32 = rand::random();
    let user = Arc::new(move |i: usize| format!("pr-{run:08x}-{i}"));
    let rss_start = opts.server_pid.and_then(rss_bytes);

    let counts = Arc::new(Counts::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let flap_names: Arc<Vec<String>> = Arc::new((0..flappers).map(|k| user(n - 1 - k)).collect());

    let work = {
        let (counts, user, flap_names) = (counts.clone(), user.clone(), flap_names.clone());
        let watch = opts.watch;
        move |i: usize, conn: Conn| {
            let (counts, user, flap_names) = (counts.clone(), user.clone(), flap_names.clone());
            let mut stop_rx = stop_rx.clone();
            async move {
                let (mut reader, writer) = conn.split();
                // Users of the pool, spread so that each has about as many watchers.
                let users: Vec<String> = (0..watch)
                    .map(|k| user(watchers + (i * watch + k) % pool))
                    .collect();
                let ask = json!(["presence.subscribe", { "users": users }]);
                if writer
                    .send_raw(format!("42/im,1{ask}").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let reading = async {
                    while let Ok(packet) = reader.recv_message().await {
                        if let Some((1, body)) = ack(&packet) {
                            if body.starts_with(br#"[{"ok":true"#) {
                                counts.subscribed.fetch_add(1, Ordering::Relaxed);
                            }
                            continue;
                        }
                        let Some(about) = pushed_user(&packet) else {
                            continue;
                        };
                        counts.pushes.fetch_add(1, Ordering::Relaxed);
                        if counts.flapping.load(Ordering::Relaxed) && flap_names.contains(&about) {
                            *counts.told.lock().entry((i, about)).or_default() += 1;
                        }
                    }
                };
                tokio::select! {
                    () = reading => {}
                    _ = stop_rx.wait_for(|s| *s) => {}
                }
            }
        }
    };
    let secret = opts.secret.clone();
    let connect = {
        let user = user.clone();
        move |target: Target, i: usize| {
            let (secret, user) = (secret.clone(), user.clone());
            async move { connect_im(&target, i, &user(i), &secret).await }
        }
    };
    let opened = open_many_with(target, watchers, opts.connect_rate, 256, connect, work).await;

    // The pool, held here: index k is user `watchers + k`; half online. Each connection
    // online is read by a task of its own (its pings answered); aborting the task drops
    // the connection.
    let hold =
        |mut conn: Conn| tokio::spawn(async move { while conn.recv_message().await.is_ok() {} });
    let mut online: Vec<Option<tokio::task::JoinHandle<()>>> = Vec::with_capacity(pool);
    let mut connect_failures = 0u64;
    for k in 0..pool {
        let i = watchers + k;
        // The flappers start offline.
        if k % 2 == 0 && i < n - flappers {
            match connect_im(target, i, &user(i), &opts.secret).await {
                Ok(c) => online.push(Some(hold(c))),
                Err(_) => {
                    connect_failures += 1;
                    online.push(None);
                }
            }
        } else {
            online.push(None);
        }
    }
    // Every subscription answered (or 30 s).
    let settle = Instant::now() + Duration::from_secs(30);
    while counts.subscribed.load(Ordering::Relaxed) < opened.connected as u64
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_ready = opts.server_pid.and_then(rss_bytes);

    // Quiet: every socket idle, nobody changes.
    let quiet_cpu = opts.server_pid.map(CpuMeter::start);
    tokio::time::sleep(opts.duration).await;
    let quiet = quiet_cpu.map(|c| c.cores());

    // Churn: the pool (not the flappers) changes CHURN times a minute.
    let churn_cpu = opts.server_pid.map(CpuMeter::start);
    let pushes_before = counts.pushes.load(Ordering::Relaxed);
    let period = Duration::from_secs_f64(60.0 / opts.churn_per_min.max(0.01));
    let churnable = pool - flappers;
    let start = Instant::now();
    let mut next = start;
    let mut changes = 0u64;
    while next < start + opts.duration {
        tokio::time::sleep_until(next).await;
        next += period;
        let k = rand::random_range(0..churnable);
        let i = watchers + k;
        match online[k].take() {
            // Its connection dropped: a loss (the grace runs).
            Some(task) => task.abort(),
            None => match connect_im(target, i, &user(i), &opts.secret).await {
                Ok(c) => online[k] = Some(hold(c)),
                Err(_) => {
                    connect_failures += 1;
                    continue;
                }
            },
        }
        changes += 1;
    }
    // The last losses' grace and pushes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let churn = churn_cpu.map(|c| c.cores());
    let churn_secs = start.elapsed().as_secs_f64();
    let churn_pushes = counts.pushes.load(Ordering::Relaxed) - pushes_before;

    // Flap: each flapper ten times in ten seconds, with Socket.IO disconnects.
    counts.flapping.store(true, Ordering::Relaxed);
    let mut flaps = Vec::new();
    for k in 0..flappers {
        let i = n - 1 - k;
        let (target, secret, name) = (target.clone(), opts.secret.clone(), user(i));
        flaps.push(tokio::spawn(async move {
            for _ in 0..10 {
                let t = Instant::now();
                if let Ok(mut c) = connect_im(&target, i, &name, &secret).await {
                    tokio::time::sleep_until(t + Duration::from_millis(500)).await;
                    let _ = c.send_raw(b"41/im,").await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep_until(t + Duration::from_secs(1)).await;
            }
        }));
    }
    for f in flaps {
        let _ = f.await;
    }
    let in_window: Vec<u32> = counts.told.lock().values().copied().collect();
    // The pushes held by the damping come at the end of the window.
    tokio::time::sleep(opts.flap_window + Duration::from_secs(1)).await;
    let all: Vec<u32> = counts.told.lock().values().copied().collect();
    counts.flapping.store(false, Ordering::Relaxed);

    let _ = stop_tx.send(true);
    for task in opened.tasks {
        let _ = task.await;
    }
    for task in online.into_iter().flatten() {
        task.abort();
    }
    r.set("users", json!(n));
    r.set("watchers_connected", json!(opened.connected));
    r.set("watches_each", json!(opts.watch));
    r.set(
        "watchers_per_pool_user",
        json!(opened.connected * opts.watch / pool),
    );
    r.set("pool", json!(pool));
    r.set("connect_failures", json!(opened.failures));
    r.set("pool_connect_failures", json!(connect_failures));
    if let (Some(a), Some(b)) = (rss_start, rss_ready) {
        r.set("server_rss_ready_mb", json!(b / (1 << 20)));
        r.set(
            "server_rss_per_user_bytes",
            json!((b.saturating_sub(a)) / (opened.connected + pool / 2).max(1) as u64),
        );
    }
    r.set("churn_changes", json!(changes));
    r.set(
        "churn_changes_per_min",
        json!((changes as f64 * 60.0 / churn_secs).round()),
    );
    r.set("churn_pushes", json!(churn_pushes));
    r.set(
        "churn_pushes_per_change",
        json!((churn_pushes as f64 / changes.max(1) as f64 * 10.0).round() / 10.0),
    );
    if let (Some(q), Some(c)) = (quiet, churn) {
        let pct = |x: f64| (x * 1000.0).round() / 10.0;
        r.set("server_cpu_quiet_pct", json!(pct(q)));
        r.set("server_cpu_churn_pct", json!(pct(c)));
        r.set("presence_work_pct_of_core", json!(pct((c - q).max(0.0))));
    }
    r.set("flappers", json!(flappers));
    r.set("flap_watchers", json!(all.len()));
    r.set(
        "flap_max_told_in_10s",
        json!(in_window.iter().copied().max().unwrap_or(0)),
    );
    r.set(
        "flap_max_told_with_the_held",
        json!(all.iter().copied().max().unwrap_or(0)),
    );
    r
}

/// Options of `im-kick`.
#[derive(Debug, Clone)]
pub struct KickOptions {
    /// Logins measured.
    pub iterations: usize,
    /// The HS256 secret the server checks tokens with.
    pub secret: String,
}

/// Runs `im-kick` (the server must run `im.device_policy = "single"`) and reports.
pub async fn run_kick(target: &Target, opts: &KickOptions) -> Report {
    let mut r = Report::new("im-kick");
    r.set("target", json!(target.addr.to_string()));
    let run: u32 = rand::random();
    let mut hist = histogram();
    let mut failures = 0u64;
    let mut not_kicked = 0u64;
    for k in 0..opts.iterations {
        let name = format!("kick-{run:08x}-{k}");
        let outcome = async {
            let mut old = connect_im(target, 2 * k, &name, &opts.secret).await?;
            let mut new = Conn::connect(target, 2 * k + 1).await?;
            let auth = json!({ "token": token(&name, &opts.secret), "device": "the-new-one" });
            let sent = Instant::now();
            new.send_message(format!("0/im,{auth}").as_bytes()).await?;
            let kicked = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let m = old.recv_message().await?;
                    if m.starts_with(br#"2/im,["kicked","#) {
                        return Ok::<_, ClientError>(Some(Instant::now()));
                    }
                }
            })
            .await
            .unwrap_or(Ok(None))?;
            Ok::<_, ClientError>(kicked.map(|at| at - sent))
        };
        match outcome.await {
            Ok(Some(d)) => {
                let _ = hist.record((d.as_micros() as u64).max(1));
            }
            Ok(None) => not_kicked += 1,
            Err(_) => failures += 1,
        }
    }
    r.set("iterations", json!(opts.iterations));
    r.set("failures", json!(failures));
    r.set("not_kicked", json!(not_kicked));
    r.set("connect_to_kicked", latency_json(&hist));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_who_a_push_is_about() {
        let p = br#"2/im,["presence",{"user":"pr-1-7","online":true,"last_seen":1,"devices":1}]"#;
        assert_eq!(pushed_user(p).as_deref(), Some("pr-1-7"));
        assert_eq!(pushed_user(br#"2/im,["typing",{"user":"x"}]"#), None);
        assert_eq!(pushed_user(b"3/im,1[{}]"), None);
    }
}
