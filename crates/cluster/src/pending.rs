//! Requests of this node waiting for the other nodes' answers, by request id: what both
//! adapters share.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use rmpv::Value;
use tokio::sync::mpsc;

/// The open requests of one adapter. parking_lot mutex: held to add, find or remove one.
#[derive(Default)]
pub(crate) struct Pending {
    open: Mutex<HashMap<String, mpsc::UnboundedSender<Value>>>,
}

impl Pending {
    /// Opens request `id`: its answers come out of the receiver.
    pub(crate) fn expect(&self, id: &str) -> mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.open.lock().insert(id.to_owned(), tx);
        rx
    }

    /// Hands an answer to its request, if it is still open.
    pub(crate) fn answer(&self, id: &str, answer: Value) {
        if let Some(tx) = self.open.lock().get(id) {
            let _ = tx.send(answer);
        }
    }

    /// Waits for answers to the request `id`: returns those that came until `done` says
    /// enough, or until the timeout; `complete` tells which. The request is closed.
    pub(crate) async fn gather(
        &self,
        id: String,
        mut rx: mpsc::UnboundedReceiver<Value>,
        timeout: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> (Vec<Value>, bool) {
        let mut answers = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        let complete = loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(answer)) => {
                    let finished = done(&answer);
                    answers.push(answer);
                    if finished {
                        break true;
                    }
                }
                Ok(None) | Err(_) => break false,
            }
        };
        self.open.lock().remove(&id);
        (answers, complete)
    }
}
