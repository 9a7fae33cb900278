//! The bench app on socketioxide, the same app as Herald's `bench-server` and the Node
//! peer, on namespace `/`:
//!
//! - `join` (room) with ack: the socket joins the room; ack `"ok"`;
//! - `echo` (data) with ack: ack with the data;
//! - `broadcast` (room, data): emit `msg` with the data to everyone in the room.
//!
//! Binds 127.0.0.1 on `--port` or `PORT` (0 picks one); prints `PID <pid>` then
//! `LISTENING <port>`; exits on SIGTERM. socketioxide's defaults otherwise.

use serde_json::Value;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::SocketIo;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let (layer, io) = SocketIo::new_layer();
    io.ns("/", async |s: SocketRef| {
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
                let _ = s.within(room).emit("msg", &data).await;
            },
        );
    });
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
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    let _ = axum::serve(listener, app).with_graceful_shutdown(term).await;
}
