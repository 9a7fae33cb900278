//! `im-direct`: the IM service's persisted throughput, 1:1 (`IM.md`). N clients on `/im`
//! in N/2 direct conversations; every client sends `send` with an ack at its share of an
//! aggregate rate, and acks every `message` pushed to it, as a device confirming
//! delivery. Measures acked sends per second, the ack's latency (send to "committed"),
//! the delivery's latency (send to the partner's push), and checks every conversation's
//! sequence numbers afterwards: each `seq` from 1 to the last, once, as the sender's acks
//! and the partner's pushes saw them together.
//!
//! Speaks to Herald and to the Node peer (`bench/peers/node/im.mjs`) alike: JWT (HS256)
//! tokens signed with `--secret`, the default parser.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::client::{ClientError, Conn};
use crate::idle::open_many_with;
use crate::proc::CpuMeter;
use crate::report::{latency_json, Report};
use crate::Target;

/// Options of the run.
#[derive(Debug, Clone)]
pub struct ImOptions {
    /// Clients (two per conversation).
    pub clients: usize,
    /// Connections opened per second while setting up.
    pub connect_rate: u32,
    /// Sends per second, all clients together.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// Padding bytes in each body.
    pub size: usize,
    /// The HS256 secret the server verifies tokens with.
    pub secret: String,
    /// Seconds to wait for acks and pushes after the last send.
    pub drain: Duration,
    /// The server's process id, for its CPU.
    pub server_pid: Option<u32>,
}

#[derive(Default)]
struct Counts {
    /// Clients done sending; the last one tells the others (`all_sent`).
    done_sending: AtomicU64,
    /// When the last ack came, in microseconds since the epoch of the run.
    last_ack_us: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
}

/// What a conversation's two clients saw of its sequence numbers: the acks of their
/// sends, and the pushes of each other's.
#[derive(Default)]
struct SeenSeqs {
    acked: Vec<u64>,
    pushed: Vec<u64>,
}

type Seen = Arc<Mutex<SeenSeqs>>;

/// A token for `user`, signed with `secret`.
fn token(user: &str, secret: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())
        .and_then(|key| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &json!({ "sub": user, "exp": exp }),
                &key,
            )
        })
        .unwrap_or_default()
}

/// Connects and joins `/im` as `user`.
async fn connect_im(
    target: &Target,
    i: usize,
    user: &str,
    secret: &str,
) -> Result<Conn, ClientError> {
    let mut conn = Conn::connect(target, i).await?;
    let auth = json!({ "token": token(user, secret), "device": format!("bench-{i}") });
    conn.send_message(format!("0/im,{auth}").as_bytes()).await?;
    let reply = conn.recv_message().await?;
    if reply.starts_with(b"0/im,") {
        Ok(conn)
    } else {
        Err(ClientError::Handshake(format!(
            "/im refused: {}",
            String::from_utf8_lossy(&reply)
        )))
    }
}

/// The ack id and JSON of `3/im,<id>[...]`.
fn ack(packet: &[u8]) -> Option<(u64, &[u8])> {
    let rest = packet.strip_prefix(b"3/im,")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let id = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some((id, &rest[digits..]))
}

/// The ack id and JSON of an event `2/im,<id>[...]` pushed with an ack.
fn pushed(packet: &[u8]) -> Option<(u64, &[u8])> {
    let rest = packet.strip_prefix(b"2/im,")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let id = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some((id, &rest[digits..]))
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

/// Runs the scenario and reports.
pub async fn run(target: &Target, opts: &ImOptions) -> Report {
    let mut r = Report::new("im-direct");
    r.set("target", json!(target.addr.to_string()));
    let clients = opts.clients.max(2) & !1;
    let pairs = clients / 2;
    // Users of this run only: a store that outlives runs holds no conversation of theirs.
    let run: u32 = rand::random();
    let user = move |i: usize| format!("bench-{run:08x}-{i}");
    let counts = Arc::new(Counts::default());
    let ack_hist = Arc::new(Mutex::new(histogram()));
    let delivery_hist = Arc::new(Mutex::new(histogram()));
    let seen: Vec<Seen> = (0..pairs).map(|_| Seen::default()).collect();
    let conversations: Arc<Vec<tokio::sync::OnceCell<i64>>> =
        Arc::new((0..pairs).map(|_| tokio::sync::OnceCell::new()).collect());
    let epoch = Instant::now();
    let (start_tx, start_rx) = tokio::sync::watch::channel(None::<Instant>);
    // Every client stays until all are done sending (a client behind its schedule sends
    // late; its partner must still be there to receive), then drains.
    let (all_sent_tx, all_sent_rx) = tokio::sync::watch::channel(false);
    let all_sent_tx = Arc::new(all_sent_tx);
    let per_client = opts.rate / clients as f64;
    let period = Duration::from_secs_f64(1.0 / per_client.max(1e-6));
    let pad = "x".repeat(opts.size);
    let (duration, drain) = (opts.duration, opts.drain);

    let work = {
        let all_sent_tx = all_sent_tx.clone();
        let counts = counts.clone();
        let ack_hist = ack_hist.clone();
        let delivery_hist = delivery_hist.clone();
        let seen = seen.clone();
        let conversations = conversations.clone();
        move |i: usize, conn: Conn| {
            let counts = counts.clone();
            let ack_hist = ack_hist.clone();
            let delivery_hist = delivery_hist.clone();
            let seen = seen[i / 2].clone();
            let conversations = conversations.clone();
            let mut start_rx = start_rx.clone();
            let mut all_sent_rx = all_sent_rx.clone();
            let all_sent_tx = all_sent_tx.clone();
            let pad = pad.clone();
            let partner = user(i ^ 1);
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
                // Ack id 0: the conversation; then the sends, from 1.
                let create = format!(
                    r#"42/im,0["conversation.create",{{"type":"direct","with":"{partner}"}}]"#
                );
                let give_up = || {
                    if counts.done_sending.fetch_add(1, Ordering::AcqRel) + 1 == clients as u64 {
                        let _ = all_sent_tx.send(true);
                    }
                };
                if writer.send_raw(create.as_bytes()).await.is_err() {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    give_up();
                    return;
                }
                let pending: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
                let (conv_tx, conv_rx) = tokio::sync::oneshot::channel::<i64>();
                let reading = {
                    let pending = pending.clone();
                    let counts = counts.clone();
                    let seen = seen.clone();
                    let writer = writer.clone();
                    tokio::spawn(async move {
                        let mut conv_tx = Some(conv_tx);
                        while let Ok(packet) = reader.recv_message().await {
                            if let Some((id, body)) = ack(&packet) {
                                let reply: Value = serde_json::from_slice(body).unwrap_or_default();
                                let reply = &reply[0];
                                if id == 0 {
                                    if let (Some(tx), Some(c)) =
                                        (conv_tx.take(), reply["conversation"]["id"].as_i64())
                                    {
                                        let _ = tx.send(c);
                                    }
                                    continue;
                                }
                                let Some(at) = pending.lock().remove(&id) else {
                                    continue;
                                };
                                if reply["ok"] == json!(true) {
                                    let _ = ack_hist
                                        .lock()
                                        .record(at.elapsed().as_micros().max(1) as u64);
                                    counts.acked.fetch_add(1, Ordering::Relaxed);
                                    counts.last_ack_us.fetch_max(
                                        epoch.elapsed().as_micros() as u64,
                                        Ordering::Relaxed,
                                    );
                                    if let Some(seq) = reply["seq"].as_u64() {
                                        seen.lock().acked.push(seq);
                                    }
                                } else {
                                    counts.refused.fetch_add(1, Ordering::Relaxed);
                                }
                            } else if let Some((id, body)) = pushed(&packet) {
                                let event: Value = serde_json::from_slice(body).unwrap_or_default();
                                if event[0] != json!("message") {
                                    continue;
                                }
                                // Delivered to this device: the ack the server counts.
                                let _ = writer.send_raw(format!("43/im,{id}[]").as_bytes()).await;
                                let m = &event[1];
                                if let Some(seq) = m["seq"].as_u64() {
                                    seen.lock().pushed.push(seq);
                                }
                                if let Some(t) = m["body"]["t"].as_u64() {
                                    let now = epoch.elapsed().as_micros() as u64;
                                    let _ =
                                        delivery_hist.lock().record(now.saturating_sub(t).max(1));
                                }
                                counts.delivered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                };
                let Ok(Ok(conversation)) =
                    tokio::time::timeout(Duration::from_secs(30), conv_rx).await
                else {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    give_up();
                    reading.abort();
                    return;
                };
                let _ = conversations[i / 2].set(conversation);
                // Clients start spread over one period, so sends do not bunch.
                let offset = period.mul_f64((i as f64 / clients as f64).fract());
                let mut next = start + offset;
                let end = start + duration;
                let mut id = 1u64;
                while next < end {
                    tokio::time::sleep_until(next).await;
                    let t = epoch.elapsed().as_micros() as u64;
                    let packet = format!(
                        r#"42/im,{id}["send",{{"conversation":{conversation},"cid":"{i}-{id}","body":{{"t":{t},"x":"{pad}"}}}}]"#
                    );
                    pending.lock().insert(id, Instant::now());
                    if writer.send_raw(packet.as_bytes()).await.is_err() {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    id += 1;
                    next += period;
                }
                if counts.done_sending.fetch_add(1, Ordering::AcqRel) + 1 == clients as u64 {
                    let _ = all_sent_tx.send(true);
                }
                let _ = tokio::time::timeout(
                    duration + Duration::from_secs(120),
                    all_sent_rx.wait_for(|done| *done),
                )
                .await;
                tokio::time::sleep(drain).await;
                reading.abort();
            }
        }
    };
    let secret = opts.secret.clone();
    let connect = move |target: Target, i: usize| {
        let secret = secret.clone();
        async move { connect_im(&target, i, &user(i), &secret).await }
    };
    let opened = open_many_with(target, clients, opts.connect_rate, 256, connect, work).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_cpu = opts.server_pid.map(CpuMeter::start);
    let client_cpu = CpuMeter::start(std::process::id());
    let started = Instant::now() + Duration::from_millis(100);
    let _ = start_tx.send(Some(started));
    // Clients that failed to connect send nothing: they are done already.
    let failed = clients.saturating_sub(opened.connected) as u64;
    if counts.done_sending.fetch_add(failed, Ordering::AcqRel) + failed >= clients as u64 {
        let _ = all_sent_tx.send(true);
    }
    for task in opened.tasks {
        let _ = task.await;
    }
    r.set_cpu(server_cpu.as_ref(), &client_cpu);

    // Every conversation: its seqs acked from 1 to the last, once each; each pushed to
    // the other member once (a push not in by the end of the drain is missing).
    let (mut gaps, mut duplicates, mut lost, mut twice) = (0u64, 0u64, 0u64, 0u64);
    for s in &seen {
        let s = s.lock();
        let mut acked = s.acked.clone();
        acked.sort_unstable();
        let all = acked.len();
        acked.dedup();
        duplicates += (all - acked.len()) as u64;
        if let Some(&last) = acked.last() {
            gaps += last - acked.len() as u64;
        }
        let mut pushed = s.pushed.clone();
        pushed.sort_unstable();
        let all = pushed.len();
        pushed.dedup();
        twice += (all - pushed.len()) as u64;
        lost += acked
            .iter()
            .filter(|q| pushed.binary_search(q).is_err())
            .count() as u64;
    }
    let sent = counts.sent.load(Ordering::Relaxed);
    let acked = counts.acked.load(Ordering::Relaxed);
    // Over the time the acks took, not the schedule: a server behind it is not credited
    // with the rate it was asked for.
    let until_last_ack =
        (counts.last_ack_us.load(Ordering::Relaxed) as f64 / 1e6) - (started - epoch).as_secs_f64();
    let secs = opts.duration.as_secs_f64().max(until_last_ack);
    r.set("clients", json!(opened.connected));
    r.set("connect_failures", json!(opened.failures));
    r.set(
        "conversations",
        json!(conversations.iter().filter(|c| c.initialized()).count()),
    );
    r.set("rate_per_s", json!(opts.rate));
    r.set("sent", json!(sent));
    r.set("acked", json!(acked));
    r.set("refused", json!(counts.refused.load(Ordering::Relaxed)));
    r.set(
        "unanswered",
        json!(sent.saturating_sub(acked + counts.refused.load(Ordering::Relaxed))),
    );
    r.set("errors", json!(counts.errors.load(Ordering::Relaxed)));
    r.set("acked_per_s", json!((acked as f64 / secs).round()));
    r.set("seconds_to_last_ack", json!((secs * 100.0).round() / 100.0));
    r.set("delivered", json!(counts.delivered.load(Ordering::Relaxed)));
    r.set("seq_gaps", json!(gaps));
    r.set("seq_duplicates", json!(duplicates));
    r.set("deliveries_missing", json!(lost));
    r.set("deliveries_twice", json!(twice));
    r.set("ack_latency", latency_json(&ack_hist.lock()));
    r.set("delivery_latency", latency_json(&delivery_hist.lock()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets() {
        assert_eq!(
            ack(br#"3/im,12[{"ok":true}]"#),
            Some((12, &br#"[{"ok":true}]"#[..]))
        );
        assert_eq!(ack(br#"3/other,1[]"#), None);
        assert_eq!(
            pushed(br#"2/im,77["message",{}]"#).map(|(id, _)| id),
            Some(77)
        );
        assert_eq!(pushed(br#"2/im,["conversation",{}]"#), None);
    }
}
