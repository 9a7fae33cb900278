//! `im-typing`: what typing costs (`IM.md`, Typing). N members of one group on `/im`, the
//! first T of them typing: each sends `typing: true` R times a second (a keystroke each)
//! for the duration, starting one after the other, then `typing: false`. Every member
//! counts the `typing` pushes it gets and their bytes, and notes when it first saw each
//! typer in a set. Reported beside what relaying every event to every other member would
//! have delivered (events × (N − 1)), and the latency from a typer's first keystroke to
//! the members seeing it.

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
pub struct TypingOptions {
    /// Members of the group.
    pub members: usize,
    /// Members who type.
    pub typers: usize,
    /// Keystrokes per second per typer.
    pub rate: f64,
    /// How long each typer types.
    pub duration: Duration,
    /// Connections opened per second while setting up.
    pub connect_rate: u32,
    /// The HS256 secret the server checks tokens with.
    pub secret: String,
    /// The server's process id, for its CPU.
    pub server_pid: Option<u32>,
}

/// The WebSocket frame header of a server's text frame of `len` bytes.
fn frame_header(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Runs the scenario and reports.
pub async fn run(target: &Target, opts: &TypingOptions) -> Report {
    let mut r = Report::new("im-typing");
    r.set("target", json!(target.addr.to_string()));
    let n = opts.members.max(2);
    let typers = opts.typers.min(n);
    let run: u32 = rand::random();
    let user = move |i: usize| format!("ty-{run:08x}-{i}");
    let pushes = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let seen_hist = Arc::new(Mutex::new(histogram()));
    let conversation = Arc::new(tokio::sync::OnceCell::<i64>::new());
    let (go_tx, go_rx) = tokio::sync::watch::channel(None::<Instant>);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Typer i starts `stagger * i` after the start: the members see the set grow.
    let stagger = Duration::from_millis(20);
    let period = Duration::from_secs_f64(1.0 / opts.rate.max(0.1));
    let duration = opts.duration;

    let work = {
        let (pushes, bytes, events) = (pushes.clone(), bytes.clone(), events.clone());
        let (seen_hist, conversation) = (seen_hist.clone(), conversation.clone());
        move |i: usize, conn: Conn| {
            let (pushes, bytes, events) = (pushes.clone(), bytes.clone(), events.clone());
            let (seen_hist, conversation) = (seen_hist.clone(), conversation.clone());
            let (mut go_rx, mut stop_rx) = (go_rx.clone(), stop_rx.clone());
            async move {
                let (mut reader, writer) = conn.split();
                let start = loop {
                    if let Some(s) = *go_rx.borrow_and_update() {
                        break s;
                    }
                    if go_rx.changed().await.is_err() {
                        return;
                    }
                };
                let reading = tokio::spawn(async move {
                    // When this member first saw each typer.
                    let mut first_seen = vec![false; typers];
                    while let Ok(packet) = reader.recv_message().await {
                        let Some(body) = packet.strip_prefix(b"2/im,") else {
                            continue;
                        };
                        if !body.starts_with(br#"["typing","#) {
                            continue;
                        }
                        pushes.fetch_add(1, Ordering::Relaxed);
                        let len = packet.len() + 1; // with the Engine.IO `4`
                        bytes.fetch_add((len + frame_header(len)) as u64, Ordering::Relaxed);
                        let push: Value = serde_json::from_slice(body).unwrap_or_default();
                        let now = Instant::now();
                        for u in push[1]["users"].as_array().into_iter().flatten() {
                            let Some(t) = u
                                .as_str()
                                .and_then(|u| u.rsplit('-').next())
                                .and_then(|k| k.parse::<usize>().ok())
                                .filter(|&k| k < typers)
                            else {
                                continue;
                            };
                            if !first_seen[t] {
                                first_seen[t] = true;
                                let typed = start + stagger * t as u32;
                                let us = now.saturating_duration_since(typed).as_micros() as u64;
                                let _ = seen_hist.lock().record(us.max(1));
                            }
                        }
                    }
                });
                if i < typers {
                    let Some(&id) = conversation.get() else {
                        reading.abort();
                        return;
                    };
                    let mut next = start + stagger * i as u32;
                    let end = next + duration;
                    let on = format!(r#"42/im,["typing",{{"conversation":{id},"typing":true}}]"#);
                    while next < end {
                        tokio::time::sleep_until(next).await;
                        if writer.send_raw(on.as_bytes()).await.is_err() {
                            break;
                        }
                        events.fetch_add(1, Ordering::Relaxed);
                        next += period;
                    }
                    let off = format!(r#"42/im,["typing",{{"conversation":{id},"typing":false}}]"#);
                    if writer.send_raw(off.as_bytes()).await.is_ok() {
                        events.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = stop_rx.wait_for(|s| *s).await;
                reading.abort();
            }
        }
    };
    let secret = opts.secret.clone();
    let connect = move |target: Target, i: usize| {
        let secret = secret.clone();
        async move { connect_im(&target, i, &user(i), &secret).await }
    };
    let opened = open_many_with(target, n, opts.connect_rate, 256, connect, work).await;
    // The group, made by one more user once every member is in (so each is joined).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let made = async {
        let mut owner = connect_im(target, n, &format!("ty-{run:08x}-owner"), &opts.secret).await?;
        let members: Vec<String> = (0..n).map(user).collect();
        let create = json!(["conversation.create", { "type": "group", "title": "typing", "members": members }]);
        owner
            .send_raw(format!("42/im,1{create}").as_bytes())
            .await?;
        loop {
            let m = owner.recv_message().await?;
            if let Some((1, body)) = ack(&m) {
                let v: Value = serde_json::from_slice(body).unwrap_or_default();
                return Ok::<_, ClientError>((owner, v[0]["conversation"]["id"].as_i64()));
            }
        }
    };
    let owner = match made.await {
        Ok((owner, Some(id))) => {
            let _ = conversation.set(id);
            owner
        }
        other => {
            r.set(
                "error",
                json!(format!("the group was not made: {:?}", other.err())),
            );
            return r;
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_cpu = opts.server_pid.map(CpuMeter::start);
    let client_cpu = CpuMeter::start(std::process::id());
    let start = Instant::now() + Duration::from_millis(100);
    let _ = go_tx.send(Some(start));
    // Everyone types, then the last `false` settles (a window and the TTL's slack).
    let last_typer = stagger * typers.saturating_sub(1) as u32;
    tokio::time::sleep_until(start + last_typer + duration + Duration::from_secs(1)).await;
    let elapsed = (Instant::now() - start).as_secs_f64();
    r.set_cpu(server_cpu.as_ref(), &client_cpu);
    let _ = stop_tx.send(true);
    for task in opened.tasks {
        let _ = task.await;
    }
    drop(owner);
    let events = events.load(Ordering::Relaxed);
    let pushes = pushes.load(Ordering::Relaxed);
    let bytes = bytes.load(Ordering::Relaxed);
    // Relaying every event to every other member: one push each, of this size.
    let relayed_len = format!(
        r#"42/im,["typing",{{"conversation":{},"user":"{}","typing":true}}]"#,
        conversation.get().copied().unwrap_or_default(),
        user(0)
    )
    .len();
    let relay_pushes = events * (opened.connected.saturating_sub(1)) as u64;
    let relay_bytes = relay_pushes * (relayed_len + frame_header(relayed_len)) as u64;
    r.set("members", json!(opened.connected));
    r.set("connect_failures", json!(opened.failures));
    r.set("typers", json!(typers));
    r.set("events_sent", json!(events));
    r.set("pushes", json!(pushes));
    r.set("pushed_bytes", json!(bytes));
    r.set("pushes_per_s", json!((pushes as f64 / elapsed).round()));
    r.set("relay_pushes", json!(relay_pushes));
    r.set("relay_bytes", json!(relay_bytes));
    if pushes > 0 && bytes > 0 {
        let ratio = |a: u64, b: u64| (a as f64 / b as f64 * 10.0).round() / 10.0;
        r.set(
            "fewer_pushes_than_relay",
            json!(ratio(relay_pushes, pushes)),
        );
        r.set("fewer_bytes_than_relay", json!(ratio(relay_bytes, bytes)));
    }
    if let Some(cpu) = &server_cpu {
        r.set(
            "server_cpu_us_per_event",
            json!((cpu.seconds() * 1e6 / events.max(1) as f64 * 10.0).round() / 10.0),
        );
    }
    r.set("typer_seen_after", latency_json(&seen_hist.lock()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers() {
        assert_eq!(frame_header(125), 2);
        assert_eq!(frame_header(126), 4);
        assert_eq!(frame_header(70_000), 10);
    }
}
