//! Herald nodes on a private `redis-server` (started by each test on a free port, never
//! the shared one): broadcasts, rooms and every request type across nodes, interest
//! subscriptions, and the failure cases (Redis restarted, Redis down at start, a node
//! that never answers).

#![allow(clippy::unwrap_used)] // helpers unwrap what the test set up

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use cluster::{Options, RedisCluster};
use futures_util::{SinkExt, StreamExt};
use socketio::{Config, Server, SharedData};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `redis-server` of the test's own, stopped when dropped.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis { port, child: None };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A plain connection, to look at Redis from outside.
    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Waits (up to 2 s) until `n` connections subscribe `channel`.
    async fn wait_numsub(&self, channel: &str, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let now = self.numsub(channel).await;
            if now == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{channel}: {now} subscribers, not {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `PUBSUB SHARDNUMSUB channel`, once it is `n`.
    async fn wait_shardnumsub(&self, channel: &str, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let reply: Vec<redis::Value> = redis::cmd("PUBSUB")
                .arg("SHARDNUMSUB")
                .arg(channel)
                .query_async(&mut self.conn().await)
                .await
                .unwrap();
            let now = match reply.get(1) {
                Some(redis::Value::Int(k)) => *k,
                _ => -1,
            };
            if now == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "SHARDNUMSUB {channel}: {now}, not {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn numsub(&self, channel: &str) -> i64 {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut self.conn().await)
            .await
            .unwrap();
        n
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Node {
    server: Server,
    cluster: RedisCluster,
    addr: SocketAddr,
}

impl Node {
    async fn start(redis_url: &str) -> Node {
        Node::start_with(redis_url, None).await
    }

    async fn start_with(redis_url: &str, sharded: Option<cluster::SubscriptionMode>) -> Node {
        let mut options = Options::new(redis_url);
        options.sharded = sharded;
        options.request_timeout = Duration::from_millis(1500);
        let cluster = RedisCluster::new(options).unwrap();
        let server = Server::builder()
            .adapter(Arc::new(cluster.clone()))
            .ns("/", |socket, req| {
                let name = req.auth_json()["name"].clone();
                socket.set_data(SharedData(serde_json::json!({ "name": name })));
                socket.on("join", |socket, ev| {
                    let (room,): (String,) = ev.args().unwrap();
                    socket.join(room);
                    ev.ack(("joined",)).unwrap();
                });
                socket.on("leave", |socket, ev| {
                    let (room,): (String,) = ev.args().unwrap();
                    socket.leave(&room.into());
                    ev.ack(("left",)).unwrap();
                });
            })
            .on_server_side_emit(|ns, event| {
                if let Some(ack) = event.ack {
                    ack(serde_json::json!({ "sockets": ns.len(), "event": event.name, "args": event.args }));
                }
            })
            .build(Config::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let (stream, remote) = listener.accept().await.unwrap();
                tokio::spawn(s.clone().serve_connection(stream, remote));
            }
        });
        Node {
            server,
            cluster,
            addr,
        }
    }

    fn ns(&self) -> Arc<socketio::Namespace> {
        self.server.of("/").unwrap()
    }

    async fn ready(&self) {
        wait_for(|| self.cluster.is_connected()).await;
    }
}

async fn wait_for(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A raw client on `/` with an auth payload; returns it and its socket id.
async fn client(addr: SocketAddr, name: &str) -> (Ws, String) {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    next_text(&mut ws).await;
    ws.send(Message::text(format!(r#"40{{"name":"{name}"}}"#)))
        .await
        .unwrap();
    let reply = next_text(&mut ws).await;
    let json: serde_json::Value = serde_json::from_str(reply.strip_prefix("40").unwrap()).unwrap();
    (ws, json["sid"].as_str().unwrap().to_owned())
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("open")
            .unwrap();
        match m {
            Message::Text(t) if t.as_str() == "2" => ws.send(Message::text("3")).await.unwrap(),
            Message::Text(t) => return t.to_string(),
            _ => {}
        }
    }
}

async fn silent(ws: &mut Ws) {
    let r = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
    assert!(r.is_err(), "unexpected {r:?}");
}

/// Sends an event with ack id 1 and waits for the ack.
async fn call(ws: &mut Ws, event: &str, arg: &str) {
    ws.send(Message::text(format!(r#"421["{event}","{arg}"]"#)))
        .await
        .unwrap();
    assert!(next_text(ws).await.starts_with("431["));
}

/// Broadcasts to rooms, to a socket's own id, to all with `except`, across two nodes;
/// the room channels are subscribed only where the room has members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_cross_nodes_by_interest() {
    let redis = Redis::start();
    let (a, b) = (
        Node::start(&redis.url()).await,
        Node::start(&redis.url()).await,
    );
    a.ready().await;
    b.ready().await;
    let (mut ca, a_id) = client(a.addr, "ann").await;
    let (mut cb, b_id) = client(b.addr, "bob").await;
    call(&mut ca, "join", "team").await;
    // Only node A has a member of "team": one subscriber on its channel.
    let team = "socket.io#/#team#";
    redis.wait_numsub(team, 1).await;
    // Each socket's own room is subscribed by its node.
    assert_eq!(redis.numsub(&format!("socket.io#/#{b_id}#")).await, 1);

    b.ns().to("team").emit("news", ("from b",)).unwrap();
    assert_eq!(next_text(&mut ca).await, r#"42["news","from b"]"#);
    silent(&mut cb).await;

    a.ns().to(b_id.clone()).emit("direct", (1,)).unwrap();
    assert_eq!(next_text(&mut cb).await, r#"42["direct",1]"#);

    b.ns()
        .broadcast()
        .except(a_id.clone())
        .emit("all", ())
        .unwrap();
    assert_eq!(next_text(&mut cb).await, r#"42["all"]"#);
    silent(&mut ca).await;

    // Binary crosses as binary.
    b.ns()
        .to("team")
        .emit("bin", (socketio::Binary::from(vec![1u8, 2, 3]),))
        .unwrap();
    assert_eq!(
        next_text(&mut ca).await,
        r#"451-["bin",{"_placeholder":true,"num":0}]"#
    );
    match ca.next().await.unwrap().unwrap() {
        Message::Binary(data) => assert_eq!(&data[..], &[1, 2, 3]),
        other => panic!("expected the attachment, got {other:?}"),
    }

    // A shared ack id travels with the packet (the IM service's delivery acks).
    let id = socketio::SHARED_ACK_IDS + 5;
    b.ns().to("team").ack_id(id).emit("acked", ()).unwrap();
    assert_eq!(next_text(&mut ca).await, format!(r#"42{id}["acked"]"#));

    // `local` stays on its node.
    b.ns().broadcast().local().emit("mine", ()).unwrap();
    assert_eq!(next_text(&mut cb).await, r#"42["mine"]"#);
    silent(&mut ca).await;

    // The last member leaves: the channel is unsubscribed.
    call(&mut ca, "leave", "team").await;
    redis.wait_numsub(team, 0).await;
    let stats = a.cluster.stats();
    assert!(stats.published.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // The gauge follows: the namespace's four channels and the socket's own room.
    wait_for(|| {
        stats
            .subscriptions
            .load(std::sync::atomic::Ordering::Relaxed)
            == 5
    })
    .await;
}

/// fetchSockets, allRooms, socketsJoin/Leave, disconnectSockets, serverSideEmit with
/// acks and broadcasts with acks, across two nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cross_nodes() {
    let redis = Redis::start();
    let (a, b) = (
        Node::start(&redis.url()).await,
        Node::start(&redis.url()).await,
    );
    a.ready().await;
    b.ready().await;
    let (mut ca, a_id) = client(a.addr, "ann").await;
    let (mut cb, b_id) = client(b.addr, "bob").await;
    call(&mut cb, "join", "blue").await;
    // The request channel is subscribed by both nodes before requests are counted.
    redis.wait_numsub("socket.io-request#/#", 2).await;
    assert_eq!(a.ns().server_count().await, 2);

    let found = a.ns().broadcast().fetch_sockets().await;
    let mut ids: Vec<&str> = found.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![a_id.as_str(), b_id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    let bob = found.iter().find(|s| s.id.as_str() == b_id).unwrap();
    assert!(bob.local.is_none());
    assert_eq!(bob.data, serde_json::json!({"name": "bob"}));
    assert_eq!(bob.handshake["auth"], serde_json::json!({"name": "bob"}));
    assert_eq!(bob.handshake["query"]["transport"], "websocket");
    assert_eq!(
        bob.rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        [b_id.as_str(), "blue"]
    );
    let in_blue = a.ns().to("blue").fetch_sockets().await;
    assert_eq!(in_blue.len(), 1);

    let rooms = a.ns().all_rooms().await;
    assert!(rooms.iter().any(|r| r.as_str() == "blue"), "{rooms:?}");
    assert!(rooms.iter().any(|r| r.as_str() == a_id));

    // socketsJoin from A reaches B's socket; socketsLeave takes it out again.
    a.ns().to("blue").join("green");
    wait_for(|| b.ns().rooms().iter().any(|(r, _)| r.as_str() == "green")).await;
    a.ns().broadcast().leave("green");
    wait_for(|| !b.ns().rooms().iter().any(|(r, _)| r.as_str() == "green")).await;

    // serverSideEmit with acks: B answers once.
    let acks = a
        .ns()
        .server_side_emit_with_ack("count", &[serde_json::json!(7)], Duration::from_secs(2))
        .await
        .unwrap();
    assert!(acks.complete);
    assert_eq!(
        acks.responses,
        [serde_json::json!({"sockets": 1, "event": "count", "args": [7]})]
    );

    // A broadcast with acks: both clients answer, whichever node they are on.
    let a_ns = a.ns();
    let wait = tokio::spawn(async move {
        a_ns.broadcast()
            .timeout(Duration::from_secs(2))
            .emit_with_ack("ask", ("q",))
            .await
    });
    for ws in [&mut ca, &mut cb] {
        let packet = next_text(ws).await;
        let rest = packet.strip_prefix("42").unwrap();
        let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
        assert_eq!(&rest[id.len()..], r#"["ask","q"]"#);
        ws.send(Message::text(format!(r#"43{id}["yes"]"#)))
            .await
            .unwrap();
    }
    let results = wait.await.unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    for r in results {
        let (answer,): (String,) = r.unwrap().args().unwrap();
        assert_eq!(answer, "yes");
    }

    // disconnectSockets from A disconnects B's socket.
    a.ns().to(b_id.clone()).disconnect();
    assert_eq!(next_text(&mut cb).await, "41");
    wait_for(|| b.ns().is_empty()).await;
}

/// A node counted by Redis that never answers (killed or paused): requests end at
/// their timeout with what the others answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_costs_a_timeout_not_a_hang() {
    let redis = Redis::start();
    let (a, b) = (
        Node::start(&redis.url()).await,
        Node::start(&redis.url()).await,
    );
    a.ready().await;
    b.ready().await;
    let (_cb, b_id) = client(b.addr, "bob").await;
    // A subscriber of the request channel that never answers.
    let client = redis::Client::open(format!("{}?protocol=resp3", redis.url())).unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let config = redis::AsyncConnectionConfig::new().set_push_sender(tx);
    let mut mute = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    mute.subscribe("socket.io-request#/#").await.unwrap();
    redis.wait_numsub("socket.io-request#/#", 3).await;
    let started = Instant::now();
    let found = a.ns().broadcast().fetch_sockets().await;
    let took = started.elapsed();
    assert_eq!(found.len(), 1, "B's socket, from B's answer");
    assert_eq!(found[0].id.as_str(), b_id);
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(3),
        "ended at the timeout: {took:?}"
    );
    let acks = a
        .ns()
        .server_side_emit_with_ack("count", &[], Duration::from_millis(500))
        .await
        .unwrap();
    assert!(!acks.complete);
    assert_eq!(acks.responses.len(), 1);
}

/// Redis restarted: the nodes resubscribe within a second of it being back, and
/// broadcasts flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_resubscribes() {
    let mut redis = Redis::start();
    let (a, b) = (
        Node::start(&redis.url()).await,
        Node::start(&redis.url()).await,
    );
    a.ready().await;
    b.ready().await;
    let (mut ca, _) = client(a.addr, "ann").await;
    call(&mut ca, "join", "team").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.ns().to("team").emit("before", ()).unwrap();
    assert_eq!(next_text(&mut ca).await, r#"42["before"]"#);

    redis.stop();
    wait_for(|| !a.cluster.is_connected() && !b.cluster.is_connected()).await;
    // While Redis is away, the nodes still serve their own clients.
    a.ns().to("team").emit("alone", ()).unwrap();
    assert_eq!(next_text(&mut ca).await, r#"42["alone"]"#);
    redis.restart();
    let back = Instant::now();
    loop {
        if redis.numsub("socket.io#/#team#").await == 1
            && redis.numsub("socket.io-request#/#").await == 2
        {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "not resubscribed within 1 s of Redis being back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for(|| b.cluster.is_connected()).await;
    b.ns().to("team").emit("after", ()).unwrap();
    assert_eq!(next_text(&mut ca).await, r#"42["after"]"#);
    assert!(
        a.cluster
            .stats()
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

/// Redis down when the node starts: it starts and serves alone, then joins when Redis
/// comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start() {
    let mut redis = Redis::start();
    redis.stop();
    let a = Node::start(&redis.url()).await;
    let (mut ca, _) = client(a.addr, "ann").await;
    assert!(!a.cluster.is_connected());
    a.ns().broadcast().emit("alone", ()).unwrap();
    assert_eq!(next_text(&mut ca).await, r#"42["alone"]"#);
    // Requests answer at once with this node's part.
    assert_eq!(a.ns().broadcast().fetch_sockets().await.len(), 1);
    redis.restart();
    a.ready().await;
    let b = Node::start(&redis.url()).await;
    b.ready().await;
    redis.wait_numsub("socket.io-request#/#", 2).await;
    b.ns().broadcast().emit("joined", ()).unwrap();
    assert_eq!(next_text(&mut ca).await, r#"42["joined"]"#);
}

/// Garbage on the cluster's channels is counted and ignored; the node keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_ignored() {
    let redis = Redis::start();
    let a = Node::start(&redis.url()).await;
    a.ready().await;
    let (mut ca, _) = client(a.addr, "ann").await;
    redis.wait_numsub("socket.io-request#/#", 1).await;
    let mut conn = redis.conn().await;
    for (channel, payload) in [
        ("socket.io#/#", &b"\xc1"[..]),
        ("socket.io#/#", b"\x93\xa1x"),
        ("socket.io#/#", b"{\"not\":\"an array\"}"),
        ("socket.io-request#/#", b"{\"type\":\"x\"}"),
        ("socket.io-request#/#", b"{\"type\":99}"),
        ("socket.io-request#/#", b"{broken"),
        ("socket.io-response#/#", b"{}"),
    ] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    wait_for(|| {
        a.cluster
            .stats()
            .malformed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 7
    })
    .await;
    // A well-formed broadcast from "another node" (an emitter) still arrives.
    let good = rmpv::Value::Array(vec![
        rmpv::Value::from("emitter"),
        rmpv::Value::Map(vec![
            (rmpv::Value::from("type"), rmpv::Value::from(2)),
            (
                rmpv::Value::from("data"),
                rmpv::Value::Array(vec![rmpv::Value::from("ok")]),
            ),
            (rmpv::Value::from("nsp"), rmpv::Value::from("/")),
        ]),
        rmpv::Value::Map(vec![]),
    ]);
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &good).unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("socket.io#/#")
        .arg(payload)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(next_text(&mut ca).await, r#"42["ok"]"#);
}

/// The sharded adapter (`SSUBSCRIBE`, `SPUBLISH`, Node's cluster messages): in the
/// dynamic mode a room has a channel of its own, subscribed while it has members here,
/// and a socket's own room has none; broadcasts, binary, socketsJoin/Leave,
/// fetchSockets, serverSideEmit with acks, broadcasts with acks and disconnectSockets
/// cross the nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_adapter_cross_nodes() {
    let redis = Redis::start();
    let mode = Some(cluster::SubscriptionMode::Dynamic);
    let (a, b) = (
        Node::start_with(&redis.url(), mode).await,
        Node::start_with(&redis.url(), mode).await,
    );
    a.ready().await;
    b.ready().await;
    let (mut ca, _) = client(a.addr, "ann").await;
    let (mut cb, b_id) = client(b.addr, "bob").await;
    redis.wait_shardnumsub("socket.io#/#", 2).await;
    assert_eq!(a.ns().server_count().await, 2);
    call(&mut ca, "join", "team").await;
    redis.wait_shardnumsub("socket.io#/#team#", 1).await;
    redis
        .wait_shardnumsub(&format!("socket.io#/#{b_id}#"), 0)
        .await;

    b.ns().to("team").emit("news", ("from b",)).unwrap();
    assert_eq!(next_text(&mut ca).await, r#"42["news","from b"]"#);
    silent(&mut cb).await;
    a.ns().to(b_id.clone()).emit("direct", (1,)).unwrap();
    assert_eq!(next_text(&mut cb).await, r#"42["direct",1]"#);
    b.ns()
        .to("team")
        .emit("bin", (socketio::Binary::from(vec![1u8, 2, 3]),))
        .unwrap();
    assert_eq!(
        next_text(&mut ca).await,
        r#"451-["bin",{"_placeholder":true,"num":0}]"#
    );
    match ca.next().await.unwrap().unwrap() {
        Message::Binary(data) => assert_eq!(&data[..], &[1, 2, 3]),
        other => panic!("expected the attachment, got {other:?}"),
    }

    let found = a.ns().broadcast().fetch_sockets().await;
    let bob = found
        .iter()
        .find(|s| s.id.as_str() == b_id)
        .expect("bob fetched");
    assert_eq!(bob.data, serde_json::json!({"name": "bob"}));
    assert_eq!(bob.handshake["auth"], serde_json::json!({"name": "bob"}));
    assert_eq!(found.len(), 2);

    a.ns().to(b_id.clone()).join("green");
    wait_for(|| b.ns().rooms().iter().any(|(r, _)| r.as_str() == "green")).await;
    a.ns().broadcast().leave("green");
    wait_for(|| !b.ns().rooms().iter().any(|(r, _)| r.as_str() == "green")).await;

    let acks = a
        .ns()
        .server_side_emit_with_ack("count", &[serde_json::json!(7)], Duration::from_secs(2))
        .await
        .unwrap();
    assert!(acks.complete);
    assert_eq!(
        acks.responses,
        [serde_json::json!({"sockets": 1, "event": "count", "args": [7]})]
    );

    let a_ns = a.ns();
    let wait = tokio::spawn(async move {
        a_ns.broadcast()
            .timeout(Duration::from_secs(2))
            .emit_with_ack("ask", ("q",))
            .await
    });
    for ws in [&mut ca, &mut cb] {
        let packet = next_text(ws).await;
        let rest = packet.strip_prefix("42").unwrap();
        let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
        ws.send(Message::text(format!(r#"43{id}["yes"]"#)))
            .await
            .unwrap();
    }
    let results = wait.await.unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // The last member leaves "team": its channel goes.
    call(&mut ca, "leave", "team").await;
    redis.wait_shardnumsub("socket.io#/#team#", 0).await;

    a.ns().to(b_id.clone()).disconnect();
    assert_eq!(next_text(&mut cb).await, "41");
    wait_for(|| b.ns().is_empty()).await;
}

/// The sharded adapter after a Redis restart: both nodes back on the namespace's channel
/// and the room's within 1 s of Redis, and delivery resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_redis_restart_resubscribes() {
    let mut redis = Redis::start();
    let mode = Some(cluster::SubscriptionMode::Dynamic);
    let (a, b) = (
        Node::start_with(&redis.url(), mode).await,
        Node::start_with(&redis.url(), mode).await,
    );
    a.ready().await;
    b.ready().await;
    let (mut ca, _) = client(a.addr, "ann").await;
    call(&mut ca, "join", "team").await;
    redis.wait_shardnumsub("socket.io#/#team#", 1).await;
    redis.stop();
    wait_for(|| !a.cluster.is_connected() && !b.cluster.is_connected()).await;
    redis.restart();
    let back = Instant::now();
    redis.wait_shardnumsub("socket.io#/#", 2).await;
    redis.wait_shardnumsub("socket.io#/#team#", 1).await;
    assert!(
        back.elapsed() < Duration::from_secs(1),
        "resubscribed {} ms after Redis was back",
        back.elapsed().as_millis()
    );
    wait_for(|| b.cluster.is_connected()).await;
    b.ns().to("team").emit("after", ()).unwrap();
    assert_eq!(next_text(&mut ca).await, r#"42["after"]"#);
}
