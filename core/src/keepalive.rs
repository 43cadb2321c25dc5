//! Keep-alive and idle timers as a sans-IO state machine.
//!
//! One [`Keepalive`] watches one direction pair of a connection (the Twilio
//! WebSocket, or the RTP leg towards the backend). The caller reports traffic
//! with [`Keepalive::handle_sent`] and [`Keepalive::handle_received`], sleeps
//! until [`Keepalive::poll_timeout`], calls [`Keepalive::handle_timeout`], and
//! drains [`Keepalive::poll_event`]:
//!
//! - [`KeepaliveEvent::SendKeepalive`]: the link has been quiet for the ping
//!   interval; send a WebSocket ping or an RTP keep-alive packet. If the peer
//!   stays silent the next keep-alive backs off exponentially (interval, 2×,
//!   4×, … capped at `max_backoff`).
//! - [`KeepaliveEvent::Unresponsive`]: `max_unanswered` keep-alives in a row
//!   drew nothing from the peer.
//! - [`KeepaliveEvent::IdleTimeout`]: nothing was received for
//!   `idle_timeout`. Each of the two terminal events fires once; after either,
//!   the machine asks for no more wake-ups.
//!
//! ```
//! use core::time::Duration;
//! use voxproxy_core::keepalive::{Keepalive, KeepaliveConfig, KeepaliveEvent};
//! use voxproxy_core::time::Instant;
//!
//! let config = KeepaliveConfig {
//!     interval: Duration::from_secs(5),
//!     idle_timeout: Some(Duration::from_secs(30)),
//!     ..KeepaliveConfig::default()
//! };
//! let mut ka = Keepalive::new(config, Instant::ZERO);
//! let wake = ka.poll_timeout().unwrap();
//! assert_eq!(wake, Instant::from_millis(5_000));
//! ka.handle_timeout(wake);
//! assert_eq!(ka.poll_event(), Some(KeepaliveEvent::SendKeepalive));
//! ka.handle_sent(wake);
//! assert_eq!(ka.poll_event(), None);
//! ```

use core::time::Duration;

use crate::time::{Instant, earliest};

/// Settings of one [`Keepalive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// Quiet time after which a keep-alive is due.
    pub interval: Duration,
    /// Upper bound on the backed-off interval between unanswered keep-alives.
    pub max_backoff: Duration,
    /// Silence from the peer after which the link is declared dead.
    pub idle_timeout: Option<Duration>,
    /// Keep-alives in a row without any answer before [`KeepaliveEvent::Unresponsive`].
    pub max_unanswered: Option<u32>,
    /// Whether traffic *from* the peer also postpones our keep-alive.
    ///
    /// `true` for liveness probes (a WebSocket that receives media every 20 ms
    /// needs no ping); `false` for NAT or firewall bindings, which only our
    /// own outbound packets refresh.
    pub refresh_on_receive: bool,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            interval: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            idle_timeout: Some(Duration::from_secs(30)),
            max_unanswered: None,
            refresh_on_receive: true,
        }
    }
}

/// What the caller must do, drained with [`Keepalive::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepaliveEvent {
    /// Send a keep-alive now, then report it with [`Keepalive::handle_sent`].
    SendKeepalive,
    /// The peer did not answer `max_unanswered` keep-alives in a row.
    Unresponsive,
    /// Nothing was received for `idle_timeout`.
    IdleTimeout,
}

/// Keep-alive and idle state of one connection. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Keepalive {
    config: KeepaliveConfig,
    last_sent: Instant,
    last_received: Instant,
    unanswered: u32,
    pending: Option<KeepaliveEvent>,
    terminal: Option<KeepaliveEvent>,
    terminal_reported: bool,
}

impl Keepalive {
    /// Starts watching a connection that opened at `now`.
    #[must_use]
    pub fn new(config: KeepaliveConfig, now: Instant) -> Self {
        Keepalive {
            config,
            last_sent: now,
            last_received: now,
            unanswered: 0,
            pending: None,
            terminal: None,
            terminal_reported: false,
        }
    }

    /// The settings this machine runs with.
    #[must_use]
    pub fn config(&self) -> &KeepaliveConfig {
        &self.config
    }

    /// Something (media, a keep-alive, anything) was sent at `now`.
    pub fn handle_sent(&mut self, now: Instant) {
        self.last_sent = self.last_sent.max(now);
    }

    /// Something arrived from the peer at `now`: it is alive.
    pub fn handle_received(&mut self, now: Instant) {
        self.last_received = self.last_received.max(now);
        self.unanswered = 0;
    }

    /// Keep-alives sent since the peer last said anything.
    #[must_use]
    pub fn unanswered(&self) -> u32 {
        self.unanswered
    }

    /// Whether the link was declared dead ([`KeepaliveEvent::Unresponsive`] or
    /// [`KeepaliveEvent::IdleTimeout`]).
    #[must_use]
    pub fn is_dead(&self) -> bool {
        self.terminal.is_some()
    }

    /// Time passed; `now` is at or after the last [`Keepalive::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.terminal.is_some() {
            return;
        }
        if self.idle_deadline().is_some_and(|d| now >= d) {
            self.terminal = Some(KeepaliveEvent::IdleTimeout);
            self.pending = None;
            return;
        }
        if now >= self.keepalive_due() {
            if self.config.max_unanswered.is_some_and(|max| self.unanswered >= max) {
                self.terminal = Some(KeepaliveEvent::Unresponsive);
                self.pending = None;
                return;
            }
            self.unanswered = self.unanswered.saturating_add(1);
            self.pending = Some(KeepaliveEvent::SendKeepalive);
            // Count the keep-alive as sent now even if the caller forgets to
            // report it, so a lost report cannot turn into a busy loop.
            self.last_sent = now;
        }
    }

    /// The next thing to do, if any. Drain until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<KeepaliveEvent> {
        if let Some(event) = self.pending.take() {
            return Some(event);
        }
        match self.terminal {
            Some(event) if !self.terminal_reported => {
                self.terminal_reported = true;
                Some(event)
            }
            _ => None,
        }
    }

    /// When [`Keepalive::handle_timeout`] is next needed; `None` once dead.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.terminal.is_some() {
            return None;
        }
        earliest(Some(self.keepalive_due()), self.idle_deadline())
    }

    fn idle_deadline(&self) -> Option<Instant> {
        self.config.idle_timeout.map(|t| self.last_received + t)
    }

    fn current_interval(&self) -> Duration {
        // interval × 2^unanswered, capped; the shift is bounded so it cannot overflow.
        let factor = 1u32 << self.unanswered.min(16);
        self.config.interval.saturating_mul(factor).min(self.config.max_backoff.max(self.config.interval))
    }

    fn keepalive_due(&self) -> Instant {
        let quiet_since = if self.config.refresh_on_receive {
            self.last_sent.max(self.last_received)
        } else {
            self.last_sent
        };
        quiet_since + self.current_interval()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeepaliveEvent::*;
    use std::vec::Vec;

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    fn config() -> KeepaliveConfig {
        KeepaliveConfig {
            interval: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            idle_timeout: Some(Duration::from_millis(1_000)),
            max_unanswered: None,
            refresh_on_receive: true,
        }
    }

    /// Runs the machine on virtual time until `end`, calling `traffic` at
    /// every wake-up; returns (millisecond, event) pairs. Bounded wake-ups.
    fn run(
        ka: &mut Keepalive,
        end: u64,
        mut traffic: impl FnMut(&mut Keepalive, u64),
    ) -> Vec<(u64, KeepaliveEvent)> {
        let mut log = Vec::new();
        for _ in 0..1_000 {
            let Some(wake) = ka.poll_timeout() else { break };
            if wake > ms(end) {
                break;
            }
            ka.handle_timeout(wake);
            let at = wake.as_nanos() / 1_000_000;
            while let Some(ev) = ka.poll_event() {
                log.push((at, ev));
            }
            traffic(ka, at);
        }
        log
    }

    #[test]
    fn quiet_link_gets_backed_off_keepalives_then_idles_out() {
        let mut ka = Keepalive::new(config(), ms(0));
        let log = run(&mut ka, 5_000, |_, _| {});
        // +100, then +200 (backed off once), then +350 (capped), then idle at 1 s.
        assert_eq!(
            log,
            [(100, SendKeepalive), (300, SendKeepalive), (650, SendKeepalive), (1_000, IdleTimeout)]
        );
        assert!(ka.is_dead());
        assert_eq!(ka.poll_timeout(), None);
        ka.handle_timeout(ms(9_000));
        assert_eq!(ka.poll_event(), None, "terminal events fire once");
    }

    #[test]
    fn answers_reset_the_backoff() {
        let mut ka = Keepalive::new(config(), ms(0));
        // The peer answers every keep-alive 10 ms later.
        let log = run(&mut ka, 700, |ka, at| {
            ka.handle_received(ms(at + 10));
        });
        assert_eq!(
            log,
            [
                (100, SendKeepalive),
                (210, SendKeepalive),
                (320, SendKeepalive),
                (430, SendKeepalive),
                (540, SendKeepalive),
                (650, SendKeepalive)
            ]
        );
        assert_eq!(ka.unanswered(), 0);
    }

    #[test]
    fn steady_traffic_needs_no_keepalive() {
        let mut ka = Keepalive::new(config(), ms(0));
        for t in (0..10_000).step_by(20) {
            ka.handle_received(ms(t));
            if let Some(wake) = ka.poll_timeout().filter(|w| *w <= ms(t)) {
                ka.handle_timeout(wake);
            }
            assert_eq!(ka.poll_event(), None);
        }
        assert_eq!(ka.poll_timeout(), Some(ms(9_980 + 100)));
    }

    #[test]
    fn outbound_only_refresh_ignores_received_traffic() {
        let config = KeepaliveConfig { refresh_on_receive: false, idle_timeout: None, ..config() };
        let mut ka = Keepalive::new(config, ms(0));
        ka.handle_received(ms(90));
        assert_eq!(ka.poll_timeout(), Some(ms(100)));
        ka.handle_sent(ms(95));
        assert_eq!(ka.poll_timeout(), Some(ms(195)));
    }

    #[test]
    fn unresponsive_after_max_unanswered() {
        let config = KeepaliveConfig { max_unanswered: Some(2), idle_timeout: None, ..config() };
        let mut ka = Keepalive::new(config, ms(0));
        let log = run(&mut ka, 5_000, |_, _| {});
        assert_eq!(log, [(100, SendKeepalive), (300, SendKeepalive), (650, Unresponsive)]);
        assert!(ka.is_dead());
    }

    #[test]
    fn a_late_wakeup_still_fires_once() {
        let mut ka = Keepalive::new(KeepaliveConfig { idle_timeout: None, ..config() }, ms(0));
        ka.handle_timeout(ms(10_000));
        assert_eq!(ka.poll_event(), Some(SendKeepalive));
        assert_eq!(ka.poll_event(), None);
        assert_eq!(ka.poll_timeout(), Some(ms(10_200)));
    }
}
