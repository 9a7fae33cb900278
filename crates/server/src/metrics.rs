//! `/metrics` in the Prometheus text format (version 0.0.4), read from the layers'
//! atomic counters at scrape time: nothing is recorded twice, and no global registry.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::admission::Refusal;
use crate::auth::{AuthError, Tier};
use crate::state::{AppState, CONNECT_REFUSALS, EVENT_REFUSAL_CODES, FORCED_REASONS};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &socketio::HistogramSnapshot) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (le, count) in &h.buckets {
            let le = if le.is_infinite() {
                "+Inf".to_owned()
            } else {
                format!("{le}")
            };
            self.sample(&bucket, &[("le", &le)], count);
        }
        self.sample(&format!("{name}_sum"), &[], h.sum);
        self.sample(&format!("{name}_count"), &[], h.count);
    }
}

/// Renders every metric (`tls` when the listener speaks TLS).
pub fn render(state: &AppState, tls: Option<&crate::tls::Tls>) -> String {
    let engine = state.io.engine().stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let sessions = engine.sessions.load(Ordering::Relaxed).max(0);
    let websocket = engine.websocket_sessions.load(Ordering::Relaxed).max(0);
    let s = &state.shared.stats;
    let mut out = Out(String::with_capacity(4096));

    out.family(
        "herald_connections",
        "gauge",
        "Open Engine.IO connections, by transport.",
    );
    out.sample(
        "herald_connections",
        &[("transport", "websocket")],
        websocket,
    );
    out.sample(
        "herald_connections",
        &[("transport", "polling")],
        sessions - websocket,
    );
    out.one(
        "herald_sockets",
        "gauge",
        "Sockets connected to namespace /.",
        state.root.len(),
    );
    out.family(
        "herald_sockets_by_tier",
        "gauge",
        "Sockets connected to namespace /, by connection tier.",
    );
    for tier in Tier::ALL {
        out.sample(
            "herald_sockets_by_tier",
            &[("tier", tier.as_str())],
            state.shared.tiers.counts().get(tier),
        );
    }
    out.one(
        "herald_max_connections",
        "gauge",
        "Connections the server holds at most.",
        state.max_connections,
    );
    out.family(
        "herald_handshake_refusals_total",
        "counter",
        "Handshakes refused by admission control, by reason.",
    );
    let refusals = state.shared.admission.refusals();
    for reason in Refusal::ALL {
        out.sample(
            "herald_handshake_refusals_total",
            &[("reason", reason.code())],
            refusals[reason.index()],
        );
    }
    out.family(
        "herald_connect_refusals_total",
        "counter",
        "CONNECTs refused other than by auth (drain, tiers), by reason.",
    );
    for (code, n) in CONNECT_REFUSALS.iter().zip(&s.connect_refusals) {
        out.sample(
            "herald_connect_refusals_total",
            &[("reason", code)],
            load(n),
        );
    }
    out.family(
        "herald_disconnects_total",
        "counter",
        "Connections closed, by reason.",
    );
    for reason in engineio::CloseReason::ALL {
        out.sample(
            "herald_disconnects_total",
            &[("reason", reason.code())],
            load(&engine.closes[reason.index()]),
        );
    }
    out.family(
        "herald_forced_disconnects_total",
        "counter",
        "Sockets disconnected by the server (told with forced_disconnect), by reason.",
    );
    for (reason, n) in FORCED_REASONS.iter().zip(&s.forced) {
        out.sample(
            "herald_forced_disconnects_total",
            &[("reason", reason)],
            load(n),
        );
    }
    out.one(
        "herald_handshakes_total",
        "counter",
        "Engine.IO sessions opened.",
        load(&engine.handshakes),
    );
    out.one(
        "herald_upgrades_total",
        "counter",
        "Upgrades from polling to WebSocket.",
        load(&engine.upgrades),
    );
    out.one(
        "herald_packets_received_total",
        "counter",
        "Engine.IO packets received.",
        load(&engine.packets_in),
    );
    out.one(
        "herald_packets_sent_total",
        "counter",
        "Engine.IO packets sent.",
        load(&engine.packets_out),
    );
    out.one(
        "herald_bytes_received_total",
        "counter",
        "Bytes received in messages.",
        load(&engine.bytes_in),
    );
    out.one(
        "herald_bytes_sent_total",
        "counter",
        "Bytes written to sockets and poll responses.",
        load(&engine.bytes_out),
    );
    out.family(
        "herald_auth_refusals_total",
        "counter",
        "Connections refused by auth, by reason.",
    );
    for (code, n) in AuthError::CODES.iter().zip(&s.auth_refusals) {
        out.sample("herald_auth_refusals_total", &[("reason", code)], load(n));
    }
    out.family(
        "herald_client_refusals_total",
        "counter",
        "Client subscribe, unsubscribe and publish requests refused, by code.",
    );
    for (code, n) in EVENT_REFUSAL_CODES.iter().zip(&s.event_refusals) {
        out.sample("herald_client_refusals_total", &[("code", code)], load(n));
    }
    out.one(
        "herald_subscribes_total",
        "counter",
        "Rooms subscribed to by clients.",
        load(&s.subscribes),
    );
    out.one(
        "herald_publishes_total",
        "counter",
        "Publishes by clients.",
        load(&s.publishes),
    );
    out.one(
        "herald_api_emits_total",
        "counter",
        "Emits through the HTTP API.",
        load(&s.api_emits),
    );
    out.one(
        "herald_deliveries_total",
        "counter",
        "Packets queued to sockets by publishes and API emits.",
        load(&s.deliveries),
    );
    out.one(
        "herald_api_unauthorized_total",
        "counter",
        "HTTP API calls refused for a missing or wrong key.",
        load(&s.api_unauthorized),
    );
    let sio = state.io.stats();
    out.one(
        "herald_events_received_total",
        "counter",
        "Socket.IO events received from clients.",
        load(&sio.events_in),
    );
    out.one(
        "herald_events_rate_limited_total",
        "counter",
        "Client events refused by the per-socket rate.",
        load(&sio.events_rate_limited),
    );
    out.one(
        "herald_broadcasts_total",
        "counter",
        "Broadcasts (one per emit to rooms or to everyone).",
        load(&sio.broadcasts),
    );
    out.one(
        "herald_broadcast_deliveries_total",
        "counter",
        "Packets queued to sockets by broadcasts, one per recipient.",
        load(&sio.deliveries),
    );
    out.family(
        "herald_dropped_packets_total",
        "counter",
        "Packets not delivered, by reason.",
    );
    out.sample(
        "herald_dropped_packets_total",
        &[("reason", "volatile_queue_full")],
        load(&sio.dropped_volatile),
    );
    out.sample(
        "herald_dropped_packets_total",
        &[("reason", "slow_consumer")],
        load(&sio.dropped_slow_consumer),
    );
    out.one(
        "herald_outbound_queued_bytes",
        "gauge",
        "Bytes queued for sending on all connections.",
        state.io.engine().queued_bytes(),
    );
    out.histogram(
        "herald_ack_rtt_seconds",
        "Time from an emit with ack to the client's answer.",
        &sio.ack_rtt.snapshot(),
    );
    out.histogram(
        "herald_broadcast_fanout_seconds",
        "Time to encode a broadcast and queue it on every local recipient.",
        &sio.broadcast_fanout.snapshot(),
    );
    out.histogram(
        "herald_runtime_lag_seconds",
        "How late the runtime runs a 100 ms timer (scheduling lag, like Node's event-loop lag).",
        &s.lag.snapshot(),
    );
    out.one(
        "herald_runtime_lag_last_seconds",
        "gauge",
        "The last scheduling lag measured.",
        load(&s.lag_last_us) as f64 / 1e6,
    );
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let m = handle.metrics();
        out.one(
            "herald_runtime_workers",
            "gauge",
            "Worker threads of the runtime.",
            m.num_workers(),
        );
        out.one(
            "herald_runtime_alive_tasks",
            "gauge",
            "Tasks alive in the runtime.",
            m.num_alive_tasks(),
        );
        out.one(
            "herald_runtime_global_queue_depth",
            "gauge",
            "Tasks waiting in the runtime's global queue.",
            m.global_queue_depth(),
        );
    }
    if let Some((allocated, resident)) = jemalloc() {
        out.one(
            "herald_memory_allocated_bytes",
            "gauge",
            "Bytes allocated by the application (jemalloc).",
            allocated,
        );
        out.one(
            "herald_memory_resident_bytes",
            "gauge",
            "Bytes of physically resident pages held by the allocator (jemalloc).",
            resident,
        );
    }
    out.one(
        "herald_open_fds_limit",
        "gauge",
        "The open-file limit of the process.",
        state.fd_limit,
    );
    if let Some(open) = open_fds() {
        out.one(
            "herald_open_fds",
            "gauge",
            "Open file descriptors of the process.",
            open,
        );
    }
    if let Some(tls) = tls {
        out.one(
            "herald_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
            load(&tls.handshake_failures),
        );
        out.one(
            "herald_tls_reloads_total",
            "counter",
            "Certificate reloads (SIGHUP) that worked.",
            load(&tls.reloads),
        );
        out.one(
            "herald_tls_reload_failures_total",
            "counter",
            "Certificate reloads that failed (the old certificate stayed).",
            load(&tls.reload_failures),
        );
    }
    let st = &state.shared.store_stats;
    for (name, help, counter) in [
        (
            "herald_store_reads_total",
            "Read queries of the message store.",
            &st.reads,
        ),
        (
            "herald_store_writes_total",
            "Rows the message store inserted or updated.",
            &st.writes,
        ),
        (
            "herald_store_commits_total",
            "Write transactions of the message store (group commits).",
            &st.commits,
        ),
        (
            "herald_store_jobs_total",
            "Writes (sends, watermarks, ...) committed; over commits, the writes per commit.",
            &st.jobs,
        ),
        (
            "herald_store_failed_commits_total",
            "Write transactions that failed (their requests were answered unavailable).",
            &st.failed_commits,
        ),
        (
            "herald_store_retried_commits_total",
            "Write transactions run again after PostgreSQL aborted them (a deadlock with \
             another node's writer on the same database, a serialization failure).",
            &st.retried_commits,
        ),
        (
            "herald_store_refused_total",
            "Writes refused because the store's queue was full (answered unavailable).",
            &st.refused,
        ),
    ] {
        out.one(name, "counter", help, load(counter));
    }
    let im = &state.shared.im_stats;
    out.family(
        "herald_im_rate_limited_total",
        "counter",
        "IM sends refused rate_limited: by the sender's rate (user) or the conversation's fan-out budget (conversation).",
    );
    out.sample(
        "herald_im_rate_limited_total",
        &[("scope", "user")],
        load(&im.rate_limited_user),
    );
    out.sample(
        "herald_im_rate_limited_total",
        &[("scope", "conversation")],
        load(&im.rate_limited_conversation),
    );
    out.one(
        "herald_im_kicked_total",
        "counter",
        "IM sockets put out by the device policy (told kicked).",
        load(&im.kicked),
    );
    out.one(
        "herald_im_cluster_filled_total",
        "counter",
        "IM messages pushed from the store because their news from the node that committed \
         them did not come (many nodes).",
        load(&im.cluster_filled),
    );
    out.one(
        "herald_im_presence_pushes_total",
        "counter",
        "Presence changes pushed to watchers (one per change of a user, to all of them).",
        load(&im.presence_pushes),
    );
    out.one(
        "herald_im_online_users",
        "gauge",
        "Users online on /im, as their watchers were last told.",
        im.online_users.load(Ordering::Relaxed),
    );
    out.one(
        "herald_im_cached_conversations",
        "gauge",
        "IM conversations held in memory (members, watermarks, the last message), as of the last second.",
        im.cached_conversations.load(Ordering::Relaxed),
    );
    out.one(
        "herald_im_typing_pushes_total",
        "counter",
        "Typing sets pushed (one per conversation per window with a change).",
        load(&im.typing_pushes),
    );
    let docs = &state.shared.collab_stats;
    out.one(
        "herald_docs_loaded",
        "gauge",
        "Yjs documents in memory.",
        docs.loaded.load(Ordering::Relaxed),
    );
    for (name, help, counter) in [
        ("herald_docs_loads_total", "Documents loaded from the store.", &docs.loads),
        ("herald_docs_unloads_total", "Documents unloaded from memory (idle, deleted or reloaded).", &docs.unloads),
        ("herald_docs_updates_total", "Document updates applied (clients, API).", &docs.updates_in),
        ("herald_docs_refused_total", "Document updates or events refused: malformed, or from a read-only client.", &docs.updates_refused),
        ("herald_docs_update_frames_total", "sync-update frames sent (one per recipient per window).", &docs.update_frames_out),
        ("herald_docs_awareness_total", "Awareness updates received.", &docs.awareness_in),
        ("herald_docs_awareness_frames_total", "awareness-update frames sent (merged per window).", &docs.awareness_frames_out),
        ("herald_docs_stored_total", "Rows of document updates stored (one per document per write).", &docs.stored),
        ("herald_docs_store_errors_total", "Document writes, loads or compactions the store failed (retried).", &docs.store_errors),
        ("herald_docs_compactions_total", "Documents compacted into their snapshot.", &docs.compactions),
        ("herald_docs_abusers_total", "Document sockets disconnected for repeated malformed input.", &docs.abusers),
        ("herald_docs_rate_limited_total", "Document connections closed for going over docs.events_per_second (they reconnect and resync).", &docs.rate_limited),
    ] {
        out.one(name, "counter", help, load(counter));
    }
    // Per operation: a client event of the IM service (`send`, `history`, ...), its
    // `connect`, the `watermarks` written behind, an API call.
    let by_op = st.by_operation();
    for (name, help, pick) in [
        (
            "herald_store_operation_requests_total",
            "Requests of each IM operation (client events, connects).",
            (|c: &store::stats::OpCounts| c.requests) as fn(&store::stats::OpCounts) -> u64,
        ),
        (
            "herald_store_operation_reads_total",
            "Read queries of the message store, by the operation that made them.",
            |c| c.reads,
        ),
        (
            "herald_store_operation_writes_total",
            "Rows the message store wrote, by the operation that wrote them.",
            |c| c.writes,
        ),
    ] {
        out.family(name, "counter", help);
        for (op, counts) in &by_op {
            out.sample(name, &[("op", op)], pick(counts));
        }
    }
    out.one(
        "herald_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        state.started.elapsed().as_secs(),
    );
    out.family("herald_build_info", "gauge", "The running version.");
    out.sample(
        "herald_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    if let Some(cluster) = &state.cluster {
        let c = cluster.stats();
        out.one(
            "herald_cluster_redis_connected",
            "gauge",
            "1 while the connection to the cluster's Redis is up.",
            u8::from(cluster.is_connected()),
        );
        out.one(
            "herald_cluster_nodes",
            "gauge",
            "Herald nodes heard from in the last three heartbeats, this one included.",
            cluster.nodes(crate::HEARTBEAT * 3).len(),
        );
        out.one(
            "herald_cluster_subscriptions",
            "gauge",
            "Redis channels this node subscribes (rooms with local members, and its own).",
            c.subscriptions.load(Ordering::Relaxed),
        );
        for (name, help, counter) in [
            (
                "herald_cluster_published_total",
                "Messages published to Redis.",
                &c.published,
            ),
            (
                "herald_cluster_redis_deliveries_total",
                "Deliveries Redis reported for this node's publishes (receivers summed).",
                &c.redis_deliveries,
            ),
            (
                "herald_cluster_publish_failures_total",
                "Publishes dropped: Redis down or too slow.",
                &c.publish_failures,
            ),
            (
                "herald_cluster_received_total",
                "Messages received from Redis.",
                &c.received,
            ),
            (
                "herald_cluster_malformed_total",
                "Messages from Redis that did not decode.",
                &c.malformed,
            ),
            (
                "herald_cluster_reconnects_total",
                "Connections to Redis made again after one was lost.",
                &c.reconnects,
            ),
            (
                "herald_cluster_buffer_overflows_total",
                "Times Redis closed subscriber connections for their output buffer limit.",
                &c.buffer_overflows,
            ),
            (
                "herald_cluster_dropped_total",
                "Times Redis closed this node's connection while it kept running (a slow \
                 subscriber over its output buffer limit, or a CLIENT KILL).",
                &c.dropped,
            ),
        ] {
            out.one(name, "counter", help, load(counter));
        }
    }
    out.0
}

/// Allocated and resident bytes from jemalloc (when it is the allocator; its figures
/// are refreshed by advancing its epoch).
fn jemalloc() -> Option<(usize, usize)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some((
        stats::allocated::read().ok()?,
        stats::resident::read().ok()?,
    ))
}

/// Open file descriptors, counted in `/proc/self/fd` (Linux).
fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count)
}
