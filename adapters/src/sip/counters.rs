//! Counters of SIP traffic the proxy exports (`voxproxy_sip_*`), by method
//! and status class. Plain integers: each leg or server owns its own and
//! the proxy sums them.

use super::Method;

/// The methods counted separately; everything else is `OTHER`.
pub const METHODS: [&str; 8] = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "OTHER"];
/// Status classes, index 0 = 1xx … 5 = 6xx.
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// SIP traffic counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SipCounters {
    /// Requests sent, first transmissions only, by [`METHODS`] index.
    pub requests_sent: [u64; 8],
    /// Requests received (retransmissions included), by [`METHODS`] index.
    pub requests_received: [u64; 8],
    /// Responses received by status class ([`CLASSES`]).
    pub responses_received: [u64; 6],
    /// Responses sent by status class (first transmissions).
    pub responses_sent: [u64; 6],
    /// Client transactions that timed out (Timer B or F).
    pub timeouts: u64,
    /// Messages that did not parse, and were dropped.
    pub parse_errors: u64,
    /// Well-formed messages that matched no transaction or dialog.
    pub unmatched: u64,
    /// Requests refused because too many transactions were open (flood).
    pub rejected_overload: u64,
}

/// The [`METHODS`] index of a method.
#[must_use]
pub fn method_index(method: &Method) -> usize {
    match method {
        Method::Invite => 0,
        Method::Ack => 1,
        Method::Bye => 2,
        Method::Cancel => 3,
        Method::Options => 4,
        Method::Update => 5,
        Method::Info => 6,
        _ => 7,
    }
}

/// The [`CLASSES`] index of a status code (100–699).
#[must_use]
pub fn class_index(status: u16) -> usize {
    usize::from(status.clamp(100, 699) / 100 - 1)
}

impl SipCounters {
    /// Adds another set (the proxy sums per-leg counters).
    pub fn add(&mut self, other: &Self) {
        let sum = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        sum(&mut self.requests_sent, &other.requests_sent);
        sum(&mut self.requests_received, &other.requests_received);
        sum(&mut self.responses_received, &other.responses_received);
        sum(&mut self.responses_sent, &other.responses_sent);
        self.timeouts += other.timeouts;
        self.parse_errors += other.parse_errors;
        self.unmatched += other.unmatched;
        self.rejected_overload += other.rejected_overload;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_and_sums() {
        assert_eq!(method_index(&Method::Other("REFER".into())), 7);
        assert_eq!(METHODS[method_index(&Method::Bye)], "BYE");
        assert_eq!(CLASSES[class_index(487)], "4xx");
        assert_eq!(class_index(0), 0);
        assert_eq!(class_index(u16::MAX), 5);
        let mut a = SipCounters { timeouts: 1, ..SipCounters::default() };
        a.requests_sent[0] = 2;
        let b = a.clone();
        a.add(&b);
        assert_eq!((a.timeouts, a.requests_sent[0]), (2, 4));
    }
}
