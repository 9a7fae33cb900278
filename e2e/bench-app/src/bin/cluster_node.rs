//! `cluster-node`: a Herald node on Redis whose clients drive every cluster operation,
//! for the interop tests against Node servers on `@socket.io/redis-adapter` (the same
//! operations, from either side). Namespace `/`; events, each with an ack:
//!
//! - `join` / `leave` (room): this socket;
//! - `setData` (value): what other nodes see as the socket's `data`;
//! - `emit` ({rooms, except, event, args, local}): a broadcast; ack: local deliveries;
//! - `emitWithAck` ({rooms, event, args, timeout}): ack: {responses, errors};
//! - `fetch` ({rooms}): ack: the sockets of every node (id, rooms, data, handshake);
//! - `allRooms`, `serverCount`;
//! - `socketsJoin` / `socketsLeave` ({rooms, room}), `disconnectSockets` ({rooms, close});
//! - `serverSideEmit` ({event, args, ack}): ack: {responses, complete} or "sent".
//!
//! Events other servers emit with `serverSideEmit` are answered (when they ask) with
//! `{herald: true, event, args}`, and told to this node's sockets as `sse` (event, args).
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cluster-node [--port P] [--key PREFIX]
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use socketio::{BroadcastOperator, Config, Namespace, Server, SharedData, Str};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = bench_app::port("cluster-node", &args);
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("cluster-node: set REDIS_URL");
        std::process::exit(64)
    };
    let mut options = cluster::Options::new(url);
    if let Some(key) = args
        .iter()
        .position(|a| a == "--key")
        .and_then(|i| args.get(i + 1))
    {
        options.key_prefix = key.clone();
    }
    // `--sharded dynamic|dynamic-private|static`: Node's createShardedAdapter.
    if let Some(mode) = args
        .iter()
        .position(|a| a == "--sharded")
        .and_then(|i| args.get(i + 1))
    {
        let Some(mode) = cluster::SubscriptionMode::parse(mode) else {
            eprintln!("cluster-node: --sharded takes dynamic, dynamic-private or static");
            std::process::exit(64)
        };
        options.sharded = Some(mode);
    }
    options.request_timeout = Duration::from_secs(2);
    let runtime = bench_app::runtime("cluster-node");
    runtime.block_on(async move {
        let cluster = cluster::RedisCluster::new(options).unwrap_or_else(|e| {
            eprintln!("cluster-node: {e}");
            std::process::exit(64)
        });
        let server = Server::builder()
            .adapter(Arc::new(cluster.clone()))
            .ns("/", |_, _| {})
            .on("join", |socket, ev| {
                if let Ok(room) = ev.data::<String>() {
                    socket.join(room);
                }
                let _ = ev.ack(("ok",));
            })
            .on("leave", |socket, ev| {
                if let Ok(room) = ev.data::<String>() {
                    socket.leave(&Str::from(room));
                }
                let _ = ev.ack(("ok",));
            })
            .on("setData", |socket, ev| {
                if let Ok(value) = ev.data::<Value>() {
                    socket.set_data(SharedData(value));
                }
                let _ = ev.ack(("ok",));
            })
            .on("emit", |socket, ev| {
                let Ok(req) = ev.data::<Value>() else { return };
                let op = targets(socket.namespace(), &req);
                let event = req["event"].as_str().unwrap_or("msg").to_owned();
                let sent = op.emit(&event, args_of(&req));
                let _ = ev.ack((sent.unwrap_or(0),));
            })
            .on("emitWithAck", |socket, ev| {
                let Ok(req) = ev.data::<Value>() else { return };
                let timeout = req["timeout"].as_u64().unwrap_or(2000);
                let op = targets(socket.namespace(), &req).timeout(Duration::from_millis(timeout));
                let event = req["event"].as_str().unwrap_or("ask").to_owned();
                let args = args_of(&req);
                tokio::spawn(async move {
                    let results = op.emit_with_ack(&event, args).await;
                    let mut responses = Vec::new();
                    let mut errors = 0;
                    for r in results {
                        match r.and_then(|a| {
                            a.args::<Vec<Value>>()
                                .map_err(|_| socketio::AckError::Timeout)
                        }) {
                            Ok(args) => {
                                responses.push(args.into_iter().next().unwrap_or(Value::Null))
                            }
                            Err(_) => errors += 1,
                        }
                    }
                    let _ = ev.ack((json!({ "responses": responses, "errors": errors }),));
                });
            })
            .on("fetch", |socket, ev| {
                let req = ev.data::<Value>().unwrap_or(Value::Null);
                let op = targets(socket.namespace(), &req);
                tokio::spawn(async move {
                    let found: Vec<Value> = op
                        .fetch_sockets()
                        .await
                        .into_iter()
                        .map(|s| {
                            json!({
                                "id": s.id.as_str(),
                                "rooms": s.rooms.iter().map(Str::as_str).collect::<Vec<_>>(),
                                "data": s.data,
                                "handshake": s.handshake,
                                "local": s.local.is_some(),
                            })
                        })
                        .collect();
                    let _ = ev.ack((found,));
                });
            })
            .on("allRooms", |socket, ev| {
                let ns = socket.namespace().clone();
                tokio::spawn(async move {
                    let rooms: Vec<String> = ns
                        .all_rooms()
                        .await
                        .iter()
                        .map(|r| r.as_str().to_owned())
                        .collect();
                    let _ = ev.ack((rooms,));
                });
            })
            .on("serverCount", |socket, ev| {
                let ns = socket.namespace().clone();
                tokio::spawn(async move {
                    let _ = ev.ack((ns.server_count().await,));
                });
            })
            .on("socketsJoin", |socket, ev| {
                let req = ev.data::<Value>().unwrap_or(Value::Null);
                targets(socket.namespace(), &req)
                    .join(req["room"].as_str().unwrap_or("").to_owned());
                let _ = ev.ack(("ok",));
            })
            .on("socketsLeave", |socket, ev| {
                let req = ev.data::<Value>().unwrap_or(Value::Null);
                targets(socket.namespace(), &req)
                    .leave(req["room"].as_str().unwrap_or("").to_owned());
                let _ = ev.ack(("ok",));
            })
            .on("disconnectSockets", |socket, ev| {
                let req = ev.data::<Value>().unwrap_or(Value::Null);
                let op = targets(socket.namespace(), &req);
                // Acked first: the asking socket may be among those disconnected.
                let _ = ev.ack(("ok",));
                if req["close"] == true {
                    op.disconnect_and_close();
                } else {
                    op.disconnect();
                }
            })
            .on("serverSideEmit", |socket, ev| {
                let Ok(req) = ev.data::<Value>() else { return };
                let ns = socket.namespace().clone();
                let event = req["event"].as_str().unwrap_or("ping").to_owned();
                let args: Vec<Value> = req["args"].as_array().cloned().unwrap_or_default();
                if req["ack"] != true {
                    let _ = ns.server_side_emit(
                        &event,
                        socketio::RawArgs::Json(json_args(&args), Vec::new()),
                    );
                    let _ = ev.ack(("sent",));
                    return;
                }
                tokio::spawn(async move {
                    let acks = ns
                        .server_side_emit_with_ack(&event, &args, Duration::from_secs(2))
                        .await;
                    let body = match acks {
                        Ok(a) => json!({ "responses": a.responses, "complete": a.complete }),
                        Err(e) => json!({ "error": e.to_string() }),
                    };
                    let _ = ev.ack((body,));
                });
            })
            .on_server_side_emit(|ns: &Arc<Namespace>, event| {
                let _ = ns
                    .broadcast()
                    .local()
                    .emit("sse", (&event.name, &event.args));
                if let Some(ack) = event.ack {
                    ack(json!({ "herald": true, "event": event.name, "args": event.args }));
                }
            })
            .build(Config::default());
        let listener = bench_app::listen("cluster-node", port);
        loop {
            if let Ok((stream, remote)) = listener.accept().await {
                tokio::spawn(server.clone().serve_connection(stream, remote));
            }
        }
    });
}

/// The operator `req.rooms` and `req.except` name.
fn targets(ns: &Arc<Namespace>, req: &Value) -> BroadcastOperator {
    let mut op = ns.broadcast();
    for room in req["rooms"].as_array().into_iter().flatten() {
        if let Some(r) = room.as_str() {
            op = op.to(r.to_owned());
        }
    }
    for room in req["except"].as_array().into_iter().flatten() {
        if let Some(r) = room.as_str() {
            op = op.except(r.to_owned());
        }
    }
    if req["local"] == true {
        op = op.local();
    }
    op
}

/// `req.args` (a list) as the arguments of an emit.
fn args_of(req: &Value) -> socketio::RawArgs {
    let args: Vec<Value> = req["args"].as_array().cloned().unwrap_or_default();
    socketio::RawArgs::Json(json_args(&args), Vec::new())
}

/// Arguments in the JSON form an emit takes: each after a comma.
fn json_args(args: &[Value]) -> bytes::Bytes {
    let mut out = String::new();
    for a in args {
        out.push(',');
        out.push_str(&a.to_string());
    }
    bytes::Bytes::from(out)
}
