//! The bench app on socketioxide, the same app as Herald's `bench-server` and the Node
//! peer, on namespace `/`:
//!
//! - `join` (room) with ack: the socket joins the room; ack `"ok"`;
//! - `echo` (data) with ack: ack with the data;
//! - `broadcast` (room, data): emit `msg` with the data to everyone in the room.
//!
//! Binds 127.0.0.1 on `--port` or `PORT` (0 picks one); prints `PID <pid>` then
//! `LISTENING <port>`; exits on SIGTERM.
//!
//! Set up for socketioxide's best figures, as its documentation advises:
//!
//! - the event handlers are registered in a connect middleware, which runs before the
//!   CONNECT reply is sent: registered in the connect handler (which socketioxide runs
//!   after the reply, in a task of its own), the first events a client sends right
//!   after connecting find no handler and are dropped;
//! - `TCP_NODELAY` on every accepted connection (`axum::serve` leaves Nagle on;
//!   `NODELAY=0` leaves it so, which measured the same);
//! - a per-socket queue of 4,096 packets (the default, 128, drops the packets of a
//!   burst larger than that; this app counts such drops and prints them at exit);
//! - `RUNTIME=current` runs a current-thread runtime, `multi` (the default, which gave
//!   the better fan-out) tokio's multi-thread one; `WORKERS=n` sets its worker count.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::serve::ListenerExt;
use serde_json::Value;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;
use socketioxide::SocketIo;

/// Emits that failed (a full socket queue, mostly).
static EMIT_ERRORS: AtomicU64 = AtomicU64::new(0);

fn main() {
    let runtime = match std::env::var("RUNTIME").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = std::env::var("WORKERS").ok().and_then(|w| w.parse().ok()) {
                b.worker_threads(n);
            }
            b.enable_all().build()
        }
    };
    match runtime {
        Ok(rt) => rt.block_on(serve()),
        Err(e) => {
            eprintln!("socketioxide-bench-app: runtime: {e}");
            std::process::exit(1);
        }
    }
}

/// Registers the bench app's handlers on a socket about to connect.
async fn handlers(s: SocketRef) -> Result<(), std::convert::Infallible> {
    s.on(
        "join",
        async |s: SocketRef, Data::<String>(room), ack: AckSender| {
            s.join(room);
            let _ = ack.send("ok");
        },
    );
    s.on("echo", async |Data::<Value>(data), ack: AckSender| {
        let _ = ack.send(&data);
    });
    s.on(
        "broadcast",
        async |s: SocketRef, Data::<(String, Value)>((room, data))| {
            if s.within(room).emit("msg", &data).await.is_err() {
                EMIT_ERRORS.fetch_add(1, Ordering::Relaxed);
            }
        },
    );
    Ok(())
}

async fn serve() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let (layer, io) = SocketIo::builder().max_buffer_size(4096).build_layer();
    io.ns("/", (async |_s: SocketRef| {}).with(handlers));
    let app = axum::Router::new().layer(layer);
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("socketioxide-bench-app: bind: {e}");
            std::process::exit(1);
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    println!("PID {}", std::process::id());
    println!("LISTENING {port}");
    let nodelay = std::env::var("NODELAY").map_or(true, |v| v != "0");
    let listener = listener.tap_io(move |tcp| {
        let _ = tcp.set_nodelay(nodelay);
    });
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    let _ = axum::serve(listener, app).with_graceful_shutdown(term).await;
    let errors = EMIT_ERRORS.load(Ordering::Relaxed);
    if errors > 0 {
        eprintln!("socketioxide-bench-app: {errors} broadcasts failed to emit");
    }
}
