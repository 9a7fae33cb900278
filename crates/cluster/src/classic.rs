//! The classic adapter of `@socket.io/redis-adapter` 8.x (`PROTOCOL.md` §4.1), spoken
//! as Node speaks it, with one difference Node's nodes cannot see: a Herald node
//! subscribes the channels of the rooms it has members in, not the catch-all pattern.
//!
//! Channels of a namespace `<nsp>` under the key `<key>`:
//!
//! - `<key>#<nsp>#`: broadcasts to several rooms, or to all; always subscribed.
//! - `<key>#<nsp>#<room>#`: broadcasts to exactly one room (a socket's own id too);
//!   subscribed while the room has members here.
//! - `<key>-request#<nsp>#`: requests; subscribed by one connection per node, which is
//!   how every node counts the others (`PUBSUB NUMSUB`).
//! - `<key>-response#<nsp>#` and `<key>-response#<nsp>#<uid>#`: responses.
//!
//! Every request this node is counted for gets its answer, empty ones included, or the
//! asking node would wait for its whole timeout. Requests that change sockets (join,
//! leave, disconnect) are applied here when made, and applied by every other node on
//! receipt (from anyone, the emitter included, which signs none).

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use rmpv::Value;
use socketio::adapter::BoxFuture;
use socketio::{
    AckError, AckResponse, Adapter, Args, BroadcastOptions, Error, FetchedSocket, LocalAdapter,
    Namespace, Parser, ServerAcks, ServerEvent, Str,
};
use socketio_proto::Data;
use tokio::sync::mpsc;

use crate::bus::{Bus, Inbound};
use crate::pending::Pending;
use crate::value::{self, field, map, text, texts, RemoteArgs};

/// Request types of the classic adapter.
mod kind {
    pub(super) const SOCKETS: u64 = 0;
    pub(super) const ALL_ROOMS: u64 = 1;
    pub(super) const REMOTE_JOIN: u64 = 2;
    pub(super) const REMOTE_LEAVE: u64 = 3;
    pub(super) const REMOTE_DISCONNECT: u64 = 4;
    pub(super) const REMOTE_FETCH: u64 = 5;
    pub(super) const SERVER_SIDE_EMIT: u64 = 6;
    pub(super) const BROADCAST: u64 = 7;
    pub(super) const BROADCAST_CLIENT_COUNT: u64 = 8;
    pub(super) const BROADCAST_ACK: u64 = 9;
}

/// The Socket.IO packet type of an event.
pub(crate) const EVENT: u64 = 2;

/// The adapter of one namespace on the classic Redis adapter.
pub(crate) struct ClassicAdapter {
    bus: Arc<Bus>,
    ns: Weak<Namespace>,
    nsp: String,
    uid: String,
    /// `<key>#<nsp>#`
    channel: String,
    request_channel: String,
    response_channel: String,
    specific_response_channel: String,
    timeout: Duration,
    /// Requests of this node waiting for answers.
    pending: Pending,
    me: Weak<ClassicAdapter>,
}

impl ClassicAdapter {
    pub(crate) fn new(
        bus: Arc<Bus>,
        nsp: &str,
        ns: Weak<Namespace>,
        timeout: Duration,
    ) -> Arc<ClassicAdapter> {
        let key = bus.prefix.clone();
        let uid = random_id(16);
        Arc::new_cyclic(|me| ClassicAdapter {
            channel: format!("{key}#{nsp}#"),
            request_channel: format!("{key}-request#{nsp}#"),
            response_channel: format!("{key}-response#{nsp}#"),
            specific_response_channel: format!("{key}-response#{nsp}#{uid}#"),
            bus,
            ns,
            nsp: nsp.to_owned(),
            uid,
            timeout,
            pending: Pending::default(),
            me: me.clone(),
        })
    }

    fn room_channel(&self, room: &str) -> String {
        format!("{}{room}#", self.channel)
    }

    fn namespace(&self) -> Option<Arc<Namespace>> {
        self.ns.upgrade()
    }

    fn publish_request(&self, request: &Value) {
        self.bus
            .publish(self.request_channel.clone(), value::to_msgpack(request));
    }

    fn publish_json_request(&self, request: &serde_json::Value) {
        self.bus.publish(
            self.request_channel.clone(),
            request.to_string().into_bytes(),
        );
    }

    /// Answers `request` on the asking node's own response channel (every 8.x node
    /// subscribes it), or the shared one for a request that names no node.
    fn respond(&self, request: &Value, payload: Vec<u8>) {
        let channel = match field(request, "uid").and_then(Value::as_str) {
            Some(uid) if !uid.is_empty() && uid != "emitter" => {
                format!("{}{uid}#", self.response_channel)
            }
            _ => self.response_channel.clone(),
        };
        self.bus.publish(channel, payload);
    }

    async fn gather(
        &self,
        id: String,
        rx: mpsc::UnboundedReceiver<Value>,
        timeout: Duration,
        done: impl FnMut(&Value) -> bool,
    ) -> (Vec<Value>, bool) {
        self.pending.gather(id, rx, timeout, done).await
    }

    fn expect(&self, id: &str) -> mpsc::UnboundedReceiver<Value> {
        self.pending.expect(id)
    }

    /// Node counts of the namespace: this node included; 1 when Redis does not answer
    /// (the node then acts alone).
    async fn count(&self) -> usize {
        self.bus.numsub(&self.request_channel).await.unwrap_or(1)
    }

    // --- inbound ---

    /// A message on a broadcast channel; `rest` is the room with its `#`, or empty.
    fn broadcast_in(&self, rest: &str, payload: &[u8]) -> Result<(), String> {
        let Some(ns) = self.namespace() else {
            return Ok(());
        };
        let message = value::decode(payload)?;
        let parts = message.as_array().ok_or("a broadcast is not an array")?;
        let (Some(uid), Some(packet)) = (parts.first(), parts.get(1)) else {
            return Err("a broadcast without its packet".into());
        };
        if uid.as_str() == Some(self.uid.as_str()) {
            return Ok(());
        }
        let nsp = field(packet, "nsp").and_then(Value::as_str).unwrap_or("/");
        if nsp != self.nsp {
            return Ok(());
        }
        let opts_value = parts.get(2);
        let mut opts = read_opts(opts_value);
        opts.local = true;
        opts.ack_id = field(packet, "id")
            .and_then(Value::as_u64)
            .filter(|id| *id >= socketio::SHARED_ACK_IDS);
        if let Some(room) = rest.strip_suffix('#') {
            // A room channel: only what targets exactly that room.
            if opts.rooms.len() != 1 || opts.rooms[0].as_str() != room {
                opts.rooms = vec![Str::from(room.to_owned())];
            }
        }
        let (event, args) = event_of(packet, ns.parser())?;
        LocalAdapter
            .broadcast(&ns, &event, &args, &opts)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// A message on the request channel.
    fn request_in(&self, payload: &[u8]) -> Result<(), String> {
        let Some(ns) = self.namespace() else {
            return Ok(());
        };
        let request = value::decode(payload)?;
        let kind = field(&request, "type")
            .and_then(Value::as_u64)
            .ok_or("a request without a type")?;
        let mine = field(&request, "uid").and_then(Value::as_str) == Some(self.uid.as_str());
        let request_id = field(&request, "requestId").and_then(text);
        match kind {
            kind::SOCKETS => {
                if mine {
                    return Ok(());
                }
                let opts = BroadcastOptions {
                    rooms: texts(field(&request, "rooms"))
                        .into_iter()
                        .map(Str::from)
                        .collect(),
                    ..BroadcastOptions::default()
                };
                let ids: Vec<String> = ns
                    .local_sockets(&opts)
                    .iter()
                    .map(|s| s.id().as_str().to_owned())
                    .collect();
                let answer = serde_json::json!({ "requestId": request_id, "sockets": ids });
                self.respond(&request, answer.to_string().into_bytes());
            }
            kind::ALL_ROOMS => {
                if mine {
                    return Ok(());
                }
                let rooms: Vec<String> = LocalAdapter::rooms(&ns)
                    .iter()
                    .map(|r| r.as_str().to_owned())
                    .collect();
                let answer = serde_json::json!({ "requestId": request_id, "rooms": rooms });
                self.respond(&request, answer.to_string().into_bytes());
            }
            kind::REMOTE_JOIN | kind::REMOTE_LEAVE | kind::REMOTE_DISCONNECT => {
                if mine {
                    // Applied when it was made.
                    return Ok(());
                }
                if let Some(o) = field(&request, "opts") {
                    let opts = read_opts(Some(o));
                    let rooms: Vec<Str> = texts(field(&request, "rooms"))
                        .into_iter()
                        .map(Str::from)
                        .collect();
                    match kind {
                        kind::REMOTE_JOIN => LocalAdapter.add_sockets(&ns, &opts, &rooms),
                        kind::REMOTE_LEAVE => LocalAdapter.del_sockets(&ns, &opts, &rooms),
                        _ => {
                            let close = field(&request, "close")
                                .and_then(Value::as_bool)
                                .unwrap_or(false);
                            LocalAdapter.disconnect_sockets(&ns, &opts, close);
                        }
                    }
                } else {
                    self.legacy_socket_request(&ns, kind, &request, request_id);
                }
            }
            kind::REMOTE_FETCH => {
                if mine {
                    return Ok(());
                }
                let opts = read_opts(field(&request, "opts"));
                let sockets: Vec<serde_json::Value> = ns
                    .local_sockets(&opts)
                    .into_iter()
                    .map(|s| {
                        let found = FetchedSocket::of_local(s);
                        serde_json::json!({
                            "id": found.id.as_str(),
                            "handshake": found.handshake,
                            "rooms": found.rooms.iter().map(Str::as_str).collect::<Vec<_>>(),
                            "data": found.data,
                        })
                    })
                    .collect();
                let answer = serde_json::json!({ "requestId": request_id, "sockets": sockets });
                self.respond(&request, answer.to_string().into_bytes());
            }
            kind::SERVER_SIDE_EMIT => {
                if mine {
                    return Ok(());
                }
                let data = field(&request, "data")
                    .and_then(Value::as_array)
                    .ok_or("a server-side emit without data")?;
                let Some(name) = data.first().and_then(Value::as_str) else {
                    return Err("a server-side emit without an event name".into());
                };
                let args = data[1..].iter().map(value::to_plain_json).collect();
                let ack = request_id.map(|id| {
                    let bus = self.bus.clone();
                    let channel = self.response_channel.clone();
                    Box::new(move |answer: serde_json::Value| {
                        let response = serde_json::json!({
                            "type": kind::SERVER_SIDE_EMIT,
                            "requestId": id,
                            "data": answer,
                        });
                        bus.publish(channel, response.to_string().into_bytes());
                    }) as Box<dyn FnOnce(serde_json::Value) + Send>
                });
                ns.server_event(ServerEvent {
                    name: name.to_owned(),
                    args,
                    ack,
                });
            }
            kind::BROADCAST => {
                if mine {
                    return Ok(());
                }
                let id = request_id.ok_or("a broadcast with acks without a request id")?;
                let packet = field(&request, "packet").ok_or("a broadcast without a packet")?;
                let (event, args) = event_of(packet, ns.parser())?;
                let mut opts = read_opts(field(&request, "opts"));
                opts.local = true;
                opts.timeout = self.timeout;
                self.remote_broadcast_with_ack(&ns, &request, id, &event, &args, &opts);
            }
            other => return Err(format!("unknown request type {other}")),
        }
        Ok(())
    }

    /// The forms of join, leave and disconnect older adapters sent: one socket by id,
    /// answered when it is here.
    fn legacy_socket_request(
        &self,
        ns: &Arc<Namespace>,
        kind: u64,
        request: &Value,
        request_id: Option<String>,
    ) {
        let sid = field(request, "sid").and_then(Value::as_str);
        let Some(socket) = sid
            .and_then(socketio::Sid::parse)
            .and_then(|id| ns.socket(id))
        else {
            return;
        };
        match kind {
            kind::REMOTE_JOIN | kind::REMOTE_LEAVE => {
                let Some(room) = field(request, "room").and_then(text) else {
                    return;
                };
                if kind == kind::REMOTE_JOIN {
                    socket.join(room);
                } else {
                    socket.leave(&Str::from(room));
                }
            }
            _ => {
                let close = field(request, "close")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                socket.disconnect();
                if close {
                    socket.close();
                }
            }
        }
        let answer = serde_json::json!({ "requestId": request_id });
        self.respond(request, answer.to_string().into_bytes());
    }

    /// Emits another node's broadcast to this node's sockets, tells that node how many
    /// clients got it, then passes on each client's ack as it comes.
    fn remote_broadcast_with_ack(
        &self,
        ns: &Arc<Namespace>,
        request: &Value,
        id: String,
        event: &str,
        args: &RemoteArgs,
        opts: &BroadcastOptions,
    ) {
        let sockets = ns.local_sockets(opts);
        let count = serde_json::json!({
            "type": kind::BROADCAST_CLIENT_COUNT,
            "requestId": id,
            "clientCount": sockets.len(),
        });
        self.respond(request, count.to_string().into_bytes());
        let Some(me) = self.me.upgrade() else { return };
        let request = request.clone();
        for socket in sockets {
            let wait = socket.emit_with_ack_dyn(event, args, opts.timeout);
            let me = me.clone();
            let request = request.clone();
            let id = id.clone();
            tokio::spawn(async move {
                if let Ok(answer) = wait.await {
                    let first = first_ack_arg(&answer);
                    let response = map(vec![
                        ("type", Value::from(kind::BROADCAST_ACK)),
                        ("requestId", Value::from(id.as_str())),
                        ("packet", first),
                    ]);
                    me.respond(&request, value::to_msgpack(&response));
                }
            });
        }
    }

    /// A message on a response channel.
    fn response_in(&self, payload: &[u8]) -> Result<(), String> {
        let response = value::decode(payload)?;
        let Some(id) = field(&response, "requestId").and_then(text) else {
            return Err("a response without a request id".into());
        };
        self.pending.answer(&id, response);
        Ok(())
    }
}

impl Inbound for ClassicAdapter {
    fn on_broadcast(&self, rest: &str, payload: &[u8]) -> Result<(), String> {
        self.broadcast_in(rest, payload)
    }

    fn on_request(&self, payload: &[u8]) -> Result<(), String> {
        self.request_in(payload)
    }

    fn on_response(&self, payload: &[u8]) -> Result<(), String> {
        self.response_in(payload)
    }
}

/// A request or response id: `n` characters of `[A-Za-z0-9]` (as Node's `uid2`).
pub(crate) fn random_id(n: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// `opts` of a broadcast or request: `{rooms, except, flags: {volatile}}`.
pub(crate) fn read_opts(opts: Option<&Value>) -> BroadcastOptions {
    let strs = |key: &str| -> Vec<Str> {
        texts(opts.and_then(|o| field(o, key)))
            .into_iter()
            .map(Str::from)
            .collect()
    };
    let flags = opts.and_then(|o| field(o, "flags"));
    let flag = |name: &str| {
        flags
            .and_then(|f| field(f, name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    BroadcastOptions {
        rooms: strs("rooms"),
        except: strs("except"),
        volatile: flag("volatile"),
        ..BroadcastOptions::default()
    }
}

/// `opts` as they go out; the socket left out is named in `except`, as Node does.
pub(crate) fn write_opts(opts: &BroadcastOptions, timeout: Option<Duration>) -> Value {
    let strs =
        |rooms: &[Str]| Value::Array(rooms.iter().map(|r| Value::from(r.as_str())).collect());
    let mut except = strs(&opts.except);
    if let (Some(id), Value::Array(items)) = (opts.except_socket, &mut except) {
        items.push(Value::from(id.as_str()));
    }
    let mut flags = Vec::new();
    if opts.volatile {
        flags.push(("volatile", Value::Boolean(true)));
    }
    if let Some(t) = timeout {
        flags.push((
            "timeout",
            Value::from(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        ));
    }
    map(vec![
        ("rooms", strs(&opts.rooms)),
        ("except", except),
        ("flags", map(flags)),
    ])
}

/// `{type: 2, data: [event, ...args], nsp}`, with `id` when acks are wanted.
pub(crate) fn write_packet(
    nsp: &str,
    event: &str,
    args: &dyn Args,
    id: Option<u64>,
) -> Result<Value, Error> {
    let mut data = vec![Value::from(event)];
    data.extend(value::args_to_msgpack(args)?);
    let mut fields = vec![
        ("type", Value::from(EVENT)),
        ("data", Value::Array(data)),
        ("nsp", Value::from(nsp)),
    ];
    if let Some(id) = id {
        fields.push(("id", Value::from(id)));
    }
    Ok(map(fields))
}

/// The event name and arguments of a packet another node sent.
pub(crate) fn event_of(packet: &Value, parser: Parser) -> Result<(String, RemoteArgs), String> {
    let data = field(packet, "data")
        .and_then(Value::as_array)
        .ok_or("a packet without data")?;
    let name = data
        .first()
        .and_then(Value::as_str)
        .ok_or("a packet without an event name")?;
    Ok((name.to_owned(), RemoteArgs::new(data[1..].to_vec(), parser)))
}

/// A client's ack as Node's adapters pass it on: its first argument.
pub(crate) fn first_ack_arg(answer: &AckResponse) -> Value {
    match answer.data() {
        Data::Msgpack(raw) => match value::decode(raw) {
            Ok(Value::Array(mut items)) if !items.is_empty() => items.swap_remove(0),
            _ => Value::Nil,
        },
        Data::Json(raw) => json_first(raw, &[]),
        Data::JsonBinary { json, attachments } => json_first(json, attachments),
        Data::None => Value::Nil,
    }
}

fn json_first(raw: &[u8], attachments: &[Bytes]) -> Value {
    match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Array(items)) => items
            .first()
            .map_or(Value::Nil, |v| value::from_json(v, attachments)),
        _ => Value::Nil,
    }
}

/// Another node's client ack as this node's parser would have read it.
pub(crate) fn ack_response(arg: &Value, parser: Parser) -> AckResponse {
    let args = Value::Array(vec![arg.clone()]);
    let data = match parser {
        Parser::Msgpack => Data::Msgpack(Bytes::from(value::to_msgpack(&args))),
        Parser::Default => {
            let mut attachments = Vec::new();
            let json = Bytes::from(value::to_json(&args, &mut attachments).to_string());
            if attachments.is_empty() {
                Data::Json(json)
            } else {
                Data::JsonBinary { json, attachments }
            }
        }
    };
    AckResponse::from_data(data)
}

impl Adapter for ClassicAdapter {
    fn init(&self, _ns: &Arc<Namespace>) {
        self.bus.register(&self.nsp, self.me.clone());
        for channel in [
            &self.channel,
            &self.request_channel,
            &self.response_channel,
            &self.specific_response_channel,
        ] {
            self.bus.want(channel.clone());
        }
    }

    fn close(&self) {
        self.bus.unregister(&self.nsp);
        for channel in [
            &self.channel,
            &self.request_channel,
            &self.response_channel,
            &self.specific_response_channel,
        ] {
            self.bus.unwant(channel);
        }
    }

    fn room_created(&self, room: &str) {
        self.bus.want(self.room_channel(room));
    }

    fn room_deleted(&self, room: &str) {
        self.bus.unwant(&self.room_channel(room));
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
            // A shared ack id travels with the packet: the other nodes' clients answer
            // their own node, whose namespace's ack handler gets it (the IM service
            // moves delivered watermarks so, on whichever node the member is).
            let packet = write_packet(&self.nsp, event, args, opts.ack_id)?;
            let message = Value::Array(vec![
                Value::from(self.uid.as_str()),
                packet,
                write_opts(opts, None),
            ]);
            let channel = match opts.rooms.as_slice() {
                [room] => self.room_channel(room.as_str()),
                _ => self.channel.clone(),
            };
            self.bus.publish(channel, value::to_msgpack(&message));
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
        let id = random_id(6);
        let request = write_packet(&self.nsp, event, args, None).map(|packet| {
            map(vec![
                ("uid", Value::from(self.uid.as_str())),
                ("requestId", Value::from(id.as_str())),
                ("type", Value::from(kind::BROADCAST)),
                ("packet", packet),
                ("opts", write_opts(opts, Some(opts.timeout))),
            ])
        });
        let Ok(request) = request else {
            return local;
        };
        let timeout = opts.timeout;
        let parser = ns.parser();
        Box::pin(async move {
            let nodes = me.count().await.saturating_sub(1);
            let mut results = Vec::new();
            if nodes > 0 {
                let rx = me.expect(&id);
                me.publish_request(&request);
                // Each node tells its client count, then passes on each client's ack.
                let mut counted = 0usize;
                let mut expected = 0usize;
                me.gather(id, rx, timeout, |answer| {
                    match field(answer, "type").and_then(Value::as_u64) {
                        Some(kind::BROADCAST_CLIENT_COUNT) => {
                            counted += 1;
                            expected += field(answer, "clientCount")
                                .and_then(Value::as_u64)
                                .map_or(0, |n| n as usize);
                        }
                        Some(kind::BROADCAST_ACK) => {
                            let arg = field(answer, "packet").cloned().unwrap_or(Value::Nil);
                            results.push(Ok(ack_response(&arg, parser)));
                        }
                        _ => {}
                    }
                    counted >= nodes && results.len() >= expected
                })
                .await;
                let got = results.len();
                // Clients counted whose acks did not come in time.
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
            self.publish_json_request(&serde_json::json!({
                "uid": self.uid,
                "type": kind::REMOTE_JOIN,
                "opts": json_opts(opts),
                "rooms": rooms.iter().map(Str::as_str).collect::<Vec<_>>(),
            }));
        }
    }

    fn del_sockets(&self, ns: &Arc<Namespace>, opts: &BroadcastOptions, rooms: &[Str]) {
        LocalAdapter.del_sockets(ns, opts, rooms);
        if !opts.local {
            self.publish_json_request(&serde_json::json!({
                "uid": self.uid,
                "type": kind::REMOTE_LEAVE,
                "opts": json_opts(opts),
                "rooms": rooms.iter().map(Str::as_str).collect::<Vec<_>>(),
            }));
        }
    }

    fn disconnect_sockets(&self, ns: &Arc<Namespace>, opts: &BroadcastOptions, close: bool) {
        LocalAdapter.disconnect_sockets(ns, opts, close);
        if !opts.local {
            self.publish_json_request(&serde_json::json!({
                "uid": self.uid,
                "type": kind::REMOTE_DISCONNECT,
                "opts": json_opts(opts),
                "close": close,
            }));
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
        let request = serde_json::json!({
            "uid": self.uid,
            "type": kind::REMOTE_FETCH,
            "opts": json_opts(opts),
        });
        let timeout = self.timeout;
        Box::pin(async move {
            let mut found = local.await;
            for answer in me.ask(request, timeout).await.0 {
                let Some(sockets) = field(&answer, "sockets").and_then(Value::as_array) else {
                    continue;
                };
                found.extend(sockets.iter().filter_map(remote_socket));
            }
            found
        })
    }

    fn all_rooms(&self, ns: &Arc<Namespace>) -> BoxFuture<Vec<Str>> {
        let mut rooms = LocalAdapter::rooms(ns);
        let Some(me) = self.me.upgrade() else {
            return Box::pin(async move { rooms });
        };
        let request = serde_json::json!({ "uid": self.uid, "type": kind::ALL_ROOMS });
        let timeout = self.timeout;
        Box::pin(async move {
            let mut seen: std::collections::HashSet<Str> = rooms.iter().cloned().collect();
            for answer in me.ask(request, timeout).await.0 {
                for room in texts(field(&answer, "rooms")) {
                    let room = Str::from(room);
                    if seen.insert(room.clone()) {
                        rooms.push(room);
                    }
                }
            }
            rooms
        })
    }

    fn server_side_emit(
        &self,
        _ns: &Arc<Namespace>,
        event: &str,
        args: &dyn Args,
    ) -> Result<(), Error> {
        let mut data = vec![serde_json::Value::from(event)];
        data.extend(value::args_to_json(args)?);
        self.publish_json_request(&serde_json::json!({
            "uid": self.uid,
            "type": kind::SERVER_SIDE_EMIT,
            "data": data,
        }));
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
        let mut data = vec![serde_json::Value::from(event)];
        data.extend(args.iter().cloned());
        let request = serde_json::json!({
            "uid": self.uid,
            "type": kind::SERVER_SIDE_EMIT,
            "data": data,
        });
        Ok(Box::pin(async move {
            let (answers, complete) = me.ask(request, timeout).await;
            ServerAcks {
                responses: answers
                    .iter()
                    .map(|a| field(a, "data").map_or(serde_json::Value::Null, value::to_plain_json))
                    .collect(),
                complete,
            }
        }))
    }
}

impl ClassicAdapter {
    /// Publishes a JSON request that each other node answers once, and gathers the
    /// answers (with a fresh request id) until all came or the timeout.
    async fn ask(
        self: &Arc<Self>,
        mut request: serde_json::Value,
        timeout: Duration,
    ) -> (Vec<Value>, bool) {
        let nodes = self.count().await.saturating_sub(1);
        if nodes == 0 {
            return (Vec::new(), true);
        }
        let id = random_id(6);
        request["requestId"] = serde_json::Value::from(id.as_str());
        let rx = self.expect(&id);
        self.publish_json_request(&request);
        let mut n = 0;
        self.gather(id, rx, timeout, |_| {
            n += 1;
            n >= nodes
        })
        .await
    }
}

pub(crate) fn json_opts(opts: &BroadcastOptions) -> serde_json::Value {
    let mut except: Vec<&str> = opts.except.iter().map(Str::as_str).collect();
    if let Some(id) = &opts.except_socket {
        except.push(id.as_str());
    }
    serde_json::json!({
        "rooms": opts.rooms.iter().map(Str::as_str).collect::<Vec<_>>(),
        "except": except,
    })
}

/// A socket another node described in a fetch answer.
pub(crate) fn remote_socket(socket: &Value) -> Option<FetchedSocket> {
    let id = field(socket, "id").and_then(Value::as_str)?;
    Some(FetchedSocket {
        id: Str::from(id.to_owned()),
        rooms: texts(field(socket, "rooms"))
            .into_iter()
            .map(Str::from)
            .collect(),
        local: None,
        handshake: field(socket, "handshake").map_or(serde_json::Value::Null, value::to_plain_json),
        data: field(socket, "data").map_or(serde_json::Value::Null, value::to_plain_json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opts_round_trip_with_the_sender_left_out() {
        let sender = socketio::Sid::parse("AAAAAAAAAAAAAAAAAAAA").unwrap();
        let opts = BroadcastOptions {
            rooms: vec![Str::from("a")],
            except: vec![Str::from("b")],
            except_socket: Some(sender),
            volatile: true,
            ..BroadcastOptions::default()
        };
        let written = write_opts(&opts, None);
        let read = read_opts(Some(&written));
        assert_eq!(read.rooms, vec![Str::from("a")]);
        assert_eq!(
            read.except,
            vec![Str::from("b"), Str::from("AAAAAAAAAAAAAAAAAAAA")]
        );
        assert!(read.volatile);
        assert!(!read.local);
        // Absent options: everyone.
        let none = read_opts(None);
        assert!(none.rooms.is_empty() && none.except.is_empty() && !none.volatile);
    }

    #[test]
    fn packets_carry_the_event_and_its_arguments() {
        let packet = write_packet("/chat", "hello", &(1, "x"), Some(3)).unwrap();
        assert_eq!(field(&packet, "type").and_then(Value::as_u64), Some(2));
        assert_eq!(field(&packet, "nsp").and_then(Value::as_str), Some("/chat"));
        assert_eq!(field(&packet, "id").and_then(Value::as_u64), Some(3));
        let (event, args) = event_of(&packet, Parser::Default).unwrap();
        assert_eq!(event, "hello");
        let mut json = Vec::new();
        args.write_json(&mut json).unwrap();
        assert_eq!(json, br#",1,"x""#);
        assert!(event_of(&map(vec![("data", Value::from(1))]), Parser::Default).is_err());
        assert!(event_of(&map(vec![]), Parser::Default).is_err());
    }

    #[test]
    fn acks_pass_on_their_first_argument() {
        let json = AckResponse::from_data(Data::Json(Bytes::from_static(br#"[{"ok":1},2]"#)));
        assert_eq!(first_ack_arg(&json), map(vec![("ok", Value::from(1))]));
        let none = AckResponse::from_data(Data::Json(Bytes::from_static(b"[]")));
        assert_eq!(first_ack_arg(&none), Value::Nil);
        let back = ack_response(&Value::Binary(vec![1]), Parser::Default);
        assert_eq!(back.attachments(), [Bytes::from_static(&[1])]);
        let (n,): (u32,) = ack_response(&Value::from(5), Parser::Msgpack)
            .args()
            .unwrap();
        assert_eq!(n, 5);
    }

    #[test]
    fn ids_look_like_node_ones() {
        let id = random_id(6);
        assert_eq!(id.len(), 6);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(random_id(16), random_id(16));
    }
}
