//! The sharded adapter of `@socket.io/redis-adapter` 8.x (`createShardedAdapter`, Redis 7
//! sharded pub/sub: `SSUBSCRIBE`, `SPUBLISH`), spoken as Node speaks it: the cluster
//! messages of `socket.io-adapter`'s `ClusterAdapter`, `{ uid, nsp, type, data }`, JSON
//! unless they carry binary (then msgpack).
//!
//! Channels of a namespace `<nsp>` under the prefix `<key>`:
//!
//! - `<key>#<nsp>#`: every message but the broadcasts to one room in the dynamic modes;
//!   what every node subscribes (and how the nodes are counted: `PUBSUB SHARDNUMSUB`).
//! - `<key>#<nsp>#<uid>#`: the answers to this node's requests.
//! - `<key>#<nsp>#<room>#`: broadcasts to exactly that room (not with acks), in the modes
//!   `dynamic` (rooms that are not a socket's own id) and `dynamic-private` (every room);
//!   subscribed while the room has members here.
//!
//! Message types (`socket.io-adapter` 2.5): 3 broadcast (with `requestId`: with acks),
//! 4 socketsJoin, 5 socketsLeave, 6 disconnectSockets, 7 fetchSockets, 8 its answer,
//! 9 serverSideEmit (with `requestId`: with acks), 10 its answer, 11 a node's client count
//! of a broadcast with acks, 12 a client's ack. The protocol has no `allRooms`: it answers
//! this node's rooms.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rmpv::Value;
use socketio::adapter::BoxFuture;
use socketio::{
    AckError, AckResponse, Adapter, Args, BroadcastOptions, Error, FetchedSocket, LocalAdapter,
    Namespace, ServerAcks, ServerEvent, Str,
};

use crate::bus::{Bus, Inbound};
use crate::classic::{
    ack_response, event_of, first_ack_arg, read_opts, remote_socket, write_opts, write_packet,
};
use crate::pending::Pending;
use crate::value::{self, field, map, text, texts};

/// The `ClusterAdapter`'s message types.
mod kind {
    pub(super) const BROADCAST: u64 = 3;
    pub(super) const SOCKETS_JOIN: u64 = 4;
    pub(super) const SOCKETS_LEAVE: u64 = 5;
    pub(super) const DISCONNECT_SOCKETS: u64 = 6;
    pub(super) const FETCH_SOCKETS: u64 = 7;
    pub(super) const FETCH_SOCKETS_RESPONSE: u64 = 8;
    pub(super) const SERVER_SIDE_EMIT: u64 = 9;
    pub(super) const SERVER_SIDE_EMIT_RESPONSE: u64 = 10;
    pub(super) const BROADCAST_CLIENT_COUNT: u64 = 11;
    pub(super) const BROADCAST_ACK: u64 = 12;
}

/// Which rooms have channels of their own (Node's `subscriptionMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriptionMode {
    /// Two channels per namespace; every node gets every broadcast.
    Static,
    /// A channel per room that is not a socket's own id (Node's default).
    #[default]
    Dynamic,
    /// A channel per room, sockets' own ids included.
    DynamicPrivate,
}

impl SubscriptionMode {
    /// `static`, `dynamic` or `dynamic-private`.
    pub fn parse(name: &str) -> Option<SubscriptionMode> {
        Some(match name {
            "static" => SubscriptionMode::Static,
            "dynamic" => SubscriptionMode::Dynamic,
            "dynamic-private" => SubscriptionMode::DynamicPrivate,
            _ => return None,
        })
    }

    /// Whether `room` has a channel of its own.
    fn separate(self, room: &str) -> bool {
        match self {
            SubscriptionMode::Static => false,
            // Node tells a socket's room by its 20 characters.
            SubscriptionMode::Dynamic => room.len() != 20,
            SubscriptionMode::DynamicPrivate => true,
        }
    }
}

/// The adapter of one namespace on the sharded Redis adapter.
pub(crate) struct ShardedAdapter {
    bus: Arc<Bus>,
    ns: Weak<Namespace>,
    nsp: String,
    uid: String,
    mode: SubscriptionMode,
    /// `<key>#<nsp>#`
    channel: String,
    /// `<key>#<nsp>#<uid>#`
    response_channel: String,
    timeout: Duration,
    pending: Pending,
    me: Weak<ShardedAdapter>,
}

impl ShardedAdapter {
    pub(crate) fn new(
        bus: Arc<Bus>,
        nsp: &str,
        ns: Weak<Namespace>,
        timeout: Duration,
        mode: SubscriptionMode,
    ) -> Arc<ShardedAdapter> {
        let key = bus.prefix.clone();
        // As Node's: 8 random bytes in hex.
        let uid = format!("{:016x}", rand::random::<u64>());
        Arc::new_cyclic(|me| ShardedAdapter {
            channel: format!("{key}#{nsp}#"),
            response_channel: format!("{key}#{nsp}#{uid}#"),
            bus,
            ns,
            nsp: nsp.to_owned(),
            uid,
            mode,
            timeout,
            pending: Pending::default(),
            me: me.clone(),
        })
    }

    fn room_channel(&self, room: &str) -> String {
        format!("{}{room}#", self.channel)
    }

    /// Publishes `message` (`{ type, data }`; `uid` and `nsp` are added) on `channel`.
    fn publish_on(&self, channel: String, mut message: Vec<(&'static str, Value)>) {
        message.push(("uid", Value::from(self.uid.as_str())));
        message.push(("nsp", Value::from(self.nsp.as_str())));
        self.bus.publish(channel, encode(&map(message)));
    }

    fn publish(&self, kind: u64, data: Vec<(&'static str, Value)>) {
        self.publish_on(
            self.channel.clone(),
            vec![("type", Value::from(kind)), ("data", map(data))],
        );
    }

    /// Answers the node `uid` on its own channel.
    fn respond(&self, uid: &str, kind: u64, data: Vec<(&'static str, Value)>) {
        self.publish_on(
            format!("{}{uid}#", self.channel),
            vec![("type", Value::from(kind)), ("data", map(data))],
        );
    }

    /// Nodes of the namespace, this one included (`SHARDNUMSUB`); 1 when Redis does not
    /// answer.
    async fn count(&self) -> usize {
        self.bus.numsub(&self.channel).await.unwrap_or(1)
    }

    /// Publishes a request each other node answers once, and gathers the answers until
    /// all came or the timeout.
    async fn ask(
        &self,
        kind: u64,
        mut data: Vec<(&'static str, Value)>,
        timeout: Duration,
    ) -> (Vec<Value>, bool) {
        let nodes = self.count().await.saturating_sub(1);
        if nodes == 0 {
            return (Vec::new(), true);
        }
        let id = crate::classic::random_id(16);
        data.push(("requestId", Value::from(id.as_str())));
        let rx = self.pending.expect(&id);
        self.publish(kind, data);
        let mut n = 0;
        self.pending
            .gather(id, rx, timeout, |_| {
                n += 1;
                n >= nodes
            })
            .await
    }

    /// A cluster message (not an answer to this node).
    fn on_message(&self, ns: &Arc<Namespace>, message: &Value) -> Result<(), String> {
        let kind = field(message, "type")
            .and_then(Value::as_u64)
            .ok_or("a message without a type")?;
        let from = field(message, "uid").and_then(Value::as_str).unwrap_or("");
        if from == self.uid {
            return Ok(());
        }
        if field(message, "nsp").and_then(Value::as_str) != Some(self.nsp.as_str()) {
            return Ok(());
        }
        let empty = Value::Nil;
        let data = field(message, "data").unwrap_or(&empty);
        let request_id = field(data, "requestId").and_then(text);
        match kind {
            kind::BROADCAST => {
                let packet = field(data, "packet").ok_or("a broadcast without a packet")?;
                let (event, args) = event_of(packet, ns.parser())?;
                let mut opts = read_opts(field(data, "opts"));
                opts.local = true;
                match request_id {
                    Some(id) => {
                        opts.timeout = self.timeout;
                        self.remote_broadcast_with_ack(ns, from, id, &event, &args, &opts);
                    }
                    None => {
                        opts.ack_id = field(packet, "id")
                            .and_then(Value::as_u64)
                            .filter(|id| *id >= socketio::SHARED_ACK_IDS);
                        LocalAdapter
                            .broadcast(ns, &event, &args, &opts)
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
            kind::SOCKETS_JOIN | kind::SOCKETS_LEAVE => {
                let opts = read_opts(field(data, "opts"));
                let rooms: Vec<Str> = texts(field(data, "rooms"))
                    .into_iter()
                    .map(Str::from)
                    .collect();
                if kind == kind::SOCKETS_JOIN {
                    LocalAdapter.add_sockets(ns, &opts, &rooms);
                } else {
                    LocalAdapter.del_sockets(ns, &opts, &rooms);
                }
            }
            kind::DISCONNECT_SOCKETS => {
                let opts = read_opts(field(data, "opts"));
                let close = field(data, "close")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                LocalAdapter.disconnect_sockets(ns, &opts, close);
            }
            kind::FETCH_SOCKETS => {
                let id = request_id.ok_or("a fetch without a request id")?;
                let opts = read_opts(field(data, "opts"));
                let sockets: Vec<Value> = ns
                    .local_sockets(&opts)
                    .into_iter()
                    .map(|s| {
                        let found = FetchedSocket::of_local(s);
                        map(vec![
                            ("id", Value::from(found.id.as_str())),
                            ("handshake", value::from_json(&found.handshake, &[])),
                            (
                                "rooms",
                                Value::Array(
                                    found
                                        .rooms
                                        .iter()
                                        .map(|r| Value::from(r.as_str()))
                                        .collect(),
                                ),
                            ),
                            ("data", value::from_json(&found.data, &[])),
                        ])
                    })
                    .collect();
                self.respond(
                    from,
                    kind::FETCH_SOCKETS_RESPONSE,
                    vec![
                        ("requestId", Value::from(id.as_str())),
                        ("sockets", Value::Array(sockets)),
                    ],
                );
            }
            kind::SERVER_SIDE_EMIT => {
                let packet = field(data, "packet")
                    .and_then(Value::as_array)
                    .ok_or("a server-side emit without its packet")?;
                let Some(name) = packet.first().and_then(Value::as_str) else {
                    return Err("a server-side emit without an event name".into());
                };
                let args = packet[1..].iter().map(value::to_plain_json).collect();
                let ack = match (request_id, self.me.upgrade()) {
                    (Some(id), Some(me)) => {
                        let from = from.to_owned();
                        Some(Box::new(move |answer: serde_json::Value| {
                            me.respond(
                                &from,
                                kind::SERVER_SIDE_EMIT_RESPONSE,
                                vec![
                                    ("requestId", Value::from(id.as_str())),
                                    ("packet", value::from_json(&answer, &[])),
                                ],
                            );
                        })
                            as Box<dyn FnOnce(serde_json::Value) + Send>)
                    }
                    _ => None,
                };
                ns.server_event(ServerEvent {
                    name: name.to_owned(),
                    args,
                    ack,
                });
            }
            kind::FETCH_SOCKETS_RESPONSE
            | kind::SERVER_SIDE_EMIT_RESPONSE
            | kind::BROADCAST_CLIENT_COUNT
            | kind::BROADCAST_ACK => self.on_response(message)?,
            // Heartbeats and the like of other cluster adapters: nothing to do.
            _ => {}
        }
        Ok(())
    }

    fn on_response(&self, response: &Value) -> Result<(), String> {
        let id = field(response, "data")
            .and_then(|d| field(d, "requestId"))
            .and_then(text)
            .ok_or("a response without a request id")?;
        self.pending.answer(&id, response.clone());
        Ok(())
    }

    /// Emits another node's broadcast with acks to this node's sockets, tells that node
    /// how many clients got it, then passes on each client's ack as it comes.
    fn remote_broadcast_with_ack(
        &self,
        ns: &Arc<Namespace>,
        from: &str,
        id: String,
        event: &str,
        args: &crate::value::RemoteArgs,
        opts: &BroadcastOptions,
    ) {
        let sockets = ns.local_sockets(opts);
        self.respond(
            from,
            kind::BROADCAST_CLIENT_COUNT,
            vec![
                ("requestId", Value::from(id.as_str())),
                ("clientCount", Value::from(sockets.len() as u64)),
            ],
        );
        let Some(me) = self.me.upgrade() else { return };
        for socket in sockets {
            let wait = socket.emit_with_ack_dyn(event, args, opts.timeout);
            let (me, id, from) = (me.clone(), id.clone(), from.to_owned());
            tokio::spawn(async move {
                if let Ok(answer) = wait.await {
                    me.respond(
                        &from,
                        kind::BROADCAST_ACK,
                        vec![
                            ("requestId", Value::from(id.as_str())),
                            ("packet", first_ack_arg(&answer)),
                        ],
                    );
                }
            });
        }
    }
}

impl Inbound for ShardedAdapter {
    fn on_broadcast(&self, rest: &str, payload: &[u8]) -> Result<(), String> {
        let Some(ns) = self.ns.upgrade() else {
            return Ok(());
        };
        let message = value::decode(payload)?;
        if rest.strip_suffix('#') == Some(self.uid.as_str()) {
            return self.on_response(&message);
        }
        self.on_message(&ns, &message)
    }

    fn on_request(&self, _payload: &[u8]) -> Result<(), String> {
        Err("the sharded adapter has no request channel".into())
    }

    fn on_response(&self, _payload: &[u8]) -> Result<(), String> {
        Err("the sharded adapter has no response channel".into())
    }
}

/// JSON, unless the message carries binary (then msgpack), as Node's sharded adapter.
fn encode(message: &Value) -> Vec<u8> {
    if value::has_binary(message) {
        value::to_msgpack(message)
    } else {
        value::to_plain_json(message).to_string().into_bytes()
    }
}

impl Adapter for ShardedAdapter {
    fn init(&self, _ns: &Arc<Namespace>) {
        self.bus.register(&self.nsp, self.me.clone());
        self.bus.want(self.channel.clone());
        self.bus.want(self.response_channel.clone());
    }

    fn close(&self) {
        self.bus.unregister(&self.nsp);
        self.bus.unwant(&self.channel);
        self.bus.unwant(&self.response_channel);
    }

    fn room_created(&self, room: &str) {
        if self.mode.separate(room) {
            self.bus.want(self.room_channel(room));
        }
    }

    fn room_deleted(&self, room: &str) {
        if self.mode.separate(room) {
            self.bus.unwant(&self.room_channel(room));
        }
    }

    fn keeps_handshake(&self) -> bool {
        true
    }

    fn server_count(&self, _ns: &Arc<Namespace>) -> BoxFuture<usize> {
        let Some(me) = self.me.upgrade() else {
            return Box::pin(async { 1 });
        };
        Box::pin(async move { me.count().await.max(1) })
    }

    fn broadcast(
        &self,
        ns: &Arc<Namespace>,
        event: &str,
        args: &dyn Args,
        opts: &BroadcastOptions,
    ) -> Result<usize, Error> {
        if !opts.local {
            let packet = write_packet(&self.nsp, event, args, opts.ack_id)?;
            let channel = match opts.rooms.as_slice() {
                [room] if self.mode.separate(room.as_str()) => self.room_channel(room.as_str()),
                _ => self.channel.clone(),
            };
            self.publish_on(
                channel,
                vec![
                    ("type", Value::from(kind::BROADCAST)),
                    (
                        "data",
                        map(vec![("packet", packet), ("opts", write_opts(opts, None))]),
                    ),
                ],
            );
        }
        LocalAdapter.broadcast(ns, event, args, opts)
    }

    fn broadcast_with_ack(
        &self,
        ns: &Arc<Namespace>,
        event: &str,
        args: &dyn Args,
        opts: &BroadcastOptions,
    ) -> BoxFuture<Vec<Result<AckResponse, AckError>>> {
        let local = LocalAdapter.broadcast_with_ack(ns, event, args, opts);
        let Some(me) = self.me.upgrade().filter(|_| !opts.local) else {
            return local;
        };
        let Ok(packet) = write_packet(&self.nsp, event, args, None) else {
            return local;
        };
        let id = crate::classic::random_id(16);
        // Always on the namespace's channel: every node counts its clients.
        let data = vec![
            ("packet", packet),
            ("requestId", Value::from(id.as_str())),
            ("opts", write_opts(opts, Some(opts.timeout))),
        ];
        let timeout = opts.timeout;
        let parser = ns.parser();
        Box::pin(async move {
            let nodes = me.count().await.saturating_sub(1);
            let mut results = Vec::new();
            if nodes > 0 {
                let rx = me.pending.expect(&id);
                me.publish(kind::BROADCAST, data);
                let mut counted = 0usize;
                let mut expected = 0usize;
                me.pending
                    .gather(id, rx, timeout, |answer| {
                        let data = field(answer, "data");
                        match field(answer, "type").and_then(Value::as_u64) {
                            Some(kind::BROADCAST_CLIENT_COUNT) => {
                                counted += 1;
                                expected += data
                                    .and_then(|d| field(d, "clientCount"))
                                    .and_then(Value::as_u64)
                                    .map_or(0, |n| n as usize);
                            }
                            Some(kind::BROADCAST_ACK) => {
                                let arg = data
                                    .and_then(|d| field(d, "packet"))
                                    .cloned()
                                    .unwrap_or(Value::Nil);
                                results.push(Ok(ack_response(&arg, parser)));
                            }
                            _ => {}
                        }
                        counted >= nodes && results.len() >= expected
                    })
                    .await;
                let got = results.len();
                for _ in got..expected {
                    results.push(Err(AckError::Timeout));
                }
            }
            let mut all = local.await;
            all.extend(results);
            all
        })
    }

    fn add_sockets(&self, ns: &Arc<Namespace>, opts: &BroadcastOptions, rooms: &[Str]) {
        LocalAdapter.add_sockets(ns, opts, rooms);
        if !opts.local {
            self.publish(
                kind::SOCKETS_JOIN,
                vec![("opts", write_opts(opts, None)), ("rooms", strs(rooms))],
            );
        }
    }

    fn del_sockets(&self, ns: &Arc<Namespace>, opts: &BroadcastOptions, rooms: &[Str]) {
        LocalAdapter.del_sockets(ns, opts, rooms);
        if !opts.local {
            self.publish(
                kind::SOCKETS_LEAVE,
                vec![("opts", write_opts(opts, None)), ("rooms", strs(rooms))],
            );
        }
    }

    fn disconnect_sockets(&self, ns: &Arc<Namespace>, opts: &BroadcastOptions, close: bool) {
        LocalAdapter.disconnect_sockets(ns, opts, close);
        if !opts.local {
            self.publish(
                kind::DISCONNECT_SOCKETS,
                vec![
                    ("opts", write_opts(opts, None)),
                    ("close", Value::Boolean(close)),
                ],
            );
        }
    }

    fn fetch_sockets(
        &self,
        ns: &Arc<Namespace>,
        opts: &BroadcastOptions,
    ) -> BoxFuture<Vec<FetchedSocket>> {
        let local = LocalAdapter.fetch_sockets(ns, opts);
        let Some(me) = self.me.upgrade().filter(|_| !opts.local) else {
            return local;
        };
        let data = vec![("opts", write_opts(opts, None))];
        let timeout = self.timeout;
        Box::pin(async move {
            let mut found = local.await;
            for answer in me.ask(kind::FETCH_SOCKETS, data, timeout).await.0 {
                let sockets = field(&answer, "data")
                    .and_then(|d| field(d, "sockets"))
                    .and_then(Value::as_array);
                if let Some(sockets) = sockets {
                    found.extend(sockets.iter().filter_map(remote_socket));
                }
            }
            found
        })
    }

    fn all_rooms(&self, ns: &Arc<Namespace>) -> BoxFuture<Vec<Str>> {
        // The cluster protocol has no such request (Node's sharded adapter has none).
        let rooms = LocalAdapter::rooms(ns);
        Box::pin(async move { rooms })
    }

    fn server_side_emit(
        &self,
        _ns: &Arc<Namespace>,
        event: &str,
        args: &dyn Args,
    ) -> Result<(), Error> {
        let mut packet = vec![Value::from(event)];
        packet.extend(value::args_to_msgpack(args)?);
        self.publish(
            kind::SERVER_SIDE_EMIT,
            vec![("packet", Value::Array(packet))],
        );
        Ok(())
    }

    fn server_side_emit_with_ack(
        &self,
        _ns: &Arc<Namespace>,
        event: &str,
        args: &[serde_json::Value],
        timeout: Duration,
    ) -> Result<BoxFuture<ServerAcks>, Error> {
        let Some(me) = self.me.upgrade() else {
            return Ok(Box::pin(async { ServerAcks::default() }));
        };
        let mut packet = vec![Value::from(event)];
        packet.extend(args.iter().map(|a| value::from_json(a, &[])));
        Ok(Box::pin(async move {
            let (answers, complete) = me
                .ask(
                    kind::SERVER_SIDE_EMIT,
                    vec![("packet", Value::Array(packet))],
                    timeout,
                )
                .await;
            ServerAcks {
                responses: answers
                    .iter()
                    .map(|a| {
                        field(a, "data")
                            .and_then(|d| field(d, "packet"))
                            .map_or(serde_json::Value::Null, value::to_plain_json)
                    })
                    .collect(),
                complete,
            }
        }))
    }
}

fn strs(rooms: &[Str]) -> Value {
    Value::Array(rooms.iter().map(|r| Value::from(r.as_str())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_their_room_channels() {
        assert_eq!(
            SubscriptionMode::parse("dynamic"),
            Some(SubscriptionMode::Dynamic)
        );
        assert_eq!(SubscriptionMode::parse("shards"), None);
        let sid = "abcdefghij0123456789";
        assert!(SubscriptionMode::Dynamic.separate("news"));
        assert!(!SubscriptionMode::Dynamic.separate(sid));
        assert!(SubscriptionMode::DynamicPrivate.separate(sid));
        assert!(!SubscriptionMode::Static.separate("news"));
    }

    #[test]
    fn json_unless_binary() {
        let plain = map(vec![
            ("type", Value::from(3u64)),
            ("data", Value::from("x")),
        ]);
        assert_eq!(encode(&plain)[0], b'{');
        let binary = map(vec![("data", Value::Binary(vec![1, 2]))]);
        assert_ne!(encode(&binary)[0], b'{');
        assert_eq!(value::decode(&encode(&binary)).unwrap(), binary);
    }
}
