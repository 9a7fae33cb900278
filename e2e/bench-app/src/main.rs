//! `bench-server`: the bench app on Herald, the same app the benchmarks run on every
//! server under test, on namespace `/`:
//!
//! - `join` (room) with ack: the socket joins the room; ack `"ok"`;
//! - `echo` (data) with ack: ack with the data;
//! - `broadcast` (room, data): emit `msg` with the data to everyone in the room.
//!
//! ```text
//! bench-server [--port P] [--encode-per-recipient] [--outbound-buffer-bytes N]
//!              # or PORT=P; binds 127.0.0.1; N defaults to 4 MiB, Herald's default
//! ```
//!
//! Prints `PID <pid>` and `LISTENING <port>` when ready; exits on SIGTERM or SIGINT.
//! With `REDIS_URL` set, the server joins the cluster on that Redis (classic adapter,
//! key `socket.io`, as the Node peer does with the same variable).
//! `--encode-per-recipient` makes `broadcast` encode the packet again for every
//! recipient, as a server without encode-once would (for the comparison in
//! `docs/benchmarks.md`).

use std::time::Duration;

use socketio::{Config, Server};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = bench_app::port("bench-server", &args);
    let per_recipient = args.iter().any(|a| a == "--encode-per-recipient");
    // Herald's default outbound budget per connection unless told otherwise.
    let outbound: usize = args
        .iter()
        .position(|a| a == "--outbound-buffer-bytes")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(4 << 20), |v| v.parse())
        .unwrap_or_else(|_| {
            eprintln!("bench-server: invalid --outbound-buffer-bytes");
            std::process::exit(64)
        });
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let runtime = bench_app::runtime("bench-server");
    runtime.block_on(async move {
        let mut builder = Server::builder();
        if let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
            match cluster::RedisCluster::new(cluster::Options::new(url.clone())) {
                Ok(c) => {
                    eprintln!("bench-server: joining the cluster on {url}");
                    builder = builder.adapter(std::sync::Arc::new(c));
                }
                Err(e) => {
                    eprintln!("bench-server: {e}");
                    std::process::exit(64)
                }
            }
        }
        // Namespace-level handlers: shared by every socket, nothing allocated per socket.
        let server = builder
            .ns("/", |_, _| {})
            .on("join", |socket, ev| {
                if let Ok(room) = ev.data::<String>() {
                    socket.join(room);
                    let _ = ev.ack(("ok",));
                }
            })
            .on("echo", |_, ev| {
                let _ = ev.ack(ev.raw_args());
            })
            .on("broadcast", move |socket, ev| {
                let Ok((room, data)) = ev.args::<(String, serde_json::Value)>() else {
                    return;
                };
                let room_op = socket.namespace().to(room);
                if per_recipient {
                    for target in room_op.sockets() {
                        let _ = target.emit("msg", (&data,));
                    }
                } else {
                    let _ = room_op.emit("msg", (&data,));
                }
            })
            .build(Config {
                engine: engineio::Config {
                    path: "/socket.io/".to_owned(),
                    max_buffered_bytes: outbound,
                    ..engineio::Config::default()
                },
                ..Config::default()
            });
        eprintln!("bench-server: open-file limit {fd_limit} (raised to the hard limit), encode per recipient: {per_recipient}, outbound budget {outbound} B");
        let listener = bench_app::listen("bench-server", port);
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("bench-server: {e}");
                std::process::exit(70)
            }
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        tokio::spawn(server.clone().serve_connection(stream, remote));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                },
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
    });
}
