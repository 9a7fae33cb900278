//! Graceful drain, on SIGTERM, SIGINT or `POST /api/shutdown`, in phases, each bounded
//! and logged:
//!
//! 1. **refuse**: `/readyz` answers 503, new connections are refused (503 with
//!    `Retry-After`; CONNECT on an open connection gets `server_shutting_down`);
//! 2. **notify**: every socket receives `server_shutdown` with `{ reconnect: true,
//!    retryAfterMs }`;
//! 3. **disconnect**: connections are closed in paced batches, in random order, with
//!    jitter, over `drain.window_ms`: clients see the transport close and reconnect (to
//!    another server, behind a load balancer), not all at once;
//! 4. **connections**: polling clients collect their last packets, then the listener
//!    closes and the tasks of every connection (tracked, not counted) write their last
//!    frames and end, within `drain.grace_ms`;
//! 5. **flush**: each service writes what it accepted to its stores, within
//!    `drain.grace_ms`;
//! 6. **leave**: each service leaves the cluster, within `drain.grace_ms`;
//!
//! then the process exits 0.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::service::{BoxFuture, Service};
use crate::state::AppState;

/// Time between batches.
const TICK: Duration = Duration::from_millis(100);

/// Drains every connection and the services; returns when done or each phase's time is
/// up. `close_listener` stops accepting; `connections` tracks the accepted connections'
/// tasks.
pub(crate) async fn run(
    state: &Arc<AppState>,
    close_listener: impl FnOnce(),
    connections: &TaskTracker,
) {
    let drain = state.config.drain;
    let engine = state.io.engine();

    // 1. refuse
    state.ready.store(false, Ordering::Release);
    state.shared.draining.store(true, Ordering::Release);
    tracing::info!("drain 1/6 refuse: new connections refused, /readyz answers 503");

    // 2. notify
    let notice = json!({
        "reconnect": true,
        "retryAfterMs": drain.retry_after.as_millis() as u64,
    });
    let told = state
        .root
        .broadcast()
        .emit("server_shutdown", (&notice,))
        .unwrap_or(0);
    tracing::info!(told, "drain 2/6 notify: server_shutdown sent");

    // 3. disconnect
    let started = Instant::now();
    let mut sessions = Vec::with_capacity(engine.len());
    engine.for_each(|s| sessions.push(s.clone()));
    sessions.shuffle(&mut rand::rng());
    let total = sessions.len();
    tracing::info!(
        connections = total,
        window_ms = drain.window.as_millis() as u64,
        "drain 3/6 disconnect: closing connections in paced batches"
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
    drop(sessions);
    tracing::info!(
        closed,
        took_ms = started.elapsed().as_millis() as u64,
        "drain 3/6 disconnect: done"
    );

    // 4. connections
    let started = Instant::now();
    let deadline = started + drain.grace;
    // Polling clients fetch their last packets with one more GET; sessions whose
    // handshake was admitted just before the drain began may have opened after the list
    // above was taken: they are closed as they appear. (Collected first: closing takes
    // the session out of the table being walked.)
    while !engine.is_empty() && Instant::now() < deadline {
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
    let lingering = engine.len();
    // Every session left is closed, HTTP connections stop taking requests (the one under
    // way is answered), and no task is spawned for a connection from here on.
    state.io.close();
    close_listener();
    let finished = tokio::time::timeout_at(deadline, async {
        tokio::join!(connections.wait(), engine.tracker().wait());
    })
    .await
    .is_ok();
    if finished {
        // What the kernel still holds goes out after the process exits; a beat more
        // lets the last polling response reach its client.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(
        sessions_lingering = lingering,
        connection_tasks_left = connections.len() + engine.tracker().len(),
        took_ms = started.elapsed().as_millis() as u64,
        "drain 4/6 connections: {}",
        if finished {
            "every connection closed"
        } else {
            "grace time up; the rest are dropped"
        }
    );

    // 5. flush, 6. leave
    steps(&state.services, "5/6 flush", drain.grace, |s| s.flush()).await;
    steps(&state.services, "6/6 leave", drain.grace, |s| s.leave()).await;
    tracing::info!("drained");
}

/// Runs one drain step of every service, all at once, within `bound`; logs each one
/// that does not finish in time.
async fn steps(
    services: &[Arc<dyn Service>],
    phase: &str,
    bound: Duration,
    step: impl Fn(&dyn Service) -> BoxFuture,
) {
    let started = Instant::now();
    let deadline = started + bound;
    let mut late = Vec::new();
    let runs: Vec<_> = services
        .iter()
        .map(|s| (s.name(), tokio::spawn(step(&**s))))
        .collect();
    for (name, run) in runs {
        match tokio::time::timeout_at(deadline, run).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(service = name, error = %e, "drain {phase}: the step failed")
            }
            Err(_) => late.push(name),
        }
    }
    if late.is_empty() {
        tracing::info!(
            services = services.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "drain {phase}: done"
        );
    } else {
        tracing::warn!(
            ?late,
            bound_ms = bound.as_millis() as u64,
            "drain {phase}: not done in time; going on"
        );
    }
}
