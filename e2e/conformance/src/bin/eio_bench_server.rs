//! An Engine.IO server for the engine-level benchmarks of `docs/benchmarks.md`.
//!
//! ```text
//! eio-bench-server [--port P] [--per-frame-writes] [--alloc-stats]
//! ```
//!
//! Sessions idle unless a client sends the text message `burst <count> <size>`: the
//! server then encodes one frame of `size` payload bytes **once** and queues it `count`
//! times on every open WebSocket session, yielding between rounds so writers run. With
//! `--per-frame-writes` the writers make one system call per frame instead of draining
//! their queue in vectored writes. Every other message is echoed. `--alloc-stats` prints
//! jemalloc's allocated, active and resident bytes to stderr every 2 s.
//!
//! Prints `PID <pid>` and `LISTENING <port>` on stdout once ready; binds 127.0.0.1.

use std::io::Write as _;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use engineio::{CloseReason, Config, Engine, EngineHandler, Socket, Transport};
use ws::{Frame, OpCode};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Default)]
struct Bench {
    engine: OnceLock<Weak<Engine<Bench>>>,
}

impl Bench {
    fn burst(&self, count: usize, size: usize) {
        let Some(engine) = self.engine.get().and_then(Weak::upgrade) else {
            return;
        };
        let payload = vec![b'x'; size];
        let frame = Frame::server_parts(OpCode::Text, &[b"4", &payload]);
        tokio::spawn(async move {
            let mut targets = Vec::with_capacity(engine.len());
            engine.for_each(|s| {
                if s.transport() == Transport::Websocket {
                    targets.push(s.clone());
                }
            });
            for _ in 0..count {
                for socket in &targets {
                    let _ = socket.send(frame.clone());
                }
                tokio::task::yield_now().await;
            }
        });
    }
}

impl EngineHandler for Bench {
    type Data = ();

    fn on_open(&self, _socket: &Arc<Socket<()>>) {}

    fn on_message(&self, socket: &Arc<Socket<()>>, text: Bytes) {
        let parts: Vec<&str> = std::str::from_utf8(&text)
            .unwrap_or_default()
            .split(' ')
            .collect();
        if let ["burst", count, size] = parts[..] {
            if let (Ok(count), Ok(size)) = (count.parse(), size.parse()) {
                self.burst(count, size);
                return;
            }
        }
        let _ = socket.send_text(&text);
    }

    fn on_binary(&self, socket: &Arc<Socket<()>>, data: Bytes) {
        let _ = socket.send_binary(&data);
    }

    fn on_close(&self, _socket: &Arc<Socket<()>>, _reason: CloseReason) {}
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .or(std::env::var("PORT").ok().as_ref())
        .map_or(Ok(3000), |p| p.parse())
        .unwrap_or_else(|_| {
            eprintln!("eio-bench-server: invalid port");
            std::process::exit(64)
        });
    let coalesce = !args.iter().any(|a| a == "--per-frame-writes");
    let alloc_stats = args.iter().any(|a| a == "--alloc-stats");
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("eio-bench-server: {e}");
            std::process::exit(70)
        });
    runtime.block_on(async move {
        let config = Config {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            coalesce_writes: coalesce,
            max_buffered_bytes: 64 << 20,
            ..Config::default()
        };
        let engine = Engine::new(config, Bench::default());
        if alloc_stats {
            let engine = engine.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let _ = tikv_jemalloc_ctl::epoch::advance();
                    let allocated = tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0);
                    let active = tikv_jemalloc_ctl::stats::active::read().unwrap_or(0);
                    let resident = tikv_jemalloc_ctl::stats::resident::read().unwrap_or(0);
                    eprintln!(
                        "alloc-stats sessions={} allocated={allocated} active={active} resident={resident}",
                        engine.len()
                    );
                }
            });
        }
        let _ = engine.handler().engine.set(Arc::downgrade(&engine));
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("eio-bench-server: bind: {e}");
                std::process::exit(1)
            }
        };
        let bound = listener.local_addr().map(|a| a.port()).unwrap_or(port);
        eprintln!("eio-bench-server: open-file limit {fd_limit} (raised to the hard limit), coalesce_writes={coalesce}");
        println!("PID {}", std::process::id());
        println!("LISTENING {bound}");
        let _ = std::io::stdout().flush();
        loop {
            match listener.accept().await {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(engineio::serve_connection(engine.clone(), stream, remote, engineio::NotFound));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
}
