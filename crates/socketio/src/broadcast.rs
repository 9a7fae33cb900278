//! Broadcasts: to a namespace, to rooms, minus rooms or a socket. Every operation goes
//! through the namespace's [`Adapter`](crate::adapter::Adapter).

use std::sync::Arc;
use std::time::Duration;

use engineio::Sid;
use socketio_proto::Str;

use crate::adapter::{BroadcastOptions, FetchedSocket};
use crate::{AckError, AckResponse, Args, Error, Namespace, SocketRef};

/// A broadcast being set up: the targets (`to`, `except`) and the flags (`volatile`,
/// `local`, `timeout`), then `emit`.
#[derive(Clone)]
pub struct BroadcastOperator {
    nsp: Arc<Namespace>,
    opts: BroadcastOptions,
}

impl std::fmt::Debug for BroadcastOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastOperator")
            .field("nsp", &self.nsp.name())
            .field("opts", &self.opts)
            .finish()
    }
}

impl BroadcastOperator {
    pub(crate) fn new(nsp: Arc<Namespace>) -> BroadcastOperator {
        BroadcastOperator {
            nsp,
            opts: BroadcastOptions::default(),
        }
    }

    /// Adds `room` to the targets (all sockets of the namespace when none is given).
    pub fn to(mut self, room: impl Into<Str>) -> Self {
        self.opts.rooms.push(room.into());
        self
    }

    /// Leaves out the sockets in `room`.
    pub fn except(mut self, room: impl Into<Str>) -> Self {
        self.opts.except.push(room.into());
        self
    }

    pub(crate) fn except_socket(mut self, id: Sid) -> Self {
        self.opts.except_socket = Some(id);
        self
    }

    /// The packet may be dropped for a socket that cannot take it now.
    pub fn volatile(mut self) -> Self {
        self.opts.volatile = true;
        self
    }

    /// Only this node's sockets, whatever the adapter.
    pub fn local(mut self) -> Self {
        self.opts.local = true;
        self
    }

    /// Every recipient's packet carries ack id `id` (at least
    /// [`SHARED_ACK_IDS`](crate::adapter::SHARED_ACK_IDS)): the packet is still encoded
    /// once, and the acks reach the namespace's [`on_ack`](crate::Builder::on_ack)
    /// handler, with the socket that sent each. For acks from many sockets without a
    /// waiter per socket (delivery receipts).
    pub fn ack_id(mut self, id: u64) -> Self {
        self.opts.ack_id = Some(id);
        self
    }

    /// How long [`BroadcastOperator::emit_with_ack`] waits for answers. Defaults to 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.opts.timeout = timeout;
        self
    }

    /// The options as they go to the adapter.
    pub fn options(&self) -> &BroadcastOptions {
        &self.opts
    }

    /// This node's target sockets.
    pub fn sockets(&self) -> Vec<SocketRef> {
        self.nsp.local_sockets(&self.opts)
    }

    /// The target sockets on every node the adapter reaches.
    pub async fn fetch_sockets(&self) -> Vec<FetchedSocket> {
        self.nsp.adapter.fetch_sockets(&self.nsp, &self.opts).await
    }

    /// Emits `event` to every target: encoded once, the same frames queued on every
    /// socket. Returns how many local sockets took it; a socket whose queue is full
    /// misses it.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] when the arguments do not serialize.
    pub fn emit<A: Args>(&self, event: &str, args: A) -> Result<usize, Error> {
        self.nsp
            .adapter
            .broadcast(&self.nsp, event, &args, &self.opts)
    }

    /// Emits `event` to every target with an ack id of its own, and collects the answers
    /// until the timeout: one result per target.
    pub async fn emit_with_ack<A: Args>(
        &self,
        event: &str,
        args: A,
    ) -> Vec<Result<AckResponse, AckError>> {
        self.nsp
            .adapter
            .broadcast_with_ack(&self.nsp, event, &args, &self.opts)
            .await
    }

    /// Disconnects every target from the namespace.
    pub fn disconnect(&self) {
        self.nsp
            .adapter
            .disconnect_sockets(&self.nsp, &self.opts, false);
    }

    /// Disconnects every target from the namespace and closes its connection (Node's
    /// `disconnectSockets(true)`).
    pub fn disconnect_and_close(&self) {
        self.nsp
            .adapter
            .disconnect_sockets(&self.nsp, &self.opts, true);
    }

    /// Makes every target join `room`.
    pub fn join(&self, room: impl Into<Str>) {
        self.nsp
            .adapter
            .add_sockets(&self.nsp, &self.opts, &[room.into()]);
    }

    /// Makes every target leave `room`.
    pub fn leave(&self, room: impl Into<Str>) {
        self.nsp
            .adapter
            .del_sockets(&self.nsp, &self.opts, &[room.into()]);
    }
}
