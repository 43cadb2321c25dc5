//! Per-client rate limit for Twilio webhooks (`limits.webhook_rate_per_ip`),
//! and per-caller limit of new calls (`limits.calls_per_caller_per_minute`,
//! [`CallerRateLimiter`], the same buckets keyed by the calling number).
//!
//! # How to drive it
//!
//! The server owns one [`WebhookRateLimiter`] behind a `std::sync::Mutex`
//! shared by the workers (webhooks are a few per call, not a hot path). For
//! each webhook request it calls [`WebhookRateLimiter::check`] with the peer
//! address and the current time before doing any other work, and answers
//! `429 Too Many Requests` when it returns `false`. The limiter reads no
//! clock itself, so tests drive it with made-up instants.
//!
//! Each client has a token bucket that holds `rate` tokens (one second's
//! worth, so a client can send a burst of `rate` requests at once) and
//! refills at `rate` tokens per second; a request takes a token or is
//! refused, and a refused request takes nothing. IPv6 clients are grouped by
//! /64, because one host usually holds a whole /64 and could otherwise
//! rotate addresses; IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, which a
//! dual-stack listener reports) count as the IPv4 address.
//!
//! Memory is bounded by `max_tracked_ips` buckets. When a new client arrives
//! and the table is full, buckets that have refilled completely are dropped
//! (they hold no information: a new bucket starts full), at most once a
//! second so a flood of new addresses costs O(1) per request between
//! sweeps. If the table is still full, the new client shares a single
//! overflow bucket with every other untracked client until a sweep frees
//! room: under an address flood newcomers are limited together, which is the
//! price of bounded memory.
//!
//! ```
//! use std::net::IpAddr;
//! use std::time::{Duration, Instant};
//! use voxproxy::ratelimit::WebhookRateLimiter;
//!
//! let mut limiter = WebhookRateLimiter::new(2, 10_000);
//! let twilio: IpAddr = "198.51.100.7".parse()?;
//! let t0 = Instant::now();
//! assert!(limiter.check(twilio, t0));
//! assert!(limiter.check(twilio, t0));
//! assert!(!limiter.check(twilio, t0)); // burst of 2 used up: answer 429
//! assert!(limiter.check(twilio, t0 + Duration::from_millis(500))); // one token back
//! # Ok::<(), std::net::AddrParseError>(())
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often, at most, the table is swept for refilled buckets.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Token buckets per client address (per /64 for IPv6) with bounded memory.
/// See the [module documentation](self).
#[derive(Debug)]
pub struct WebhookRateLimiter {
    buckets: Buckets<ClientKey>,
}

/// Token buckets keyed by `K`: the limiter of each kind of client.
#[derive(Debug)]
struct Buckets<K> {
    /// `None` when the rate is 0: no limit.
    limit: Option<Limit>,
    max_tracked: usize,
    /// Each client's bucket, kept as the instant it will be full again (the
    /// "theoretical arrival time" form of a token bucket: one instant instead
    /// of a token count and a refill time). At or before `now` the bucket is
    /// full.
    clients: HashMap<K, Instant>,
    /// The bucket shared by clients that found the table full.
    overflow: Option<Instant>,
    last_sweep: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Limit {
    /// Time for one token to come back: window / rate.
    per_token: Duration,
    /// How far a bucket's full-again instant may lie ahead of `now` and still
    /// have a token: (burst − 1) tokens' worth.
    burst_span: Duration,
}

impl WebhookRateLimiter {
    /// A limiter allowing `rate_per_second` requests per second per client
    /// with a burst of as many, tracking at most `max_tracked_ips` clients
    /// individually. A rate of 0 means no limit (every request is allowed and
    /// nothing is tracked), as `limits.webhook_rate_per_ip = 0` does.
    #[must_use]
    pub fn new(rate_per_second: u32, max_tracked_ips: usize) -> WebhookRateLimiter {
        WebhookRateLimiter { buckets: Buckets::new(rate_per_second, Duration::from_secs(1), max_tracked_ips) }
    }

    /// Whether a request from `ip` at `now` is allowed (`true`) or must be
    /// refused (`false`); an allowed request uses one token. `now` may come
    /// from several threads and so be slightly out of order; a `now` before a
    /// bucket's state simply finds fewer tokens.
    #[must_use]
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.buckets.check(ClientKey::of(ip), now)
    }

    /// How many clients have a bucket of their own.
    #[must_use]
    pub fn tracked_clients(&self) -> usize {
        self.buckets.clients.len()
    }
}

/// New calls per calling number (`limits.calls_per_caller_per_minute`):
/// the same token buckets and bounds as [`WebhookRateLimiter`], keyed by
/// the caller's number as Twilio gives it (`From`), refilling over a minute.
#[derive(Debug)]
pub struct CallerRateLimiter {
    buckets: Buckets<String>,
}

impl CallerRateLimiter {
    /// A limiter allowing `calls_per_minute` calls per caller (a burst of as
    /// many), tracking at most `max_tracked_callers` callers individually;
    /// 0 means no limit.
    #[must_use]
    pub fn new(calls_per_minute: u32, max_tracked_callers: usize) -> CallerRateLimiter {
        CallerRateLimiter {
            buckets: Buckets::new(calls_per_minute, Duration::from_secs(60), max_tracked_callers),
        }
    }

    /// Whether a new call from `caller` at `now` is allowed; see
    /// [`WebhookRateLimiter::check`].
    #[must_use]
    pub fn check(&mut self, caller: &str, now: Instant) -> bool {
        if self.buckets.limit.is_none() {
            return true;
        }
        if let Some(full_at) = self.buckets.clients.get_mut(caller) {
            return self.buckets.limit.is_some_and(|limit| limit.take(full_at, now));
        }
        self.buckets.check(caller.to_owned(), now)
    }

    /// How many callers have a bucket of their own.
    #[must_use]
    pub fn tracked_callers(&self) -> usize {
        self.buckets.clients.len()
    }
}

impl<K: std::hash::Hash + Eq> Buckets<K> {
    fn new(rate: u32, window: Duration, max_tracked: usize) -> Buckets<K> {
        let limit = (rate > 0).then(|| {
            let per_token = window / rate;
            Limit { per_token, burst_span: per_token * (rate - 1) }
        });
        Buckets { limit, max_tracked, clients: HashMap::new(), overflow: None, last_sweep: None }
    }

    fn check(&mut self, key: K, now: Instant) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        if let Some(full_at) = self.clients.get_mut(&key) {
            return limit.take(full_at, now);
        }
        if self.clients.len() >= self.max_tracked {
            self.sweep(now);
        }
        if self.clients.len() < self.max_tracked {
            let mut full_at = now;
            let allowed = limit.take(&mut full_at, now);
            self.clients.insert(key, full_at);
            return allowed;
        }
        limit.take(self.overflow.get_or_insert(now), now)
    }

    /// Drops buckets that are full again, unless that was done less than
    /// [`SWEEP_INTERVAL`] ago: the O(n) pass runs at most once a second
    /// however many new addresses arrive.
    fn sweep(&mut self, now: Instant) {
        if self.last_sweep.is_some_and(|last| now.saturating_duration_since(last) < SWEEP_INTERVAL) {
            return;
        }
        self.last_sweep = Some(now);
        self.clients.retain(|_, full_at| *full_at > now);
    }
}

impl Limit {
    /// Takes a token from the bucket whose full-again instant is `full_at`.
    fn take(self, full_at: &mut Instant, now: Instant) -> bool {
        let from = (*full_at).max(now);
        if from.saturating_duration_since(now) > self.burst_span {
            return false;
        }
        // An instant too far in the future to represent cannot happen with
        // real clocks; keeping `from` then only errs towards allowing.
        *full_at = from.checked_add(self.per_token).unwrap_or(from);
        true
    }
}

/// Whom a bucket belongs to: an IPv4 address or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ClientKey {
    V4([u8; 4]),
    V6Net([u8; 8]),
}

impl ClientKey {
    fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4.octets()),
                None => {
                    let octets = v6.octets();
                    let mut net = [0u8; 8];
                    net.copy_from_slice(&octets[..8]);
                    ClientKey::V6Net(net)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn callers_get_their_calls_per_minute_then_one_more_each_refill() {
        let mut limiter = CallerRateLimiter::new(3, 100);
        let t0 = Instant::now();
        let results: Vec<bool> = (0..5).map(|_| limiter.check("+15550001111", t0)).collect();
        assert_eq!(results, [true, true, true, false, false]);
        assert!(limiter.check("+15550002222", t0), "another caller has its own bucket");
        assert!(!limiter.check("+15550001111", t0 + Duration::from_secs(19)));
        assert!(limiter.check("+15550001111", t0 + Duration::from_secs(20)), "a call back every 20 s");
        assert!(!limiter.check("+15550001111", t0 + Duration::from_secs(20)));
        assert_eq!(limiter.tracked_callers(), 2);
        let mut off = CallerRateLimiter::new(0, 100);
        assert!((0..1000).all(|_| off.check("+15550001111", t0)));
        assert_eq!(off.tracked_callers(), 0, "no limit tracks nothing");
    }

    #[test]
    fn a_burst_of_rate_requests_then_refusal() {
        let mut limiter = WebhookRateLimiter::new(5, 100);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        let results: Vec<bool> = (0..8).map(|_| limiter.check(a, t0)).collect();
        assert_eq!(results, [true, true, true, true, true, false, false, false]);
        // Another client has its own bucket.
        assert!(limiter.check(ip("192.0.2.2"), t0));
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let mut limiter = WebhookRateLimiter::new(5, 100);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..5 {
            assert!(limiter.check(a, t0));
        }
        // One token per 200 ms; refused requests do not push that back.
        assert!(!limiter.check(a, t0 + ms(199)));
        assert!(limiter.check(a, t0 + ms(200)));
        assert!(!limiter.check(a, t0 + ms(200)));
        assert!(!limiter.check(a, t0 + ms(399)));
        assert!(limiter.check(a, t0 + ms(400)));
        // Quiet for a long time: a full burst again, not more.
        let later = t0 + Duration::from_secs(60);
        let allowed = (0..10).filter(|_| limiter.check(a, later)).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let mut limiter = WebhookRateLimiter::new(2, 100);
        let t0 = Instant::now();
        assert!(limiter.check(ip("2001:db8:1:2::1"), t0));
        assert!(limiter.check(ip("2001:db8:1:2:ffff:ffff:ffff:fffe"), t0));
        assert!(!limiter.check(ip("2001:db8:1:2:abcd::9"), t0));
        // The neighbouring /64 is someone else.
        assert!(limiter.check(ip("2001:db8:1:3::1"), t0));
        assert_eq!(limiter.tracked_clients(), 2);
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let mut limiter = WebhookRateLimiter::new(1, 100);
        let t0 = Instant::now();
        assert!(limiter.check(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), t0));
        let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 9).to_ipv6_mapped());
        assert!(!limiter.check(mapped, t0));
        // A different IPv4 address in the same mapped /64 is not grouped.
        assert!(limiter.check(IpAddr::V6(Ipv4Addr::new(203, 0, 113, 10).to_ipv6_mapped()), t0));
    }

    #[test]
    fn rate_zero_means_no_limit() {
        let mut limiter = WebhookRateLimiter::new(0, 10);
        let t0 = Instant::now();
        assert!((0..1000).all(|_| limiter.check(ip("192.0.2.1"), t0)));
        assert_eq!(limiter.tracked_clients(), 0);
    }

    #[test]
    fn an_address_flood_stays_bounded_and_shares_the_overflow_bucket() {
        let mut limiter = WebhookRateLimiter::new(2, 100);
        let t0 = Instant::now();
        let flood = |i: u32| IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | (u128::from(i) << 64)));
        let allowed = (0..10_000).filter(|&i| limiter.check(flood(i), t0)).count();
        // 100 tracked clients get their first request through; the other
        // 9,900 share one bucket of 2.
        assert_eq!(allowed, 100 + 2);
        assert_eq!(limiter.tracked_clients(), 100);

        // The tracked clients used one token of two: their buckets are full
        // again after 500 ms, so a newcomer finds room at the next sweep, a
        // second after the one the flood caused.
        let later = t0 + ms(1_000);
        assert!(limiter.check(ip("192.0.2.77"), later));
        assert_eq!(limiter.tracked_clients(), 1);

        // A client that keeps its bucket non-full survives the sweep.
        let mut limiter = WebhookRateLimiter::new(2, 2);
        assert!(limiter.check(ip("192.0.2.1"), t0));
        assert!(limiter.check(ip("192.0.2.1"), t0));
        assert!(limiter.check(ip("192.0.2.2"), t0));
        assert!(limiter.check(ip("192.0.2.3"), t0 + ms(600))); // .2 is full again, dropped
        // .1 kept its state: 1.2 tokens back since its burst, so one more
        // request passes and the next does not (a new bucket would allow 2).
        assert!(limiter.check(ip("192.0.2.1"), t0 + ms(600)));
        assert!(!limiter.check(ip("192.0.2.1"), t0 + ms(600)));
        assert_eq!(limiter.tracked_clients(), 2);
    }

    #[test]
    fn sweeps_run_at_most_once_a_second() {
        let mut limiter = WebhookRateLimiter::new(1, 1);
        let t0 = Instant::now();
        assert!(limiter.check(ip("192.0.2.1"), t0));
        // Full table, .1 not yet refilled: the sweep finds nothing, and the
        // newcomer uses the overflow bucket.
        assert!(limiter.check(ip("192.0.2.2"), t0 + ms(500)));
        // .1 has refilled by now, but the last sweep was under a second ago:
        // still the overflow bucket, which is empty until t0 + 1.5 s.
        assert!(!limiter.check(ip("192.0.2.3"), t0 + ms(1_200)));
        // A second after the first sweep, .1 is dropped and .4 gets its own.
        assert!(limiter.check(ip("192.0.2.4"), t0 + ms(1_500)));
        assert!(!limiter.check(ip("192.0.2.4"), t0 + ms(1_500)));
        assert_eq!(limiter.tracked_clients(), 1);
    }

    proptest! {
        /// Over any run of requests, no client gets more than a burst plus
        /// one token per 1/rate s elapsed (+1 for the rounding of 1/rate to
        /// whole nanoseconds).
        #[test]
        fn never_more_than_burst_plus_refill(
            rate in 1u32..50,
            steps in proptest::collection::vec((0u64..300, 0u8..4), 1..300),
        ) {
            let mut limiter = WebhookRateLimiter::new(rate, 4);
            let t0 = Instant::now();
            let mut elapsed = Duration::ZERO;
            let mut allowed = [0u64; 4];
            for (gap_ms, client) in steps {
                elapsed += ms(gap_ms);
                // Four /64s; the host part varies within each.
                let addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, u16::from(client), 0, 0, 0, gap_ms as u16));
                if limiter.check(addr, t0 + elapsed) {
                    allowed[usize::from(client)] += 1;
                }
            }
            let refill = u64::from(rate) * elapsed.as_millis() as u64 / 1000 + 1;
            for n in allowed {
                prop_assert!(n <= u64::from(rate) + refill, "{n} allowed at {rate}/s over {elapsed:?}");
            }
        }

        /// However many addresses arrive, the table stays within its bound.
        #[test]
        fn the_table_stays_bounded(
            max in 0usize..8,
            steps in proptest::collection::vec((0u64..700, any::<u32>()), 1..300),
        ) {
            let mut limiter = WebhookRateLimiter::new(3, max);
            let t0 = Instant::now();
            let mut elapsed = Duration::ZERO;
            for (gap_ms, addr) in steps {
                elapsed += ms(gap_ms);
                let _ = limiter.check(IpAddr::V4(Ipv4Addr::from(addr % 16)), t0 + elapsed);
                prop_assert!(limiter.tracked_clients() <= max);
            }
        }

        /// Instants out of order (requests timed on different threads) never
        /// panic and never let more than a burst through at one instant.
        #[test]
        fn out_of_order_instants_are_harmless(offsets in proptest::collection::vec(0u64..5_000, 1..200)) {
            let mut limiter = WebhookRateLimiter::new(4, 8);
            let t0 = Instant::now();
            let a = ip("198.51.100.1");
            for offset in offsets {
                let _ = limiter.check(a, t0 + ms(offset));
            }
            let far = t0 + Duration::from_secs(3600);
            prop_assert_eq!((0..10).filter(|_| limiter.check(a, far)).count(), 4);
        }
    }
}
