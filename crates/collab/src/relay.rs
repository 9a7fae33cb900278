//! Documents on many nodes. Each node keeps its own copy of a document while its clients
//! have it open, and the copies are kept in step over the cluster's bus with server-side
//! emits on the document's namespace (only nodes with the namespace, that is with the
//! document open, are subscribed to it):
//!
//! - `herald:doc:update` `{ u }`: this node's updates (from its sockets and its API),
//!   merged per window; the others apply them and send them to their sockets, and do not
//!   store them: **every update is stored once**, by the node that received it;
//! - `herald:doc:awareness` `{ a }`: the awareness changes of this node's sockets, merged
//!   per window; the others keep them as states of another node;
//! - `herald:doc:sync` `{ sv }`, with an ack: a node that loaded a document (or whose bus
//!   came back) asks the others for what it lacks; each answers `{ u, a }`, the diff
//!   from its copy and its sockets' awareness states. Asked right after the load and
//!   again half a second later (the namespace's subscription may not have been in place
//!   for the first).
//!
//! Updates and awareness updates are base64 in the JSON the adapter carries.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use socketio::{Namespace, ServerEvent};

use crate::doc::{Op, Phase};
use crate::{Inner, PREFIX};

pub(crate) const UPDATE: &str = "herald:doc:update";
pub(crate) const AWARENESS: &str = "herald:doc:awareness";
pub(crate) const SYNC: &str = "herald:doc:sync";

/// How long a node waits for the others' answers to a sync.
const SYNC_WAIT: Duration = Duration::from_secs(3);

fn b64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn bytes_of(body: &Value, key: &str) -> Option<Bytes> {
    let text = body.get(key)?.as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .map(Bytes::from)
}

/// The namespace of document `name` on this node, if it exists.
fn namespace(inner: &Inner, name: &str) -> Option<Arc<Namespace>> {
    inner.io.get()?.of(&format!("{PREFIX}{name}"))
}

/// Tells the other nodes `event` of document `name`.
pub(crate) fn tell(inner: &Inner, name: &str, event: &str, key: &str, bytes: &[u8]) {
    // Made when no socket here ever opened the document (an API update on a document
    // nobody has open on this node): the nodes that have it open must hear of it. It
    // goes when the document is unloaded.
    let Some(ns) = inner
        .io
        .get()
        .and_then(|io| io.of_or_create(&format!("{PREFIX}{name}")))
    else {
        return;
    };
    let body = json!({ key: b64(bytes) });
    if let Err(e) = ns.server_side_emit(event, (body,)) {
        tracing::warn!(document = name, error = %e, "docs: the other nodes were not told");
    }
}

/// What another node said on the namespace of a document.
pub(crate) fn received(inner: &Arc<Inner>, ns: &Arc<Namespace>, ev: ServerEvent) {
    let Some(name) = ns.name().strip_prefix(PREFIX) else {
        return;
    };
    let body = ev.args.first().cloned().unwrap_or(Value::Null);
    match ev.name.as_str() {
        UPDATE => {
            if let Some(u) = bytes_of(&body, "u") {
                run(inner, name, Op::Remote(u));
            }
        }
        AWARENESS => {
            if let Some(a) = bytes_of(&body, "a") {
                run(inner, name, Op::RemoteAwareness(a));
            }
        }
        SYNC => {
            let Some(ack) = ev.ack else { return };
            let sv = bytes_of(&body, "sv").unwrap_or_default();
            // Answered from the copy in memory only: a node without one has nothing the
            // store does not.
            let answer = inner
                .docs
                .get(name)
                .map(|d| d.value().clone())
                .and_then(|d| {
                    let st = d.state.lock();
                    if !matches!(st.phase, Phase::Ready) {
                        return None;
                    }
                    let diff = st.diff(&sv)?;
                    Some(json!({ "u": b64(&diff), "a": b64(&st.awareness.full_local()) }))
                });
            ack(answer.unwrap_or_else(|| json!({})));
        }
        _ => {}
    }
}

fn run(inner: &Arc<Inner>, name: &str, op: Op) {
    let mut op = Some(op);
    inner.with_doc(name, |doc, st| {
        if let Some(op) = op.take() {
            inner.run(doc, st, op);
        }
    });
}

/// Asks the other nodes for what this node's copy of `name` lacks, now and again half a
/// second later (each on its own: answers to the first may be lost while the namespace's
/// response channel is being subscribed), and applies their answers.
pub(crate) async fn sync(inner: Arc<Inner>, name: Arc<str>) {
    tokio::spawn(sync_after(
        inner.clone(),
        name.clone(),
        Duration::from_millis(500),
    ));
    sync_after(inner, name, Duration::ZERO).await;
}

async fn sync_after(inner: Arc<Inner>, name: Arc<str>, delay: Duration) {
    tokio::time::sleep(delay).await;
    {
        let Some(ns) = namespace(&inner, &name) else {
            return;
        };
        let Some(sv) = inner
            .docs
            .get(&*name)
            .map(|d| d.value().clone())
            .and_then(|d| {
                let st = d.state.lock();
                matches!(st.phase, Phase::Ready).then(|| st.state_vector())
            })
        else {
            return;
        };
        let asked = ns
            .server_side_emit_with_ack(SYNC, &[json!({ "sv": b64(&sv) })], SYNC_WAIT)
            .await;
        match asked {
            Ok(acks) => {
                for answer in &acks.responses {
                    if let Some(u) = bytes_of(answer, "u") {
                        run(&inner, &name, Op::Remote(u));
                    }
                    if let Some(a) = bytes_of(answer, "a") {
                        run(&inner, &name, Op::RemoteAwareness(a));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(document = &*name, error = %e, "docs: no sync with the other nodes")
            }
        }
    }
}
