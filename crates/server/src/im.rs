//! The IM service (`crates/im`) as a service of the server: namespace `/im`, with the
//! server's authentication (anonymous clients refused, `token_missing`), its HTTP API
//! under `/api/im/` (behind the API key), its store flushed in the drain.
//!
//! - `POST /api/im/conversations` `{ type, members, title?, owner? }` → the conversation;
//! - `POST /api/im/conversations/{id}/members` `{ add?, remove?, promote?, demote? }` →
//!   the conversation (an extension of `IM.md`);
//! - `POST /api/im/messages` `{ conversation, from, cid, body }` → `{ id, seq, ts }`;
//! - `GET /api/im/conversations/{id}/messages?before=&after=&limit=` → `{ messages, more }`;
//! - `GET /api/im/users/{user}/presence` → `{ online, last_seen, devices }`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::api::{body, too_large, ApiError, ApiKey};
use crate::service::{connect_refusal, BoxFuture, Context, Factory, Service};
use crate::state::AppState;

/// The IM service of the server.
#[derive(Debug)]
pub struct ImService {
    im: im::Im,
    ctx: Context,
}

impl ImService {
    /// Makes the service, opening its store (see [`crate::default_services`]).
    pub fn factory() -> Factory {
        Box::new(|ctx: &Context| {
            let Some(config) = ctx.config.im.clone() else {
                return Ok(None);
            };
            let url = store::redacted_url(&config.store.url);
            let store = ctx
                .shared
                .store(&config.store)
                .map_err(|e| format!("im store: {e}"))?;
            let im = im::Im::with_store(config, store, ctx.shared.im_stats.clone());
            tracing::info!(
                backend = im.store().backend(),
                store = %url,
                "im: serving /im, messages stored in {url}"
            );
            Ok(Some(Arc::new(ImService {
                im,
                ctx: ctx.clone(),
            }) as Arc<dyn Service>))
        })
    }
}

impl Service for ImService {
    fn name(&self) -> &'static str {
        "im"
    }

    fn cluster_bus(&self, up: bool) {
        self.im.cluster_bus(up);
    }

    fn install(&self, builder: socketio::Builder) -> socketio::Builder {
        let ctx = self.ctx.clone();
        self.im.install(
            builder,
            Arc::new(move |req| {
                let identity = ctx.authenticate(req)?;
                identity.user.clone().ok_or_else(|| {
                    ctx.shared.stats.auth_refused("token_missing");
                    connect_refusal(
                        "token_missing",
                        "the IM service needs a token: connect with auth { token }",
                        None,
                    )
                })
            }),
        )
    }

    fn routes(&self) -> Router<Arc<AppState>> {
        let (create, members, post_message, messages, presence) = (
            self.im.clone(),
            self.im.clone(),
            self.im.clone(),
            self.im.clone(),
            self.im.clone(),
        );
        Router::new()
            .route(
                "/api/im/conversations",
                post(
                    move |_: ApiKey, b: Result<Bytes, BytesRejection>| async move {
                        answer(
                            store::stats::counted(
                                "api.conversations",
                                create.api_create(im_body(b)?),
                            )
                            .await,
                        )
                    },
                ),
            )
            .route(
                "/api/im/conversations/{id}/members",
                post(
                    move |_: ApiKey,
                          id: Result<Path<i64>, PathRejection>,
                          b: Result<Bytes, BytesRejection>| async move {
                        let id = conversation_id(id)?;
                        answer(
                            store::stats::counted(
                                "api.members",
                                members.api_members(id, im_body(b)?),
                            )
                            .await,
                        )
                    },
                ),
            )
            .route(
                "/api/im/messages",
                post(
                    move |_: ApiKey, b: Result<Bytes, BytesRejection>| async move {
                        answer(
                            store::stats::counted(
                                "api.messages.post",
                                post_message.api_post(im_body(b)?),
                            )
                            .await,
                        )
                    },
                ),
            )
            .route(
                "/api/im/conversations/{id}/messages",
                get(
                    move |_: ApiKey,
                          _: State<Arc<AppState>>,
                          id: Result<Path<i64>, PathRejection>,
                          q: Result<Query<Page>, QueryRejection>| async move {
                        let id = conversation_id(id)?;
                        let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
                        answer(
                            store::stats::counted(
                                "api.messages.get",
                                messages.api_messages(id, q.before, q.after, q.limit),
                            )
                            .await,
                        )
                    },
                ),
            )
            .route(
                "/api/im/users/{user}/presence",
                get(
                    move |_: ApiKey, user: Result<Path<String>, PathRejection>| async move {
                        let Path(user) = user.map_err(|e| ApiError::bad_request(e.body_text()))?;
                        answer(
                            store::stats::counted("api.presence", presence.presence_of(&user))
                                .await,
                        )
                    },
                ),
            )
    }

    fn started(&self, io: &socketio::Server) {
        self.im.started(io);
    }

    fn flush(&self) -> BoxFuture {
        let im = self.im.clone();
        Box::pin(async move { im.flush().await })
    }
}

/// The query of `GET /api/im/conversations/{id}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// A request body for the IM API: JSON, within the body limit (over it: 413 `too_large`).
fn im_body<T: serde::de::DeserializeOwned>(
    bytes: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = bytes.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::im(im::ImError::TooLarge(e.body_text()))
        } else {
            too_large(e)
        }
    })?;
    body(&bytes)
}

/// A conversation id from the path.
fn conversation_id(id: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    id.map(|Path(id)| id).map_err(|e| {
        ApiError::bad_request(format!(
            "the conversation id is a number: {}",
            e.body_text()
        ))
    })
}

/// The service's answer as the API gives it: `{ ok: true, ... }`, or the error.
fn answer(outcome: Result<Value, im::ImError>) -> Result<Json<Value>, ApiError> {
    outcome.map(|v| Json(im::with_ok(v))).map_err(ApiError::im)
}
