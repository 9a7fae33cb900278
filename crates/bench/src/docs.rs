//! Documents (`docs/docs.md`): Yjs editors on `/yjs|<name>` namespaces, speaking the
//! `y-socket.io` 1.1.3 protocol as its stock provider does (CONNECT, `sync-step-1` both
//! ways with the diff in the ack, `sync-update`, `awareness-update`, every payload a
//! binary attachment), so that Herald and the Node `y-socket.io` server are measured by
//! the same client.
//!
//! - `docs-edit`: D documents with E editors each, the editors spread over C Engine.IO
//!   connections (a connection carries one socket per namespace, so the E editors of a
//!   document are on E different connections); together they make R updates a second.
//!   Each update inserts a marker `@<editor>.<seq>.<send time>;` that the others find in
//!   the bytes they receive: propagation latency and lost deliveries without decoding.
//!   The server's memory is read with the connections open and again with every document
//!   open and synced (the difference per document is what an open idle document costs).
//!   At the end the editors of the first V documents apply everything they received and
//!   are compared with each other and with the server's copy: state vectors and text.
//! - `docs-cursors`: U users on one document, each sending its cursor R times a second:
//!   the `awareness-update` frames they get, against relaying every update to every other
//!   user, and how soon a cursor move is seen.
//! - `docs-cold`: a document is written with N updates, left until the server unloads
//!   it, then loaded again L times by a fresh client: the time from the TCP connect to the
//!   whole state in hand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use engineio_proto::Packet;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::json;
use tokio::time::Instant;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, TextRef, Transact, Update};

use crate::client::{ClientError, Conn, Incoming, Writer};
use crate::im::histogram;
use crate::proc::{rss_bytes, CpuMeter};
use crate::report::{latency_json, Report};
use crate::Target;

/// The placeholder of a packet's one binary attachment.
const PLACEHOLDER: &str = r#"{"_placeholder":true,"num":0}"#;
/// The name of the shared text the editors type into.
const TEXT: &str = "text";

/// What the editors do once every document is open.
#[derive(Debug, Clone, Copy)]
pub enum Activity {
    /// Text updates, this many a second over all editors.
    Edit {
        /// Updates per second, all editors together.
        rate: f64,
    },
    /// Cursor moves (awareness updates), this many a second per editor.
    Cursors {
        /// Moves per second per editor.
        hz: f64,
    },
}

/// Options of `docs-edit` and `docs-cursors`.
#[derive(Debug, Clone)]
pub struct DocsOptions {
    /// Documents.
    pub docs: usize,
    /// Editors per document.
    pub editors: usize,
    /// Engine.IO connections the editors are spread over (at least `editors`).
    pub connections: usize,
    /// What the editors do.
    pub activity: Activity,
    /// How long they do it.
    pub duration: Duration,
    /// How long to wait for deliveries after the last send.
    pub drain: Duration,
    /// Connections opened per second while setting up.
    pub connect_rate: u32,
    /// Document sockets joined per second while setting up.
    pub join_rate: u32,
    /// Wait after every document is synced before reading the server's memory.
    pub settle: Duration,
    /// Documents whose every editor applies what it got, checked against the others and
    /// the server's copy.
    pub verify_docs: usize,
    /// The server's process id, for its memory and CPU.
    pub server_pid: Option<u32>,
}

/// Counters shared by every connection of a run.
#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    refused: AtomicU64,
    synced: AtomicU64,
    server_steps: AtomicU64,
    closed: AtomicU64,
    sent: AtomicU64,
    deliveries: AtomicU64,
    update_frames: AtomicU64,
    awareness_frames: AtomicU64,
    bytes_in: AtomicU64,
    unexpected: AtomicU64,
}

/// One editor: a socket on its document's namespace with its own copy of the document.
struct Editor {
    /// Its number in the run (its Yjs client id is this plus one).
    id: u64,
    /// `/yjs|<document>`.
    nsp: String,
    doc: Doc,
    text: TextRef,
    seq: u64,
    /// Awareness clock.
    clock: u64,
    /// Every update it received, kept when its document is verified.
    received: Vec<Bytes>,
    keep: bool,
    /// The stamp of its last awareness state sent.
    last_stamp: u64,
    /// The newest awareness stamp it saw of each editor (cursors only).
    seen: Vec<u64>,
}

impl Editor {
    fn new(id: u64, nsp: String, keep: bool) -> Editor {
        let doc = Doc::with_client_id(id + 1);
        let text = doc.get_or_insert_text(TEXT);
        Editor {
            id,
            nsp,
            doc,
            text,
            seq: 0,
            clock: 0,
            received: Vec::new(),
            keep,
            last_stamp: 0,
            seen: Vec::new(),
        }
    }

    /// The next text update: a marker inserted at the start or the end of its text.
    fn next_update(&mut self) -> Vec<u8> {
        self.seq += 1;
        let marker = format!("@{}.{}.{};", self.id, self.seq, now_us());
        let mut txn = self.doc.transact_mut();
        let at = if rand::random::<bool>() {
            0
        } else {
            self.text.len(&txn)
        };
        self.text.insert(&mut txn, at, &marker);
        txn.encode_update_v1()
    }

    /// The next awareness update: its cursor somewhere else, stamped with the send time.
    fn next_awareness(&mut self) -> Vec<u8> {
        self.clock += 1;
        self.last_stamp = now_us();
        let at = rand::random::<u16>() % 1000;
        let state = format!(
            r##"{{"user":{{"name":"user {}","color":"#{:06x}"}},"cursor":{{"anchor":{at},"head":{at}}},"t":{},"u":{}}}"##,
            self.id,
            self.id.wrapping_mul(2_654_435_761) & 0xff_ffff,
            self.last_stamp,
            self.id
        );
        let mut out = Vec::with_capacity(state.len() + 16);
        var_uint(&mut out, 1);
        var_uint(&mut out, self.id + 1);
        var_uint(&mut out, self.clock);
        var_uint(&mut out, state.len() as u64);
        out.extend_from_slice(state.as_bytes());
        out
    }
}

/// lib0's variable-length unsigned integer.
fn var_uint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Microseconds since the epoch (one clock for every task of the process).
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A Socket.IO packet's header: type, attachments, namespace, ack id and the rest.
struct Header<'a> {
    kind: u8,
    nsp: &'a [u8],
    ack: Option<u64>,
    body: &'a [u8],
}

fn parse_header(m: &[u8]) -> Option<Header<'_>> {
    let kind = m.first()?.checked_sub(b'0')?;
    let mut i = 1;
    if kind == 5 || kind == 6 {
        i += m[i..].iter().position(|&b| b == b'-')? + 1;
    }
    let nsp: &[u8] = if m.get(i) == Some(&b'/') {
        let end = i + m[i..]
            .iter()
            .position(|&b| b == b',')
            .unwrap_or(m.len() - i);
        let nsp = &m[i..end];
        i = (end + 1).min(m.len());
        nsp
    } else {
        b"/"
    };
    let digits = m[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    let ack = std::str::from_utf8(&m[i..i + digits]).ok()?.parse().ok();
    Some(Header {
        kind,
        nsp,
        ack,
        body: &m[i + digits..],
    })
}

/// The markers `@<editor>.<seq>.<micros>;` in `bytes`: (editor, micros).
fn markers(bytes: &[u8], mut each: impl FnMut(u64, u64)) {
    let mut i = 0;
    while let Some(at) = bytes[i..].iter().position(|&b| b == b'@') {
        i += at + 1;
        let mut fields = [0u64; 3];
        let mut j = i;
        let mut ok = true;
        for (k, field) in fields.iter_mut().enumerate() {
            let start = j;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                *field = field
                    .wrapping_mul(10)
                    .wrapping_add(u64::from(bytes[j] - b'0'));
                j += 1;
            }
            let sep = if k == 2 { b';' } else { b'.' };
            if j == start || bytes.get(j) != Some(&sep) {
                ok = false;
                break;
            }
            j += 1;
        }
        if ok {
            each(fields[0], fields[2]);
            i = j;
        }
    }
}

/// The stamps `"t":<micros>,"u":<editor>` of the awareness states in `bytes`.
fn stamps(bytes: &[u8], mut each: impl FnMut(u64, u64)) {
    let key = b"\"t\":";
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(key.len()).position(|w| w == key) {
        i += at + key.len();
        let t = crate::client::number_after(&bytes[i - key.len()..], key);
        let u = crate::client::number_after(&bytes[i..], b"\"u\":");
        if let (Some(t), Some(u)) = (t, u) {
            each(u, t);
        }
    }
}

/// What the next binary frame on a connection belongs to.
#[derive(Clone, Copy)]
enum Pending {
    Update(usize),
    ServerStep1(usize, u64),
    Reply(usize),
    Awareness(usize),
    Other,
}

/// One connection's editors, by namespace.
struct ConnEditors {
    by_nsp: HashMap<Vec<u8>, usize>,
    ids: Vec<usize>,
}

/// Reads one connection until it ends: answers the protocol and counts what came.
async fn read_conn(
    mut reader: crate::client::Reader,
    writer: Writer,
    mine: ConnEditors,
    editors: Arc<Vec<Mutex<Editor>>>,
    counters: Arc<Counters>,
    latency: Arc<Mutex<Histogram<u64>>>,
) {
    let mut pending = Pending::Other;
    loop {
        let incoming = match reader.recv_incoming().await {
            Ok(m) => m,
            Err(_) => {
                counters.closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let m = match incoming {
            Incoming::Binary(b) => {
                counters
                    .bytes_in
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                match std::mem::replace(&mut pending, Pending::Other) {
                    Pending::Update(k) => {
                        counters.update_frames.fetch_add(1, Ordering::Relaxed);
                        let mut ed = editors[mine.ids[k]].lock();
                        let own = ed.id;
                        let now = now_us();
                        let mut got = 0;
                        let mut h = latency.lock();
                        markers(&b, |editor, sent| {
                            if editor != own {
                                got += 1;
                                let _ = h.record(now.saturating_sub(sent).max(1));
                            }
                        });
                        drop(h);
                        counters.deliveries.fetch_add(got, Ordering::Relaxed);
                        if ed.keep {
                            ed.received.push(b);
                        }
                    }
                    Pending::ServerStep1(k, ack) => {
                        let (nsp, diff) = {
                            let ed = editors[mine.ids[k]].lock();
                            let sv = StateVector::decode_v1(&b).unwrap_or_default();
                            let diff = ed.doc.transact().encode_state_as_update_v1(&sv);
                            (ed.nsp.clone(), diff)
                        };
                        let head = format!("461-{nsp},{ack}[{PLACEHOLDER}]");
                        let _ = writer.send_with_binary(head.as_bytes(), &[&diff]).await;
                        counters.server_steps.fetch_add(1, Ordering::Relaxed);
                    }
                    Pending::Reply(k) => {
                        let mut ed = editors[mine.ids[k]].lock();
                        if ed.keep {
                            ed.received.push(b);
                        }
                        counters.synced.fetch_add(1, Ordering::Relaxed);
                    }
                    Pending::Awareness(k) => {
                        counters.awareness_frames.fetch_add(1, Ordering::Relaxed);
                        let mut ed = editors[mine.ids[k]].lock();
                        let own = ed.id;
                        let now = now_us();
                        let mut h = latency.lock();
                        let mut got = 0;
                        stamps(&b, |editor, sent| {
                            if editor != own {
                                got += 1;
                                let _ = h.record(now.saturating_sub(sent).max(1));
                                if let Some(seen) = ed.seen.get_mut(editor as usize) {
                                    *seen = (*seen).max(sent);
                                }
                            }
                        });
                        counters.deliveries.fetch_add(got, Ordering::Relaxed);
                    }
                    Pending::Other => {
                        counters.unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            }
            Incoming::Text(m) => m,
        };
        counters
            .bytes_in
            .fetch_add(m.len() as u64, Ordering::Relaxed);
        let Some(h) = parse_header(&m) else {
            counters.unexpected.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(&k) = mine.by_nsp.get(h.nsp) else {
            continue;
        };
        match h.kind {
            0 => {
                counters.connected.fetch_add(1, Ordering::Relaxed);
                let (nsp, sv) = {
                    let ed = editors[mine.ids[k]].lock();
                    let sv = ed.doc.transact().state_vector().encode_v1();
                    (ed.nsp.clone(), sv)
                };
                let head = format!(r#"451-{nsp},1["sync-step-1",{PLACEHOLDER}]"#);
                let _ = writer.send_with_binary(head.as_bytes(), &[&sv]).await;
            }
            4 => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
            }
            1 => {
                counters.closed.fetch_add(1, Ordering::Relaxed);
            }
            5 => {
                pending = if h.body.starts_with(br#"["sync-update""#) {
                    Pending::Update(k)
                } else if h.body.starts_with(br#"["sync-step-1""#) {
                    Pending::ServerStep1(k, h.ack.unwrap_or(0))
                } else if h.body.starts_with(br#"["awareness-update""#) {
                    Pending::Awareness(k)
                } else {
                    Pending::Other
                };
            }
            6 => pending = Pending::Reply(k),
            _ => {}
        }
    }
}

/// The whole state of a document as the server has it (a fresh client's first sync).
async fn server_copy(target: &Target, nsp: &str) -> Result<Vec<u8>, ClientError> {
    let mut conn = Conn::connect(target, 0).await?;
    conn.send_raw(format!("40{nsp},").as_bytes()).await?;
    let mut awaiting_reply = false;
    loop {
        match conn.recv_packet().await? {
            Packet::Message(m) => match parse_header(&m) {
                Some(h) if h.kind == 0 => {
                    // An empty state vector: everything.
                    let head = format!(r#"451-{nsp},1["sync-step-1",{PLACEHOLDER}]"#);
                    conn.send_raw_with_binary(head.as_bytes(), &[0]).await?;
                }
                Some(h) if h.kind == 6 => awaiting_reply = true,
                Some(h) if h.kind == 4 => {
                    return Err(ClientError::Handshake(
                        String::from_utf8_lossy(&m).into_owned(),
                    ))
                }
                _ => {}
            },
            Packet::Binary(b) if awaiting_reply => return Ok(b.to_vec()),
            Packet::Ping(_) => conn.send_raw(b"3").await?,
            Packet::Close => return Err(ClientError::Closed),
            _ => {}
        }
    }
}

/// The state vector of a document update as (client, clock) pairs, sorted.
fn clocks(doc: &Doc) -> Vec<(u64, u32)> {
    let sv = doc.transact().state_vector();
    let mut v: Vec<(u64, u32)> = sv.iter().map(|(c, k)| (c.get(), *k)).collect();
    v.sort_unstable();
    v
}

/// Runs `docs-edit` or `docs-cursors` and reports.
pub async fn run(target: &Target, opts: &DocsOptions) -> Report {
    let mode = match opts.activity {
        Activity::Edit { .. } => "docs-edit",
        Activity::Cursors { .. } => "docs-cursors",
    };
    let mut r = Report::new(mode);
    r.set("target", json!(target.addr.to_string()));
    let docs = opts.docs.max(1);
    let per_doc = opts.editors.max(2);
    // Editor e of every document is in connection group e.
    let per_group = opts.connections.max(per_doc).div_ceil(per_doc).min(docs);
    let connections = per_group * per_doc;
    let run: u32 = rand::random();
    let total = docs * per_doc;
    let editors: Arc<Vec<Mutex<Editor>>> = Arc::new(
        (0..total)
            .map(|id| {
                let d = id / per_doc;
                let nsp = format!("/yjs|bench-{run:08x}-{d}");
                Mutex::new(Editor::new(id as u64, nsp, d < opts.verify_docs))
            })
            .collect(),
    );
    if matches!(opts.activity, Activity::Cursors { .. }) {
        for ed in editors.iter() {
            ed.lock().seen = vec![0; total];
        }
    }
    let conn_of = |id: usize| {
        let (d, e) = (id / per_doc, id % per_doc);
        e * per_group + d % per_group
    };
    let mut hosted: Vec<Vec<usize>> = vec![Vec::new(); connections];
    for id in 0..total {
        hosted[conn_of(id)].push(id);
    }
    r.set("documents", json!(docs));
    r.set("editors_per_document", json!(per_doc));
    r.set("connections", json!(connections));

    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Mutex::new(histogram()));
    let client_cpu = CpuMeter::start(std::process::id());

    // Phase 1: the Engine.IO connections.
    let mut opened: Vec<Option<(Writer, crate::client::Reader)>> = Vec::new();
    let setup = Instant::now();
    let per_slice = (opts.connect_rate as usize / 100).max(1);
    let mut failed = 0u64;
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..connections {
        if i > 0 && i % per_slice == 0 {
            let due = setup + Duration::from_millis((i / per_slice) as u64 * 10);
            tokio::time::sleep_until(due).await;
        }
        let target = target.clone();
        pending.spawn(async move {
            (
                i,
                tokio::time::timeout(Duration::from_secs(30), Conn::connect(&target, i)).await,
            )
        });
    }
    opened.resize_with(connections, || None);
    while let Some(done) = pending.join_next().await {
        match done {
            Ok((i, Ok(Ok(conn)))) => {
                let (reader, writer) = conn.split();
                opened[i] = Some((writer, reader));
            }
            _ => failed += 1,
        }
    }
    r.set("connections_failed", json!(failed));
    tokio::time::sleep(opts.settle).await;
    let rss_connections = opts.server_pid.and_then(rss_bytes);

    // Phase 2: every editor joins its document and syncs.
    let join_start = Instant::now();
    let mut conns: Vec<(usize, Writer)> = Vec::new();
    let mut joined = 0usize;
    for (i, slot) in opened.into_iter().enumerate() {
        let Some((writer, reader)) = slot else {
            continue;
        };
        let ids = std::mem::take(&mut hosted[i]);
        let mut by_nsp = HashMap::new();
        let mut packets = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            let nsp = editors[id].lock().nsp.clone();
            packets.push(format!("40{nsp},").into_bytes());
            by_nsp.insert(nsp.into_bytes(), k);
        }
        let mine = ConnEditors {
            by_nsp,
            ids: ids.clone(),
        };
        tokio::spawn(read_conn(
            reader,
            writer.clone(),
            mine,
            editors.clone(),
            counters.clone(),
            latency.clone(),
        ));
        let due =
            join_start + Duration::from_secs_f64(joined as f64 / f64::from(opts.join_rate.max(1)));
        tokio::time::sleep_until(due).await;
        joined += ids.len();
        let _ = writer
            .send_raw_batch(packets.iter().map(Vec::as_slice))
            .await;
        for id in ids {
            conns.push((id, writer.clone()));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while counters.synced.load(Ordering::Relaxed) < conns.len() as u64 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let synced = counters.synced.load(Ordering::Relaxed);
    r.set("editors_synced", json!(synced));
    r.set(
        "join_seconds",
        json!((join_start.elapsed().as_secs_f64() * 100.0).round() / 100.0),
    );
    r.set("refused", json!(counters.refused.load(Ordering::Relaxed)));
    tokio::time::sleep(opts.settle).await;
    let rss_docs = opts.server_pid.and_then(rss_bytes);
    if let (Some(a), Some(b)) = (rss_connections, rss_docs) {
        r.set("server_rss_connections_mb", json!(a / (1 << 20)));
        r.set("server_rss_docs_open_mb", json!(b / (1 << 20)));
        r.set(
            "server_rss_per_open_document_bytes",
            json!(b.saturating_sub(a) / docs as u64),
        );
    }

    // Phase 3: the activity.
    let frames_before = (
        counters.update_frames.load(Ordering::Relaxed),
        counters.awareness_frames.load(Ordering::Relaxed),
        counters.deliveries.load(Ordering::Relaxed),
    );
    latency.lock().reset();
    let server_cpu = opts.server_pid.map(CpuMeter::start);
    let go = Instant::now() + Duration::from_millis(100);
    let end = go + opts.duration;
    let period = match opts.activity {
        Activity::Edit { rate } => Duration::from_secs_f64(total as f64 / rate.max(0.001)),
        Activity::Cursors { hz } => Duration::from_secs_f64(1.0 / hz.max(0.001)),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (id, writer) in conns {
        let editors = editors.clone();
        let counters = counters.clone();
        let activity = opts.activity;
        tasks.spawn(async move {
            // Spread over the period, the editors of one document as far apart as can
            // be (editor e of document d at slot e × docs + d), so that they do not all
            // type in the same instant.
            let slot = (id % per_doc) * docs + id / per_doc;
            let mut next = go + period.mul_f64(slot as f64 / total as f64);
            while next < end {
                tokio::time::sleep_until(next).await;
                let (nsp, payload) = {
                    let mut ed = editors[id].lock();
                    let payload = match activity {
                        Activity::Edit { .. } => ed.next_update(),
                        Activity::Cursors { .. } => ed.next_awareness(),
                    };
                    (ed.nsp.clone(), payload)
                };
                let event = match activity {
                    Activity::Edit { .. } => "sync-update",
                    Activity::Cursors { .. } => "awareness-update",
                };
                let head = format!(r#"451-{nsp},["{event}",{PLACEHOLDER}]"#);
                if writer
                    .send_with_binary(head.as_bytes(), &[&payload])
                    .await
                    .is_err()
                {
                    return;
                }
                counters.sent.fetch_add(1, Ordering::Relaxed);
                next += period;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let sent = counters.sent.load(Ordering::Relaxed);
    let send_seconds = go.elapsed().as_secs_f64();
    // Deliveries stop coming: wait until none came for a second, at most the drain.
    let drain_end = Instant::now() + opts.drain;
    let mut last = counters.deliveries.load(Ordering::Relaxed);
    while Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counters.deliveries.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    if let Some(cpu) = &server_cpu {
        r.set(
            "server_cpu_seconds",
            json!((cpu.seconds() * 100.0).round() / 100.0),
        );
    }
    r.set_cpu(server_cpu.as_ref(), &client_cpu);
    let update_frames = counters.update_frames.load(Ordering::Relaxed) - frames_before.0;
    let awareness_frames = counters.awareness_frames.load(Ordering::Relaxed) - frames_before.1;
    let deliveries = counters.deliveries.load(Ordering::Relaxed) - frames_before.2;
    let expected = sent * (per_doc as u64 - 1);
    r.set("sent", json!(sent));
    r.set(
        "sent_per_s",
        json!((sent as f64 / send_seconds.max(0.001)).round()),
    );
    r.set("latency", latency_json(&latency.lock()));
    match opts.activity {
        Activity::Edit { .. } => {
            r.set("deliveries", json!(deliveries));
            r.set("deliveries_expected", json!(expected));
            r.set("lost", json!(expected.saturating_sub(deliveries)));
            r.set("update_frames_received", json!(update_frames));
        }
        Activity::Cursors { .. } => {
            // A state merged away by a newer one of the same user is not lost: what must
            // arrive is every user's last state, at every other user.
            r.set("moves_seen", json!(deliveries));
            let last: Vec<u64> = editors.iter().map(|e| e.lock().last_stamp).collect();
            let missing: usize = editors
                .iter()
                .map(|e| {
                    let e = e.lock();
                    (0..total)
                        .filter(|&u| u as u64 != e.id && e.seen[u] != last[u])
                        .count()
                })
                .sum();
            r.set("last_states_missing", json!(missing));
            r.set("awareness_frames_received", json!(awareness_frames));
            r.set("frames_if_each_relayed", json!(expected));
            r.set(
                "relay_each_over_received",
                json!(((expected as f64 / awareness_frames.max(1) as f64) * 10.0).round() / 10.0),
            );
        }
    }
    r.set("closed", json!(counters.closed.load(Ordering::Relaxed)));
    r.set(
        "unexpected",
        json!(counters.unexpected.load(Ordering::Relaxed)),
    );
    r.set(
        "bytes_received_mb",
        json!(counters.bytes_in.load(Ordering::Relaxed) / (1 << 20)),
    );
    if let Some(pid) = opts.server_pid {
        if let Some(rss) = rss_bytes(pid) {
            r.set("server_rss_end_mb", json!(rss / (1 << 20)));
        }
    }
    if matches!(opts.activity, Activity::Edit { .. }) && opts.verify_docs > 0 {
        verify(
            target,
            &editors,
            per_doc,
            docs.min(opts.verify_docs),
            &mut r,
        )
        .await;
    }
    r
}

/// The editors of the first `n` documents apply what they received; each copy and the
/// server's are compared with what was sent (state vectors) and with each other (text).
async fn verify(
    target: &Target,
    editors: &Arc<Vec<Mutex<Editor>>>,
    per_doc: usize,
    n: usize,
    r: &mut Report,
) {
    let mut divergent = 0u64;
    let mut copies = 0u64;
    let mut content = 0u64;
    for d in 0..n {
        let ids: Vec<usize> = (d * per_doc..(d + 1) * per_doc).collect();
        let nsp = editors[ids[0]].lock().nsp.clone();
        let server = server_copy(target, &nsp).await;
        let editors = editors.clone();
        let result = tokio::task::spawn_blocking(move || {
            // What was sent: each editor's own clock before it applies the others'.
            let mut expected: Vec<(u64, u32)> = ids
                .iter()
                .filter_map(|&id| {
                    let ed = editors[id].lock();
                    let own = ed.id + 1;
                    clocks(&ed.doc).into_iter().find(|(c, _)| *c == own)
                })
                .collect();
            expected.sort_unstable();
            let mut views = Vec::new();
            for &id in &ids {
                let mut ed = editors[id].lock();
                let received = std::mem::take(&mut ed.received);
                {
                    let mut txn = ed.doc.transact_mut();
                    for u in &received {
                        if let Ok(u) = Update::decode_v1(u) {
                            let _ = txn.apply_update(u);
                        }
                    }
                }
                let text = ed.text.get_string(&ed.doc.transact());
                views.push((clocks(&ed.doc), text));
            }
            let server = server.ok().map(|state| {
                let doc = Doc::new();
                let t = doc.get_or_insert_text(TEXT);
                if let Ok(u) = Update::decode_v1(&state) {
                    let _ = doc.transact_mut().apply_update(u);
                }
                let text = t.get_string(&doc.transact());
                (clocks(&doc), text, state.len())
            });
            (expected, views, server)
        })
        .await;
        let Ok((expected, views, server)) = result else {
            divergent += 1;
            continue;
        };
        let reference = server.as_ref().map(|(_, t, _)| t.clone());
        match &server {
            Some((sv, _, len)) => {
                copies += 1;
                content += *len as u64;
                if *sv != expected {
                    divergent += 1;
                }
            }
            None => divergent += 1,
        }
        for (sv, text) in views {
            copies += 1;
            if sv != expected || reference.as_ref() != Some(&text) {
                divergent += 1;
            }
        }
    }
    r.set("verified_documents", json!(n));
    r.set("verified_copies", json!(copies));
    r.set("divergent_copies", json!(divergent));
    r.set("server_state_bytes_avg", json!(content / n.max(1) as u64));
}

/// Options of `docs-cold`.
#[derive(Debug, Clone)]
pub struct ColdOptions {
    /// Updates written before the loads.
    pub updates: usize,
    /// Characters each update inserts.
    pub chars: usize,
    /// Loads measured.
    pub loads: usize,
    /// Wait after the writer leaves, and after each load, for the server to unload.
    pub unload_wait: Duration,
}

/// Runs `docs-cold` and reports.
pub async fn run_cold(target: &Target, opts: &ColdOptions) -> Report {
    let mut r = Report::new("docs-cold");
    r.set("target", json!(target.addr.to_string()));
    let run: u32 = rand::random();
    let nsp = format!("/yjs|bench-cold-{run:08x}");
    r.set("updates", json!(opts.updates));
    // The writer: one editor, its updates sent as fast as the socket takes them.
    let conn = match Conn::connect(target, 0).await {
        Ok(c) => c,
        Err(e) => {
            r.set("error", json!(e.to_string()));
            return r;
        }
    };
    let (reader, writer) = conn.split();
    let editors = Arc::new(vec![Mutex::new(Editor::new(0, nsp.clone(), false))]);
    let counters = Arc::new(Counters::default());
    let mine = ConnEditors {
        by_nsp: HashMap::from([(nsp.clone().into_bytes(), 0)]),
        ids: vec![0],
    };
    let reading = tokio::spawn(read_conn(
        reader,
        writer.clone(),
        mine,
        editors.clone(),
        counters.clone(),
        Arc::new(Mutex::new(histogram())),
    ));
    let _ = writer.send_raw(format!("40{nsp},").as_bytes()).await;
    // The server's own sync step says the document is loaded and its handlers are on
    // (y-socket.io loses events that come before, when it loads from LevelDB).
    let deadline = Instant::now() + Duration::from_secs(30);
    while counters.server_steps.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let head = format!(r#"451-{nsp},["sync-update",{PLACEHOLDER}]"#);
    let write_start = Instant::now();
    let chunk = "x".repeat(opts.chars.max(1));
    let mut sent = 0;
    while sent < opts.updates {
        let batch: Vec<Vec<u8>> = {
            let ed = &mut *editors[0].lock();
            (0..256.min(opts.updates - sent))
                .map(|_| {
                    let mut txn = ed.doc.transact_mut();
                    let at = ed.text.len(&txn);
                    ed.text.insert(&mut txn, at, &chunk);
                    txn.encode_update_v1()
                })
                .collect()
        };
        for u in &batch {
            if writer
                .send_with_binary(head.as_bytes(), &[u.as_slice()])
                .await
                .is_err()
            {
                r.set("error", json!("the writer was disconnected"));
                return r;
            }
        }
        sent += batch.len();
    }
    // The server answers a sync step after every update sent before it: once the answer
    // is here, it has applied them all.
    let sv = {
        let ed = editors[0].lock();
        let sv = ed.doc.transact().state_vector().encode_v1();
        sv
    };
    let step = format!(r#"451-{nsp},2["sync-step-1",{PLACEHOLDER}]"#);
    let before = counters.synced.load(Ordering::Relaxed);
    let _ = writer.send_with_binary(step.as_bytes(), &[&sv]).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while counters.synced.load(Ordering::Relaxed) == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.set(
        "applied_seconds",
        json!((write_start.elapsed().as_secs_f64() * 100.0).round() / 100.0),
    );
    let expected_len = {
        let ed = editors[0].lock();
        let len = ed.text.len(&ed.doc.transact());
        len
    };
    // Let the last updates be stored before the writer leaves.
    tokio::time::sleep(Duration::from_secs(2)).await;
    reading.abort();
    drop(writer);
    tokio::time::sleep(opts.unload_wait).await;

    let mut loads_ms = Vec::new();
    let mut wrong = 0;
    for _ in 0..opts.loads.max(1) {
        let t0 = Instant::now();
        match cold_load(target, &nsp).await {
            Ok(state) => {
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                loads_ms.push((ms * 10.0).round() / 10.0);
                let doc = Doc::new();
                let t = doc.get_or_insert_text(TEXT);
                let ok = Update::decode_v1(&state)
                    .ok()
                    .and_then(|u| doc.transact_mut().apply_update(u).ok())
                    .is_some();
                if !ok || t.len(&doc.transact()) != expected_len {
                    wrong += 1;
                }
                r.set("state_bytes", json!(state.len()));
            }
            Err(e) => {
                wrong += 1;
                r.set("error", json!(e.to_string()));
            }
        }
        tokio::time::sleep(opts.unload_wait).await;
    }
    r.set("loads_ms", json!(loads_ms));
    let mut sorted = loads_ms.clone();
    sorted.sort_by(f64::total_cmp);
    if let Some(best) = sorted.first() {
        r.set("load_ms_best", json!(best));
        r.set("load_ms_median", json!(sorted[sorted.len() / 2]));
    }
    r.set("wrong_state", json!(wrong));
    r
}

/// One cold load: connect, wait for the server's own `sync-step-1` (the document is
/// loaded and its handlers are on), ask for everything, and return it.
async fn cold_load(target: &Target, nsp: &str) -> Result<Vec<u8>, ClientError> {
    let mut conn = Conn::connect(target, 0).await?;
    conn.send_raw(format!("40{nsp},").as_bytes()).await?;
    let mut next = None::<Pending>;
    loop {
        match conn.recv_packet().await? {
            Packet::Message(m) => match parse_header(&m) {
                Some(h) if h.kind == 5 && h.body.starts_with(br#"["sync-step-1""#) => {
                    next = Some(Pending::ServerStep1(0, h.ack.unwrap_or(0)));
                }
                Some(h) if h.kind == 5 => next = Some(Pending::Other),
                Some(h) if h.kind == 6 => next = Some(Pending::Reply(0)),
                Some(h) if h.kind == 4 => {
                    return Err(ClientError::Handshake(
                        String::from_utf8_lossy(&m).into_owned(),
                    ))
                }
                _ => {}
            },
            Packet::Binary(b) => match next.take() {
                Some(Pending::ServerStep1(_, ack)) => {
                    // Nothing to give: an empty update; then everything, please.
                    conn.send_raw_with_binary(
                        format!("461-{nsp},{ack}[{PLACEHOLDER}]").as_bytes(),
                        &[0, 0],
                    )
                    .await?;
                    conn.send_raw_with_binary(
                        format!(r#"451-{nsp},1["sync-step-1",{PLACEHOLDER}]"#).as_bytes(),
                        &[0],
                    )
                    .await?;
                }
                Some(Pending::Reply(_)) => return Ok(b.to_vec()),
                _ => {}
            },
            Packet::Ping(_) => conn.send_raw(b"3").await?,
            Packet::Close => return Err(ClientError::Closed),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read() {
        let h =
            parse_header(br#"51-/yjs|a-1,7["sync-step-1",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!((h.kind, h.nsp, h.ack), (5, &b"/yjs|a-1"[..], Some(7)));
        assert!(h.body.starts_with(br#"["sync-step-1""#));
        let h = parse_header(b"0/yjs|d,{\"sid\":\"x\"}").unwrap();
        assert_eq!((h.kind, h.nsp, h.ack), (0, &b"/yjs|d"[..], None));
        let h = parse_header(b"2[\"x\"]").unwrap();
        assert_eq!(h.nsp, b"/");
        assert!(parse_header(b"").is_none());
    }

    #[test]
    fn markers_are_found_in_an_update() {
        let mut ed = Editor::new(41, "/yjs|x".into(), false);
        let a = ed.next_update();
        let b = ed.next_update();
        let merged = yrs::merge_updates_v1([a.as_slice(), b.as_slice()]).unwrap();
        let mut found = Vec::new();
        markers(&merged, |e, t| found.push((e, t)));
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|&(e, t)| e == 41 && t > 0));
        let mut none = 0;
        markers(b"@1.2;@x.1.2;@3.4.", |_, _| none += 1);
        assert_eq!(none, 0);
    }

    #[test]
    fn awareness_stamps_are_found() {
        let mut ed = Editor::new(7, "/yjs|x".into(), false);
        let a = ed.next_awareness();
        let mut found = Vec::new();
        stamps(&a, |u, t| found.push((u, t)));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 7);
        // Count 1, client 8, clock 1.
        assert_eq!(&a[..3], &[1, 8, 1]);
    }

    #[test]
    fn var_uints_are_lib0s() {
        let mut out = Vec::new();
        var_uint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }
}
