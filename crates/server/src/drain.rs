//! Graceful drain, on SIGTERM, SIGINT or `POST /api/shutdown`:
//!
//! 1. `/readyz` answers 503 at once, and new connections are refused (503 with
//!    `Retry-After`; CONNECT on an open connection gets `server_shutting_down`);
//! 2. every socket receives `server_shutdown` with `{ reconnect: true, retryAfterMs }`;
//! 3. connections are closed in paced batches, in random order, with jitter, over
//!    `drain.window_ms`: clients see the transport close and reconnect (to another
//!    server, behind a load balancer), not all at once;
//! 4. the last packets get `drain.grace_ms` to go out, then the process exits 0.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;

use crate::state::AppState;

/// Time between batches.
const TICK: Duration = Duration::from_millis(100);

/// Drains every connection; returns when all are gone or the grace time is up.
pub(crate) async fn run(state: Arc<AppState>) {
    state.ready.store(false, Ordering::Release);
    state.shared.draining.store(true, Ordering::Release);
    let drain = state.config.drain;
    let notice = json!({
        "reconnect": true,
        "retryAfterMs": drain.retry_after.as_millis() as u64,
    });
    let told = state
        .root
        .broadcast()
        .emit("server_shutdown", (&notice,))
        .unwrap_or(0);
    let mut sessions = Vec::with_capacity(state.io.engine().len());
    state.io.engine().for_each(|s| sessions.push(s.clone()));
    sessions.shuffle(&mut rand::rng());
    let total = sessions.len();
    tracing::info!(
        connections = total,
        told,
        window_ms = drain.window.as_millis() as u64,
        "draining: server_shutdown sent, closing connections in batches"
    );
    let ticks = (drain.window.as_millis() / TICK.as_millis()).max(1) as usize;
    let per_tick = total.div_ceil(ticks).max(1);
    let mut closed = 0;
    for batch in sessions.chunks(per_tick) {
        for session in batch {
            session.close_with(engineio::CloseReason::ServerShutdown);
        }
        closed += batch.len();
        if closed < total {
            // Jitter of ±25% keeps batches from lining up with clients' retry timers.
            let jitter = rand::rng().random_range(0.75..1.25);
            tokio::time::sleep(TICK.mul_f64(jitter)).await;
        }
    }
    // Wait for the sessions to go, and for their WebSocket connections to write their
    // last frames and close (each is bounded: a stuck one gives up after a few
    // seconds), within the grace time.
    let engine = state.io.engine();
    let writing = || engine.stats().websocket_connections.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + drain.grace;
    while (!engine.is_empty() || writing() > 0) && tokio::time::Instant::now() < deadline {
        // A session whose handshake was admitted just before the drain began may have
        // opened after the list above was taken: close those as they appear.
        // (Collected first: closing takes the session out of the table being walked.)
        let mut late = Vec::new();
        engine.for_each(|s| {
            if !s.is_closed() {
                late.push(s.clone());
            }
        });
        for session in late {
            session.close_with(engineio::CloseReason::ServerShutdown);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if engine.is_empty() && writing() == 0 {
        // What the kernel still holds goes out after the process exits; a beat more
        // lets polling clients collect their last response.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(
        closed,
        left = engine.len(),
        connections_left = writing(),
        "drained"
    );
}
