//! `voxproxy_sip_*`: SIP traffic of every leg (voxproxy as the caller,
//! `side="uac"`) and of the `sip.listen` server (`side="uas"`).
//!
//! The SIP state machines keep plain [`SipCounters`]; whoever drives one
//! reports what changed since its last report with [`SipMetrics::add`],
//! about once a second and at the end, so totals move during long calls.
//! SIP is signalling, a few messages a second at most, so one mutex is
//! cheaper than it looks and keeps the counters in one place.

use std::sync::Mutex;

use voxproxy_adapters::sip::counters::{CLASSES, METHODS, SipCounters};

use super::Exposition;

/// Which end of a SIP dialog voxproxy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipSide {
    /// voxproxy placed the call (Twilio → PBX): `side="uac"`.
    Client,
    /// The PBX called voxproxy on `sip.listen` (PBX → Twilio): `side="uas"`.
    Server,
}

impl SipSide {
    /// Every side, in slot order.
    pub const ALL: [SipSide; 2] = [SipSide::Client, SipSide::Server];

    /// The `side` label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            SipSide::Client => "uac",
            SipSide::Server => "uas",
        }
    }
}

/// Why the `sip.listen` listener refused or dropped something before (or
/// instead of) placing a Twilio call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipRefusal {
    /// A request from outside `sip.allow`: answered 403.
    Source,
    /// An INVITE over the per-address rate: dropped unanswered.
    Rate,
    /// A datagram over the SIP message size bound: dropped.
    Oversize,
    /// Draining, or `limits.max_calls` reached: 503.
    Capacity,
    /// A Request-URI user that is not a number: 404.
    Number,
    /// An offer without a codec voxproxy carries: 488.
    Codec,
    /// Twilio refused the call, or no REST client: 503.
    Twilio,
    /// A TCP connection over the listener's bounds: closed at once.
    Connections,
    /// A TCP stream that could not be cut into messages (oversize or
    /// malformed): closed.
    Framing,
}

impl SipRefusal {
    /// Every reason, in slot order.
    pub const ALL: [SipRefusal; 9] = [
        SipRefusal::Source,
        SipRefusal::Rate,
        SipRefusal::Oversize,
        SipRefusal::Capacity,
        SipRefusal::Number,
        SipRefusal::Codec,
        SipRefusal::Twilio,
        SipRefusal::Connections,
        SipRefusal::Framing,
    ];

    /// The `reason` label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            SipRefusal::Source => "source",
            SipRefusal::Rate => "rate",
            SipRefusal::Oversize => "oversize",
            SipRefusal::Capacity => "capacity",
            SipRefusal::Number => "number",
            SipRefusal::Codec => "codec",
            SipRefusal::Twilio => "twilio",
            SipRefusal::Connections => "connections",
            SipRefusal::Framing => "framing",
        }
    }
}

/// SIP counters of the process, by side. See `metrics/sip.rs`'s module documentation.
#[derive(Debug, Default)]
pub struct SipMetrics {
    sides: Mutex<[SipCounters; 2]>,
    refused: [std::sync::atomic::AtomicU64; 9],
}

impl SipMetrics {
    /// Adds `now − reported` to `side`'s totals: the caller keeps the
    /// counters it reported last and passes them with the current ones.
    pub fn add(&self, side: SipSide, reported: &SipCounters, now: &SipCounters) {
        let mut sides = self.sides.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let total = &mut sides[side as usize];
        let add = |t: &mut [u64], n: &[u64], r: &[u64]| {
            for ((t, n), r) in t.iter_mut().zip(n).zip(r) {
                *t += n.saturating_sub(*r);
            }
        };
        add(&mut total.requests_sent, &now.requests_sent, &reported.requests_sent);
        add(&mut total.requests_received, &now.requests_received, &reported.requests_received);
        add(&mut total.responses_sent, &now.responses_sent, &reported.responses_sent);
        add(&mut total.responses_received, &now.responses_received, &reported.responses_received);
        total.timeouts += now.timeouts.saturating_sub(reported.timeouts);
        total.parse_errors += now.parse_errors.saturating_sub(reported.parse_errors);
        total.unmatched += now.unmatched.saturating_sub(reported.unmatched);
        total.rejected_overload += now.rejected_overload.saturating_sub(reported.rejected_overload);
    }

    /// Counts one refusal of the `sip.listen` listener.
    pub fn refused(&self, reason: SipRefusal) {
        self.refused[reason as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The totals of one side.
    #[must_use]
    pub fn totals(&self, side: SipSide) -> SipCounters {
        self.sides.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[side as usize].clone()
    }

    pub(super) fn render(&self, x: &mut Exposition<'_>) {
        let sides = self.sides.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let requests = "voxproxy_sip_requests_total";
        x.family(
            requests,
            "SIP requests, by side, direction (out: sent, first transmissions) and method.",
            "counter",
        );
        for side in SipSide::ALL {
            let c = &sides[side as usize];
            for (direction, counts) in [("in", &c.requests_received), ("out", &c.requests_sent)] {
                for (method, n) in METHODS.iter().zip(counts) {
                    x.sample(
                        requests,
                        &[("side", side.label()), ("direction", direction), ("method", method)],
                        n,
                    );
                }
            }
        }
        let responses = "voxproxy_sip_responses_total";
        x.family(responses, "SIP responses, by side, direction (out: sent) and status class.", "counter");
        for side in SipSide::ALL {
            let c = &sides[side as usize];
            for (direction, counts) in [("in", &c.responses_received), ("out", &c.responses_sent)] {
                for (class, n) in CLASSES.iter().zip(counts) {
                    x.sample(
                        responses,
                        &[("side", side.label()), ("direction", direction), ("class", class)],
                        n,
                    );
                }
            }
        }
        let timeouts = "voxproxy_sip_transaction_timeouts_total";
        x.family(timeouts, "SIP client transactions that got no final answer (Timer B or F).", "counter");
        for side in SipSide::ALL {
            x.sample(timeouts, &[("side", side.label())], sides[side as usize].timeouts);
        }
        let dropped = "voxproxy_sip_messages_dropped_total";
        x.family(
            dropped,
            "SIP messages dropped: malformed (parse_error), matching no transaction or dialog (unmatched), \
             or over the bound of open transactions (overload).",
            "counter",
        );
        for side in SipSide::ALL {
            let c = &sides[side as usize];
            for (reason, n) in [
                ("parse_error", c.parse_errors),
                ("unmatched", c.unmatched),
                ("overload", c.rejected_overload),
            ] {
                x.sample(dropped, &[("side", side.label()), ("reason", reason)], n);
            }
        }
        let refused = "voxproxy_sip_listener_refused_total";
        x.family(
            refused,
            "What the sip.listen listener refused instead of placing a Twilio call: source outside \
             sip.allow (403), INVITE rate per address (dropped), oversize datagram (dropped), capacity \
             (503), number (404), codec (488), twilio refused the call (503), TCP connections over \
             the bound (closed), TCP streams that could not be framed (closed).",
            "counter",
        );
        for reason in SipRefusal::ALL {
            let n = self.refused[reason as usize].load(std::sync::atomic::Ordering::Relaxed);
            x.sample(refused, &[("reason", reason.label())], n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_deltas_and_renders_every_series() {
        let metrics = SipMetrics::default();
        let mut now = SipCounters::default();
        now.requests_sent[0] = 2;
        now.responses_received[1] = 1;
        now.parse_errors = 3;
        metrics.add(SipSide::Client, &SipCounters::default(), &now);
        let mut later = now.clone();
        later.requests_sent[0] = 5;
        metrics.add(SipSide::Client, &now, &later);
        assert_eq!(metrics.totals(SipSide::Client).requests_sent[0], 5);
        assert_eq!(metrics.totals(SipSide::Server), SipCounters::default());
        let mut out = String::new();
        metrics.render(&mut Exposition { out: &mut out });
        assert!(
            out.contains("voxproxy_sip_requests_total{side=\"uac\",direction=\"out\",method=\"INVITE\"} 5\n")
        );
        assert!(
            out.contains("voxproxy_sip_responses_total{side=\"uac\",direction=\"in\",class=\"2xx\"} 1\n")
        );
        assert!(out.contains("voxproxy_sip_messages_dropped_total{side=\"uac\",reason=\"parse_error\"} 3\n"));
        assert!(
            out.contains("voxproxy_sip_requests_total{side=\"uas\",direction=\"in\",method=\"BYE\"} 0\n")
        );
    }

    #[test]
    fn listener_refusals_are_counted_by_reason() {
        let metrics = SipMetrics::default();
        metrics.refused(SipRefusal::Source);
        metrics.refused(SipRefusal::Source);
        metrics.refused(SipRefusal::Rate);
        let mut out = String::new();
        metrics.render(&mut Exposition { out: &mut out });
        assert!(out.contains("voxproxy_sip_listener_refused_total{reason=\"source\"} 2\n"), "{out}");
        assert!(out.contains("voxproxy_sip_listener_refused_total{reason=\"rate\"} 1\n"), "{out}");
        assert!(out.contains("voxproxy_sip_listener_refused_total{reason=\"codec\"} 0\n"), "{out}");
    }
}
