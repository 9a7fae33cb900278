//! What the HTTP API for backends does (`IM.md`, HTTP API); the server maps it to its
//! routes under `/api/im/`. The same rules as the client events: a conversation's
//! creation and members tell those concerned, a message posted is idempotent on (from,
//! cid) (shared with `send` by that user), acked after its commit and pushed in order.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use store::{ConversationId, MemberChange, NewMessage};

use crate::cmd::{check_user, conversation, members, now_ms, send, MAX_CID};
use crate::wire::{BodyIn, ConversationOut, MessageOut};
use crate::{Im, ImError};

/// `POST /api/im/conversations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    /// `direct` or `group`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A direct conversation's two users; a group's members.
    pub members: Vec<String>,
    /// A group's title.
    #[serde(default)]
    pub title: Option<String>,
    /// A group's owner (a member too); without one, only the backend changes its
    /// members.
    #[serde(default)]
    pub owner: Option<String>,
}

/// `POST /api/im/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// The conversation.
    pub conversation: ConversationId,
    /// The sender (a member), or `null` for a system message; never left out.
    #[serde(deserialize_with = "nullable")]
    pub from: Option<String>,
    /// The client id: idempotency key with `from`.
    pub cid: String,
    /// Any JSON value.
    pub body: Value,
}

/// `POST /api/im/conversations/{id}/members` (an extension).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeMembers {
    /// Users to add.
    #[serde(default)]
    pub add: Vec<String>,
    /// Users to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Members to make admins.
    #[serde(default)]
    pub promote: Vec<String>,
    /// Admins to make members.
    #[serde(default)]
    pub demote: Vec<String>,
}

/// A field that must be given, `null` allowed.
fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

impl Im {
    /// Creates a conversation; answers the conversation object.
    ///
    /// # Errors
    ///
    /// `bad_request` for a wrong kind or users, `too_large`, `unavailable`.
    pub async fn api_create(&self, req: NewConversation) -> Result<Value, ImError> {
        let inner = &self.inner;
        let kind = crate::wire::kind(&req.kind).ok_or_else(|| {
            ImError::BadRequest(format!(
                "type is \"direct\" or \"group\", not {:?}",
                req.kind
            ))
        })?;
        let (creator, create) = match kind {
            store::Kind::Direct => {
                if req.owner.is_some() || req.title.is_some() {
                    return Err(ImError::BadRequest(
                        "a direct conversation has no owner and no title".into(),
                    ));
                }
                let [a, b] = <[String; 2]>::try_from(req.members).map_err(|_| {
                    ImError::BadRequest("a direct conversation has exactly two members".into())
                })?;
                check_user(&a, "each member")?;
                (
                    a.clone(),
                    conversation::Create {
                        kind: req.kind,
                        with: Some(b),
                        title: None,
                        members: None,
                    },
                )
            }
            store::Kind::Group => {
                let mut members = req.members;
                if let Some(owner) = &req.owner {
                    check_user(owner, "owner")?;
                    members.retain(|m| m != owner);
                }
                (
                    req.owner.clone().unwrap_or_default(),
                    conversation::Create {
                        kind: req.kind,
                        with: None,
                        title: req.title,
                        members: Some(members),
                    },
                )
            }
        };
        let checked = conversation::check_create(inner, &creator, create)?;
        let by = match kind {
            store::Kind::Direct => Some(creator.as_str()),
            store::Kind::Group => req.owner.as_deref(),
        };
        let conv = conversation::make(inner, by, checked, None).await?;
        Ok(json!(ConversationOut {
            conv: &conv,
            user: ""
        }))
    }

    /// Stores a message as `send` does (idempotent on (from, cid)) and pushes it to
    /// every socket of the conversation; answers `{ id, seq, ts }` after the commit.
    ///
    /// # Errors
    ///
    /// `not_found` for no such conversation, `forbidden` for `from` not a member,
    /// `bad_request`, `too_large`, `conflict` (a cid of another conversation),
    /// `unavailable`.
    pub async fn api_post(&self, req: PostMessage) -> Result<Value, ImError> {
        let inner = &self.inner;
        if req.cid.is_empty() || req.cid.len() > MAX_CID {
            return Err(ImError::BadRequest(format!("cid is 1 to {MAX_CID} bytes")));
        }
        if let Some(from) = &req.from {
            check_user(from, "from")?;
        }
        let body = BodyIn::Json(req.body).into_store().ok_or_else(|| {
            ImError::BadRequest("a body with attachment placeholders is refused".into())
        })?;
        if body.len() > inner.config.max_body_bytes {
            return Err(ImError::TooLarge(format!(
                "a body is at most {} bytes encoded",
                inner.config.max_body_bytes
            )));
        }
        let conv = inner.cache.get(&inner.store, req.conversation).await?;
        let from: Option<Arc<str>> = req.from.as_deref().map(Arc::from);
        if let Some(from) = &from {
            if conv.role(from).is_none() {
                return Err(ImError::Forbidden(format!("{from:?} is not a member")));
            }
        }
        send::within_budget(inner, &conv)?;
        let message = NewMessage {
            conversation: req.conversation,
            sender: req.from,
            cid: Some(req.cid),
            body,
            ts_ms: now_ms(),
        };
        let stored = send::append(inner, &conv, from.as_ref(), message.clone())
            .await
            .map_err(|e| {
                send::give_back(inner, &conv);
                match e {
                    store::StoreError::NotFound => {
                        ImError::Forbidden("the sender is not a member".into())
                    }
                    e => e.into(),
                }
            })?;
        if stored.duplicate {
            send::give_back(inner, &conv);
        } else {
            send::committed(inner, &conv, message, &stored, None);
        }
        Ok(json!({ "id": stored.id, "seq": stored.seq, "ts": stored.ts_ms }))
    }

    /// A page of a conversation's messages, as `history` pages them; answers `{
    /// messages, more }`.
    ///
    /// # Errors
    ///
    /// `not_found`, `bad_request` for a limit out of 1..200, `unavailable`.
    pub async fn api_messages(
        &self,
        conversation: ConversationId,
        before: Option<u64>,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Value, ImError> {
        let inner = &self.inner;
        inner.cache.get(&inner.store, conversation).await?;
        let (messages, more) =
            crate::cmd::history::page(inner, conversation, before, after, limit).await?;
        let out: Vec<_> = messages.iter().map(MessageOut).collect();
        Ok(json!({ "messages": out, "more": more }))
    }

    /// Changes a group's members with every right (the backend is its owner's peer);
    /// answers the conversation object.
    ///
    /// # Errors
    ///
    /// `not_found`, `bad_request`, `conflict` (a direct conversation, the owner removed),
    /// `too_large`, `unavailable`.
    pub async fn api_members(
        &self,
        conversation: ConversationId,
        req: ChangeMembers,
    ) -> Result<Value, ImError> {
        let inner = &self.inner;
        let c = members::checked(req.add, req.remove, req.promote, req.demote)?;
        let conv = inner.cache.get(&inner.store, conversation).await?;
        let change = MemberChange {
            by: None,
            max_members: inner.config.max_group_members as u64,
            ..c
        };
        let changed = members::apply(inner, &conv, change).await?;
        members::announce(inner, &conv, &changed, None);
        Ok(json!(ConversationOut {
            conv: &conv,
            user: ""
        }))
    }
}
