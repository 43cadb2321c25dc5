//! The SIP → Twilio direction: a sans-IO user agent server that accepts
//! INVITEs from allowed PBXs (`sip.allow`), turns each into an
//! [`ServerEvent::IncomingCall`] for the proxy to place a Twilio call, and
//! answers with 180/200/4xx as the proxy says. CANCEL gets 200 + 487, BYE
//! and ACK are handled, and Twilio's call outcome maps to a SIP status with
//! [`status_for_twilio`].

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use voxproxy_core::Instant;

use super::counters::{SipCounters, class_index, method_index};
use super::message::{name_addr_uri, param};
use super::transaction::{ClientState, ClientTransaction, RequestAction, ServerState, ServerTransaction};
use super::{Ids, Message, Method, SipError, SipUri, StartLine, Timers, Transmit, Transport};
use crate::sdp::{Codec, Origin, PayloadType, SessionDescription};

/// Most calls in progress through one server.
pub const MAX_CALLS: usize = 256;
/// Most calls in progress from one source address (flood bound).
pub const MAX_CALLS_PER_SOURCE: usize = 16;
/// Most entries in `sip.allow`.
pub const MAX_ALLOW_ENTRIES: usize = 64;
/// Most of our BYEs awaiting the PBX's answer at once; one more is counted
/// as overload and sent no more than the call's end allows (not at all).
pub const MAX_BYES: usize = MAX_CALLS;

/// An IP network, `ADDR/PREFIX` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `192.0.2.0/24`, `2001:db8::/32` or a bare address.
    pub fn parse(text: &str) -> Result<Self, SipError> {
        let bad = |reason: &str| SipError::InvalidConfig {
            field: "sip.allow",
            reason: format!("`{text}`: {reason}"),
        };
        let (addr, prefix) = text.trim().split_once('/').map_or((text.trim(), None), |(a, p)| (a, Some(p)));
        let network: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| bad("prefix out of range"))?
            }
        };
        Ok(Self { network, prefix })
    }

    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, bits) = match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(n.to_bits()), u128::from(i.to_bits()), 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (n.to_bits(), i.to_bits(), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

impl core::fmt::Display for Cidr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Parses `sip.allow`: comma-separated CIDRs.
pub fn parse_allow(list: &str) -> Result<Vec<Cidr>, SipError> {
    let entries: Vec<&str> = list.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    if entries.len() > MAX_ALLOW_ENTRIES {
        return Err(SipError::InvalidConfig {
            field: "sip.allow",
            reason: format!("more than {MAX_ALLOW_ENTRIES} entries"),
        });
    }
    entries.into_iter().map(Cidr::parse).collect()
}

/// The SIP final status for a Twilio call that did not connect (its
/// `CallStatus`): busy → 486, no-answer → 480, canceled → 487, anything
/// else (failed) → 503.
#[must_use]
pub fn status_for_twilio(call_status: &str) -> u16 {
    match call_status {
        "busy" => 486,
        "no-answer" => 480,
        "canceled" => 487,
        _ => 503,
    }
}

/// The media a PBX's offer was accepted with: where its RTP goes and in
/// which format, for the call bridge's RTP leg and for our answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptedMedia {
    /// The offer's `c=` address and `m=` port.
    pub remote: SocketAddr,
    /// The audio codec both sides use.
    pub codec: Codec,
    /// Its payload type, the offer's number for it (RFC 3264 §6.1).
    pub payload_type: u8,
    /// The offer's `telephone-event` payload type at the codec's rate, if any.
    pub dtmf_payload_type: Option<u8>,
}

/// What to accept of a PBX's `offer`: its most preferred format voxproxy
/// can carry whose clock rate is `clock_rate` (the configured `rtp.codec`'s:
/// the bridge's jitter buffer and ptime are sized for it), with the offer's
/// payload type numbers. `None` when the offer has none (answer 488), or
/// offers no media (`sendonly`/`inactive` are accepted: media follows once
/// the PBX resumes).
#[must_use]
pub fn accept_offer(offer: &SessionDescription, clock_rate: u32) -> Option<AcceptedMedia> {
    let (codec, payload_type) = offer
        .payload_types
        .iter()
        .filter_map(|pt| pt.codec().map(|codec| (codec, pt.number)))
        .find(|(codec, _)| codec.clock_rate() == clock_rate)?;
    Some(AcceptedMedia {
        remote: SocketAddr::new(offer.connection, offer.port),
        codec,
        payload_type,
        dtmf_payload_type: offer.telephone_event(codec.clock_rate()),
    })
}

/// Our SDP answer for `media`: RTP at `local:port`, the accepted codec and
/// (when offered) telephone-event, both under the offer's numbers.
#[must_use]
pub fn answer_sdp(
    media: &AcceptedMedia,
    local: IpAddr,
    port: u16,
    session_id: u64,
    ptime_ms: u16,
) -> SessionDescription {
    let mut answer = SessionDescription::new(Origin::new(session_id, 1, local), local, port)
        .with_payload_type(PayloadType::for_codec(media.codec, media.payload_type))
        .with_ptime(ptime_ms);
    if let Some(dtmf) = media.dtmf_payload_type {
        answer = answer.with_telephone_event(dtmf);
    }
    answer
}

/// Identifies one incoming call for the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallId(pub u64);

/// What the server tells the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// An allowed INVITE: place a Twilio call to `user`.
    IncomingCall {
        /// Ours.
        id: CallId,
        /// The Request-URI's user part (the number to call).
        user: String,
        /// The From user part (caller id if none is configured).
        from_user: String,
        /// The PBX's SDP offer (boxed: it is large and events are moved often).
        offer: Box<SessionDescription>,
        /// Where it came from.
        source: SocketAddr,
        /// The SIP Call-ID, for call records.
        call_id: String,
    },
    /// The PBX cancelled before we answered: cancel the Twilio call.
    Cancelled(CallId),
    /// Our 200 was acknowledged: media may flow both ways.
    Confirmed(CallId),
    /// The call is over.
    Ended {
        /// Which.
        id: CallId,
        /// Whether the PBX ended it (BYE), or our 2xx was never ACKed.
        by_remote: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Proceeding,
    Answered,
    Confirmed,
    Done,
}

#[derive(Debug)]
struct Call {
    id: CallId,
    call_id: String,
    remote_tag: String,
    local_tag: String,
    source: SocketAddr,
    invite: Message,
    transaction: ServerTransaction,
    remote_cseq: u32,
    local_cseq: u32,
    phase: Phase,
}

/// Accepts calls from PBXs.
#[derive(Debug)]
pub struct SipServer {
    local: SocketAddr,
    transport: Transport,
    allow: Vec<Cidr>,
    timers: Timers,
    ids: Ids,
    next_id: u64,
    calls: Vec<Call>,
    others: Vec<ServerTransaction>,
    /// Our BYEs, retransmitted (Timer E) until the PBX answers or Timer F.
    byes: Vec<ClientTransaction>,
    outbox: VecDeque<Transmit>,
    events: VecDeque<ServerEvent>,
    counters: SipCounters,
    /// INVITEs refused because their source is outside `sip.allow`.
    pub rejected_source: u64,
}

impl SipServer {
    /// A server answering at `local` for sources in `allow`.
    #[must_use]
    pub fn new(local: SocketAddr, transport: Transport, allow: Vec<Cidr>, timers: Timers, seed: u64) -> Self {
        Self {
            local,
            transport,
            allow,
            timers,
            ids: Ids::new(seed),
            next_id: 1,
            calls: Vec::new(),
            others: Vec::new(),
            byes: Vec::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            counters: SipCounters::default(),
            rejected_source: 0,
        }
    }

    /// Traffic counters.
    #[must_use]
    pub fn counters(&self) -> &SipCounters {
        &self.counters
    }

    /// A datagram from a PBX.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Ok(message) = Message::parse(bytes) else {
            self.counters.parse_errors += 1;
            return;
        };
        let Some(method) = message.method().filter(|_| message.status().is_none()) else {
            // The only requests we send are BYEs: a response is theirs or no one's.
            self.handle_response(now, &message);
            return;
        };
        self.counters.requests_received[method_index(&method)] += 1;
        if !self.allow.iter().any(|c| c.contains(from.ip())) {
            self.rejected_source += 1;
            if method != Method::Ack {
                self.send_stateless(from, &message, 403);
            }
            return;
        }
        self.handle_request(now, from, &message, &method);
    }

    fn handle_request(&mut self, now: Instant, from: SocketAddr, request: &Message, method: &Method) {
        if let Some(call) = self
            .calls
            .iter_mut()
            .find(|c| c.transaction.matches(request) || c.transaction.matches_ack_for_2xx(request))
        {
            match call.transaction.handle_request(now, request) {
                RequestAction::AckFor2xx if call.phase == Phase::Answered => {
                    call.phase = Phase::Confirmed;
                    self.events.push_back(ServerEvent::Confirmed(call.id));
                }
                _ => {}
            }
            return;
        }
        if let Some(other) = self.others.iter_mut().find(|t| t.matches(request)) {
            let _ = other.handle_request(now, request);
            return;
        }
        match method {
            Method::Invite if request.header("To").and_then(|t| param(t, "tag")).is_none() => {
                self.new_call(now, from, request);
            }
            Method::Ack => self.counters.unmatched += 1,
            Method::Cancel => self.cancel(now, from, request),
            Method::Bye => {
                let status = match self.call_of(request) {
                    Some(index) if self.calls[index].phase != Phase::Done => {
                        self.calls[index].phase = Phase::Done;
                        self.events
                            .push_back(ServerEvent::Ended { id: self.calls[index].id, by_remote: true });
                        200
                    }
                    _ => 481,
                };
                self.respond_other(now, from, request, status);
            }
            Method::Options => self.respond_other(now, from, request, 200),
            _ if self.call_of(request).is_some() => self.respond_other(now, from, request, 405),
            _ => self.respond_other(now, from, request, 481),
        }
    }

    fn new_call(&mut self, now: Instant, from: SocketAddr, request: &Message) {
        let from_source =
            self.calls.iter().filter(|c| c.source.ip() == from.ip() && c.phase != Phase::Done).count();
        let active = self.calls.iter().filter(|c| c.phase != Phase::Done).count();
        if active >= MAX_CALLS || from_source >= MAX_CALLS_PER_SOURCE {
            self.counters.rejected_overload += 1;
            self.send_stateless(from, request, 503);
            return;
        }
        let user = match &request.start {
            StartLine::Request { uri, .. } => SipUri::parse(uri).ok().and_then(|u| u.user),
            StartLine::Response { .. } => None,
        };
        let from_user = request
            .header("From")
            .and_then(name_addr_uri)
            .and_then(|u| SipUri::parse(u).ok())
            .and_then(|u| u.user)
            .unwrap_or_default();
        let offer = SessionDescription::parse(&request.body);
        let (Some(user), Ok(offer), Some(remote_tag)) =
            (user, offer, request.header("From").and_then(|f| param(f, "tag")))
        else {
            let status = if request.body.is_empty() || SessionDescription::parse(&request.body).is_err() {
                488
            } else {
                404
            };
            self.respond_other(now, from, request, status);
            return;
        };
        let id = CallId(self.next_id);
        self.next_id += 1;
        let mut call = Call {
            id,
            call_id: request.call_id().unwrap_or_default().to_owned(),
            remote_tag: remote_tag.to_owned(),
            local_tag: self.ids.token(),
            source: from,
            invite: request.clone(),
            transaction: ServerTransaction::new(request, from, self.transport, self.timers),
            remote_cseq: request.cseq().map_or(0, |(n, _)| n),
            local_cseq: 0,
            phase: Phase::Proceeding,
        };
        let trying = response(request, 100, None);
        call.transaction.respond(now, &trying);
        self.counters.responses_sent[0] += 1;
        self.events.push_back(ServerEvent::IncomingCall {
            id,
            user,
            from_user,
            offer: Box::new(offer),
            source: from,
            call_id: call.call_id.clone(),
        });
        self.calls.retain(|c| c.phase != Phase::Done || c.transaction.state() != ServerState::Terminated);
        self.calls.push(call);
    }

    fn cancel(&mut self, now: Instant, from: SocketAddr, request: &Message) {
        let branch = request.top_branch();
        let found = self
            .calls
            .iter_mut()
            .find(|c| c.invite.top_branch() == branch && c.call_id == request.call_id().unwrap_or_default());
        let status = match found {
            Some(call) if call.phase == Phase::Proceeding => {
                let terminated = response(&call.invite, 487, Some(&call.local_tag));
                call.transaction.respond(now, &terminated);
                call.phase = Phase::Done;
                self.counters.responses_sent[class_index(487)] += 1;
                self.events.push_back(ServerEvent::Cancelled(call.id));
                200
            }
            // Already answered: the CANCEL has no effect (§9.2), but it matched.
            Some(_) => 200,
            None => 481,
        };
        self.respond_other(now, from, request, status);
    }

    /// Sends 180 Ringing (Twilio is ringing the callee).
    pub fn ringing(&mut self, now: Instant, id: CallId) {
        self.respond_call(now, id, 180, None);
    }

    /// Answers with our SDP (the callee picked up and the stream started).
    pub fn answer(&mut self, now: Instant, id: CallId, sdp: &SessionDescription) {
        let Ok(body) = sdp.build() else { return };
        self.respond_call(now, id, 200, Some(body.into_bytes()));
    }

    /// Refuses the call (see [`status_for_twilio`]).
    pub fn reject(&mut self, now: Instant, id: CallId, status: u16) {
        self.respond_call(now, id, status.clamp(300, 699), None);
    }

    fn respond_call(&mut self, now: Instant, id: CallId, status: u16, body: Option<Vec<u8>>) {
        let contact = format!("<sip:voxproxy@{}>", self.local);
        let Some(call) = self.calls.iter_mut().find(|c| c.id == id && c.phase == Phase::Proceeding) else {
            return;
        };
        let mut message = response(&call.invite, status, Some(&call.local_tag));
        if status < 300 {
            message.push("Contact", contact);
        }
        if let Some(body) = body {
            message.push("Content-Type", "application/sdp");
            message.body = body;
        }
        call.transaction.respond(now, &message);
        self.counters.responses_sent[class_index(status)] += 1;
        call.phase = match status {
            200..=299 => Phase::Answered,
            300.. => Phase::Done,
            _ => Phase::Proceeding,
        };
    }

    /// Hangs up an answered call with BYE (the Twilio side ended).
    pub fn hangup(&mut self, now: Instant, id: CallId) {
        let via = format!(
            "SIP/2.0/{} {};branch=z9hG4bK{}",
            self.transport.via_name(),
            self.local,
            self.ids.token()
        );
        let Some(call) = self
            .calls
            .iter_mut()
            .find(|c| c.id == id && matches!(c.phase, Phase::Answered | Phase::Confirmed))
        else {
            return;
        };
        call.local_cseq += 1;
        let target = call
            .invite
            .list_values("Contact")
            .next()
            .and_then(name_addr_uri)
            .filter(|u| SipUri::parse(u).is_ok());
        let uri = target.map_or_else(|| format!("sip:{}", call.source), str::to_owned);
        let to_header = call.invite.header("To").unwrap_or_default();
        let bye = Message::request(Method::Bye, uri)
            .with("Via", via)
            .with("Max-Forwards", "70")
            .with("From", format!("{to_header};tag={}", call.local_tag))
            .with("To", call.invite.header("From").unwrap_or_default())
            .with("Call-ID", call.call_id.clone())
            .with("CSeq", format!("{} BYE", call.local_cseq));
        // A non-INVITE client transaction (RFC 3261 §17.1.2): over UDP a
        // lost BYE is sent again (Timer E) until the PBX answers, else its
        // side of the call would stay up. Bounded like every table here.
        if self.byes.len() < MAX_BYES {
            self.byes.push(ClientTransaction::new(now, bye, call.source, self.transport, self.timers));
            self.counters.requests_sent[method_index(&Method::Bye)] += 1;
        } else {
            self.counters.rejected_overload += 1;
        }
        call.phase = Phase::Done;
        self.events.push_back(ServerEvent::Ended { id, by_remote: false });
    }

    fn call_of(&self, request: &Message) -> Option<usize> {
        self.calls.iter().position(|c| {
            request.call_id() == Some(c.call_id.as_str())
                && request.header("From").and_then(|f| param(f, "tag")) == Some(c.remote_tag.as_str())
                && request.header("To").and_then(|t| param(t, "tag")) == Some(c.local_tag.as_str())
                && request
                    .cseq()
                    .is_some_and(|(n, _)| n > c.remote_cseq || request.method() == Some(Method::Ack))
        })
    }

    fn respond_other(&mut self, now: Instant, from: SocketAddr, request: &Message, status: u16) {
        if self.others.len() >= MAX_CALLS {
            self.counters.rejected_overload += 1;
            return;
        }
        let mut transaction = ServerTransaction::new(request, from, self.transport, self.timers);
        let tag = self.ids.token();
        let mut message = response(request, status, Some(&tag));
        if status == 405 || request.method() == Some(Method::Options) {
            message.push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS");
        }
        transaction.respond(now, &message);
        self.counters.responses_sent[class_index(status)] += 1;
        self.others.push(transaction);
    }

    fn send_stateless(&mut self, dest: SocketAddr, request: &Message, status: u16) {
        let tag = self.ids.token();
        self.counters.responses_sent[class_index(status)] += 1;
        self.outbox.push_back(Transmit {
            dest,
            transport: self.transport,
            bytes: response(request, status, Some(&tag)).to_bytes(),
        });
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox
            .pop_front()
            .or_else(|| self.calls.iter_mut().find_map(|c| c.transaction.poll_transmit()))
            .or_else(|| self.others.iter_mut().find_map(ServerTransaction::poll_transmit))
            .or_else(|| self.byes.iter_mut().find_map(ClientTransaction::poll_transmit))
    }

    /// A response: to one of our BYEs, or counted as unmatched.
    fn handle_response(&mut self, now: Instant, response: &Message) {
        let Some(bye) = self.byes.iter_mut().find(|t| t.matches(response)) else {
            self.counters.unmatched += 1;
            return;
        };
        if let Some(status) = response.status() {
            self.counters.responses_received[class_index(status)] += 1;
        }
        // The call is over on our side already; the answer only stops the
        // retransmissions.
        let _ = bye.handle_response(now, response);
    }

    /// The next event for the proxy.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls
            .iter()
            .map(|c| c.transaction.poll_timeout())
            .chain(self.others.iter().map(ServerTransaction::poll_timeout))
            .chain(self.byes.iter().map(ClientTransaction::poll_timeout))
            .flatten()
            .min()
    }

    /// Advances timers; a 2xx never ACKed ends its call (§13.3.1.4).
    pub fn handle_timeout(&mut self, now: Instant) {
        for call in &mut self.calls {
            call.transaction.handle_timeout(now);
            if call.transaction.ack_timed_out() && call.phase == Phase::Answered {
                call.phase = Phase::Done;
                self.events.push_back(ServerEvent::Ended { id: call.id, by_remote: true });
            }
        }
        for other in &mut self.others {
            other.handle_timeout(now);
        }
        self.others.retain(|t| t.state() != ServerState::Terminated);
        for bye in &mut self.byes {
            if bye.handle_timeout(now) {
                self.counters.timeouts += 1;
            }
        }
        self.byes.retain(|t| t.state() != ClientState::Terminated);
        self.calls.retain(|c| c.phase != Phase::Done || c.transaction.state() != ServerState::Terminated);
    }
}

/// A response to `request`, with our To tag unless it has one (100 never gets one).
fn response(request: &Message, status: u16, tag: Option<&str>) -> Message {
    let mut message = Message::response(status);
    for via in request.header_values("Via") {
        message.push("Via", via);
    }
    for name in ["From", "Call-ID", "CSeq"] {
        message.push(name, request.header(name).unwrap_or_default());
    }
    let to = request.header("To").unwrap_or_default();
    match tag {
        Some(tag) if status > 100 && param(to, "tag").is_none() => {
            message.push("To", format!("{to};tag={tag}"))
        }
        _ => message.push("To", to),
    }
    message
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
