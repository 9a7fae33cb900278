//! The HTTP API for backends, behind a bearer key (`api.key`). Described in
//! `docs/api.openapi.yaml`.
//!
//! - `POST /api/emit` `{ rooms?, users?, event, data? }`: emits `event` with `data` to the
//!   sockets in `rooms` and in the rooms of `users` (`user:<id>`); neither means every
//!   socket. Answers `{ ok, delivered }`.
//! - `POST /api/disconnect` `{ users?, rooms?, sockets? }`: disconnects those sockets
//!   (the client is told, and does not reconnect by itself). Answers `{ ok, disconnected }`.
//! - `GET /api/rooms?prefix=&limit=`: rooms and how many sockets each holds.
//! - `GET /api/stats`: connections, sockets, rooms and traffic counters.
//! - `GET /api/access`, `POST /api/access` `{ allow?, deny? }`: the access lists of
//!   admission control, replaced at run time.
//! - `POST /api/shutdown`: starts the graceful drain; answers 202.
//!
//! Errors answer `{ ok: false, error: { code, message } }`: 401 `unauthorized` for a
//! missing or wrong key, 400 `bad_request` for a body that is not what the endpoint
//! takes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engineio::Sid;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::rooms::{check_event, too_long, user_room};
use crate::state::AppState;

/// The API routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/emit", post(emit))
        .route("/api/disconnect", post(disconnect))
        .route("/api/rooms", get(rooms))
        .route("/api/stats", get(stats))
        .route("/api/cluster", get(cluster_state))
        .route("/api/access", get(access).post(set_access))
        .route("/api/shutdown", post(shutdown))
}

/// An API error: its status, code and message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// The IM service's refusal, with its status (`IM.md`, HTTP API).
    pub(crate) fn im(e: im::ImError) -> ApiError {
        let status = match &e {
            im::ImError::BadRequest(_) => StatusCode::BAD_REQUEST,
            im::ImError::Forbidden(_) => StatusCode::FORBIDDEN,
            im::ImError::NotFound(_) => StatusCode::NOT_FOUND,
            im::ImError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            im::ImError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            im::ImError::Conflict(_) => StatusCode::CONFLICT,
            im::ImError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError {
            status,
            code: e.code(),
            message: e.to_string(),
        }
    }

    pub(crate) fn new(status: StatusCode, code: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            code,
            message,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "ok": false, "error": { "code": self.code, "message": self.message } });
        let mut res = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        res
    }
}

/// Proof that the request carried the API key.
pub(crate) struct ApiKey;

impl FromRequestParts<Arc<AppState>> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |message: &str| {
            state.shared.stats.add(&state.shared.stats.api_unauthorized);
            ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                message: message.to_owned(),
            }
        };
        let Some(key) = state.config.api_key.as_deref() else {
            return Err(unauthorized(
                "the API is off: set api.key (HERALD_API__KEY) to use it",
            ));
        };
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        match given {
            None => Err(unauthorized(
                "missing API key: send `Authorization: Bearer <api.key>`",
            )),
            Some(given) if constant_time_eq(given.trim().as_bytes(), key.as_bytes()) => Ok(ApiKey),
            Some(_) => Err(unauthorized("wrong API key")),
        }
    }
}

/// Compares without an early exit, so the time taken does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a JSON body into `T`, with a message that says what is wrong and where.
pub(crate) fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// A field that is present, even as `null` (absent stays `None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A list that may be left out but not given as `null`.
fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Vec::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitBody {
    #[serde(default, deserialize_with = "list")]
    rooms: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    users: Option<Vec<String>>,
    event: String,
    #[serde(default, deserialize_with = "present")]
    data: Option<Value>,
    /// As Socket.IO's `volatile`: a socket whose queue is full does not get it (and is
    /// not closed for it), and it is never replayed.
    #[serde(default)]
    volatile: bool,
}

fn check_names(state: &AppState, what: &str, names: &[String]) -> Result<(), ApiError> {
    let max = state.config.limits.max_room_name_chars;
    for name in names {
        if name.is_empty() || too_long(name, max) {
            return Err(ApiError::bad_request(format!(
                "{what} must be 1 to {max} characters long: {name:?}"
            )));
        }
    }
    Ok(())
}

async fn emit(
    _key: ApiKey,
    State(state): State<Arc<AppState>>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: EmitBody = body(&bytes.map_err(too_large)?)?;
    check_event(&state.shared, &req.event).map_err(|r| ApiError::bad_request(r.message))?;
    let named = req.rooms.is_some() || req.users.is_some();
    let rooms = req.rooms.unwrap_or_default();
    let users = req.users.unwrap_or_default();
    check_names(&state, "rooms", &rooms)?;
    check_names(&state, "users", &users)?;
    // Lists given but empty name nobody: only leaving both out means everyone (a
    // backend that computed no recipients must not reach them all).
    if named && rooms.is_empty() && users.is_empty() {
        return Ok(Json(json!({ "ok": true, "delivered": 0 })));
    }
    let mut op = state.root.broadcast();
    if req.volatile {
        op = op.volatile();
    }
    for room in rooms.iter().cloned() {
        op = op.to(room);
    }
    for user in &users {
        op = op.to(user_room(user));
    }
    let sent = match &req.data {
        Some(data) => op.emit(&req.event, (data,)),
        None => op.emit(&req.event, ()),
    };
    let delivered = sent.map_err(|e| ApiError::bad_request(format!("cannot emit: {e}")))?;
    let stats = &state.shared.stats;
    stats.add(&stats.api_emits);
    stats.add_n(&stats.deliveries, delivered as u64);
    Ok(Json(json!({ "ok": true, "delivered": delivered })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    sockets: Vec<String>,
}

async fn disconnect(
    _key: ApiKey,
    State(state): State<Arc<AppState>>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: DisconnectBody = body(&bytes.map_err(too_large)?)?;
    if req.users.is_empty() && req.rooms.is_empty() && req.sockets.is_empty() {
        return Err(ApiError::bad_request(
            "name the sockets to disconnect: users, rooms or sockets",
        ));
    }
    check_names(&state, "rooms", &req.rooms)?;
    check_names(&state, "users", &req.users)?;
    let mut ids = Vec::with_capacity(req.sockets.len());
    for s in &req.sockets {
        ids.push(
            Sid::parse(s)
                .ok_or_else(|| ApiError::bad_request(format!("{s:?} is not a socket id")))?,
        );
    }
    // Every socket named, on whichever node it is: rooms, user rooms and sockets' own
    // rooms, through the adapter.
    let mut op = state.root.broadcast();
    for room in req.rooms {
        op = op.to(room);
    }
    for user in &req.users {
        op = op.to(user_room(user));
    }
    for id in ids {
        op = op.to(id.as_str().to_owned());
    }
    let targets = op.fetch_sockets().await.len();
    // The DISCONNECT packet tells the clients not to reconnect by themselves; then the
    // connections go (queued packets are still delivered).
    op.disconnect_and_close();
    Ok(Json(json!({ "ok": true, "disconnected": targets })))
}

/// The most rooms one `GET /api/rooms` lists.
const MAX_ROOMS_LISTED: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

async fn rooms(
    _key: ApiKey,
    State(state): State<Arc<AppState>>,
    query: Result<Query<RoomsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(1000);
    if limit > MAX_ROOMS_LISTED {
        return Err(ApiError::bad_request(format!(
            "limit is at most {MAX_ROOMS_LISTED}"
        )));
    }
    let local: std::collections::HashMap<socketio::Str, usize> =
        state.root.rooms().into_iter().collect();
    let listed = |name: &socketio::Str| name.as_str().starts_with(&query.prefix);
    if state.cluster.is_some() {
        // Every node's rooms (sockets' own rooms left out); the member counts are this
        // node's, the only ones known without asking for every socket.
        let mut names: Vec<socketio::Str> = state
            .root
            .all_rooms()
            .await
            .into_iter()
            .filter(|name| listed(name) && Sid::parse(name.as_str()).is_none())
            .collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        let total = names.len();
        let list: Vec<Value> = names
            .into_iter()
            .take(limit)
            .map(|name| {
                let here = local.get(&name).copied().unwrap_or(0);
                json!({ "name": name.as_str(), "local_sockets": here })
            })
            .collect();
        return Ok(Json(
            json!({ "ok": true, "scope": "cluster", "total": total, "rooms": list }),
        ));
    }
    let mut rooms: Vec<(socketio::Str, usize)> =
        local.into_iter().filter(|(name, _)| listed(name)).collect();
    rooms.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let total = rooms.len();
    let list: Vec<Value> = rooms
        .into_iter()
        .take(limit)
        .map(|(name, sockets)| json!({ "name": name.as_str(), "sockets": sockets }))
        .collect();
    Ok(Json(
        json!({ "ok": true, "scope": "node", "total": total, "rooms": list }),
    ))
}

async fn stats(_key: ApiKey, State(state): State<Arc<AppState>>) -> Json<Value> {
    let engine = state.io.engine().stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let sessions = engine.sessions.load(Ordering::Relaxed).max(0);
    let websocket = engine.websocket_sessions.load(Ordering::Relaxed).max(0);
    let s = &state.shared.stats;
    Json(json!({
        "ok": true,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "connections": {
            "total": sessions,
            "websocket": websocket,
            "polling": sessions - websocket,
        },
        "sockets": state.root.len(),
        "rooms": state.root.rooms().len(),
        "handshakes": load(&engine.handshakes),
        "packets": { "received": load(&engine.packets_in), "sent": load(&engine.packets_out) },
        "bytes": { "received": load(&engine.bytes_in), "sent": load(&engine.bytes_out) },
        "publishes": load(&s.publishes),
        "api_emits": load(&s.api_emits),
        "deliveries": load(&s.deliveries),
    }))
}

/// `GET /api/cluster`: the Herald nodes heard from (each one's connections, load and
/// last heartbeat), and how many servers Redis counts on `/` (Node ones included).
async fn cluster_state(_key: ApiKey, State(state): State<Arc<AppState>>) -> Json<Value> {
    let Some(cluster) = &state.cluster else {
        return Json(json!({ "ok": true, "clustered": false, "nodes": [] }));
    };
    let nodes = cluster.nodes(crate::HEARTBEAT * 3);
    let servers = cluster.server_count("/").await;
    let stats = cluster.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    Json(json!({
        "ok": true,
        "clustered": true,
        "redis_connected": cluster.is_connected(),
        "servers": servers,
        "nodes": nodes,
        "bus": {
            "published": load(&stats.published),
            "redis_deliveries": load(&stats.redis_deliveries),
            "publish_failures": load(&stats.publish_failures),
            "received": load(&stats.received),
            "malformed": load(&stats.malformed),
            "reconnects": load(&stats.reconnects),
            "buffer_overflows": load(&stats.buffer_overflows),
            "dropped": load(&stats.dropped),
            "subscriptions": stats.subscriptions.load(Ordering::Relaxed),
        },
    }))
}

fn access_body(state: &AppState) -> Value {
    let lists = state.shared.admission.lists();
    let text = |nets: &[ipnet::IpNet]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    json!({ "ok": true, "allow": text(&lists.allow), "deny": text(&lists.deny) })
}

async fn access(_key: ApiKey, State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(access_body(&state))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessBody {
    #[serde(default, deserialize_with = "list")]
    allow: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    deny: Option<Vec<String>>,
}

async fn set_access(
    _key: ApiKey,
    State(state): State<Arc<AppState>>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: AccessBody = body(&bytes.map_err(too_large)?)?;
    if req.allow.is_none() && req.deny.is_none() {
        return Err(ApiError::bad_request(
            "give allow, deny or both (lists of networks)",
        ));
    }
    let parse = |list: Option<Vec<String>>| {
        list.map(|l| crate::admission::parse_nets(&l))
            .transpose()
            .map_err(ApiError::bad_request)
    };
    let allow = parse(req.allow)?;
    let deny = parse(req.deny)?;
    state.shared.admission.set_lists(allow, deny);
    let lists = state.shared.admission.lists();
    tracing::info!(allow = ?lists.allow, deny = ?lists.deny, "access lists changed");
    Ok(Json(access_body(&state)))
}

async fn shutdown(_key: ApiKey, State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    state.shutdown_requested.cancel();
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "ok": true,
            "draining": true,
            "window_ms": state.config.drain.window.as_millis() as u64,
        })),
    )
}

/// A body over the size limit.
pub(crate) fn too_large(e: BytesRejection) -> ApiError {
    ApiError {
        status: e.status(),
        code: if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "bad_request"
        },
        message: e.body_text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys compare equal only when identical.
    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }

    /// Bodies: unknown fields, wrong types and empty bodies are refused with a reason;
    /// `data: null` is kept apart from no data.
    #[test]
    fn emit_bodies() {
        let ok: EmitBody = body(br#"{"rooms":["a"],"event":"e","data":null}"#).unwrap();
        assert_eq!(ok.data, Some(Value::Null));
        let ok: EmitBody = body(br#"{"event":"e"}"#).unwrap();
        assert_eq!(ok.data, None);
        for bad in [
            &br#"{"room":["a"],"event":"e"}"#[..],
            br#"{"rooms":"a","event":"e"}"#,
            br#"{"users":null,"event":"e"}"#,
            br#"{"data":1}"#,
            b"",
            b"not json",
        ] {
            let e = body::<EmitBody>(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(!e.message.is_empty());
        }
    }
}
