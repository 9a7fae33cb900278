//! The document service (`crates/collab`) as a service of the server: namespaces
//! `/yjs|<name>` for the stock `y-socket.io` provider, with the server's authentication
//! (claims `docs`, patterns of documents the user may edit, and `docs_read`, of those
//! they may read only), its HTTP API under `/api/docs` (behind the API key), its unsaved
//! updates written in the drain.
//!
//! - `GET /api/docs?prefix=&after=&limit=` → `{ documents: [{ name, bytes, ... }], more }`;
//! - `GET /api/docs/{name}` → the document as one Yjs v1 update (`application/octet-stream`);
//! - `GET /api/docs/{name}/text?field=` → the `Y.Text` named `field` (default `content`), as text;
//! - `POST /api/docs/{name}/update`, body a Yjs v1 update → 202, applied, sent and stored;
//! - `DELETE /api/docs/{name}` → `{ deleted }` (its sockets are disconnected).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use collab::{Access, Collab};
use serde::Deserialize;
use serde_json::json;

use crate::api::{too_large, ApiError, ApiKey};
use crate::auth::{Identity, Patterns};
use crate::service::{connect_refusal, BoxFuture, Context, Factory, Service};
use crate::state::AppState;

/// The document service of the server.
#[derive(Debug)]
pub struct DocsService {
    collab: Collab,
    ctx: Context,
    anonymous_edit: Patterns,
    anonymous_read: Patterns,
}

impl DocsService {
    /// Makes the service on its store (the IM service's when they name the same).
    pub fn factory() -> Factory {
        Box::new(|ctx: &Context| {
            let Some(config) = ctx.config.docs.clone() else {
                return Ok(None);
            };
            let url = store::redacted_url(&config.collab.store.url);
            let store = ctx
                .shared
                .store(&config.collab.store)
                .map_err(|e| format!("docs store: {e}"))?;
            tracing::info!(
                backend = store.backend(),
                store = %url,
                "docs: serving /yjs|<document> (y-socket.io), documents stored in {url}"
            );
            let collab = Collab::new(config.collab, store, ctx.shared.collab_stats.clone());
            Ok(Some(Arc::new(DocsService {
                collab,
                ctx: ctx.clone(),
                anonymous_edit: Patterns::new(&config.anonymous_edit),
                anonymous_read: Patterns::new(&config.anonymous_read),
            }) as Arc<dyn Service>))
        })
    }

    /// What `identity` may do with document `name`.
    fn access(&self, identity: &Identity, name: &str) -> Option<Access> {
        let (edit, read) = if identity.user.is_none() {
            (self.anonymous_edit.clone(), self.anonymous_read.clone())
        } else {
            (claim(identity, "docs"), claim(identity, "docs_read"))
        };
        if edit.matches(name) {
            Some(Access::Edit)
        } else if read.matches(name) {
            Some(Access::Read)
        } else {
            None
        }
    }
}

/// A claim of document patterns: a list of strings, or one string.
fn claim(identity: &Identity, key: &str) -> Patterns {
    match identity.claims.get(key) {
        Some(serde_json::Value::String(s)) => Patterns::new(&[s]),
        Some(serde_json::Value::Array(items)) => {
            let list: Vec<&str> = items.iter().filter_map(|v| v.as_str()).collect();
            Patterns::new(&list)
        }
        _ => Patterns::default(),
    }
}

impl Service for DocsService {
    fn name(&self) -> &'static str {
        "docs"
    }

    fn install(&self, builder: socketio::Builder) -> socketio::Builder {
        let this = DocsService {
            collab: self.collab.clone(),
            ctx: self.ctx.clone(),
            anonymous_edit: self.anonymous_edit.clone(),
            anonymous_read: self.anonymous_read.clone(),
        };
        self.collab.install(
            builder,
            Arc::new(move |req, name| {
                let identity = this.ctx.authenticate(req)?;
                this.access(&identity, name).ok_or_else(|| {
                    this.ctx.shared.stats.auth_refused("doc_forbidden");
                    connect_refusal(
                        "doc_forbidden",
                        &format!("this client may not open the document {name:?}"),
                        None,
                    )
                })
            }),
        )
    }

    fn started(&self, io: &socketio::Server) {
        self.collab.started(io);
    }

    fn cluster_bus(&self, up: bool) {
        self.collab.cluster_bus(up);
    }

    fn routes(&self) -> Router<Arc<AppState>> {
        let (list, state, text, apply, delete) = (
            self.collab.clone(),
            self.collab.clone(),
            self.collab.clone(),
            self.collab.clone(),
            self.collab.clone(),
        );
        let max = self
            .ctx
            .config
            .docs
            .as_ref()
            .map_or(64 << 20, |d| d.collab.max_message_bytes);
        Router::new()
            .route(
                "/api/docs",
                get(
                    move |_: ApiKey, q: Result<Query<ListQuery>, QueryRejection>| async move {
                        let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
                        let limit = q.limit.unwrap_or(100);
                        if !(1..=1000).contains(&limit) {
                            return Err(ApiError::bad_request(format!(
                                "limit must be 1 to 1000, not {limit}"
                            )));
                        }
                        let mut docs = list
                            .api_list(q.prefix.as_deref().unwrap_or(""), q.after, limit + 1)
                            .await
                            .map_err(api_error)?;
                        let more = docs.len() > limit;
                        docs.truncate(limit);
                        let documents: Vec<_> = docs
                            .into_iter()
                            .map(|d| {
                                json!({
                                    "name": d.name,
                                    "bytes": d.bytes,
                                    "pendingUpdates": d.pending_updates,
                                    "createdMs": d.created_ms,
                                    "updatedMs": d.updated_ms,
                                })
                            })
                            .collect();
                        Ok::<_, ApiError>(Json(
                            json!({ "ok": true, "documents": documents, "more": more }),
                        ))
                    },
                ),
            )
            .route(
                "/api/docs/{name}",
                get(
                    move |_: ApiKey, name: Result<Path<String>, PathRejection>| async move {
                        let name = doc_name(name)?;
                        match state.api_state(&name).await.map_err(api_error)? {
                            Some(update) => Ok::<Response, ApiError>(
                                ([(header::CONTENT_TYPE, "application/octet-stream")], update)
                                    .into_response(),
                            ),
                            None => Err(not_found(&name)),
                        }
                    },
                )
                .delete(
                    move |_: ApiKey, name: Result<Path<String>, PathRejection>| async move {
                        let name = doc_name(name)?;
                        let deleted = delete.api_delete(&name).await.map_err(api_error)?;
                        if deleted {
                            Ok(Json(json!({ "ok": true, "deleted": true })))
                        } else {
                            Err(not_found(&name))
                        }
                    },
                ),
            )
            .route(
                "/api/docs/{name}/text",
                get(
                    move |_: ApiKey,
                          name: Result<Path<String>, PathRejection>,
                          q: Result<Query<TextQuery>, QueryRejection>| async move {
                        let name = doc_name(name)?;
                        let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
                        let field = q.field.unwrap_or_else(|| "content".to_owned());
                        match text.api_text(&name, &field).await.map_err(api_error)? {
                            Some(t) => Ok::<Response, ApiError>(
                                ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], t)
                                    .into_response(),
                            ),
                            None => Err(not_found(&name)),
                        }
                    },
                ),
            )
            .route(
                "/api/docs/{name}/update",
                post(
                    move |_: ApiKey,
                          name: Result<Path<String>, PathRejection>,
                          body: Result<Bytes, BytesRejection>| async move {
                        let name = doc_name(name)?;
                        let body = body.map_err(too_large)?;
                        apply.api_apply(&name, body).map_err(api_error)?;
                        Ok::<_, ApiError>((StatusCode::ACCEPTED, Json(json!({ "ok": true }))))
                    },
                ),
            )
            .layer(DefaultBodyLimit::max(max))
    }

    fn flush(&self) -> BoxFuture {
        let collab = self.collab.clone();
        Box::pin(async move { collab.flush().await })
    }
}

/// The query of `GET /api/docs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// The query of `GET /api/docs/{name}/text`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextQuery {
    field: Option<String>,
}

fn doc_name(name: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    name.map(|Path(n)| n)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no document {name:?}"),
    )
}

fn api_error(e: collab::api::ApiError) -> ApiError {
    match e {
        collab::api::ApiError::BadName | collab::api::ApiError::Malformed => {
            ApiError::bad_request(e.to_string())
        }
        collab::api::ApiError::Store(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}
