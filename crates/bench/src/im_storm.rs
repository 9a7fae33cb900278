//! `im-storm`: storm control (`IM.md`, Limits; seed 004 §6.3). One group of MEMBERS where
//! one member floods FLOOD_RATE sends a second, and a calm group of CALM_MEMBERS where
//! a few members send CALM_RATE a second in all (each under the per-user rate). First a
//! baseline (the calm group alone), then the storm: the latency from a calm send to its
//! members seeing it, in each phase, and what the flooder got through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::client::{ClientError, Conn};
use crate::idle::open_many_with;
use crate::im::{ack, connect_im, histogram};
use crate::proc::CpuMeter;
use crate::report::{latency_json, Report};
use crate::Target;

/// Options of the run.
#[derive(Debug, Clone)]
pub struct StormOptions {
    /// Members of the flooded group.
    pub members: usize,
    /// Sends a second of the flooder.
    pub flood_rate: f64,
    /// Members of the calm group.
    pub calm_members: usize,
    /// Sends a second into the calm group, in all.
    pub calm_rate: f64,
    /// Seconds of each phase.
    pub duration: Duration,
    /// Connections opened per second while setting up.
    pub connect_rate: u32,
    /// The HS256 secret the server checks tokens with.
    pub secret: String,
    /// The server's process id, for its CPU.
    pub server_pid: Option<u32>,
}

/// The `"t":<n>` a calm send carries, from a pushed `message`.
fn stamp(packet: &[u8]) -> Option<u64> {
    let at = packet.windows(4).position(|w| w == br#""t":"#)? + 4;
    let digits = packet[at..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    std::str::from_utf8(&packet[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Makes a group of `members` as one more user; its id.
async fn group(
    target: &Target,
    i: usize,
    owner: &str,
    members: Vec<String>,
    secret: &str,
) -> Result<(Conn, Option<i64>), ClientError> {
    let mut conn = connect_im(target, i, owner, secret).await?;
    let create =
        json!(["conversation.create", { "type": "group", "title": "storm", "members": members }]);
    conn.send_raw(format!("42/im,1{create}").as_bytes()).await?;
    loop {
        let m = conn.recv_message().await?;
        if let Some((1, body)) = ack(&m) {
            let v: Value = serde_json::from_slice(body).unwrap_or_default();
            let id = v[0]["conversation"]["id"].as_i64();
            if id.is_none() {
                return Err(ClientError::Handshake(format!("conversation.create: {v}")));
            }
            return Ok((conn, id));
        }
    }
}

/// Runs the scenario and reports.
pub async fn run(target: &Target, opts: &StormOptions) -> Report {
    let mut r = Report::new("im-storm");
    r.set("target", json!(target.addr.to_string()));
    let run: u32 = rand::random();
    let (flooded, calm) = (opts.members.max(2), opts.calm_members.max(2));
    let n = flooded + calm;
    // Users 0..flooded are the flooded group (0 floods), the rest the calm one.
    let user = move |i: usize| format!("st-{run:08x}-{i}");
    let base = Instant::now();
    // The latency histogram of the phase under way.
    let phase = Arc::new(Mutex::new(histogram()));
    let seen = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let work = {
        let (phase, seen) = (phase.clone(), seen.clone());
        move |i: usize, conn: Conn| {
            let (phase, seen) = (phase.clone(), seen.clone());
            let mut stop_rx = stop_rx.clone();
            async move {
                let (mut reader, _writer) = conn.split();
                let reading = async {
                    while let Ok(packet) = reader.recv_message().await {
                        if i < flooded || !packet.starts_with(b"2/im,") {
                            continue;
                        }
                        if let Some(t) = stamp(&packet) {
                            let now = base.elapsed().as_micros() as u64;
                            let _ = phase.lock().record(now.saturating_sub(t).max(1));
                            seen.fetch_add(1, Ordering::Relaxed);
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
    let connect = move |target: Target, i: usize| {
        let secret = secret.clone();
        async move { connect_im(&target, i, &user(i), &secret).await }
    };
    // Member 0 (the flooder) and the calm senders are connected apart, as writers.
    let senders = ((opts.calm_rate / 10.0).ceil() as usize).clamp(1, calm);
    let opened = open_many_with(target, n, opts.connect_rate, 256, connect, work).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let made = async {
        let (a, flooded_id) = group(
            target,
            n,
            &format!("st-{run:08x}-owner-a"),
            (0..flooded)
                .map(user)
                .chain([format!("st-{run:08x}-flooder")])
                .collect(),
            &opts.secret,
        )
        .await?;
        let calm_members: Vec<String> = (flooded..n)
            .map(user)
            .chain((0..senders).map(|k| format!("st-{run:08x}-calm-{k}")))
            .collect();
        let (b, calm_id) = group(
            target,
            n + 1,
            &format!("st-{run:08x}-owner-b"),
            calm_members,
            &opts.secret,
        )
        .await?;
        Ok::<_, ClientError>((a, b, flooded_id, calm_id))
    };
    let (owners, flooded_id, calm_id) = match made.await {
        Ok((a, b, Some(f), Some(c))) => ((a, b), f, c),
        other => {
            r.set(
                "error",
                json!(format!("the groups were not made: {:?}", other.err())),
            );
            return r;
        }
    };
    // The calm senders and the flooder.
    let mut calm_writers = Vec::new();
    for k in 0..senders {
        match connect_im(
            target,
            n + 2 + k,
            &format!("st-{run:08x}-calm-{k}"),
            &opts.secret,
        )
        .await
        {
            Ok(c) => {
                let (mut reader, writer) = c.split();
                // Read (acks dropped, pings answered) until the end.
                let draining =
                    tokio::spawn(async move { while reader.recv_message().await.is_ok() {} });
                calm_writers.push((draining, writer));
            }
            Err(e) => {
                r.set("error", json!(format!("a calm sender: {e}")));
                return r;
            }
        }
    }
    let flooder = match connect_im(
        target,
        n + 2 + senders,
        &format!("st-{run:08x}-flooder"),
        &opts.secret,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            r.set("error", json!(format!("the flooder: {e}")));
            return r;
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The calm senders send for `phases` phases, each `duration`, round-robin.
    let calm_period = Duration::from_secs_f64(1.0 / opts.calm_rate.max(0.1));
    let total = opts.duration * 2;
    let calm_sent = Arc::new(AtomicU64::new(0));
    let calm_task = {
        let calm_sent = calm_sent.clone();
        let writers: Vec<_> = calm_writers.iter().map(|(_, w)| w.clone()).collect();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut next = start;
            let mut k = 0u64;
            while next < start + total {
                tokio::time::sleep_until(next).await;
                next += calm_period;
                let t = base.elapsed().as_micros() as u64;
                // With an ack id, as a client sends it (the Node peer answers only those).
                let send = format!(
                    r#"42/im,{}["send",{{"conversation":{calm_id},"cid":"c{k}","body":{{"t":{t}}}}}]"#,
                    k + 1
                );
                let w = &writers[k as usize % writers.len()];
                if w.send_raw(send.as_bytes()).await.is_ok() {
                    calm_sent.fetch_add(1, Ordering::Relaxed);
                }
                k += 1;
            }
        })
    };
    let server_cpu = opts.server_pid.map(CpuMeter::start);
    tokio::time::sleep(opts.duration).await;
    let baseline = std::mem::replace(&mut *phase.lock(), histogram());
    let baseline_cpu = server_cpu.map(|c| c.cores());

    // The storm: the flooder sends as fast as asked, acks counted.
    let storm_cpu = opts.server_pid.map(CpuMeter::start);
    let (mut freader, fwriter) = flooder.split();
    let (ok, limited) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counting = {
        let (ok, limited) = (ok.clone(), limited.clone());
        tokio::spawn(async move {
            while let Ok(m) = freader.recv_message().await {
                let Some((_, body)) = ack(&m) else { continue };
                if body.starts_with(br#"[{"ok":true"#) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else if body.windows(12).any(|w| w == b"rate_limited") {
                    limited.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let flood_start = Instant::now();
    let per_ms = (opts.flood_rate / 1000.0).max(0.001);
    let mut flood_sent = 0u64;
    while flood_start.elapsed() < opts.duration {
        let due = (flood_start.elapsed().as_secs_f64() * 1000.0 * per_ms) as u64;
        let mut batch = Vec::new();
        while flood_sent < due {
            flood_sent += 1;
            batch.push(format!(
                r#"42/im,{flood_sent}["send",{{"conversation":{flooded_id},"cid":"f{flood_sent}","body":"flood"}}]"#
            ));
        }
        let frames: Vec<&[u8]> = batch.iter().map(|s| s.as_bytes()).collect();
        if !frames.is_empty() && fwriter.send_raw_batch(frames).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let flood_secs = flood_start.elapsed().as_secs_f64();
    let _ = calm_task.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let storm = std::mem::replace(&mut *phase.lock(), histogram());
    let storm_cpu = storm_cpu.map(|c| c.cores());
    counting.abort();
    let _ = stop_tx.send(true);
    for task in opened.tasks {
        let _ = task.await;
    }
    drop(owners);
    for (draining, _) in calm_writers {
        draining.abort();
    }
    let q = |h: &hdrhistogram::Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    r.set("flooded_members", json!(flooded));
    r.set("calm_members", json!(calm));
    r.set("connect_failures", json!(opened.failures));
    r.set("calm_sent", json!(calm_sent.load(Ordering::Relaxed)));
    r.set("calm_deliveries_seen", json!(seen.load(Ordering::Relaxed)));
    r.set("flood_sent", json!(flood_sent));
    r.set(
        "flood_sent_per_s",
        json!((flood_sent as f64 / flood_secs).round()),
    );
    let ok = ok.load(Ordering::Relaxed);
    r.set("flood_accepted", json!(ok));
    r.set(
        "flood_accepted_per_s",
        json!((ok as f64 / flood_secs * 10.0).round() / 10.0),
    );
    r.set("flood_rate_limited", json!(limited.load(Ordering::Relaxed)));
    r.set("calm_latency_baseline", latency_json(&baseline));
    r.set("calm_latency_storm", latency_json(&storm));
    if !baseline.is_empty() && !storm.is_empty() {
        r.set(
            "calm_p99_rise_pct",
            json!(((q(&storm, 0.99) / q(&baseline, 0.99) - 1.0) * 1000.0).round() / 10.0),
        );
    }
    if let (Some(b), Some(s)) = (baseline_cpu, storm_cpu) {
        r.set(
            "server_cpu_baseline_pct",
            json!((b * 1000.0).round() / 10.0),
        );
        r.set("server_cpu_storm_pct", json!((s * 1000.0).round() / 10.0));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_stamp() {
        let p = br#"2/im,900["message",{"id":1,"body":{"t":12345},"from":"x"}]"#;
        assert_eq!(stamp(p), Some(12345));
        assert_eq!(stamp(br#"2/im,["message",{"body":"flood"}]"#), None);
    }
}
