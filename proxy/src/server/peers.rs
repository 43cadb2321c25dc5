//! Connections per client address, so that one address cannot take every
//! connection a worker may hold and lock out everyone else (webhooks
//! included).
//!
//! Each worker counts its own connections by client address: an IPv4
//! address, or an IPv6 /64 (one subscriber's network, which hands its hosts
//! as many addresses as they like). An address may hold at most
//! `per_address` of the worker's connections; the worker's bound is larger
//! by [`RESERVED_FOR_OTHERS`], so those always remain for other addresses.
//! Twilio's media WebSockets may all come from few addresses, which is why
//! the share is everything but the reserve rather than a small fraction.
//!
//! The table holds only addresses with an open connection, so it is bounded
//! by the worker's connection bound; nothing is kept after a connection closes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

/// Connections of each worker that one client address can never take.
pub const RESERVED_FOR_OTHERS: usize = 256;

/// The part of an address that identifies one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// An IPv4 client (also when it arrives as an IPv4-mapped IPv6 address).
    V4(u32),
    /// The /64 prefix of an IPv6 client.
    V6(u64),
}

impl PeerKey {
    /// The key of `ip`.
    #[must_use]
    pub fn of(ip: IpAddr) -> PeerKey {
        match ip {
            IpAddr::V4(v4) => PeerKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey::V4(u32::from(v4)),
                None => PeerKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// One worker's open connections by client.
#[derive(Debug)]
pub struct PeerConnections {
    counts: RefCell<HashMap<PeerKey, usize>>,
    per_address: usize,
}

impl PeerConnections {
    /// Counts for a worker that holds at most `worker_bound` connections.
    #[must_use]
    pub fn new(worker_bound: usize) -> Self {
        PeerConnections {
            counts: RefCell::new(HashMap::new()),
            per_address: worker_bound.saturating_sub(RESERVED_FOR_OTHERS).max(1),
        }
    }

    /// Most connections one client may hold on this worker.
    #[must_use]
    pub fn per_address(&self) -> usize {
        self.per_address
    }

    /// Takes a place for a connection from `ip`; `false` when the client
    /// already holds its share (the connection is to be closed).
    #[must_use]
    pub fn try_add(&self, ip: IpAddr) -> bool {
        let mut counts = self.counts.borrow_mut();
        let count = counts.entry(PeerKey::of(ip)).or_insert(0);
        if *count >= self.per_address {
            return false;
        }
        *count += 1;
        true
    }

    /// Gives back the place of a closed connection from `ip`.
    pub fn remove(&self, ip: IpAddr) {
        let mut counts = self.counts.borrow_mut();
        let key = PeerKey::of(ip);
        if let Some(count) = counts.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&key);
            }
        }
    }

    /// Clients with an open connection.
    #[cfg(test)]
    #[must_use]
    pub fn clients(&self) -> usize {
        self.counts.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_cannot_take_the_reserve_and_others_still_get_in() {
        let peers = PeerConnections::new(RESERVED_FOR_OTHERS + 3);
        assert_eq!(peers.per_address(), 3);
        for _ in 0..3 {
            assert!(peers.try_add(ip("127.0.0.2")));
        }
        assert!(!peers.try_add(ip("127.0.0.2")), "the fourth from one address is refused");
        assert!(peers.try_add(ip("127.0.0.3")), "another address still gets in");
        peers.remove(ip("127.0.0.2"));
        assert!(peers.try_add(ip("127.0.0.2")), "a closed connection frees its place");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix_and_mapped_ipv4_as_ipv4() {
        let peers = PeerConnections::new(RESERVED_FOR_OTHERS + 2);
        assert!(peers.try_add(ip("2001:db8:1:2::1")));
        assert!(peers.try_add(ip("2001:db8:1:2:ffff::9")));
        assert!(!peers.try_add(ip("2001:db8:1:2:abcd::1")), "same /64");
        assert!(peers.try_add(ip("2001:db8:1:3::1")), "another /64");
        assert_eq!(PeerKey::of(ip("::ffff:10.0.0.1")), PeerKey::of(ip("10.0.0.1")));
    }

    #[test]
    fn a_tiny_worker_bound_still_admits_one_connection_per_address() {
        let peers = PeerConnections::new(10);
        assert_eq!(peers.per_address(), 1);
        assert!(peers.try_add(ip("10.0.0.1")));
        assert!(!peers.try_add(ip("10.0.0.1")));
    }

    proptest! {
        #[test]
        fn the_table_holds_only_open_connections(ops in proptest::collection::vec((0u8..8, any::<bool>()), 0..200)) {
            let peers = PeerConnections::new(RESERVED_FOR_OTHERS + 4);
            let mut open: Vec<IpAddr> = Vec::new();
            for (host, add) in ops {
                let addr = IpAddr::from([10, 0, 0, host]);
                if add {
                    let held = open.iter().filter(|a| **a == addr).count();
                    prop_assert_eq!(peers.try_add(addr), held < 4);
                    if held < 4 {
                        open.push(addr);
                    }
                } else if let Some(at) = open.iter().position(|a| *a == addr) {
                    open.swap_remove(at);
                    peers.remove(addr);
                }
                let mut distinct = open.clone();
                distinct.sort();
                distinct.dedup();
                prop_assert_eq!(peers.clients(), distinct.len());
            }
        }
    }
}
