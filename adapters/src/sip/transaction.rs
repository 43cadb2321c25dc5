//! SIP transactions (RFC 3261 §17, with the RFC 6026 `Accepted` states):
//! retransmission and timeout of one request and its responses, sans-IO.
//!
//! | machine        | retransmits           | gives up          | lingers to absorb      |
//! |----------------|-----------------------|-------------------|------------------------|
//! | INVITE client  | request, Timer A      | Timer B (64·T1)   | Timer D (ACK resends), Timer M (2xx) |
//! | non-INVITE cl. | request, Timer E      | Timer F (64·T1)   | Timer K (T4)           |
//! | INVITE server  | 2xx (§13.3.1.4) or non-2xx, Timer G | Timer H (64·T1) | Timer I (T4)  |
//! | non-INVITE sv. | last response on each request retransmission | — | Timer J (64·T1) |
//!
//! Over a reliable transport (TCP) requests and non-2xx responses are not
//! retransmitted and the lingering timers are zero; a 2xx to INVITE is
//! still retransmitted until ACK, since a UDP hop may lie beyond the peer.

use core::time::Duration;
use std::collections::VecDeque;
use std::net::SocketAddr;
use voxproxy_core::Instant;

use super::{Message, Method, StartLine};

/// How SIP is carried to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams: the transaction layer retransmits.
    Udp,
    /// A byte stream, framed by `Content-Length`: no retransmission.
    Tcp,
}

impl Transport {
    /// Whether the transport itself delivers reliably.
    #[must_use]
    pub fn is_reliable(self) -> bool {
        self == Self::Tcp
    }

    /// The name in a `Via` (`UDP`, `TCP`).
    #[must_use]
    pub fn via_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        }
    }
}

/// Bytes to send, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The peer.
    pub dest: SocketAddr,
    /// Over which transport.
    pub transport: Transport,
    /// One whole SIP message.
    pub bytes: Vec<u8>,
}

/// The RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip estimate: first retransmission interval (500 ms).
    pub t1: Duration,
    /// Longest retransmission interval of non-INVITE requests and responses (4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

impl Timers {
    /// 64·T1: Timers B, F, H, J and M (32 s by default).
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Where a client transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Request sent, nothing heard (INVITE `Calling`, non-INVITE `Trying`).
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A final non-2xx (or, for non-INVITE, any final) response arrived.
    Completed,
    /// A 2xx to INVITE arrived; further 2xx are passed up for re-ACK.
    Accepted,
    /// Done; forget the transaction.
    Terminated,
}

/// What a client transaction did with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseAction {
    /// Pass it to the transaction user.
    Deliver,
    /// A retransmission handled here (ACK resent, or ignored).
    Absorb,
}

/// A client transaction: one outgoing request until its final response.
#[derive(Debug)]
pub struct ClientTransaction {
    request: Message,
    bytes: Vec<u8>,
    ack: Option<Vec<u8>>,
    dest: SocketAddr,
    transport: Transport,
    timers: Timers,
    state: ClientState,
    interval: Duration,
    retransmit_at: Option<Instant>,
    give_up_at: Option<Instant>,
    end_at: Option<Instant>,
    outbox: VecDeque<Vec<u8>>,
    retransmissions: u32,
}

impl ClientTransaction {
    /// Starts the transaction and queues the request for sending. The request
    /// must carry a top `Via` with a unique `branch`.
    #[must_use]
    pub fn new(
        now: Instant,
        request: Message,
        dest: SocketAddr,
        transport: Transport,
        timers: Timers,
    ) -> Self {
        let bytes = request.to_bytes();
        let reliable = transport.is_reliable();
        let mut outbox = VecDeque::with_capacity(2);
        outbox.push_back(bytes.clone());
        Self {
            request,
            bytes,
            ack: None,
            dest,
            transport,
            timers,
            state: ClientState::Calling,
            interval: timers.t1,
            retransmit_at: (!reliable).then(|| now + timers.t1),
            give_up_at: Some(now + timers.timeout()),
            end_at: None,
            outbox,
            retransmissions: 0,
        }
    }

    fn is_invite(&self) -> bool {
        self.request.method() == Some(Method::Invite)
    }

    /// The request this transaction carries.
    #[must_use]
    pub fn request(&self) -> &Message {
        &self.request
    }

    /// Where it stands.
    #[must_use]
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// How many times the request was sent again.
    #[must_use]
    pub fn retransmissions(&self) -> u32 {
        self.retransmissions
    }

    /// Whether `response` belongs here (RFC 3261 §17.1.3: top Via branch
    /// and CSeq method).
    #[must_use]
    pub fn matches(&self, response: &Message) -> bool {
        response.top_branch().is_some()
            && response.top_branch() == self.request.top_branch()
            && response.cseq().map(|(_, m)| m) == self.request.method()
    }

    /// Feeds a matching response.
    pub fn handle_response(&mut self, now: Instant, response: &Message) -> ResponseAction {
        let Some(status) = response.status() else { return ResponseAction::Absorb };
        match (self.state, status) {
            (ClientState::Terminated, _) => ResponseAction::Absorb,
            (ClientState::Completed, 300..) => {
                if let Some(ack) = &self.ack {
                    self.outbox.push_back(ack.clone());
                }
                ResponseAction::Absorb
            }
            (ClientState::Completed, _) => ResponseAction::Absorb,
            // RFC 6026: every 2xx in Accepted goes up so the TU re-ACKs it
            // (or ACKs and BYEs another fork).
            (ClientState::Accepted, 200..=299) => ResponseAction::Deliver,
            (ClientState::Accepted, _) => ResponseAction::Absorb,
            (_, 100..=199) => {
                self.state = ClientState::Proceeding;
                if self.is_invite() {
                    // Timer A stops; Timer B only guards Calling.
                    self.retransmit_at = None;
                    self.give_up_at = None;
                } else if let Some(at) = self.retransmit_at.as_mut() {
                    // Timer E continues at T2 (§17.1.2.2).
                    self.interval = self.timers.t2;
                    *at = (*at).min(now + self.timers.t2);
                }
                ResponseAction::Deliver
            }
            (_, 200..=299) if self.is_invite() => {
                self.state = ClientState::Accepted;
                self.stop_retransmitting();
                self.end_at = Some(now + self.timers.timeout());
                ResponseAction::Deliver
            }
            (_, _) => {
                self.state = ClientState::Completed;
                self.stop_retransmitting();
                let linger = if self.transport.is_reliable() {
                    Duration::ZERO
                } else if self.is_invite() {
                    Duration::from_secs(32).max(self.timers.timeout())
                } else {
                    self.timers.t4
                };
                self.end_at = Some(now + linger);
                if self.is_invite() {
                    let ack = self.non_2xx_ack(response).to_bytes();
                    self.outbox.push_back(ack.clone());
                    self.ack = Some(ack);
                }
                ResponseAction::Deliver
            }
        }
    }

    fn stop_retransmitting(&mut self) {
        self.retransmit_at = None;
        self.give_up_at = None;
    }

    /// The ACK for a non-2xx final response (§17.1.1.3): same Request-URI,
    /// Call-ID, From, top Via and Route; To from the response.
    fn non_2xx_ack(&self, response: &Message) -> Message {
        let uri = match &self.request.start {
            StartLine::Request { uri, .. } => uri.clone(),
            StartLine::Response { .. } => String::new(),
        };
        let mut ack = Message::request(Method::Ack, uri);
        let top_via = self.request.list_values("Via").next().unwrap_or_default().to_owned();
        ack.push("Via", top_via);
        ack.push("Max-Forwards", "70");
        for name in ["From", "Call-ID"] {
            if let Some(value) = self.request.header(name) {
                ack.push(name, value);
            }
        }
        ack.push("To", response.header("To").or(self.request.header("To")).unwrap_or_default());
        let number = self.request.cseq().map_or(1, |(n, _)| n);
        ack.push("CSeq", format!("{number} ACK"));
        for route in self.request.header_values("Route") {
            ack.push("Route", route);
        }
        ack
    }

    /// Advances timers. Returns `true` once, when Timer B or F fires: the
    /// request timed out (the TU acts as on a 408).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if self.give_up_at.is_some_and(|at| now >= at) {
            self.state = ClientState::Terminated;
            self.retransmit_at = None;
            self.give_up_at = None;
            return true;
        }
        if let Some(at) = self.retransmit_at
            && now >= at
        {
            self.outbox.push_back(self.bytes.clone());
            self.retransmissions += 1;
            self.interval =
                if self.is_invite() { self.interval * 2 } else { (self.interval * 2).min(self.timers.t2) };
            self.retransmit_at = Some(now + self.interval);
        }
        if self.end_at.is_some_and(|at| now >= at) {
            self.state = ClientState::Terminated;
            self.end_at = None;
        }
        false
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front().map(|bytes| Transmit { dest: self.dest, transport: self.transport, bytes })
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.retransmit_at, self.give_up_at, self.end_at].into_iter().flatten().min()
    }
}

/// Where a server transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Request received, no final response yet.
    Proceeding,
    /// Final response sent (non-2xx for INVITE), waiting for ACK or retransmissions.
    Completed,
    /// ACK received for a non-2xx final response.
    Confirmed,
    /// 2xx to INVITE sent, retransmitted until ACK.
    Accepted,
    /// Done; forget it.
    Terminated,
}

/// What a server transaction made of a request that matched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestAction {
    /// A retransmission: the last response was sent again (or nothing yet to send).
    Retransmission,
    /// The ACK for the 2xx arrived: the TU's dialog is confirmed.
    AckFor2xx,
    /// The ACK for a non-2xx final response arrived.
    AckForFailure,
}

/// A server transaction: one incoming request and our responses to it.
#[derive(Debug)]
pub struct ServerTransaction {
    branch: String,
    method: Method,
    cseq: u32,
    dest: SocketAddr,
    transport: Transport,
    timers: Timers,
    state: ServerState,
    last_response: Option<Vec<u8>>,
    interval: Duration,
    retransmit_at: Option<Instant>,
    give_up_at: Option<Instant>,
    end_at: Option<Instant>,
    outbox: VecDeque<Vec<u8>>,
    ack_timed_out: bool,
}

impl ServerTransaction {
    /// A transaction for `request`, which came from `source` over `transport`:
    /// responses go back there (symmetric response routing, RFC 3581).
    #[must_use]
    pub fn new(request: &Message, source: SocketAddr, transport: Transport, timers: Timers) -> Self {
        Self {
            branch: request.top_branch().unwrap_or_default().to_owned(),
            method: request.method().unwrap_or(Method::Other(String::new())),
            cseq: request.cseq().map_or(0, |(n, _)| n),
            dest: source,
            transport,
            timers,
            state: ServerState::Proceeding,
            last_response: None,
            interval: timers.t1,
            retransmit_at: None,
            give_up_at: None,
            end_at: None,
            outbox: VecDeque::with_capacity(2),
            ack_timed_out: false,
        }
    }

    /// Where it stands.
    #[must_use]
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The method of the request.
    #[must_use]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Whether `request` is a retransmission of ours, or the ACK of our
    /// INVITE's final response (§17.2.3, by branch).
    #[must_use]
    pub fn matches(&self, request: &Message) -> bool {
        let Some(method) = request.method() else { return false };
        request.top_branch() == Some(self.branch.as_str())
            && !self.branch.is_empty()
            && (method == self.method || (method == Method::Ack && self.method == Method::Invite))
    }

    /// Whether `ack` acknowledges our 2xx to this INVITE. Such an ACK is a
    /// transaction of its own with a new branch (§17.1.1.3), so it is
    /// matched by CSeq number within the dialog instead.
    #[must_use]
    pub fn matches_ack_for_2xx(&self, ack: &Message) -> bool {
        self.method == Method::Invite
            && self.state == ServerState::Accepted
            && ack.cseq() == Some((self.cseq, Method::Ack))
    }

    /// Feeds a matching request.
    pub fn handle_request(&mut self, now: Instant, request: &Message) -> RequestAction {
        if request.method() == Some(Method::Ack) && self.method == Method::Invite {
            return match self.state {
                ServerState::Accepted => {
                    self.state = ServerState::Terminated;
                    self.retransmit_at = None;
                    self.give_up_at = None;
                    RequestAction::AckFor2xx
                }
                ServerState::Completed => {
                    self.state = ServerState::Confirmed;
                    self.retransmit_at = None;
                    self.give_up_at = None;
                    let linger = if self.transport.is_reliable() { Duration::ZERO } else { self.timers.t4 };
                    self.end_at = Some(now + linger);
                    RequestAction::AckForFailure
                }
                _ => RequestAction::Retransmission,
            };
        }
        if matches!(self.state, ServerState::Proceeding | ServerState::Completed)
            && let Some(response) = &self.last_response
        {
            self.outbox.push_back(response.clone());
        }
        RequestAction::Retransmission
    }

    /// Sends a response. Provisional ones may be followed by others; the
    /// first final one fixes the outcome (later calls are ignored).
    pub fn respond(&mut self, now: Instant, response: &Message) {
        let Some(status) = response.status() else { return };
        if self.state != ServerState::Proceeding {
            return;
        }
        let bytes = response.to_bytes();
        self.outbox.push_back(bytes.clone());
        self.last_response = Some(bytes);
        if status < 200 {
            return;
        }
        let reliable = self.transport.is_reliable();
        if self.method != Method::Invite {
            self.state = ServerState::Completed;
            self.end_at = Some(now + if reliable { Duration::ZERO } else { self.timers.timeout() });
            return;
        }
        self.state = if status < 300 { ServerState::Accepted } else { ServerState::Completed };
        // §13.3.1.4 retransmits a 2xx whatever the transport; Timer G only
        // runs over unreliable ones.
        if status < 300 || !reliable {
            self.interval = self.timers.t1;
            self.retransmit_at = Some(now + self.timers.t1);
        }
        self.give_up_at = Some(now + self.timers.timeout());
    }

    /// Advances timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.give_up_at.is_some_and(|at| now >= at) {
            // Timer H, or the 2xx was never ACKed (§13.3.1.4: the TU ends the session).
            self.ack_timed_out = true;
            self.state = ServerState::Terminated;
            self.retransmit_at = None;
            self.give_up_at = None;
            return;
        }
        if let Some(at) = self.retransmit_at
            && now >= at
            && let Some(response) = &self.last_response
        {
            self.outbox.push_back(response.clone());
            self.interval = (self.interval * 2).min(self.timers.t2);
            self.retransmit_at = Some(now + self.interval);
        }
        if self.end_at.is_some_and(|at| now >= at) {
            self.state = ServerState::Terminated;
            self.end_at = None;
        }
    }

    /// Whether the final response was never acknowledged (Timer H, or the
    /// 2xx retransmissions ran out): the TU should end the session.
    #[must_use]
    pub fn ack_timed_out(&self) -> bool {
        self.ack_timed_out
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front().map(|bytes| Transmit { dest: self.dest, transport: self.transport, bytes })
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.retransmit_at, self.give_up_at, self.end_at].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "192.0.2.9:5060".parse().unwrap()
    }

    fn request(method: Method) -> Message {
        let name = method.to_string();
        Message::request(method, "sip:bob@192.0.2.9")
            .with("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKt1")
            .with("From", "<sip:a@192.0.2.1>;tag=a")
            .with("To", "<sip:bob@192.0.2.9>")
            .with("Call-ID", "c1")
            .with("CSeq", format!("1 {name}"))
    }

    fn response(to: &Message, status: u16) -> Message {
        let mut r = Message::response(status);
        for name in ["Via", "From", "Call-ID", "CSeq"] {
            r.push(name, to.header(name).unwrap());
        }
        r.push("To", format!("{};tag=b", to.header("To").unwrap()));
        r
    }

    fn drain_client(t: &mut ClientTransaction) -> Vec<Message> {
        core::iter::from_fn(|| t.poll_transmit()).map(|x| Message::parse(&x.bytes).unwrap()).collect()
    }

    /// Runs the clock in 10 ms steps to `until`, returning the times at
    /// which something was sent.
    fn run_client(t: &mut ClientTransaction, start: Instant, until: Duration) -> (Vec<Duration>, bool) {
        let mut sent = Vec::new();
        let mut timed_out = false;
        let mut now = start;
        while now <= start + until {
            if t.poll_timeout().is_some_and(|at| at <= now) {
                timed_out |= t.handle_timeout(now);
            }
            while t.poll_transmit().is_some() {
                sent.push(now - start);
            }
            now += Duration::from_millis(10);
        }
        (sent, timed_out)
    }

    #[test]
    fn invite_timer_a_doubles_until_timer_b() {
        let start = Instant::ZERO;
        let mut t =
            ClientTransaction::new(start, request(Method::Invite), peer(), Transport::Udp, Timers::default());
        let (sent, timed_out) = run_client(&mut t, start, Duration::from_secs(40));
        let ms: Vec<u128> = sent.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![0, 500, 1500, 3500, 7500, 15_500, 31_500]);
        assert!(timed_out);
        assert_eq!(t.state(), ClientState::Terminated);
        assert_eq!(t.retransmissions(), 6);
    }

    #[test]
    fn non_invite_timer_e_caps_at_t2_and_continues_after_1xx() {
        let start = Instant::ZERO;
        let bye = request(Method::Bye);
        let mut t = ClientTransaction::new(start, bye.clone(), peer(), Transport::Udp, Timers::default());
        let (sent, timed_out) = run_client(&mut t, start, Duration::from_secs(33));
        let ms: Vec<u128> = sent.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![0, 500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]);
        assert!(timed_out, "Timer F");

        let mut t = ClientTransaction::new(start, bye.clone(), peer(), Transport::Udp, Timers::default());
        let _ = t.poll_transmit();
        assert_eq!(t.handle_response(start, &response(&bye, 100)), ResponseAction::Deliver);
        assert_eq!(t.poll_timeout(), Some(start + Duration::from_millis(500)), "E keeps its first deadline");
        assert_eq!(t.handle_response(start, &response(&bye, 200)), ResponseAction::Deliver);
        assert_eq!(t.state(), ClientState::Completed);
        assert_eq!(t.handle_response(start, &response(&bye, 200)), ResponseAction::Absorb);
        assert!(!t.handle_timeout(start + Duration::from_secs(5)));
        assert_eq!(t.state(), ClientState::Terminated, "Timer K = T4");
    }

    #[test]
    fn reliable_transport_sends_once_and_still_times_out() {
        let start = Instant::ZERO;
        let mut t =
            ClientTransaction::new(start, request(Method::Invite), peer(), Transport::Tcp, Timers::default());
        let (sent, timed_out) = run_client(&mut t, start, Duration::from_secs(33));
        assert_eq!(sent, vec![Duration::ZERO]);
        assert!(timed_out);
    }

    #[test]
    fn invite_failure_is_acked_and_retransmissions_re_acked() {
        let start = Instant::ZERO;
        let invite = request(Method::Invite);
        let mut t = ClientTransaction::new(start, invite.clone(), peer(), Transport::Udp, Timers::default());
        let _ = drain_client(&mut t);
        assert_eq!(t.handle_response(start, &response(&invite, 180)), ResponseAction::Deliver);
        assert_eq!(t.poll_timeout(), None, "Proceeding has no timers");
        let busy = response(&invite, 486);
        assert_eq!(t.handle_response(start, &busy), ResponseAction::Deliver);
        let ack = drain_client(&mut t);
        assert_eq!(ack.len(), 1);
        assert_eq!(ack[0].method(), Some(Method::Ack));
        assert_eq!(ack[0].cseq(), Some((1, Method::Ack)));
        assert_eq!(ack[0].header("To"), Some("<sip:bob@192.0.2.9>;tag=b"));
        assert_eq!(ack[0].top_branch(), Some("z9hG4bKt1"));
        assert_eq!(t.handle_response(start, &busy), ResponseAction::Absorb);
        assert_eq!(drain_client(&mut t).len(), 1, "ACK resent for the retransmitted 486");
        t.handle_timeout(start + Duration::from_secs(32));
        assert_eq!(t.state(), ClientState::Terminated, "Timer D");
    }

    #[test]
    fn invite_2xx_is_delivered_every_time_until_timer_m() {
        let start = Instant::ZERO;
        let invite = request(Method::Invite);
        let mut t = ClientTransaction::new(start, invite.clone(), peer(), Transport::Udp, Timers::default());
        let ok = response(&invite, 200);
        assert_eq!(t.handle_response(start, &ok), ResponseAction::Deliver);
        assert_eq!(t.state(), ClientState::Accepted);
        assert_eq!(t.handle_response(start, &ok), ResponseAction::Deliver);
        assert_eq!(t.handle_response(start, &response(&invite, 180)), ResponseAction::Absorb, "late 1xx");
        t.handle_timeout(start + Duration::from_secs(32));
        assert_eq!(t.state(), ClientState::Terminated);
        let mut cancel = invite;
        cancel.remove("CSeq");
        cancel.push("CSeq", "1 CANCEL");
        assert!(!t.matches(&response(&cancel, 200)), "CANCEL shares the branch, not the method");
    }

    #[test]
    fn invite_server_retransmits_2xx_until_ack() {
        let start = Instant::ZERO;
        let invite = request(Method::Invite);
        let mut t = ServerTransaction::new(&invite, peer(), Transport::Udp, Timers::default());
        t.respond(start, &response(&invite, 200));
        let mut sent = Vec::new();
        let mut now = start;
        while now < start + Duration::from_secs(10) {
            if t.poll_timeout().is_some_and(|at| at <= now) {
                t.handle_timeout(now);
            }
            while t.poll_transmit().is_some() {
                sent.push((now - start).as_millis());
            }
            now += Duration::from_millis(10);
        }
        assert_eq!(sent, vec![0, 500, 1500, 3500, 7500]);
        let mut ack = invite;
        ack.start = StartLine::Request { method: Method::Ack, uri: "sip:bob@192.0.2.9".into() };
        ack.remove("CSeq");
        ack.push("CSeq", "1 ACK");
        assert!(t.matches(&ack));
        assert_eq!(t.handle_request(now, &ack), RequestAction::AckFor2xx);
        assert_eq!(t.poll_timeout(), None);
        assert_eq!(t.state(), ServerState::Terminated);
        assert!(!t.ack_timed_out());
    }

    #[test]
    fn invite_server_gives_up_without_ack_and_handles_failures() {
        let start = Instant::ZERO;
        let invite = request(Method::Invite);
        let mut t = ServerTransaction::new(&invite, peer(), Transport::Tcp, Timers::default());
        t.respond(start, &response(&invite, 200));
        t.handle_timeout(start + Duration::from_secs(32));
        assert!(t.ack_timed_out());

        let mut t = ServerTransaction::new(&invite, peer(), Transport::Udp, Timers::default());
        t.respond(start, &response(&invite, 100));
        assert!(t.poll_transmit().is_some());
        assert_eq!(t.handle_request(start, &invite), RequestAction::Retransmission);
        assert!(t.poll_transmit().is_some(), "100 resent on INVITE retransmission");
        t.respond(start, &response(&invite, 486));
        t.respond(start, &response(&invite, 200));
        let sent: Vec<_> = core::iter::from_fn(|| t.poll_transmit()).collect();
        assert_eq!(sent.len(), 1, "the second final response is ignored");
        assert_eq!(t.state(), ServerState::Completed);
        let mut ack = invite;
        ack.start = StartLine::Request { method: Method::Ack, uri: "sip:bob@192.0.2.9".into() };
        assert_eq!(t.handle_request(start, &ack), RequestAction::AckForFailure);
        t.handle_timeout(start + Duration::from_secs(5));
        assert_eq!(t.state(), ServerState::Terminated, "Timer I");
    }

    #[test]
    fn non_invite_server_answers_retransmissions_until_timer_j() {
        let start = Instant::ZERO;
        let bye = request(Method::Bye);
        let mut t = ServerTransaction::new(&bye, peer(), Transport::Udp, Timers::default());
        assert_eq!(t.handle_request(start, &bye), RequestAction::Retransmission);
        assert!(t.poll_transmit().is_none(), "nothing to resend yet");
        t.respond(start, &response(&bye, 200));
        assert!(t.poll_transmit().is_some());
        t.handle_request(start, &bye);
        assert!(t.poll_transmit().is_some());
        assert_eq!(t.poll_timeout(), Some(start + Duration::from_secs(32)));
        t.handle_timeout(start + Duration::from_secs(32));
        assert_eq!(t.state(), ServerState::Terminated);
    }
}
