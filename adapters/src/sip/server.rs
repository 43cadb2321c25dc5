//! The SIP → Twilio direction: a sans-IO user agent server that accepts
//! INVITEs from allowed PBXs (`sip.allow`), turns each into an
//! [`ServerEvent::IncomingCall`] for the proxy to place a Twilio call, and
//! answers with 180/200/4xx as the proxy says. CANCEL gets 200 + 487, BYE
//! and ACK are handled, and Twilio's call outcome maps to a SIP status with
//! [`status_for_twilio`]. In an answered call the PBX's re-INVITE and
//! UPDATE are answered from our last SDP (hold, a new media address, a new
//! payload type number: [`ServerEvent::MediaChanged`]), and RFC 4028
//! session timers run when the PBX asks for them: whichever side refreshes,
//! a session that is not refreshed in time ends with BYE
//! ([`ServerEvent::TimedOut`]).

use core::time::Duration;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use voxproxy_core::Instant;

use super::counters::{SipCounters, class_index, method_index};
use super::message::{name_addr_uri, param};
use super::transaction::{ClientState, ClientTransaction, RequestAction, ServerState, ServerTransaction};
use super::{Ids, Media, Message, Method, SipError, SipUri, StartLine, Timers, Transmit, Transport};
use crate::sdp::{Codec, Direction, Origin, PayloadType, SessionDescription};

/// Most calls in progress through one server, by default (`sip.max_calls`).
pub const MAX_CALLS: usize = 256;
/// Most calls in progress from one source address, by default
/// (`sip.max_calls_per_source`): a flood bound.
pub const MAX_CALLS_PER_SOURCE: usize = 16;
/// Most entries in `sip.allow`.
pub const MAX_ALLOW_ENTRIES: usize = 64;
/// Most of our BYEs and session refreshes awaiting the PBX's answer at
/// once (as many as `sip.max_calls` when that is larger); one more is
/// counted as overload and not sent.
pub const MAX_BYES: usize = MAX_CALLS;
/// The shortest session interval we accept (RFC 4028 §5: `Min-SE` is at
/// least 90 s); a shorter `Session-Expires` gets 422.
pub const MIN_SESSION_EXPIRES: Duration = Duration::from_secs(90);
/// The longest session interval we keep: a longer one is answered as this
/// (RFC 4028 §9 lets the UAS lower it), so a silent PBX is noticed within a day.
pub const MAX_SESSION_EXPIRES: Duration = Duration::from_secs(86_400);
/// The methods we answer, for `Allow`.
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE";

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

/// How many calls a [`SipServer`] holds, the bounds an operator tunes
/// (`sip.max_calls`, `sip.max_calls_per_source`). INVITEs beyond them get
/// 503 and are counted as overload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Calls in progress at once (at least 1).
    pub max_calls: usize,
    /// Calls in progress at once from one source IP address (at least 1).
    pub max_calls_per_source: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self { max_calls: MAX_CALLS, max_calls_per_source: MAX_CALLS_PER_SOURCE }
    }
}

impl ServerLimits {
    /// Server transactions outside calls, and our BYEs and refreshes, kept
    /// at once: as many as calls, and never fewer than the defaults.
    fn transactions(self) -> usize {
        self.max_calls.max(MAX_BYES)
    }
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
        /// Whether the PBX ended it (BYE).
        by_remote: bool,
    },
    /// A re-INVITE or UPDATE from the PBX changed the media: where RTP
    /// goes, its payload type numbers, or hold (`sendonly`/`inactive`: no
    /// audio to the caller). Apply it to the call's bridge.
    MediaChanged {
        /// Which call.
        id: CallId,
        /// The media now agreed.
        media: Media,
    },
    /// We ended the call because the PBX went silent: our 2xx (to its
    /// INVITE or a re-INVITE) was never acknowledged (RFC 3261 §13.3.1.4),
    /// its session was not refreshed in time (RFC 4028 §10), or our refresh
    /// failed. A BYE is on its way; end the Twilio call.
    TimedOut(CallId),
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
    /// Our last SDP (the 200's, then each re-INVITE's answer).
    local_sdp: Option<SessionDescription>,
    /// The media last agreed, to report only changes.
    media: Option<Media>,
    /// The PBX's re-INVITE in progress (or its 2xx awaiting ACK).
    reinvite: Option<ServerTransaction>,
    /// That re-INVITE had no offer: ours went in the 200, the PBX's answer
    /// comes in the ACK.
    offer_in_ack: bool,
    session: Option<SessionTimer>,
}

/// An RFC 4028 session timer, once the PBX asked for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SessionTimer {
    interval: Duration,
    /// `refresher=uas`: we send the refreshes.
    we_refresh: bool,
    /// The PBX said `Supported: timer` (else no `Require: timer` back, §9).
    peer_supports: bool,
    /// When we next refresh (half the interval, §7.2).
    refresh_at: Option<Instant>,
    /// When an unrefreshed session ends (§10: interval − min(32 s, interval/3)).
    expire_at: Option<Instant>,
}

impl SessionTimer {
    /// The timer a request's `Session-Expires` asks for; `Err(())` when it
    /// is below [`MIN_SESSION_EXPIRES`] (answer 422), `Ok(None)` without one.
    fn requested(request: &Message) -> Result<Option<Self>, ()> {
        let Some(value) = request.header("Session-Expires") else { return Ok(None) };
        let Some(seconds) = value.split(';').next().and_then(|s| s.trim().parse::<u64>().ok()) else {
            return Ok(None);
        };
        let interval = Duration::from_secs(seconds);
        if interval < MIN_SESSION_EXPIRES {
            return Err(());
        }
        // §9: the UAS keeps the UAC's choice; without one (or when the UAC
        // does not support timers) it picks, and the UAC refreshes when it can.
        let supports = request
            .list_values("Supported")
            .chain(request.list_values("Require"))
            .any(|v| v.trim().eq_ignore_ascii_case("timer"));
        let we_refresh = match param(value, "refresher") {
            Some(r) => r.eq_ignore_ascii_case("uas"),
            None => !supports,
        };
        Ok(Some(Self {
            interval: interval.min(MAX_SESSION_EXPIRES),
            we_refresh,
            peer_supports: supports,
            refresh_at: None,
            expire_at: None,
        }))
    }

    /// Starts (or restarts, on a refresh) the timer at `now`.
    fn start(&mut self, now: Instant) {
        if self.we_refresh {
            self.refresh_at = Some(now + self.interval / 2);
            self.expire_at = None;
        } else {
            self.refresh_at = None;
            self.expire_at = Some(now + self.interval - Duration::from_secs(32).min(self.interval / 3));
        }
    }

    /// The headers of our 2xx that confirm it.
    fn push_headers(&self, response: &mut Message) {
        let refresher = if self.we_refresh { "uas" } else { "uac" };
        response.push("Session-Expires", format!("{};refresher={refresher}", self.interval.as_secs()));
        if self.peer_supports {
            response.push("Require", "timer");
        }
    }
}

/// Accepts calls from PBXs.
#[derive(Debug)]
pub struct SipServer {
    local: SocketAddr,
    transport: Transport,
    allow: Vec<Cidr>,
    timers: Timers,
    limits: ServerLimits,
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
            limits: ServerLimits::default(),
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

    /// The same server with other call bounds (each at least 1).
    #[must_use]
    pub fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.limits = ServerLimits {
            max_calls: limits.max_calls.max(1),
            max_calls_per_source: limits.max_calls_per_source.max(1),
        };
        self
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
        if let Some(index) = self.calls.iter().position(|c| {
            c.reinvite.as_ref().is_some_and(|t| t.matches(request) || t.matches_ack_for_2xx(request))
        }) {
            self.reinvite_request(now, index, request);
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
            Method::Invite | Method::Update => match self.call_of(request) {
                Some(index) => self.offer_in_dialog(now, from, request, index),
                None => self.respond_other(now, from, request, 481),
            },
            _ if self.call_of(request).is_some() => self.respond_other(now, from, request, 405),
            _ => self.respond_other(now, from, request, 481),
        }
    }

    fn new_call(&mut self, now: Instant, from: SocketAddr, request: &Message) {
        let from_source =
            self.calls.iter().filter(|c| c.source.ip() == from.ip() && c.phase != Phase::Done).count();
        let active = self.calls.iter().filter(|c| c.phase != Phase::Done).count();
        if active >= self.limits.max_calls || from_source >= self.limits.max_calls_per_source {
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
        let Ok(session) = SessionTimer::requested(request) else {
            self.respond_too_brief(now, from, request);
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
            local_sdp: None,
            media: None,
            reinvite: None,
            offer_in_ack: false,
            session,
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
        if let Some(call) = self.calls.iter_mut().find(|c| c.id == id && c.phase == Phase::Proceeding) {
            let codecs: Vec<Codec> = sdp.first_codec().map(|(codec, _)| codec).into_iter().collect();
            call.media = SessionDescription::parse(&call.invite.body)
                .ok()
                .and_then(|offer| Media::from_sdp(&offer, &codecs));
            call.local_sdp = Some(sdp.clone());
        }
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
        if (200..300).contains(&status)
            && let Some(session) = call.session.as_mut()
        {
            session.start(now);
            session.push_headers(&mut message);
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
        let Some(index) = self
            .calls
            .iter()
            .position(|c| c.id == id && matches!(c.phase, Phase::Answered | Phase::Confirmed))
        else {
            return;
        };
        self.send_in_dialog(now, index, &Method::Bye);
        self.calls[index].phase = Phase::Done;
        self.events.push_back(ServerEvent::Ended { id, by_remote: false });
    }

    /// Ends a call whose PBX went silent: BYE, and [`ServerEvent::TimedOut`].
    fn time_out(&mut self, now: Instant, index: usize) {
        self.counters.timeouts += 1;
        self.send_in_dialog(now, index, &Method::Bye);
        self.calls[index].phase = Phase::Done;
        self.events.push_back(ServerEvent::TimedOut(self.calls[index].id));
    }

    /// Sends a BYE or a session refresh (UPDATE) in the call's dialog.
    fn send_in_dialog(&mut self, now: Instant, index: usize, method: &Method) {
        let via = format!(
            "SIP/2.0/{} {};branch=z9hG4bK{}",
            self.transport.via_name(),
            self.local,
            self.ids.token()
        );
        let contact = format!("<sip:voxproxy@{}>", self.local);
        let call = &mut self.calls[index];
        call.local_cseq += 1;
        let target = call
            .invite
            .list_values("Contact")
            .next()
            .and_then(name_addr_uri)
            .filter(|u| SipUri::parse(u).is_ok());
        let uri = target.map_or_else(|| format!("sip:{}", call.source), str::to_owned);
        let to_header = call.invite.header("To").unwrap_or_default();
        let mut request = Message::request(method.clone(), uri)
            .with("Via", via)
            .with("Max-Forwards", "70")
            .with("From", format!("{to_header};tag={}", call.local_tag))
            .with("To", call.invite.header("From").unwrap_or_default())
            .with("Call-ID", call.call_id.clone())
            .with("CSeq", format!("{} {method}", call.local_cseq));
        if *method == Method::Update
            && let Some(session) = &call.session
        {
            // A refresh without an offer (RFC 4028 §7.4), we stay the refresher.
            request.push("Contact", contact);
            request.push("Session-Expires", format!("{};refresher=uas", session.interval.as_secs()));
            request.push("Supported", "timer");
        }
        // A non-INVITE client transaction (RFC 3261 §17.1.2): over UDP a
        // lost request is sent again (Timer E) until the PBX answers, else
        // a lost BYE would leave its side of the call up. Bounded like
        // every table here.
        if self.byes.len() < self.limits.transactions() {
            let dest = call.source;
            self.byes.push(ClientTransaction::new(now, request, dest, self.transport, self.timers));
            self.counters.requests_sent[method_index(method)] += 1;
        } else {
            self.counters.rejected_overload += 1;
        }
    }

    /// A re-INVITE or UPDATE from the PBX in an answered call: answered
    /// from our last SDP, with the codec the call already uses under the
    /// offer's payload type numbers, and the direction that mirrors the
    /// offer's (its `sendonly` hold is our `recvonly`). An offer without
    /// our codec gets 488 and the call goes on as it was (RFC 3264 §8).
    fn offer_in_dialog(&mut self, now: Instant, from: SocketAddr, request: &Message, index: usize) {
        let is_invite = request.method() == Some(Method::Invite);
        let call = &mut self.calls[index];
        if call.phase == Phase::Done {
            return self.respond_other(now, from, request, 481);
        }
        call.remote_cseq = request.cseq().map_or(call.remote_cseq, |(n, _)| n);
        let busy = call.reinvite.as_ref().is_some_and(|t| t.state() == ServerState::Accepted);
        let (Phase::Confirmed, false, Some(mut sdp)) = (call.phase, busy, call.local_sdp.clone()) else {
            // §14.1: one offer at a time (ours, or our 2xx awaiting its ACK).
            return self.respond_other(now, from, request, 491);
        };
        let Ok(session) = SessionTimer::requested(request) else {
            return self.respond_too_brief(now, from, request);
        };
        let codecs: Vec<Codec> = sdp.first_codec().map(|(codec, _)| codec).into_iter().collect();
        let mut changed = None;
        let mut body = None;
        if !request.body.is_empty() {
            let Some(media) = SessionDescription::parse(&request.body)
                .ok()
                .and_then(|offer| Media::from_sdp(&offer, &codecs))
            else {
                return self.respond_other(now, from, request, 488);
            };
            sdp.payload_types = vec![PayloadType::for_codec(media.codec, media.payload_type)];
            if let Some(dtmf) = media.telephone_event {
                sdp = sdp.with_telephone_event(dtmf);
            }
            sdp.direction = mirror(media.direction);
            if call.media != Some(media) {
                call.media = Some(media);
                changed = Some(media);
            }
            body = Some(sdp);
        } else if is_invite {
            // No offer: ours goes in the 200, the answer comes in the ACK.
            sdp.direction = Direction::SendRecv;
            call.offer_in_ack = true;
            body = Some(sdp);
        }
        let mut message =
            response(request, 200, None).with("Contact", format!("<sip:voxproxy@{}>", self.local));
        call.session = session.map(|mut timer| {
            timer.start(now);
            timer.push_headers(&mut message);
            timer
        });
        if let Some(mut sdp) = body {
            sdp.origin.session_version += 1;
            if let Ok(text) = sdp.build() {
                message.push("Content-Type", "application/sdp");
                message.body = text.into_bytes();
            }
            call.local_sdp = Some(sdp);
        }
        self.counters.responses_sent[class_index(200)] += 1;
        let id = call.id;
        if is_invite {
            let mut transaction = ServerTransaction::new(request, from, self.transport, self.timers);
            transaction.respond(now, &message);
            call.reinvite = Some(transaction);
        } else {
            self.push_other(now, from, request, &message);
        }
        if let Some(media) = changed {
            self.events.push_back(ServerEvent::MediaChanged { id, media });
        }
    }

    /// A retransmitted re-INVITE, or the ACK of our 2xx to it (which
    /// carries the PBX's answer when the re-INVITE had no offer).
    fn reinvite_request(&mut self, now: Instant, index: usize, request: &Message) {
        let call = &mut self.calls[index];
        let Some(transaction) = call.reinvite.as_mut() else { return };
        if transaction.handle_request(now, request) != RequestAction::AckFor2xx
            || !std::mem::take(&mut call.offer_in_ack)
        {
            return;
        }
        let codecs: Vec<Codec> = call
            .local_sdp
            .as_ref()
            .and_then(SessionDescription::first_codec)
            .map(|(c, _)| c)
            .into_iter()
            .collect();
        let media = SessionDescription::parse(&request.body)
            .ok()
            .and_then(|answer| Media::from_sdp(&answer, &codecs));
        if let Some(media) = media
            && call.media != Some(media)
        {
            call.media = Some(media);
            self.events.push_back(ServerEvent::MediaChanged { id: call.id, media });
        }
    }

    /// 422: the `Session-Expires` asked for is below our `Min-SE`.
    fn respond_too_brief(&mut self, now: Instant, from: SocketAddr, request: &Message) {
        let tag = self.ids.token();
        let message =
            response(request, 422, Some(&tag)).with("Min-SE", MIN_SESSION_EXPIRES.as_secs().to_string());
        self.counters.responses_sent[class_index(422)] += 1;
        self.push_other(now, from, request, &message);
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
        let tag = self.ids.token();
        let mut message = response(request, status, Some(&tag));
        if status == 405 || request.method() == Some(Method::Options) {
            message.push("Allow", ALLOW);
        }
        if request.method() == Some(Method::Options) {
            message.push("Accept", "application/sdp");
            message.push("Supported", "timer");
        }
        self.counters.responses_sent[class_index(status)] += 1;
        self.push_other(now, from, request, &message);
    }

    /// Answers `request` with `message` in a transaction of its own
    /// (retransmissions of the request get it again).
    fn push_other(&mut self, now: Instant, from: SocketAddr, request: &Message, message: &Message) {
        if self.others.len() >= self.limits.transactions() {
            self.counters.rejected_overload += 1;
            return;
        }
        let mut transaction = ServerTransaction::new(request, from, self.transport, self.timers);
        transaction.respond(now, message);
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
            .or_else(|| self.calls.iter_mut().find_map(|c| c.reinvite.as_mut()?.poll_transmit()))
            .or_else(|| self.others.iter_mut().find_map(ServerTransaction::poll_transmit))
            .or_else(|| self.byes.iter_mut().find_map(ClientTransaction::poll_transmit))
    }

    /// A response: to one of our BYEs or refreshes, or counted as unmatched.
    fn handle_response(&mut self, now: Instant, response: &Message) {
        let Some(request) = self.byes.iter_mut().find(|t| t.matches(response)) else {
            self.counters.unmatched += 1;
            return;
        };
        let status = response.status().unwrap_or(500);
        self.counters.responses_received[class_index(status)] += 1;
        // After a BYE the call is over on our side already: the answer only
        // stops the retransmissions.
        let _ = request.handle_response(now, response);
        if request.request().method() == Some(Method::Update) && matches!(status, 408 | 481) {
            // RFC 4028 §10: a refresh answered 408 or 481 ends the session.
            let call_id = request.request().call_id().unwrap_or_default().to_owned();
            self.refresh_failed(now, &call_id);
        }
    }

    fn refresh_failed(&mut self, now: Instant, call_id: &str) {
        if let Some(index) =
            self.calls.iter().position(|c| c.call_id == call_id && c.phase == Phase::Confirmed)
        {
            self.time_out(now, index);
        }
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
            .chain(self.calls.iter().map(|c| c.reinvite.as_ref()?.poll_timeout()))
            .chain(
                self.calls
                    .iter()
                    .filter(|c| c.phase == Phase::Confirmed)
                    .flat_map(|c| c.session.map_or([None, None], |s| [s.refresh_at, s.expire_at])),
            )
            .chain(self.others.iter().map(ServerTransaction::poll_timeout))
            .chain(self.byes.iter().map(ClientTransaction::poll_timeout))
            .flatten()
            .min()
    }

    /// Advances timers; a 2xx never ACKed ends its call (§13.3.1.4), and so
    /// does a session not refreshed in time (RFC 4028 §10).
    pub fn handle_timeout(&mut self, now: Instant) {
        for index in 0..self.calls.len() {
            let call = &mut self.calls[index];
            call.transaction.handle_timeout(now);
            if call.transaction.ack_timed_out() && call.phase == Phase::Answered {
                self.time_out(now, index);
            }
            self.call_timers(now, index);
        }
        for other in &mut self.others {
            other.handle_timeout(now);
        }
        self.others.retain(|t| t.state() != ServerState::Terminated);
        let mut unanswered_refreshes = Vec::new();
        for request in &mut self.byes {
            if request.handle_timeout(now) {
                self.counters.timeouts += 1;
                if request.request().method() == Some(Method::Update) {
                    unanswered_refreshes.push(request.request().call_id().unwrap_or_default().to_owned());
                }
            }
        }
        for call_id in unanswered_refreshes {
            self.refresh_failed(now, &call_id);
        }
        self.byes.retain(|t| t.state() != ClientState::Terminated);
        self.calls.retain(|c| c.phase != Phase::Done || c.transaction.state() != ServerState::Terminated);
    }
}

impl SipServer {
    /// One call's re-INVITE transaction and session timer.
    fn call_timers(&mut self, now: Instant, index: usize) {
        let call = &mut self.calls[index];
        let mut unacked = false;
        if let Some(reinvite) = call.reinvite.as_mut() {
            reinvite.handle_timeout(now);
            unacked = reinvite.ack_timed_out();
            if reinvite.state() == ServerState::Terminated {
                call.reinvite = None;
            }
        }
        if call.phase != Phase::Confirmed {
            return;
        }
        let Some(session) = call.session.as_mut() else {
            if unacked {
                self.time_out(now, index);
            }
            return;
        };
        if unacked || session.expire_at.is_some_and(|at| now >= at) {
            self.time_out(now, index);
            return;
        }
        if session.refresh_at.is_some_and(|at| now >= at) {
            session.refresh_at = Some(now + session.interval / 2);
            self.send_in_dialog(now, index, &Method::Update);
        }
    }
}

/// The direction that answers an offer's: we send what it receives.
fn mirror(offered: Direction) -> Direction {
    match offered {
        Direction::SendOnly => Direction::RecvOnly,
        Direction::RecvOnly => Direction::SendOnly,
        other => other,
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
