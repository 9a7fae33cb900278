//! A small chat server on the Socket.IO library.
//!
//! ```text
//! cargo run -p herald-socketio --example chat        # 127.0.0.1:3000, or PORT=...
//! ```
//!
//! Clients (any Socket.IO client) emit `join` (room) with an ack, then `chat` (room,
//! text); everyone else in the room receives `chat` (room, from, text). Leaving is
//! announced to the rooms the socket was in.

use serde::Deserialize;
use socketio::{Config, Server};

#[derive(Deserialize)]
struct Chat {
    room: String,
    text: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let server = Server::builder()
        .ns("/", |socket, req| {
            let name = req.auth_json()["name"]
                .as_str()
                .unwrap_or("anonymous")
                .to_owned();
            socket.on("join", |socket, ev| match ev.data::<String>() {
                Ok(room) => {
                    socket.join(room.clone());
                    let _ = ev.ack(("joined", room));
                }
                Err(e) => {
                    let _ = ev.ack(("error", e.to_string()));
                }
            });
            let from = name.clone();
            socket.on("chat", move |socket, ev| {
                if let Ok(Chat { room, text }) = ev.data::<Chat>() {
                    let _ = socket.to(room.clone()).emit("chat", (room, &from, text));
                }
            });
            socket.on_disconnecting(move |socket, reason| {
                for room in socket.rooms() {
                    let _ = socket.to(room).emit("left", (&name, reason.as_str()));
                }
            });
        })
        .build(Config::default());

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "PID {}\nLISTENING {}",
        std::process::id(),
        listener.local_addr()?.port()
    );
    loop {
        let (stream, remote) = listener.accept().await?;
        tokio::spawn(server.clone().serve_connection(stream, remote));
    }
}
