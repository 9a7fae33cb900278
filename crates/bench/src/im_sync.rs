//! `im-sync` and `im-catchup`: what a client back from offline costs (`IM.md`, `sync`).
//!
//! - `im-sync`: one user offline while M messages arrive in K direct conversations (K
//!   writers, one each). The user then connects and calls `sync` twice over: once for the
//!   summaries alone, once paging everything in with the advanced `since`. Measures both
//!   (wall time on the client, an upper bound of the server's), and checks that every
//!   conversation's messages came once each, in order, and that the unread counts add up.
//! - `im-catchup`: N clients in groups, connected, then dropped (the TCP connection
//!   closed, no goodbye); B messages arrive in each group; then all N reconnect at once and
//!   page in what they missed with `sync`. Measures the time until the last one has caught
//!   up, and checks that each saw every message of its group once, in order.

use std::collections::BTreeMap;
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

/// Calls `event` with `args` on `conn` as ack `id`, skipping other packets until its ack;
/// returns the ack's first argument.
async fn call(conn: &mut Conn, id: u64, event: &str, args: &Value) -> Result<Value, ClientError> {
    let packet = format!("42/im,{id}{}", json!([event, args]));
    conn.send_raw(packet.as_bytes()).await?;
    loop {
        let m = conn.recv_message().await?;
        if let Some((got, body)) = ack(&m) {
            if got == id {
                let v: Value = serde_json::from_slice(body)
                    .map_err(|e| ClientError::Handshake(format!("ack: {e}")))?;
                return Ok(v[0].clone());
            }
        }
    }
}

/// `call`, an answer other than `{ ok: true }` being an error.
async fn call_ok(
    conn: &mut Conn,
    id: u64,
    event: &str,
    args: &Value,
) -> Result<Value, ClientError> {
    let reply = call(conn, id, event, args).await?;
    if reply["ok"] == json!(true) {
        Ok(reply)
    } else {
        Err(ClientError::Handshake(format!("{event}: {reply}")))
    }
}

/// Sends `count` messages to `conversation`, one after the other (each after the last
/// ack), cids `<tag>-<n>`.
async fn send_many(
    conn: &mut Conn,
    conversation: i64,
    count: usize,
    tag: &str,
    pad: &str,
) -> Result<(), ClientError> {
    for n in 0..count {
        let args = json!({ "conversation": conversation, "cid": format!("{tag}-{n}"), "body": { "n": n, "x": pad } });
        call_ok(conn, n as u64 + 1, "send", &args).await?;
    }
    Ok(())
}

/// What paging in with `sync` gave: the pages it took, and each conversation's seqs as
/// they came.
#[derive(Default)]
struct Paged {
    pages: usize,
    seqs: BTreeMap<i64, Vec<u64>>,
}

/// Calls `sync` from `since` until `more` is false, advancing `since` by what came.
async fn page_in(
    conn: &mut Conn,
    first_id: u64,
    mut since: BTreeMap<i64, u64>,
) -> Result<Paged, ClientError> {
    let mut paged = Paged::default();
    loop {
        let args: serde_json::Map<String, Value> = since
            .iter()
            .map(|(c, s)| (c.to_string(), json!(s)))
            .collect();
        let reply = call_ok(
            conn,
            first_id + paged.pages as u64,
            "sync",
            &json!({ "since": args }),
        )
        .await?;
        paged.pages += 1;
        for m in reply["messages"].as_array().into_iter().flatten() {
            let (Some(c), Some(seq)) = (m["conversation"].as_i64(), m["seq"].as_u64()) else {
                continue;
            };
            paged.seqs.entry(c).or_default().push(seq);
            let at = since.entry(c).or_default();
            *at = (*at).max(seq);
        }
        if reply["more"] != json!(true) {
            return Ok(paged);
        }
        if paged.pages > 100_000 {
            return Err(ClientError::Handshake("sync never ended".into()));
        }
    }
}

/// `seqs` is 1..=n, each once, in order: (missing, duplicated or out of order).
fn check_seqs(seqs: &[u64], n: usize) -> (u64, u64) {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let duplicated = (seqs.len() - sorted.len()) as u64;
    let out_of_order = seqs.windows(2).filter(|w| w[0] > w[1]).count() as u64;
    let twice = duplicated + out_of_order;
    let missing = (1..=n as u64)
        .filter(|q| sorted.binary_search(q).is_err())
        .count() as u64;
    (missing, twice)
}

/// A writer task's outcome, its panic or cancellation an error too.
fn joined<T>(outcome: Result<Result<T, ClientError>, tokio::task::JoinError>) -> Result<T, String> {
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Options of `im-sync`.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Conversations of the offline user.
    pub conversations: usize,
    /// Messages that arrive while the user is offline, over all conversations.
    pub messages: usize,
    /// How many times to measure the two syncs.
    pub runs: usize,
    /// Padding bytes per body.
    pub size: usize,
    /// The HS256 secret the server checks tokens with.
    pub secret: String,
    /// The server's process id, for its CPU.
    pub server_pid: Option<u32>,
}

/// Runs `im-sync`.
pub async fn run_sync(target: &Target, opts: &SyncOptions) -> Report {
    let mut r = Report::new("im-sync");
    r.set("target", json!(target.addr.to_string()));
    let k = opts.conversations.max(1);
    let per = opts.messages / k;
    let run: u32 = rand::random();
    let reader = format!("sync-{run:08x}-reader");
    let pad = "x".repeat(opts.size);
    // The writers: one per conversation, each sending its share, all at once.
    let setup = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..k {
        let (target, secret, reader, pad) = (
            target.clone(),
            opts.secret.clone(),
            reader.clone(),
            pad.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let user = format!("sync-{run:08x}-w{w}");
            let mut conn = connect_im(&target, w + 1, &user, &secret).await?;
            let made = call_ok(
                &mut conn,
                1_000_000,
                "conversation.create",
                &json!({ "type": "direct", "with": reader }),
            )
            .await?;
            let id = made["conversation"]["id"].as_i64().unwrap_or_default();
            send_many(&mut conn, id, per, &format!("w{w}"), &pad).await?;
            Ok::<i64, ClientError>(id)
        }));
    }
    let mut conversations = Vec::new();
    for t in tasks {
        match joined(t.await) {
            Ok(id) => conversations.push(id),
            Err(e) => {
                r.set("error", json!(format!("writer: {e}")));
                return r;
            }
        }
    }
    r.set("conversations", json!(k));
    r.set("messages", json!(per * k));
    r.set(
        "setup_seconds",
        json!((setup.elapsed().as_secs_f64() * 100.0).round() / 100.0),
    );
    let mut conn = match connect_im(target, 0, &reader, &opts.secret).await {
        Ok(c) => c,
        Err(e) => {
            r.set("error", json!(format!("reader: {e}")));
            return r;
        }
    };
    let server_cpu = opts.server_pid.map(CpuMeter::start);
    let (mut summary_ms, mut all_ms, mut pages) = (Vec::new(), Vec::new(), 0);
    let (mut missing, mut twice, mut unread_wrong) = (0u64, 0u64, 0u64);
    let mut id = 1u64;
    for _ in 0..opts.runs.max(1) {
        let t0 = Instant::now();
        let summaries = match call_ok(&mut conn, id, "sync", &json!({})).await {
            Ok(s) => s,
            Err(e) => {
                r.set("error", json!(format!("sync: {e}")));
                return r;
            }
        };
        summary_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        id += 1;
        let listed = summaries["conversations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let unread: u64 = listed.iter().filter_map(|c| c["unread"].as_u64()).sum();
        if listed.len() != k || unread != (per * k) as u64 {
            unread_wrong += 1;
        }
        let since = conversations.iter().map(|&c| (c, 0)).collect();
        let t0 = Instant::now();
        let paged = match page_in(&mut conn, id, since).await {
            Ok(p) => p,
            Err(e) => {
                r.set("error", json!(format!("sync: {e}")));
                return r;
            }
        };
        all_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        id += paged.pages as u64;
        pages = paged.pages;
        for c in &conversations {
            let (m, t) = check_seqs(paged.seqs.get(c).map_or(&[][..], Vec::as_slice), per);
            missing += m;
            twice += t;
        }
    }
    if let Some(cpu) = &server_cpu {
        r.set(
            "server_cpu_seconds",
            json!((cpu.seconds() * 1000.0).round() / 1000.0),
        );
    }
    let ms = |v: &[f64]| {
        json!(v
            .iter()
            .map(|x| (x * 10.0).round() / 10.0)
            .collect::<Vec<_>>())
    };
    r.set("summaries_ms", ms(&summary_ms));
    r.set("everything_ms", ms(&all_ms));
    r.set("pages", json!(pages));
    r.set("messages_missing", json!(missing));
    r.set("messages_twice_or_out_of_order", json!(twice));
    r.set("summaries_wrong", json!(unread_wrong));
    r
}

/// Options of `im-catchup`.
#[derive(Debug, Clone)]
pub struct CatchupOptions {
    /// Clients that reconnect.
    pub clients: usize,
    /// Members of each group (besides its writer).
    pub group_size: usize,
    /// Messages each group gets while its members are away.
    pub behind: usize,
    /// Connections opened per second (the reconnect included).
    pub connect_rate: u32,
    /// Handshakes in flight at most.
    pub concurrency: usize,
    /// Padding bytes per body.
    pub size: usize,
    /// The HS256 secret the server checks tokens with.
    pub secret: String,
    /// The server's process id, for its CPU.
    pub server_pid: Option<u32>,
}

/// Runs `im-catchup`.
pub async fn run_catchup(target: &Target, opts: &CatchupOptions) -> Report {
    let mut r = Report::new("im-catchup");
    r.set("target", json!(target.addr.to_string()));
    let g = opts.group_size.max(1);
    let groups = (opts.clients / g).max(1);
    let clients = groups * g;
    let run: u32 = rand::random();
    let reader = move |i: usize| format!("cu-{run:08x}-{i}");
    let secret = opts.secret.clone();
    let connect = {
        let secret = secret.clone();
        move |target: Target, i: usize| {
            let secret = secret.clone();
            async move { connect_im(&target, i, &reader(i), &secret).await }
        }
    };

    // 1. Everyone online once, then gone: each connection dropped without a goodbye.
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let hold = move |_: usize, conn: Conn| {
        let mut release = release_rx.clone();
        async move {
            let _ = release.wait_for(|r| *r).await;
            drop(conn);
        }
    };
    let first = open_many_with(
        target,
        clients,
        opts.connect_rate,
        opts.concurrency,
        connect.clone(),
        hold,
    )
    .await;
    r.set("first_connected", json!(first.connected));

    // 2. The groups, made by their writers while the members are online.
    let pad = "x".repeat(opts.size);
    let mut writers = Vec::new();
    for w in 0..groups {
        let user = format!("cu-{run:08x}-w{w}");
        let made = async {
            let mut conn = connect_im(target, clients + w, &user, &secret).await?;
            let members: Vec<String> = (w * g..(w + 1) * g).map(reader).collect();
            let made = call_ok(
                &mut conn,
                1_000_000,
                "conversation.create",
                &json!({ "type": "group", "title": "catch-up", "members": members }),
            )
            .await?;
            Ok::<_, ClientError>((
                conn,
                made["conversation"]["id"].as_i64().unwrap_or_default(),
            ))
        };
        match made.await {
            Ok(w) => writers.push(w),
            Err(e) => {
                r.set("error", json!(format!("group: {e}")));
                return r;
            }
        }
    }
    let _ = release_tx.send(true);
    for t in first.tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 3. The messages they miss.
    let setup = Instant::now();
    let mut tasks = Vec::new();
    for (w, (mut conn, id)) in writers.into_iter().enumerate() {
        let (pad, behind) = (pad.clone(), opts.behind);
        tasks.push(tokio::spawn(async move {
            send_many(&mut conn, id, behind, &format!("w{w}"), &pad).await?;
            Ok::<_, ClientError>((conn, id))
        }));
    }
    let mut ids = Vec::new();
    let mut keep = Vec::new();
    for t in tasks {
        match joined(t.await) {
            Ok((conn, id)) => {
                ids.push(id);
                keep.push(conn);
            }
            Err(e) => {
                r.set("error", json!(format!("writer: {e}")));
                return r;
            }
        }
    }
    r.set(
        "messages_sent_seconds",
        json!((setup.elapsed().as_secs_f64() * 100.0).round() / 100.0),
    );
    let ids = Arc::new(ids);

    // 4. All back at once, each paging in what it missed.
    let caught_up = Arc::new(Mutex::new(histogram()));
    let last_us = Arc::new(AtomicU64::new(0));
    let (missing, twice, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let start = Instant::now();
    let work = {
        let (caught_up, last_us, ids) = (caught_up.clone(), last_us.clone(), ids.clone());
        let (missing, twice, failed) = (missing.clone(), twice.clone(), failed.clone());
        let behind = opts.behind;
        move |i: usize, mut conn: Conn| {
            let (caught_up, last_us, ids) = (caught_up.clone(), last_us.clone(), ids.clone());
            let (missing, twice, failed) = (missing.clone(), twice.clone(), failed.clone());
            async move {
                let conversation = ids[i / g];
                match page_in(&mut conn, 1, BTreeMap::from([(conversation, 0)])).await {
                    Ok(paged) => {
                        let seqs = paged.seqs.get(&conversation).map_or(&[][..], Vec::as_slice);
                        let (m, t) = check_seqs(seqs, behind);
                        missing.fetch_add(m, Ordering::Relaxed);
                        twice.fetch_add(t, Ordering::Relaxed);
                        let us = start.elapsed().as_micros() as u64;
                        let _ = caught_up.lock().record(us.max(1));
                        last_us.fetch_max(us, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    };
    let server_cpu = opts.server_pid.map(CpuMeter::start);
    let second = open_many_with(
        target,
        clients,
        opts.connect_rate,
        opts.concurrency,
        connect,
        work,
    )
    .await;
    for t in second.tasks {
        let _ = t.await;
    }
    drop(keep);
    if let Some(cpu) = &server_cpu {
        r.set(
            "server_cpu_seconds",
            json!((cpu.seconds() * 100.0).round() / 100.0),
        );
    }
    r.set("clients", json!(clients));
    r.set("groups", json!(groups));
    r.set("behind", json!(opts.behind));
    r.set("reconnected", json!(second.connected));
    r.set("connect_failures", json!(second.failures));
    r.set("sync_failures", json!(failed.load(Ordering::Relaxed)));
    r.set(
        "all_caught_up_seconds",
        json!((last_us.load(Ordering::Relaxed) as f64 / 1e4).round() / 100.0),
    );
    r.set("caught_up_after", latency_json(&caught_up.lock()));
    r.set("messages_missing", json!(missing.load(Ordering::Relaxed)));
    r.set(
        "messages_twice_or_out_of_order",
        json!(twice.load(Ordering::Relaxed)),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_checked() {
        assert_eq!(check_seqs(&[1, 2, 3], 3), (0, 0));
        assert_eq!(check_seqs(&[1, 3], 3), (1, 0));
        assert_eq!(check_seqs(&[1, 2, 2, 3], 3), (0, 1));
        assert_eq!(check_seqs(&[2, 1, 3], 3), (0, 1));
        assert_eq!(check_seqs(&[], 2), (2, 0));
    }
}
