//! Connection tiers (`critical`, `standard`, `degraded`, from the token's `tier` claim):
//! a cap per tier, and room for the higher tiers when the server is full: a new critical
//! or standard socket evicts the oldest degraded one, which is told first
//! (`forced_disconnect`). Checked when a socket joins namespace `/`, once its token is
//! known.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use socketio::{Socket, SocketRef};

use crate::auth::Tier;
use crate::config::TiersConfig;

/// Why a socket was refused at CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierRefusal {
    /// The server is full and there is nobody of a lower tier to evict.
    ServerFull,
    /// The socket's tier is at its cap.
    TierFull,
}

/// Counts of sockets per tier. A [`Slot`] holds one place until it is released.
#[derive(Debug, Default)]
pub struct Counts([AtomicUsize; 3]);

impl Counts {
    /// Sockets of `tier` now.
    pub fn get(&self, tier: Tier) -> usize {
        self.0[tier.index()].load(Ordering::Relaxed)
    }

    fn total(&self) -> usize {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// One socket's place in its tier; the place is given back by [`Slot::release`] (when
/// the socket leaves) or when this is dropped (when its CONNECT fails), once.
#[derive(Debug)]
pub struct Slot {
    tier: Tier,
    counts: Arc<Counts>,
    released: AtomicBool,
}

impl Slot {
    /// The tier.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Gives the place back now, not when the last reference to the socket goes (a
    /// task may hold a socket that has left for a while).
    pub fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.counts.0[self.tier.index()].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// The tier policy.
#[derive(Debug)]
pub struct Tiers {
    config: TiersConfig,
    max_total: usize,
    counts: Arc<Counts>,
    /// Held from the check to the count in [`Tiers::admit`], so two connects cannot
    /// both take the last place. Releases only lower the counts: they need no lock.
    admitting: Mutex<()>,
    /// Degraded sockets, oldest first. Weak: the queue never keeps a socket alive;
    /// entries of sockets gone are skipped and swept.
    degraded: Mutex<VecDeque<Weak<Socket>>>,
}

impl Tiers {
    /// The policy for `config`, with `max_total` sockets at most.
    pub fn new(config: TiersConfig, max_total: usize) -> Tiers {
        Tiers {
            config,
            max_total,
            counts: Arc::default(),
            admitting: Mutex::new(()),
            degraded: Mutex::new(VecDeque::new()),
        }
    }

    /// The sockets per tier.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// The configuration.
    pub fn config(&self) -> &TiersConfig {
        &self.config
    }

    /// Takes a place for a socket of `tier`; when the server is full, names the degraded
    /// socket to evict for it.
    ///
    /// # Errors
    ///
    /// [`TierRefusal`] when there is no place.
    pub fn admit(&self, tier: Tier) -> Result<(Slot, Option<SocketRef>), TierRefusal> {
        let _admitting = self.admitting.lock();
        let cap = self.config.max_connections[tier.index()];
        if cap > 0 && self.counts.get(tier) >= cap {
            return Err(TierRefusal::TierFull);
        }
        let mut victim = None;
        if self.counts.total() >= self.max_total {
            if tier == Tier::Degraded {
                return Err(TierRefusal::ServerFull);
            }
            victim = Some(self.oldest_degraded().ok_or(TierRefusal::ServerFull)?);
        }
        self.counts.0[tier.index()].fetch_add(1, Ordering::Relaxed);
        Ok((
            Slot {
                tier,
                counts: self.counts.clone(),
                released: AtomicBool::new(false),
            },
            victim,
        ))
    }

    /// Registers a degraded socket, to be evicted in connect order.
    pub fn track(&self, socket: &SocketRef) {
        let mut queue = self.degraded.lock();
        queue.push_back(Arc::downgrade(socket));
        // Sweep entries of sockets gone once they outnumber the live ones.
        if queue.len() > 2 * self.counts.get(Tier::Degraded) + 64 {
            queue.retain(|w| w.upgrade().is_some_and(|s| s.connected()));
        }
    }

    fn oldest_degraded(&self) -> Option<SocketRef> {
        let mut queue = self.degraded.lock();
        while let Some(weak) = queue.pop_front() {
            if let Some(socket) = weak.upgrade() {
                if socket.connected() {
                    return Some(socket);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers(caps: [usize; 3], total: usize) -> Tiers {
        Tiers::new(
            TiersConfig {
                anonymous: Tier::Standard,
                max_connections: caps,
                ping_interval: [None; 3],
            },
            total,
        )
    }

    /// Caps per tier, places given back on drop, and a full server that has nobody to
    /// evict refuses everyone.
    #[test]
    fn caps_and_slots() {
        let t = tiers([1, 0, 0], 3);
        let (c1, _) = t.admit(Tier::Critical).unwrap();
        assert_eq!(t.admit(Tier::Critical).unwrap_err(), TierRefusal::TierFull);
        let (s1, _) = t.admit(Tier::Standard).unwrap();
        let (_d1, _) = t.admit(Tier::Degraded).unwrap();
        assert_eq!(t.counts().total(), 3);
        // Full: a degraded newcomer is refused; a standard one finds no live degraded
        // socket to evict (none was tracked) and is refused too.
        assert_eq!(
            t.admit(Tier::Degraded).unwrap_err(),
            TierRefusal::ServerFull
        );
        assert_eq!(
            t.admit(Tier::Standard).unwrap_err(),
            TierRefusal::ServerFull
        );
        drop(c1);
        s1.release();
        assert_eq!(t.counts().get(Tier::Critical), 0);
        assert_eq!(t.counts().get(Tier::Standard), 0);
        // Released once: dropping after a release gives nothing back twice.
        drop(s1);
        assert_eq!(t.counts().total(), 1);
        assert!(t.admit(Tier::Critical).is_ok());
    }
}
