//! The heartbeat sweeper: one task walks every session on a coarse tick, queues the
//! pre-encoded ping frame on the sessions that are due, and closes the sessions whose pong
//! is overdue. No session owns a timer (`ARCHITECTURE.md` §2, "Heartbeat").

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::socket::{load, store};
use crate::{CloseReason, Engine, EngineHandler};

/// Runs until the engine is dropped or shut down.
pub(crate) async fn sweep<H: EngineHandler>(engine: Weak<Engine<H>>) {
    let (tick, shutdown) = {
        let Some(e) = engine.upgrade() else { return };
        let shortest = e.config.ping_interval.min(e.config.ping_timeout);
        let tick = (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        (tick, e.shutdown.clone())
    };
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        sweep_once(&engine);
    }
}

fn sweep_once<H: EngineHandler>(engine: &Arc<Engine<H>>) {
    let now = engine.now_ms();
    let timeout = engine.config.ping_timeout.as_millis() as u64;
    let mut overdue = Vec::new();
    engine.for_each(|socket| {
        let deadline = load(&socket.pong_deadline);
        if deadline != 0 {
            if now >= deadline {
                overdue.push(socket.clone());
            }
            return;
        }
        let due = load(&socket.next_ping);
        if now < due {
            return;
        }
        // The deadline counts from when the ping was due, not from this tick.
        if now >= due + timeout {
            overdue.push(socket.clone());
        } else {
            store(&socket.pong_deadline, due + timeout);
            socket.push_control(engine.frames.ping.clone());
        }
    });
    // Closed outside the walk: closing removes from the table, whose shard the walk
    // holds for reading.
    for socket in overdue {
        engine.close(&socket, CloseReason::PingTimeout);
    }
    engine.reap_lingering(now);
}
