//! Broadcasts: to a namespace, to rooms, minus rooms or a socket.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use engineio::Sid;
use socketio_proto::{PacketType, Str};

use crate::args::{encode, Body};
use crate::{AckError, AckResponse, Args, Error, Namespace, SocketRef};

/// A broadcast being set up: the targets (`to`, `except`) and the flags (`volatile`,
/// `local`, `timeout`), then `emit`.
#[derive(Debug, Clone)]
pub struct BroadcastOperator {
    nsp: Arc<Namespace>,
    rooms: Vec<Str>,
    except: Vec<Str>,
    except_socket: Option<Sid>,
    volatile: bool,
    timeout: Duration,
}

impl BroadcastOperator {
    pub(crate) fn new(nsp: Arc<Namespace>) -> BroadcastOperator {
        BroadcastOperator {
            nsp,
            rooms: Vec::new(),
            except: Vec::new(),
            except_socket: None,
            volatile: false,
            timeout: Duration::from_secs(5),
        }
    }

    /// Adds `room` to the targets (all sockets of the namespace when none is given).
    pub fn to(mut self, room: impl Into<Str>) -> Self {
        self.rooms.push(room.into());
        self
    }

    /// Leaves out the sockets in `room`.
    pub fn except(mut self, room: impl Into<Str>) -> Self {
        self.except.push(room.into());
        self
    }

    pub(crate) fn except_socket(mut self, id: Sid) -> Self {
        self.except_socket = Some(id);
        self
    }

    /// The packet may be dropped for a socket that cannot take it now.
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// Only this node's sockets (every broadcast is local until a cluster adapter runs).
    pub fn local(self) -> Self {
        self
    }

    /// How long [`BroadcastOperator::emit_with_ack`] waits for answers. Defaults to 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The target sockets.
    pub fn sockets(&self) -> Vec<SocketRef> {
        let mut out = Vec::new();
        self.for_each_target(|s| out.push(s.clone()));
        out
    }

    /// Emits `event` to every target: encoded once, the same frames queued on every
    /// socket. Returns how many sockets took it; a socket whose queue is full misses it.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] when the arguments do not serialize.
    pub fn emit<A: Args>(&self, event: &str, args: A) -> Result<usize, Error> {
        let frames = encode(
            self.nsp.parser,
            PacketType::Event,
            self.nsp.name(),
            None,
            Body::Event(event, &args),
        )?;
        let mut delivered = 0;
        self.for_each_target(|socket| {
            if socket.send_frames(frames.clone()).is_ok() {
                delivered += 1;
            }
        });
        Ok(delivered)
    }

    /// Emits `event` to every target with an ack id of its own, and collects the answers
    /// until the timeout: one result per target.
    pub async fn emit_with_ack<A: Args + Clone + 'static>(
        &self,
        event: &str,
        args: A,
    ) -> Vec<Result<AckResponse, AckError>> {
        let waits: Vec<_> = self
            .sockets()
            .into_iter()
            .map(|s| s.emit_with_ack(event, args.clone(), self.timeout))
            .collect();
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            out.push(w.await);
        }
        out
    }

    /// Disconnects every target from the namespace.
    pub fn disconnect(&self) {
        for socket in self.sockets() {
            socket.disconnect();
        }
    }

    /// Makes every target join `room`.
    pub fn join(&self, room: impl Into<Str>) {
        let room = room.into();
        for socket in self.sockets() {
            socket.join(room.clone());
        }
    }

    /// Calls `f` on each target once. Holds one shard of the room or socket map at a
    /// time, for reading only.
    fn for_each_target(&self, mut f: impl FnMut(&SocketRef)) {
        let mut excluded: HashSet<Sid> = HashSet::new();
        excluded.extend(self.except_socket);
        for room in &self.except {
            if let Some(members) = self.nsp.rooms.get(room) {
                excluded.extend(members.keys().copied());
            }
        }
        let mut take = |id: &Sid, socket: &SocketRef| {
            if !excluded.contains(id) {
                f(socket);
            }
        };
        match self.rooms.as_slice() {
            [] => {
                for entry in self.nsp.sockets.iter() {
                    take(entry.key(), entry.value());
                }
            }
            [room] => {
                if let Some(members) = self.nsp.rooms.get(room) {
                    for (id, socket) in members.iter() {
                        take(id, socket);
                    }
                }
            }
            rooms => {
                // A socket in several of the rooms gets the packet once.
                let mut seen: HashSet<Sid> = HashSet::new();
                for room in rooms {
                    if let Some(members) = self.nsp.rooms.get(room) {
                        for (id, socket) in members.iter() {
                            if seen.insert(*id) {
                                take(id, socket);
                            }
                        }
                    }
                }
            }
        }
    }
}
