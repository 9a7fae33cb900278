//! Awareness (y-protocols): each Yjs client's ephemeral state (cursor, selection, name),
//! as JSON with a clock. The codec of its updates, and what one document keeps of them.
//!
//! An update is `varuint n`, then per client `varuint id, varuint clock, varstring json`;
//! `"null"` removes the client. Clients apply an entry when its clock is newer, or equal
//! for a removal of a state they have (`applyAwarenessUpdate`).
//!
//! Every stock client sends back each awareness update it receives (its awareness
//! `update` event fires for remote changes too): those echoes carry the clock already
//! known and are dropped. A reconnecting client sends, with the clocks it knew, the
//! removal of every other client (it cleared them when it went offline): only the socket
//! that brought a client in may remove it at an unchanged clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use socketio::Sid;

/// Clients one update carries at most (a document's awareness is its open tabs).
const MAX_CLIENTS: u64 = 10_000;

/// A malformed awareness update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed awareness update: {}", self.0)
    }
}

/// One entry of an update: `(client, clock, state JSON)`; `None` removes.
pub type Entry = (u64, u64, Option<Arc<str>>);

fn read_varuint(buf: &[u8], at: &mut usize) -> Result<u64, Malformed> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = *buf.get(*at).ok_or(Malformed("truncated number"))?;
        *at += 1;
        if shift >= 64 || (shift == 63 && byte > 1) {
            return Err(Malformed("number too large"));
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

fn write_varuint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an update. States must be JSON (they are passed on as they came).
///
/// # Errors
///
/// What is wrong with it.
pub fn decode(buf: &[u8]) -> Result<Vec<Entry>, Malformed> {
    let mut at = 0;
    let n = read_varuint(buf, &mut at)?;
    if n > MAX_CLIENTS {
        return Err(Malformed("too many clients"));
    }
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let client = read_varuint(buf, &mut at)?;
        let clock = read_varuint(buf, &mut at)?;
        let len = read_varuint(buf, &mut at)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(len))
            .filter(|end| *end <= buf.len())
            .ok_or(Malformed("truncated state"))?;
        let text = std::str::from_utf8(&buf[at..end]).map_err(|_| Malformed("state not UTF-8"))?;
        at = end;
        let trimmed = text.trim();
        if trimmed == "null" {
            entries.push((client, clock, None));
        } else {
            serde_json::from_str::<&serde_json::value::RawValue>(trimmed)
                .map_err(|_| Malformed("state not JSON"))?;
            entries.push((client, clock, Some(Arc::from(trimmed))));
        }
    }
    if at != buf.len() {
        return Err(Malformed("bytes after the last client"));
    }
    Ok(entries)
}

/// Writes an update of `entries`.
pub fn encode<'a>(entries: impl ExactSizeIterator<Item = (u64, u64, Option<&'a str>)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * 48);
    write_varuint(&mut out, entries.len() as u64);
    for (client, clock, state) in entries {
        write_varuint(&mut out, client);
        write_varuint(&mut out, clock);
        let state = state.unwrap_or("null");
        write_varuint(&mut out, state.len() as u64);
        out.extend_from_slice(state.as_bytes());
    }
    out
}

/// What is known of one client.
#[derive(Debug)]
struct Client {
    clock: u64,
    /// `None` once removed (the clock is kept: an older update must not bring it back).
    state: Option<Arc<str>>,
    /// The socket that brought the state in (sent it with a newer clock); [`remote`]
    /// for a state another node told.
    owner: Option<Sid>,
    updated: Instant,
}

/// The owner of states other nodes told (no socket of this node has this id).
pub fn remote() -> Sid {
    Sid::from_random([0xff; 15])
}

/// What changed, as [`Awareness::take_changes`] tells it.
#[derive(Debug)]
pub struct Changes {
    /// The update of every change, for this node's sockets.
    pub update: Vec<u8>,
    /// The socket that made all of them, when one did (it is not told).
    pub only: Option<Sid>,
    /// The update of the changes of this node's sockets (not those other nodes told),
    /// for the other nodes.
    pub local: Option<Vec<u8>>,
}

/// What applying an update changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Clients added, changed or removed: told to the others soon.
    pub changed: usize,
    /// Clients whose state was renewed unchanged (a newer clock): told later, merged.
    pub renewed: usize,
}

/// The awareness of one document: every client's state, and what changed since it was
/// last told to the document's sockets.
#[derive(Debug, Default)]
pub struct Awareness {
    clients: HashMap<u64, Client>,
    changed: BTreeSet<u64>,
    renewed: BTreeSet<u64>,
}

impl Awareness {
    /// Applies `entries` sent by `from`.
    pub fn apply(&mut self, from: Sid, entries: Vec<Entry>, now: Instant) -> Applied {
        let mut applied = Applied::default();
        for (id, clock, state) in entries {
            let known = self.clients.get(&id);
            let current = known.map_or(0, |c| c.clock);
            let live = known.is_some_and(|c| c.state.is_some());
            let owner = known.and_then(|c| c.owner);
            let newer = current < clock;
            let removal_at_clock =
                current == clock && state.is_none() && live && owner.is_none_or(|o| o == from);
            if !(newer || removal_at_clock) {
                continue;
            }
            let unchanged = match (&state, known.and_then(|c| c.state.as_ref())) {
                (Some(new), Some(old)) => new == old,
                _ => false,
            };
            if state.is_none() && !live {
                // Removing what is already gone: only the clock moves.
                if let Some(c) = self.clients.get_mut(&id) {
                    c.clock = clock;
                }
                continue;
            }
            self.clients.insert(
                id,
                Client {
                    clock,
                    state,
                    owner: if newer { Some(from) } else { owner },
                    updated: now,
                },
            );
            if unchanged {
                if !self.changed.contains(&id) {
                    self.renewed.insert(id);
                }
                applied.renewed += 1;
            } else {
                self.renewed.remove(&id);
                self.changed.insert(id);
                applied.changed += 1;
            }
        }
        applied
    }

    /// Removes the states `socket` brought in (it left): each gets a newer clock, so that
    /// every client drops it. Returns how many.
    pub fn remove_owned_by(&mut self, socket: Sid) -> usize {
        let mut n = 0;
        for (id, c) in &mut self.clients {
            if c.owner == Some(socket) && c.state.is_some() {
                c.state = None;
                c.clock += 1;
                c.owner = None;
                self.renewed.remove(id);
                self.changed.insert(*id);
                n += 1;
            }
        }
        n
    }

    /// Removes states not renewed within `timeout` (their client is gone without a word;
    /// clients drop them after the same time), and forgets removed clients after ten
    /// times that. Returns how many states were removed.
    pub fn expire(&mut self, timeout: Duration, now: Instant) -> usize {
        let mut n = 0;
        let changed = &mut self.changed;
        let renewed = &mut self.renewed;
        self.clients.retain(|id, c| {
            let age = now.saturating_duration_since(c.updated);
            if c.state.is_some() && age > timeout {
                c.state = None;
                c.clock += 1;
                c.owner = None;
                c.updated = now;
                renewed.remove(id);
                changed.insert(*id);
                n += 1;
            }
            c.state.is_some() || age <= timeout * 10 || changed.contains(id)
        });
        n
    }

    /// Whether changes wait to be told.
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Whether renewals wait to be told.
    pub fn has_renewals(&self) -> bool {
        !self.renewed.is_empty()
    }

    /// What changed (and what was renewed) since the last call; `None` when nothing did.
    pub fn take_changes(&mut self) -> Option<Changes> {
        if self.changed.is_empty() && self.renewed.is_empty() {
            return None;
        }
        let ids: Vec<u64> = std::mem::take(&mut self.changed)
            .into_iter()
            .chain(std::mem::take(&mut self.renewed))
            .collect();
        let mut owners = ids
            .iter()
            .map(|id| self.clients.get(id).and_then(|c| c.owner));
        let first = owners.next().flatten();
        let only = first.filter(|o| owners.all(|x| x == Some(*o)));
        let remote = remote();
        let mut ours = Vec::new();
        let entries: Vec<_> = ids
            .iter()
            .filter_map(|id| {
                self.clients.get(id).map(|c| {
                    if c.owner != Some(remote) {
                        ours.push((*id, c.clock, c.state.as_deref()));
                    }
                    (*id, c.clock, c.state.as_deref())
                })
            })
            .collect();
        Some(Changes {
            local: (!ours.is_empty()).then(|| encode(ours.into_iter())),
            update: encode(entries.into_iter()),
            only,
        })
    }

    /// The update of the live states of this node's sockets (what another node asks).
    pub fn full_local(&self) -> Vec<u8> {
        let remote = remote();
        let entries: Vec<_> = self
            .clients
            .iter()
            .filter(|(_, c)| c.state.is_some() && c.owner != Some(remote))
            .map(|(id, c)| (*id, c.clock, c.state.as_deref()))
            .collect();
        encode(entries.into_iter())
    }

    /// The update of every live state (what a socket gets when it joins).
    pub fn full(&self) -> Vec<u8> {
        let entries: Vec<_> = self
            .clients
            .iter()
            .filter(|(_, c)| c.state.is_some())
            .map(|(id, c)| (*id, c.clock, c.state.as_deref()))
            .collect();
        encode(entries.into_iter())
    }

    /// Live states.
    pub fn len(&self) -> usize {
        self.clients.values().filter(|c| c.state.is_some()).count()
    }

    /// Whether there is no live state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u8) -> Sid {
        Sid::from_random([n; 15])
    }

    fn one(client: u64, clock: u64, state: Option<&str>) -> Vec<u8> {
        encode([(client, clock, state)].into_iter())
    }

    #[test]
    fn codec_round_trip_and_bad_input() {
        let bytes = encode([(7, 3, Some(r#"{"user":{"name":"a"}}"#)), (9, 1, None)].into_iter());
        let entries = decode(&bytes).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, 7);
        assert_eq!(entries[0].1, 3);
        assert_eq!(entries[0].2.as_deref(), Some(r#"{"user":{"name":"a"}}"#));
        assert_eq!(entries[1], (9, 1, None));
        assert_eq!(decode(&[0]).unwrap(), vec![]);
        assert!(decode(&[]).is_err());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[1, 1, 1, 3, b'{', b'x', b'}']).is_err(), "not JSON");
        assert!(decode(&[1, 1, 1, 2, 0xff, 0xfe]).is_err(), "not UTF-8");
        assert!(decode(&[0xff; 12]).is_err(), "number too large");
        let mut extra = one(1, 1, Some("{}"));
        extra.push(0);
        assert!(decode(&extra).is_err());
        assert!(decode(&[0xff, 0xff, 0x7f]).is_err(), "too many clients");
    }

    #[test]
    fn echoes_and_stale_removals_are_dropped() {
        let now = Instant::now();
        let mut a = Awareness::default();
        let applied = a.apply(sid(1), decode(&one(7, 1, Some("{}"))).unwrap(), now);
        assert_eq!(applied.changed, 1);
        assert!(a.take_changes().is_some());
        // Another socket echoes it back: nothing.
        let echo = a.apply(sid(2), decode(&one(7, 1, Some("{}"))).unwrap(), now);
        assert_eq!(echo, Applied::default());
        // A reconnecting socket removes it at the clock it knew: refused.
        let stale = a.apply(sid(2), decode(&one(7, 1, None)).unwrap(), now);
        assert_eq!(stale, Applied::default());
        assert_eq!(a.len(), 1);
        // Its owner may.
        let own = a.apply(sid(1), decode(&one(7, 1, None)).unwrap(), now);
        assert_eq!(own.changed, 1);
        assert_eq!(a.len(), 0);
        // Clock 0 is never newer than nothing (as y-protocols).
        assert_eq!(
            a.apply(sid(1), decode(&one(8, 0, Some("{}"))).unwrap(), now),
            Applied::default()
        );
    }

    #[test]
    fn renewals_wait_changes_go() {
        let now = Instant::now();
        let mut a = Awareness::default();
        a.apply(sid(1), decode(&one(7, 1, Some(r#"{"x":1}"#))).unwrap(), now);
        a.take_changes();
        let renewed = a.apply(sid(1), decode(&one(7, 2, Some(r#"{"x":1}"#))).unwrap(), now);
        assert_eq!(
            renewed,
            Applied {
                changed: 0,
                renewed: 1
            }
        );
        assert!(!a.has_changes());
        assert!(a.has_renewals());
        let moved = a.apply(sid(1), decode(&one(7, 3, Some(r#"{"x":2}"#))).unwrap(), now);
        assert_eq!(moved.changed, 1);
        assert!(!a.has_renewals(), "the change carries the renewal");
        let changes = a.take_changes().unwrap();
        assert_eq!(changes.only, Some(sid(1)));
        assert_eq!(decode(&changes.update).unwrap()[0].1, 3);
        assert_eq!(changes.local.as_ref(), Some(&changes.update));
        // What another node told is not told back to the others.
        a.apply(remote(), decode(&one(9, 1, Some("{}"))).unwrap(), now);
        let changes = a.take_changes().unwrap();
        assert_eq!(decode(&changes.update).unwrap().len(), 1);
        assert_eq!(changes.local, None);
        assert_eq!(decode(&a.full()).unwrap().len(), 2);
        assert_eq!(decode(&a.full_local()).unwrap().len(), 1);
    }

    #[test]
    fn a_leaving_socket_takes_its_states() {
        let now = Instant::now();
        let mut a = Awareness::default();
        a.apply(sid(1), decode(&one(7, 4, Some("{}"))).unwrap(), now);
        a.apply(sid(2), decode(&one(8, 1, Some("{}"))).unwrap(), now);
        a.take_changes();
        assert_eq!(a.remove_owned_by(sid(1)), 1);
        let changes = a.take_changes().unwrap();
        assert_eq!(decode(&changes.update).unwrap(), vec![(7, 5, None)]);
        assert_eq!(a.len(), 1);
        assert_eq!(decode(&a.full()).unwrap().len(), 1);
        // Expiry: the other is removed after the timeout.
        let later = now + Duration::from_secs(31);
        assert_eq!(a.expire(Duration::from_secs(30), later), 1);
        assert!(a.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
