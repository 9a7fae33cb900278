//! `im-direct` and `im-mixed`: the IM service's persisted throughput (`IM.md`). N clients
//! on `/im`: in `im-direct` all in N/2 direct conversations; in `im-mixed` a share of them
//! in groups (of 50 by default), the rest in pairs. Every client sends `send` with an ack
//! at its share of an aggregate rate, and acks every `message` pushed to it, as a device
//! confirming delivery. Measures acked sends per second, deliveries per second, the ack's
//! latency (send to "committed"), the delivery's latency (send to a member's push), and
//! checks every conversation's sequence numbers afterwards: each `seq` from 1 to the
//! last, once, as the senders' acks saw them, and pushed once to every other member.
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

use crate::client::{number_after, ClientError, Conn};
use crate::idle::open_many_with;
use crate::proc::{rss_bytes, CpuMeter};
use crate::report::{latency_json, Report};
use crate::Target;

/// Options of the run.
#[derive(Debug, Clone)]
pub struct ImOptions {
    /// Clients.
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
    /// Members of each group (0: direct conversations only).
    pub group_size: usize,
    /// The share of the clients (and so of the sends) in groups.
    pub group_share: f64,
}

#[derive(Default)]
struct Counts {
    /// Clients done sending; the last one tells the others (`all_sent`).
    done_sending: AtomicU64,
    /// Clients whose conversation is made, ready to send.
    ready: AtomicU64,
    /// When the last ack came, in microseconds since the epoch of the run.
    last_ack_us: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    delivered: AtomicU64,
    /// `receipt` and `receipt.counts` pushes.
    receipts: AtomicU64,
    errors: AtomicU64,
}

/// What one client saw of its conversation's sequence numbers: the acks of its sends,
/// and the pushes of the others'.
#[derive(Default)]
struct SeenSeqs {
    acked: Vec<u64>,
    pushed: Vec<u64>,
}

/// The conversations of a run: each one's members, by client index.
struct Layout {
    conversations: Vec<Vec<usize>>,
    /// Client index to its conversation.
    conversation_of: Vec<usize>,
}

impl Layout {
    /// Groups of `group_size` for `share` of `clients` (rounded down to whole groups),
    /// pairs for the rest (an odd one out sits out).
    fn new(clients: usize, group_size: usize, share: f64) -> Layout {
        let in_groups = if group_size >= 3 {
            ((clients as f64 * share.clamp(0.0, 1.0)) as usize / group_size) * group_size
        } else {
            0
        };
        let in_pairs = (clients - in_groups) & !1;
        let mut conversations: Vec<Vec<usize>> = Vec::new();
        for g in (0..in_groups).step_by(group_size.max(1)) {
            conversations.push((g..g + group_size).collect());
        }
        for p in (in_groups..in_groups + in_pairs).step_by(2) {
            conversations.push(vec![p, p + 1]);
        }
        let mut conversation_of = vec![usize::MAX; in_groups + in_pairs];
        for (c, members) in conversations.iter().enumerate() {
            for &m in members {
                conversation_of[m] = c;
            }
        }
        Layout {
            conversations,
            conversation_of,
        }
    }

    fn clients(&self) -> usize {
        self.conversation_of.len()
    }
}

/// Where the run is: connecting, making conversations, then sending from an instant.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Connecting,
    Create,
    Send(Instant),
}

/// Waits for `phase` to pass `Connecting` (or `Create`, when `past_create`).
async fn wait_phase(
    rx: &mut tokio::sync::watch::Receiver<Phase>,
    past_create: bool,
) -> Option<Phase> {
    loop {
        let now = *rx.borrow_and_update();
        match now {
            Phase::Create if !past_create => return Some(now),
            Phase::Send(_) => return Some(now),
            _ => {}
        }
        rx.changed().await.ok()?;
    }
}

/// A token for `user`, signed with `secret`.
pub(crate) fn token(user: &str, secret: &str) -> String {
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
pub(crate) async fn connect_im(
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
pub(crate) fn ack(packet: &[u8]) -> Option<(u64, &[u8])> {
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

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

/// Runs the scenario and reports.
pub async fn run(target: &Target, opts: &ImOptions) -> Report {
    let grouped = opts.group_size >= 3 && opts.group_share > 0.0;
    let mut r = Report::new(if grouped { "im-mixed" } else { "im-direct" });
    r.set("target", json!(target.addr.to_string()));
    let layout = Arc::new(Layout::new(
        opts.clients.max(2),
        opts.group_size,
        opts.group_share,
    ));
    let clients = layout.clients();
    // Users of this run only: a store that outlives runs holds no conversation of theirs.
    let run: u32 = rand::random();
    let user = move |i: usize| format!("bench-{run:08x}-{i}");
    let counts = Arc::new(Counts::default());
    let ack_hist = Arc::new(Mutex::new(histogram()));
    let delivery_hist = Arc::new(Mutex::new(histogram()));
    let seen: Arc<Vec<Mutex<SeenSeqs>>> =
        Arc::new((0..clients).map(|_| Mutex::default()).collect());
    let conversations: Arc<Vec<tokio::sync::OnceCell<i64>>> = Arc::new(
        (0..layout.conversations.len())
            .map(|_| tokio::sync::OnceCell::new())
            .collect(),
    );
    let epoch = Instant::now();
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Connecting);
    // Every client stays until all are done sending (a client behind its schedule sends
    // late; its partners must still be there to receive), then drains.
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
        let layout = layout.clone();
        move |i: usize, conn: Conn| {
            let counts = counts.clone();
            let ack_hist = ack_hist.clone();
            let delivery_hist = delivery_hist.clone();
            let seen = seen.clone();
            let conversations = conversations.clone();
            let mut phase_rx = phase_rx.clone();
            let mut all_sent_rx = all_sent_rx.clone();
            let all_sent_tx = all_sent_tx.clone();
            let pad = pad.clone();
            let c = layout.conversation_of[i];
            let members = layout.conversations[c].clone();
            async move {
                let give_up = || {
                    if counts.done_sending.fetch_add(1, Ordering::AcqRel) + 1 == clients as u64 {
                        let _ = all_sent_tx.send(true);
                    }
                };
                if wait_phase(&mut phase_rx, false).await.is_none() {
                    return;
                }
                let (mut reader, writer) = conn.split();
                // Ack id 0: the conversation, made by both members of a pair and by the
                // first member of a group; then the sends, from 1.
                let create = if members.len() == 2 {
                    let partner = user(members[0] + members[1] - i);
                    Some(format!(
                        r#"42/im,0["conversation.create",{{"type":"direct","with":"{partner}"}}]"#
                    ))
                } else if members[0] == i {
                    let others: Vec<String> = members[1..].iter().map(|&m| user(m)).collect();
                    Some(format!(
                        r#"42/im,0["conversation.create",{{"type":"group","title":"bench","members":{}}}]"#,
                        json!(others)
                    ))
                } else {
                    None
                };
                if let Some(create) = &create {
                    if writer.send_raw(create.as_bytes()).await.is_err() {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        give_up();
                        return;
                    }
                }
                let pending: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
                let reading = {
                    let pending = pending.clone();
                    let counts = counts.clone();
                    let seen = seen.clone();
                    let writer = writer.clone();
                    let conversations = conversations.clone();
                    tokio::spawn(async move {
                        while let Ok(packet) = reader.recv_message().await {
                            if let Some((id, body)) = ack(&packet) {
                                // Read from the bytes, as the fan-out modes do: a JSON
                                // parse per packet would make the load generator, not
                                // the server, the limit.
                                if id == 0 {
                                    let reply: Value =
                                        serde_json::from_slice(body).unwrap_or_default();
                                    if let Some(id) = reply[0]["conversation"]["id"].as_i64() {
                                        let _ = conversations[c].set(id);
                                    }
                                    continue;
                                }
                                let Some(at) = pending.lock().remove(&id) else {
                                    continue;
                                };
                                if body.starts_with(br#"[{"ok":true"#) {
                                    let _ = ack_hist
                                        .lock()
                                        .record(at.elapsed().as_micros().max(1) as u64);
                                    counts.acked.fetch_add(1, Ordering::Relaxed);
                                    counts.last_ack_us.fetch_max(
                                        epoch.elapsed().as_micros() as u64,
                                        Ordering::Relaxed,
                                    );
                                    if let Some(seq) = number_after(body, br#""seq":"#) {
                                        seen[i].lock().acked.push(seq);
                                    }
                                } else {
                                    counts.refused.fetch_add(1, Ordering::Relaxed);
                                }
                            } else if packet.starts_with(br#"2/im,["receipt"#) {
                                counts.receipts.fetch_add(1, Ordering::Relaxed);
                            } else if let Some((id, body)) = pushed(&packet) {
                                if !body.starts_with(br#"["message","#) {
                                    continue;
                                }
                                // Delivered to this device: the ack the server counts.
                                let _ = writer.send_raw(format!("43/im,{id}[]").as_bytes()).await;
                                // `seq` comes before the body, and the body's `"t":` is
                                // the first (the message's own `"ts":` is not one).
                                if let Some(seq) = number_after(body, br#""seq":"#) {
                                    seen[i].lock().pushed.push(seq);
                                }
                                if let Some(t) = number_after(body, br#""t":"#) {
                                    let now = epoch.elapsed().as_micros() as u64;
                                    let _ =
                                        delivery_hist.lock().record(now.saturating_sub(t).max(1));
                                }
                                counts.delivered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                };
                // The group's other members learn its id from the member who made it.
                let made = tokio::time::timeout(Duration::from_secs(30), async {
                    loop {
                        if let Some(&id) = conversations[c].get() {
                            break id;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await;
                let Ok(conversation) = made else {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    give_up();
                    reading.abort();
                    return;
                };
                counts.ready.fetch_add(1, Ordering::AcqRel);
                let Some(Phase::Send(start)) = wait_phase(&mut phase_rx, true).await else {
                    reading.abort();
                    return;
                };
                // Clients start spread over one period, so sends do not bunch; by a
                // golden-ratio sequence, not by index, so that the groups (the first
                // indexes) and the pairs each spread over the whole period.
                let offset = period.mul_f64((i as f64 * 0.618_033_988_749_895).fract());
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
                give_up();
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
    let rss_before = opts.server_pid.and_then(rss_bytes);
    let opened = open_many_with(target, clients, opts.connect_rate, 256, connect, work).await;
    // Every client is in before any conversation is made, so each is joined to its room.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss_connected = opts.server_pid.and_then(rss_bytes);
    let _ = phase_tx.send(Phase::Create);
    let setup_until = Instant::now() + Duration::from_secs(60);
    while counts.ready.load(Ordering::Acquire) + counts.errors.load(Ordering::Relaxed)
        < opened.connected as u64
        && Instant::now() < setup_until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss_made = opts.server_pid.and_then(rss_bytes);
    let server_cpu = opts.server_pid.map(CpuMeter::start);
    let client_cpu = CpuMeter::start(std::process::id());
    let started = Instant::now() + Duration::from_millis(100);
    let _ = phase_tx.send(Phase::Send(started));
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
    // every other member once (a push not in by the end of the drain is missing).
    let (mut gaps, mut duplicates, mut lost, mut twice) = (0u64, 0u64, 0u64, 0u64);
    for members in &layout.conversations {
        let mut acked: Vec<(u64, usize)> = Vec::new();
        for &m in members {
            acked.extend(seen[m].lock().acked.iter().map(|&q| (q, m)));
        }
        acked.sort_unstable();
        let all = acked.len();
        acked.dedup_by_key(|a| a.0);
        duplicates += (all - acked.len()) as u64;
        if let Some(&(last, _)) = acked.last() {
            gaps += last - acked.len() as u64;
        }
        for &m in members {
            let mut pushed = seen[m].lock().pushed.clone();
            pushed.sort_unstable();
            let all = pushed.len();
            pushed.dedup();
            twice += (all - pushed.len()) as u64;
            lost += acked
                .iter()
                .filter(|&&(q, from)| from != m && pushed.binary_search(&q).is_err())
                .count() as u64;
        }
    }
    let sent = counts.sent.load(Ordering::Relaxed);
    let acked = counts.acked.load(Ordering::Relaxed);
    let delivered = counts.delivered.load(Ordering::Relaxed);
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
    if grouped {
        r.set("group_size", json!(opts.group_size));
        r.set(
            "clients_in_groups",
            json!(layout.conversations.iter().filter(|m| m.len() > 2).count() * opts.group_size),
        );
    }
    // What the sockets and then their conversations (cached, with their rooms) added.
    if let (Some(before), Some(connected), Some(made)) = (rss_before, rss_connected, rss_made) {
        if let Some(per) = connected
            .saturating_sub(before)
            .checked_div(opened.connected as u64)
        {
            r.set("server_rss_per_socket_bytes", json!(per));
        }
        let made_count = conversations.iter().filter(|c| c.initialized()).count() as u64;
        if let Some(per) = made.saturating_sub(connected).checked_div(made_count) {
            r.set("server_rss_per_conversation_bytes", json!(per));
        }
    }
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
    r.set("delivered", json!(delivered));
    r.set("delivered_per_s", json!((delivered as f64 / secs).round()));
    r.set("receipts", json!(counts.receipts.load(Ordering::Relaxed)));
    if let (Some(cpu), true) = (server_cpu.as_ref(), delivered > 0) {
        // The whole run's server CPU (sends, commits, acks, receipts) over its deliveries.
        r.set(
            "server_cpu_us_per_delivery",
            json!((cpu.seconds() * 1e6 / delivered as f64 * 100.0).round() / 100.0),
        );
    }
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

    #[test]
    fn layouts() {
        // Half of 1,000 in groups of 50: 10 groups, then 250 pairs.
        let l = Layout::new(1000, 50, 0.5);
        assert_eq!(l.clients(), 1000);
        assert_eq!(l.conversations.len(), 10 + 250);
        assert_eq!(l.conversations[9], (450..500).collect::<Vec<_>>());
        assert_eq!(l.conversations[10], vec![500, 501]);
        assert_eq!(l.conversation_of[999], 259);
        // Whole groups only, and an odd client out of the pairs.
        let l = Layout::new(121, 50, 0.5);
        assert_eq!(l.conversations.len(), 1 + 35);
        assert_eq!(l.clients(), 120);
        // Direct only.
        let l = Layout::new(10, 0, 0.5);
        assert!(l.conversations.iter().all(|m| m.len() == 2));
        assert_eq!(l.clients(), 10);
    }
}
