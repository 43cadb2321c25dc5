//! The SIP leg of a call (Twilio → PBX): a sans-IO user agent client that
//! INVITEs the backend's SIP URI with an SDP offer, reports where the RTP
//! goes, and handles everything until the dialog ends.
//!
//! The call bridge owns one per call. It hands in datagrams (or stream
//! bytes) and the time, sends what [`SipLeg::poll_transmit`] returns, and
//! reacts to [`LegEvent`]s: media comes from [`Media`] (address, codec,
//! payload types, direction), carried by the bridge's existing RTP path.

use core::time::Duration;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use voxproxy_core::Instant;

use super::auth::{Challenge, Credentials};
use super::counters::{SipCounters, class_index, method_index};
use super::dialog::Dialog;
use super::message::{name_addr_uri, param};
use super::transaction::{ClientState, ClientTransaction, ResponseAction, ServerTransaction};
use super::uri::sanitize_user;
use super::{Ids, Message, Method, SipError, SipUri, StartLine, StreamFramer, Timers, Transmit, Transport};
use crate::sdp::{Codec, Direction, Origin, SessionDescription};

/// Most `X-<Name>` headers made from stream parameters.
pub const MAX_PARAM_HEADERS: usize = 16;
/// Longest value of an `X-` header; longer values are cut.
pub const MAX_PARAM_VALUE_BYTES: usize = 256;
/// Most client transactions (BYE, OPTIONS, refreshes) open at once besides the INVITE.
const MAX_CLIENT_TRANSACTIONS: usize = 8;
/// Most server transactions open at once; further requests get no answer and are counted.
pub const MAX_SERVER_TRANSACTIONS: usize = 16;
/// Most early dialogs (forked 1xx with distinct tags) remembered.
const MAX_EARLY_DIALOGS: usize = 8;
/// Session interval we ask for with `Supported: timer` (RFC 4028 §4: 1800 s recommended).
pub const DEFAULT_SESSION_EXPIRES: Duration = Duration::from_secs(1800);
/// The methods we answer, for `Allow`.
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";

/// The media side of the offer voxproxy makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaOffer {
    /// The `c=` address (`rtp.bind` or `rtp.advertise`).
    pub address: IpAddr,
    /// Our RTP port for this call.
    pub port: u16,
    /// The configured codec, offered first.
    pub codec: Codec,
    /// The `telephone-event` payload type offered.
    pub telephone_event: u8,
}

impl MediaOffer {
    /// The codecs offered, in order: the configured one, then PCMU and PCMA
    /// (L16 only when configured, since not every PBX can carry it).
    #[must_use]
    pub fn codecs(&self) -> Vec<Codec> {
        let mut codecs = vec![self.codec];
        for codec in [Codec::Pcmu, Codec::Pcma] {
            if !codecs.contains(&codec) {
                codecs.push(codec);
            }
        }
        codecs
    }
}

/// How a leg reaches its backend.
#[derive(Debug, Clone)]
pub struct SipLegConfig {
    /// The Request-URI (see [`target_uri`] for `{to}`/`{from}`).
    pub target: SipUri,
    /// The resolved address of the target (or of an outbound proxy).
    pub next_hop: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// Our SIP address, for `Via` and `Contact`.
    pub local: SocketAddr,
    /// What to offer.
    pub media: MediaOffer,
    /// For 401/407 (`VOXPROXY_SIP_USERNAME`/`VOXPROXY_SIP_PASSWORD`).
    pub credentials: Option<Credentials>,
    /// RFC 3261 timers.
    pub timers: Timers,
    /// Send in-dialog OPTIONS this often; `None` disables the keep-alive.
    pub keepalive: Option<Duration>,
    /// Give up on a PBX that has not answered this long after the INVITE
    /// (it rings, or only sends early media): CANCEL, and the leg fails
    /// with 480 so the caller hears the route's fallback. `None` waits for
    /// the PBX (or Timer B when nothing at all comes back).
    pub ring_timeout: Option<Duration>,
    /// Seeds tags, branches, Call-ID and cnonce: give each leg fresh OS randomness.
    pub seed: u64,
}

/// Which call this is, for the PBX.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallInfo {
    /// Twilio's CallSid.
    pub call_sid: String,
    /// Twilio's StreamSid.
    pub stream_sid: String,
    /// The calling number.
    pub from: String,
    /// The called number.
    pub to: String,
    /// The stream's `<Parameter>`s, each sent as `X-<Name>`.
    pub params: Vec<(String, String)>,
    /// A W3C `traceparent` (the INVITE's span in the call's trace), sent
    /// as a `traceparent` header so the PBX's spans join the trace.
    pub traceparent: Option<String>,
}

/// Where and how RTP flows, from a remote SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Media {
    /// Where to send RTP.
    pub address: SocketAddr,
    /// The codec chosen (one we offered).
    pub codec: Codec,
    /// Its payload type.
    pub payload_type: u8,
    /// The `telephone-event` payload type, if the peer takes RFC 4733.
    pub telephone_event: Option<u8>,
    /// The peer's direction: `SendOnly` or `Inactive` is hold (no audio to
    /// the caller). A `0.0.0.0` connection counts as `Inactive`.
    pub direction: Direction,
    /// `a=ptime`, if given.
    pub ptime: Option<u16>,
}

impl Media {
    /// The media a remote description selects among `codecs`.
    #[must_use]
    pub fn from_sdp(sdp: &SessionDescription, codecs: &[Codec]) -> Option<Self> {
        let (codec, payload_type) = sdp
            .payload_types
            .iter()
            .find_map(|pt| pt.codec().filter(|c| codecs.contains(c)).map(|c| (c, pt.number)))?;
        let direction = if sdp.connection.is_unspecified() { Direction::Inactive } else { sdp.direction };
        Some(Self {
            address: SocketAddr::new(sdp.connection, sdp.port),
            codec,
            payload_type,
            telephone_event: sdp.telephone_event(codec.clock_rate()),
            direction,
            ptime: sdp.ptime,
        })
    }
}

/// Why a dialog ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// We hung up (BYE or CANCEL).
    LocalHangup,
    /// The peer sent BYE.
    RemoteBye,
    /// The peer stopped answering: keep-alive failed, session timer
    /// expired, or our 2xx was never ACKed.
    PeerGone,
}

/// What the leg tells the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// 180/183: the PBX is alerting.
    Ringing,
    /// A provisional response carried SDP: play its media to the caller.
    EarlyMedia(Media),
    /// 2xx: the call is up.
    Answered(Media),
    /// A re-INVITE or UPDATE changed the media (hold, new address, codec).
    MediaChanged(Media),
    /// The call never came up.
    Failed {
        /// The final status (408 for a timeout).
        status: u16,
        /// The peer's reason phrase, or ours.
        reason: String,
        /// Whether the PBX's final response ended it (it rejected the
        /// call); `false` when voxproxy gave up (Timer B, the ring timeout,
        /// a 2xx it could not use).
        by_remote: bool,
    },
    /// An established (or cancelled) call is over.
    Ended {
        /// Whether the PBX ended it.
        by_remote: bool,
        /// Why.
        reason: EndReason,
    },
}

/// Where the leg stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegState {
    /// INVITE sent, no provisional response.
    Calling,
    /// A provisional response arrived.
    Early,
    /// 2xx received and ACKed.
    Confirmed,
    /// We sent CANCEL (or will, on the first 1xx).
    Cancelling,
    /// We sent BYE.
    Terminating,
    /// Over; [`SipLeg::is_finished`] says when it can be dropped.
    Ended,
}

/// `{to}` and `{from}` in a URI template replaced by the sanitised numbers.
pub fn target_uri(template: &str, to: &str, from: &str) -> Result<SipUri, SipError> {
    SipUri::parse(&template.replace("{to}", &sanitize_user(to)).replace("{from}", &sanitize_user(from)))
}

/// The UAC side of one call.
#[derive(Debug)]
pub struct SipLeg {
    config: SipLegConfig,
    ids: Ids,
    state: LegState,
    call_id: String,
    local_party: String,
    invite: ClientTransaction,
    cancel: Option<ClientTransaction>,
    cancel_pending: bool,
    give_up_at: Option<Instant>,
    /// When [`SipLegConfig::ring_timeout`] runs out, while not answered.
    ring_deadline: Option<Instant>,
    /// The ring timeout already reported the leg's one final outcome
    /// (`Failed`); the CANCEL's end is not reported again.
    outcome_reported: bool,
    auth_used: bool,
    interval_raised: bool,
    redirected: bool,
    dialog: Option<Dialog>,
    ack: Option<(String, Transmit)>,
    early_tags: Vec<String>,
    clients: Vec<ClientTransaction>,
    servers: Vec<ServerTransaction>,
    offer: SessionDescription,
    media: Option<Media>,
    keepalive_at: Option<Instant>,
    refresh_at: Option<Instant>,
    expire_at: Option<Instant>,
    session_interval: Option<Duration>,
    framer: StreamFramer,
    outbox: VecDeque<Transmit>,
    events: VecDeque<LegEvent>,
    counters: SipCounters,
}

impl SipLeg {
    /// Builds the INVITE and queues it.
    pub fn new(config: SipLegConfig, info: &CallInfo, now: Instant) -> Result<Self, SipError> {
        let ring_deadline = config.ring_timeout.map(|t| now + t);
        let mut ids = Ids::new(config.seed);
        let offer = build_offer(&config.media, ids.next_u64() >> 1)?;
        let call_id = format!("{}@voxproxy", ids.token());
        let from_user = sanitize_user(&info.from);
        let from_user = if from_user.is_empty() { "anonymous".to_owned() } else { from_user };
        let local_party =
            format!("\"{from_user}\" <sip:{from_user}@{}>;tag={}", host_of(config.local), ids.token());
        let mut invite = Message::request(Method::Invite, config.target.to_string())
            .with("Via", via(&config, &mut ids))
            .with("Max-Forwards", "70")
            .with("From", local_party.clone())
            .with("To", format!("<{}>", config.target))
            .with("Call-ID", call_id.clone())
            .with("CSeq", "1 INVITE")
            .with("Contact", contact(&config))
            .with("Allow", ALLOW)
            .with("Supported", "timer")
            .with("Session-Expires", DEFAULT_SESSION_EXPIRES.as_secs().to_string())
            .with("User-Agent", "voxproxy")
            .with("Content-Type", "application/sdp");
        add_call_headers(&mut invite, info);
        invite.body = offer
            .build()
            .map_err(|e| SipError::InvalidConfig { field: "media", reason: e.to_string() })?
            .into_bytes();
        let mut counters = SipCounters::default();
        counters.requests_sent[0] += 1;
        let transaction =
            ClientTransaction::new(now, invite, config.next_hop, config.transport, config.timers);
        Ok(Self {
            config,
            ids,
            state: LegState::Calling,
            call_id,
            local_party,
            invite: transaction,
            cancel: None,
            cancel_pending: false,
            give_up_at: None,
            ring_deadline,
            outcome_reported: false,
            auth_used: false,
            interval_raised: false,
            redirected: false,
            dialog: None,
            ack: None,
            early_tags: Vec::new(),
            clients: Vec::new(),
            servers: Vec::new(),
            offer,
            media: None,
            keepalive_at: None,
            refresh_at: None,
            expire_at: None,
            session_interval: None,
            framer: StreamFramer::default(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            counters,
        })
    }

    /// The SIP Call-ID (for call records).
    #[must_use]
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Where the leg stands.
    #[must_use]
    pub fn state(&self) -> LegState {
        self.state
    }

    /// The current media, once known.
    #[must_use]
    pub fn media(&self) -> Option<Media> {
        self.media
    }

    /// Traffic counters of this leg.
    #[must_use]
    pub fn counters(&self) -> &SipCounters {
        &self.counters
    }

    /// Whether the leg is over and has nothing left to send or absorb.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.state == LegState::Ended
            && self.outbox.is_empty()
            && self.clients.is_empty()
            && self.servers.is_empty()
            && self.invite.state() == ClientState::Terminated
            && self.cancel.as_ref().is_none_or(|c| c.state() == ClientState::Terminated)
    }

    /// A datagram from `from` (UDP).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        match Message::parse(bytes) {
            Ok(message) => self.handle_message(now, from, &message),
            Err(_) => self.counters.parse_errors += 1,
        }
    }

    /// Bytes from the TCP connection to the next hop. An error means the
    /// stream cannot be resynchronised: close the connection.
    pub fn handle_stream(&mut self, now: Instant, bytes: &[u8]) -> Result<(), SipError> {
        let result = self.framer.push(bytes).and_then(|()| {
            while let Some(message) = self.framer.next_message()? {
                self.handle_message(now, self.config.next_hop, &message);
            }
            Ok(())
        });
        if result.is_err() {
            self.counters.parse_errors += 1;
            self.framer = StreamFramer::default();
        }
        result
    }

    fn handle_message(&mut self, now: Instant, from: SocketAddr, message: &Message) {
        match message.status() {
            Some(status) => {
                self.counters.responses_received[class_index(status)] += 1;
                self.handle_response(now, message);
            }
            None => {
                let method = message.method().unwrap_or(Method::Other(String::new()));
                self.counters.requests_received[method_index(&method)] += 1;
                self.handle_request(now, from, message);
            }
        }
    }

    /// The caller hung up: CANCEL while ringing, BYE when up.
    pub fn hangup(&mut self, now: Instant) {
        match self.state {
            LegState::Calling => {
                // §9.1: no CANCEL before a provisional response; send it on the first one.
                self.cancel_pending = true;
                self.state = LegState::Cancelling;
            }
            LegState::Early => self.send_cancel(now),
            LegState::Confirmed => {
                self.send_bye(now);
                self.state = LegState::Terminating;
            }
            LegState::Cancelling | LegState::Terminating | LegState::Ended => {}
        }
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.outbox.pop_front() {
            return Some(t);
        }
        if let Some(t) = self.invite.poll_transmit() {
            return Some(t);
        }
        if let Some(t) = self.cancel.as_mut().and_then(ClientTransaction::poll_transmit) {
            return Some(t);
        }
        self.clients
            .iter_mut()
            .find_map(ClientTransaction::poll_transmit)
            .or_else(|| self.servers.iter_mut().find_map(ServerTransaction::poll_transmit))
    }

    /// The next event for the bridge.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }

    /// Whether [`SipLeg::poll_event`] has something: a capture records a
    /// drive of the leg only when it hands the bridge an event.
    #[must_use]
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let transactions = self
            .clients
            .iter()
            .map(ClientTransaction::poll_timeout)
            .chain(self.servers.iter().map(ServerTransaction::poll_timeout))
            .chain([
                self.invite.poll_timeout(),
                self.cancel.as_ref().and_then(ClientTransaction::poll_timeout),
            ]);
        // Only while ringing: once answered (or over) it must not stay due.
        let ringing =
            self.ring_deadline.filter(|_| matches!(self.state, LegState::Calling | LegState::Early));
        transactions
            .chain([self.give_up_at, ringing, self.keepalive_at, self.refresh_at, self.expire_at])
            .flatten()
            .min()
    }

    /// Advances every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.invite.handle_timeout(now) {
            self.counters.timeouts += 1;
            match self.state {
                LegState::Calling | LegState::Early => {
                    self.fail(408, "no final response to INVITE (Timer B)", false)
                }
                LegState::Cancelling => self.end(false, EndReason::LocalHangup),
                _ => {}
            }
        }
        if let Some(cancel) = self.cancel.as_mut()
            && cancel.handle_timeout(now)
        {
            self.counters.timeouts += 1;
        }
        self.client_timeouts(now);
        self.server_timeouts(now);
        self.dialog_timers(now);
    }

    fn client_timeouts(&mut self, now: Instant) {
        let mut timed_out = Vec::new();
        for client in &mut self.clients {
            if client.handle_timeout(now) {
                timed_out.push(client.request().method());
            }
        }
        self.clients.retain(|c| c.state() != ClientState::Terminated);
        for method in timed_out {
            self.counters.timeouts += 1;
            match method {
                Some(Method::Bye) => self.end(false, EndReason::LocalHangup),
                _ if self.state == LegState::Confirmed => self.peer_gone(now),
                _ => {}
            }
        }
    }

    fn server_timeouts(&mut self, now: Instant) {
        let mut unacked = false;
        for server in &mut self.servers {
            server.handle_timeout(now);
            unacked |= server.ack_timed_out() && *server.method() == Method::Invite;
        }
        self.servers.retain(|s| s.state() != super::transaction::ServerState::Terminated);
        if unacked && self.state == LegState::Confirmed {
            // §13.3.1.4: a 2xx never ACKed ends the session.
            self.peer_gone(now);
        }
    }

    fn dialog_timers(&mut self, now: Instant) {
        if matches!(self.state, LegState::Calling | LegState::Early)
            && self.ring_deadline.is_some_and(|at| now >= at)
        {
            // No answer: the INVITE is cancelled like a caller's hangup
            // (its 487 or a racing 2xx is handled as then), and the bridge
            // hears now that the leg failed.
            self.ring_deadline = None;
            self.hangup(now);
            self.events.push_back(LegEvent::Failed {
                status: 480,
                reason: "no answer (ring timeout)".to_owned(),
                by_remote: false,
            });
            self.outcome_reported = true;
        }
        if self.give_up_at.is_some_and(|at| now >= at) {
            // The INVITE never got a final response after our CANCEL (§9.1).
            self.give_up_at = None;
            self.end(false, EndReason::LocalHangup);
        }
        if self.state != LegState::Confirmed {
            return;
        }
        if self.expire_at.is_some_and(|at| now >= at) {
            // RFC 4028 §10: the session expired without a refresh.
            self.peer_gone(now);
            return;
        }
        if self.keepalive_at.is_some_and(|at| now >= at) {
            self.keepalive_at = self.config.keepalive.map(|k| now + k);
            self.send_in_dialog(now, &Method::Options, None);
        }
        if self.refresh_at.is_some_and(|at| now >= at) {
            self.refresh_at = self.session_interval.map(|i| now + i / 2);
            let body = self.offer.build().map(String::into_bytes).ok();
            self.send_in_dialog(now, &Method::Update, body);
        }
    }

    // ---- responses -------------------------------------------------------

    fn handle_response(&mut self, now: Instant, response: &Message) {
        if self.invite.matches(response) {
            if self.invite.handle_response(now, response) == ResponseAction::Deliver {
                self.on_invite_response(now, response);
            }
            return;
        }
        if let Some(cancel) = self.cancel.as_mut()
            && cancel.matches(response)
        {
            let _ = cancel.handle_response(now, response);
            return;
        }
        if let Some(index) = self.clients.iter().position(|c| c.matches(response)) {
            if self.clients[index].handle_response(now, response) == ResponseAction::Deliver {
                let method = self.clients[index].request().method();
                self.on_client_response(now, method.as_ref(), response);
            }
            return;
        }
        self.counters.unmatched += 1;
    }

    fn on_invite_response(&mut self, now: Instant, response: &Message) {
        let status = response.status().unwrap_or(500);
        match status {
            100 => {}
            101..=199 => self.on_provisional(now, response),
            200..=299 => self.on_invite_2xx(now, response),
            300..=399 => self.on_redirect(now, response),
            401 | 407 => self.on_challenge(now, response),
            422 => self.on_interval_too_small(now, response),
            _ => self.on_invite_failure(response),
        }
        if (100..200).contains(&status) && self.cancel_pending {
            self.cancel_pending = false;
            self.send_cancel(now);
        }
    }

    fn on_provisional(&mut self, _now: Instant, response: &Message) {
        if let Some(tag) = response.header("To").and_then(|t| param(t, "tag"))
            && !self.early_tags.iter().any(|t| t == tag)
            && self.early_tags.len() < MAX_EARLY_DIALOGS
        {
            self.early_tags.push(tag.to_owned());
        }
        if self.state == LegState::Calling {
            self.state = LegState::Early;
            self.events.push_back(LegEvent::Ringing);
        }
        if let Some(media) = self.remote_media(response)
            && self.media != Some(media)
            && self.state == LegState::Early
        {
            self.media = Some(media);
            self.events.push_back(LegEvent::EarlyMedia(media));
        }
    }

    fn on_invite_2xx(&mut self, now: Instant, response: &Message) {
        let Some(tag) = response.header("To").and_then(|t| param(t, "tag")).map(str::to_owned) else {
            self.counters.unmatched += 1;
            return;
        };
        if let Some((acked_tag, ack)) = &self.ack {
            if *acked_tag == tag {
                // A retransmitted 2xx: our ACK was lost.
                self.outbox.push_back(ack.clone());
            } else {
                // A second fork answered: ACK it and hang it up at once (§13.2.2.4).
                self.ack_and_bye_fork(now, response);
            }
            return;
        }
        let Some(mut dialog) = Dialog::from_uac(self.invite.request(), response) else { return };
        let cseq = dialog.local_cseq;
        let ack_message = dialog.request(&Method::Ack, via(&self.config, &mut self.ids), Some(cseq));
        let ack = Transmit {
            dest: dialog.next_hop(self.config.next_hop),
            transport: self.config.transport,
            bytes: ack_message.to_bytes(),
        };
        self.counters.requests_sent[method_index(&Method::Ack)] += 1;
        self.outbox.push_back(ack.clone());
        self.ack = Some((tag, ack));
        self.dialog = Some(dialog);
        let media = self.remote_media(response);
        if matches!(self.state, LegState::Cancelling | LegState::Ended) {
            // The 2xx crossed our CANCEL (or the leg already gave up): end it.
            self.give_up_at = None;
            self.send_bye(now);
            if self.state == LegState::Cancelling {
                self.state = LegState::Terminating;
            }
            return;
        }
        let Some(media) = media else {
            // The BYE runs on; the outcome is this failure, reported once.
            self.send_bye(now);
            self.fail(488, "2xx without a usable SDP answer", false);
            return;
        };
        self.state = LegState::Confirmed;
        self.media = Some(media);
        self.events.push_back(LegEvent::Answered(media));
        self.keepalive_at = self.config.keepalive.map(|k| now + k);
        self.start_session_timer(now, response, true);
    }

    fn ack_and_bye_fork(&mut self, now: Instant, response: &Message) {
        let Some(mut fork) = Dialog::from_uac(self.invite.request(), response) else { return };
        let cseq = fork.local_cseq;
        let dest = fork.next_hop(self.config.next_hop);
        let ack = fork.request(&Method::Ack, via(&self.config, &mut self.ids), Some(cseq));
        self.outbox.push_back(Transmit { dest, transport: self.config.transport, bytes: ack.to_bytes() });
        let bye = fork.request(&Method::Bye, via(&self.config, &mut self.ids), None);
        self.start_client(now, bye, dest);
    }

    fn on_redirect(&mut self, now: Instant, response: &Message) {
        let contact =
            response.list_values("Contact").filter_map(name_addr_uri).find_map(|c| SipUri::parse(c).ok());
        let target = contact.as_ref().and_then(|uri| uri.socket_addr().map(|addr| (uri.clone(), addr)));
        match target {
            Some((uri, addr))
                if !self.redirected && matches!(self.state, LegState::Calling | LegState::Early) =>
            {
                self.redirected = true;
                self.config.target = uri;
                self.config.next_hop = addr;
                self.reinvite_with(now, None);
            }
            _ => self.on_invite_failure(response),
        }
    }

    fn on_challenge(&mut self, now: Instant, response: &Message) {
        let answer = match (&self.config.credentials, self.auth_used, self.state) {
            (Some(credentials), false, LegState::Calling | LegState::Early) => {
                Challenge::pick(response).ok().map(|(c, header)| {
                    let cnonce = self.ids.token();
                    (header, c.answer(credentials, "INVITE", &self.config.target.to_string(), &cnonce, 1))
                })
            }
            _ => None,
        };
        match answer {
            Some(authorization) => {
                self.auth_used = true;
                self.reinvite_with(now, Some(authorization));
            }
            None => self.on_invite_failure(response),
        }
    }

    /// RFC 4028 §6: a 422 names the smallest interval the peer accepts in
    /// `Min-SE`; ask again once with that.
    fn on_interval_too_small(&mut self, now: Instant, response: &Message) {
        let min_se = response.header("Min-SE").and_then(|v| v.split(';').next()?.trim().parse::<u32>().ok());
        match min_se {
            Some(seconds)
                if !self.interval_raised
                    && (90..=86_400).contains(&seconds)
                    && self.state != LegState::Cancelling =>
            {
                self.interval_raised = true;
                self.reinvite_with(now, Some(("Session-Expires", seconds.to_string())));
            }
            _ => self.on_invite_failure(response),
        }
    }

    /// A fresh INVITE transaction after a challenge or redirect: same
    /// Call-ID and From tag, CSeq + 1, new branch.
    fn reinvite_with(&mut self, now: Instant, header: Option<(&'static str, String)>) {
        let mut invite = self.invite.request().clone();
        let number = invite.cseq().map_or(1, |(n, _)| n) + 1;
        invite.start = StartLine::Request { method: Method::Invite, uri: self.config.target.to_string() };
        for name in ["Via", "CSeq", "Authorization", "Proxy-Authorization"] {
            invite.remove(name);
        }
        invite
            .headers
            .insert(0, super::Header { name: "Via".into(), value: via(&self.config, &mut self.ids) });
        invite.push("CSeq", format!("{number} INVITE"));
        if let Some((name, value)) = header {
            invite.remove(name);
            invite.push(name, value);
        }
        self.counters.requests_sent[0] += 1;
        let fresh = ClientTransaction::new(
            now,
            invite,
            self.config.next_hop,
            self.config.transport,
            self.config.timers,
        );
        // The old transaction still owes the ACK of the 3xx/401/407 and must
        // re-ACK its retransmissions until Timer D.
        let mut old = core::mem::replace(&mut self.invite, fresh);
        while let Some(ack) = old.poll_transmit() {
            self.outbox.push_back(ack);
        }
        if self.clients.len() < MAX_CLIENT_TRANSACTIONS {
            self.clients.push(old);
        }
        self.state = if self.cancel_pending { LegState::Cancelling } else { LegState::Calling };
    }

    fn on_invite_failure(&mut self, response: &Message) {
        let status = response.status().unwrap_or(500);
        if self.state == LegState::Cancelling {
            self.end(false, EndReason::LocalHangup);
            return;
        }
        let reason = match &response.start {
            StartLine::Response { reason, .. } => reason.chars().take(128).collect(),
            StartLine::Request { .. } => String::new(),
        };
        self.fail(status, &reason, true);
    }

    fn on_client_response(&mut self, now: Instant, method: Option<&Method>, response: &Message) {
        let status = response.status().unwrap_or(500);
        if status < 200 {
            return;
        }
        match method {
            Some(&Method::Bye) => self.end(false, EndReason::LocalHangup),
            // RFC 4028 §10 / RFC 3261 §12.2.1.2: these mean the dialog is gone.
            Some(_) if matches!(status, 408 | 481) && self.state == LegState::Confirmed => {
                self.peer_gone(now)
            }
            Some(&Method::Update) if status < 300 => self.start_session_timer(now, response, true),
            _ => {}
        }
    }

    // ---- requests --------------------------------------------------------

    fn handle_request(&mut self, now: Instant, from: SocketAddr, request: &Message) {
        let method = request.method().unwrap_or(Method::Other(String::new()));
        if let Some(server) =
            self.servers.iter_mut().find(|s| s.matches(request) || s.matches_ack_for_2xx(request))
        {
            let _ = server.handle_request(now, request);
            return;
        }
        if method == Method::Ack {
            // An ACK for nothing we know (or for an already-ACKed 2xx).
            self.counters.unmatched += 1;
            return;
        }
        if self.servers.len() >= MAX_SERVER_TRANSACTIONS {
            self.counters.rejected_overload += 1;
            return;
        }
        let mut server = ServerTransaction::new(request, from, self.config.transport, self.config.timers);
        let response = self.answer_request(now, &method, request);
        self.counters.responses_sent[class_index(response.status().unwrap_or(500))] += 1;
        server.respond(now, &response);
        self.servers.push(server);
    }

    fn answer_request(&mut self, now: Instant, method: &Method, request: &Message) -> Message {
        let in_dialog = self.dialog.as_ref().is_some_and(|d| d.owns_request(request));
        if *method == Method::Options {
            return self.response_to(request, 200).with("Allow", ALLOW).with("Accept", "application/sdp");
        }
        if !in_dialog || !matches!(self.state, LegState::Confirmed | LegState::Terminating) {
            return self.response_to(request, 481);
        }
        let cseq = request.cseq().map_or(0, |(n, _)| n);
        if let Some(dialog) = self.dialog.as_mut() {
            if dialog.remote_cseq.is_some_and(|last| cseq <= last) && *method != Method::Cancel {
                return self.response_to(request, 500);
            }
            dialog.remote_cseq = Some(cseq);
        }
        match method {
            Method::Bye => {
                self.end(true, EndReason::RemoteBye);
                self.response_to(request, 200)
            }
            Method::Invite | Method::Update => self.answer_offer(now, request),
            Method::Info => self.response_to(request, 200),
            Method::Cancel => self.response_to(request, 481),
            _ => self.response_to(request, 405).with("Allow", ALLOW),
        }
    }

    /// Answers a re-INVITE or UPDATE: new media (hold, address, codec) and
    /// the session timer's refresh.
    fn answer_offer(&mut self, now: Instant, request: &Message) -> Message {
        let mut answer = self.offer.clone();
        if !request.body.is_empty() {
            let Some(remote) = SessionDescription::parse(&request.body).ok() else {
                return self.response_to(request, 488);
            };
            let Some(media) = Media::from_sdp(&remote, &self.config.media.codecs()) else {
                return self.response_to(request, 488);
            };
            answer
                .payload_types
                .retain(|pt| pt.number == media.payload_type || Some(pt.number) == media.telephone_event);
            answer.direction = match media.direction {
                Direction::SendOnly => Direction::RecvOnly,
                Direction::RecvOnly => Direction::SendOnly,
                other => other,
            };
            if self.media != Some(media) {
                self.media = Some(media);
                self.events.push_back(LegEvent::MediaChanged(media));
            }
        }
        answer.origin.session_version = self.offer.origin.session_version + 1;
        self.start_session_timer(now, request, false);
        let mut response = self.response_to(request, 200).with("Contact", contact(&self.config));
        if let Some(interval) = self.session_interval {
            let refresher = if self.refresh_at.is_some() { "uas" } else { "uac" };
            response.push("Session-Expires", format!("{};refresher={refresher}", interval.as_secs()));
            response.push("Require", "timer");
        }
        if let Ok(body) = answer.build() {
            response.push("Content-Type", "application/sdp");
            response.body = body.into_bytes();
        }
        response
    }

    fn response_to(&self, request: &Message, status: u16) -> Message {
        let mut response = Message::response(status);
        for via in request.header_values("Via") {
            response.push("Via", via);
        }
        for name in ["From", "Call-ID", "CSeq"] {
            if let Some(value) = request.header(name) {
                response.push(name, value);
            }
        }
        let to = request.header("To").unwrap_or_default();
        let local_tag = param(&self.local_party, "tag").unwrap_or_default();
        if param(to, "tag").is_some() || status == 100 {
            response.push("To", to);
        } else {
            response.push("To", format!("{to};tag={local_tag}"));
        }
        response
    }

    // ---- helpers ---------------------------------------------------------

    /// RFC 4028: a `Session-Expires` in a 2xx (ours to INVITE/UPDATE) or in
    /// the peer's refresh request. `we_are_uac`: the message answers our request.
    fn start_session_timer(&mut self, now: Instant, message: &Message, we_are_uac: bool) {
        let Some(value) = message.header("Session-Expires") else { return };
        let Some(seconds) =
            value.split(';').next().and_then(|s| s.trim().parse::<u64>().ok()).filter(|&s| s >= 90)
        else {
            return;
        };
        let interval = Duration::from_secs(seconds.min(86_400));
        let refresher = param(value, "refresher").unwrap_or("uas");
        let we_refresh = refresher.eq_ignore_ascii_case(if we_are_uac { "uac" } else { "uas" });
        self.session_interval = Some(interval);
        if we_refresh {
            self.refresh_at = Some(now + interval / 2);
            self.expire_at = None;
        } else {
            self.refresh_at = None;
            // §10: the refresher has until interval − min(32 s, interval/3).
            self.expire_at = Some(now + interval - Duration::from_secs(32).min(interval / 3));
        }
    }

    fn remote_media(&self, message: &Message) -> Option<Media> {
        if message.body.is_empty() {
            return None;
        }
        let sdp = SessionDescription::parse(&message.body).ok()?;
        Media::from_sdp(&sdp, &self.config.media.codecs())
    }

    fn send_cancel(&mut self, now: Instant) {
        let invite = self.invite.request();
        let uri = match &invite.start {
            StartLine::Request { uri, .. } => uri.clone(),
            StartLine::Response { .. } => return,
        };
        let mut cancel = Message::request(Method::Cancel, uri);
        cancel.push("Via", invite.list_values("Via").next().unwrap_or_default());
        cancel.push("Max-Forwards", "70");
        for name in ["From", "To", "Call-ID"] {
            cancel.push(name, invite.header(name).unwrap_or_default());
        }
        cancel.push("CSeq", format!("{} CANCEL", invite.cseq().map_or(1, |(n, _)| n)));
        self.counters.requests_sent[method_index(&Method::Cancel)] += 1;
        self.cancel = Some(ClientTransaction::new(
            now,
            cancel,
            self.config.next_hop,
            self.config.transport,
            self.config.timers,
        ));
        self.state = LegState::Cancelling;
        self.give_up_at = Some(now + self.config.timers.timeout());
    }

    fn send_bye(&mut self, now: Instant) {
        self.send_in_dialog(now, &Method::Bye, None);
        self.keepalive_at = None;
        self.refresh_at = None;
        self.expire_at = None;
    }

    fn send_in_dialog(&mut self, now: Instant, method: &Method, body: Option<Vec<u8>>) {
        let via = via(&self.config, &mut self.ids);
        let Some(dialog) = self.dialog.as_mut() else { return };
        let mut request = dialog.request(method, via, None);
        if *method == Method::Update
            && let Some(interval) = self.session_interval
        {
            request.push("Session-Expires", format!("{};refresher=uac", interval.as_secs()));
            request.push("Supported", "timer");
        }
        if let Some(body) = body {
            request.push("Content-Type", "application/sdp");
            request.body = body;
        }
        let dest = dialog.next_hop(self.config.next_hop);
        self.start_client(now, request, dest);
    }

    fn start_client(&mut self, now: Instant, request: Message, dest: SocketAddr) {
        if self.clients.len() >= MAX_CLIENT_TRANSACTIONS {
            self.counters.rejected_overload += 1;
            return;
        }
        if let Some(method) = request.method() {
            self.counters.requests_sent[method_index(&method)] += 1;
        }
        self.clients.push(ClientTransaction::new(
            now,
            request,
            dest,
            self.config.transport,
            self.config.timers,
        ));
    }

    fn peer_gone(&mut self, now: Instant) {
        self.send_bye(now);
        self.end(true, EndReason::PeerGone);
    }

    fn fail(&mut self, status: u16, reason: &str, by_remote: bool) {
        if self.state != LegState::Ended {
            self.state = LegState::Ended;
            if !self.outcome_reported {
                self.events.push_back(LegEvent::Failed { status, reason: reason.to_owned(), by_remote });
            }
        }
    }

    fn end(&mut self, by_remote: bool, reason: EndReason) {
        if self.state != LegState::Ended {
            self.state = LegState::Ended;
            self.keepalive_at = None;
            self.refresh_at = None;
            self.expire_at = None;
            self.give_up_at = None;
            if !self.outcome_reported {
                self.events.push_back(LegEvent::Ended { by_remote, reason });
            }
        }
    }
}

fn build_offer(media: &MediaOffer, session_id: u64) -> Result<SessionDescription, SipError> {
    let mut offer =
        SessionDescription::new(Origin::new(session_id, 1, media.address), media.address, media.port);
    for codec in media.codecs() {
        offer = offer.with_codec(codec);
    }
    offer = offer.with_telephone_event(media.telephone_event).with_ptime(20);
    offer.build().map_err(|e| SipError::InvalidConfig { field: "media", reason: e.to_string() })?;
    Ok(offer)
}

fn host_of(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
    }
}

fn via(config: &SipLegConfig, ids: &mut Ids) -> String {
    format!(
        "SIP/2.0/{} {};branch=z9hG4bK{};rport",
        config.transport.via_name(),
        host_of(config.local),
        ids.token()
    )
}

fn contact(config: &SipLegConfig) -> String {
    let transport = if config.transport.is_reliable() { ";transport=tcp" } else { "" };
    format!("<sip:voxproxy@{}{transport}>", host_of(config.local))
}

/// `X-Twilio-*` and one `X-<Name>` per stream parameter, sanitised and bounded.
fn add_call_headers(invite: &mut Message, info: &CallInfo) {
    let fields = [
        ("X-Twilio-CallSid", &info.call_sid),
        ("X-Twilio-StreamSid", &info.stream_sid),
        ("X-Twilio-From", &info.from),
        ("X-Twilio-To", &info.to),
    ];
    for (name, value) in fields {
        if !value.is_empty() {
            invite.push(name, header_value(value));
        }
    }
    if let Some(traceparent) = &info.traceparent {
        invite.push("traceparent", header_value(traceparent));
    }
    let mut added = 0;
    for (name, value) in &info.params {
        let name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
        if name.is_empty() || name.to_ascii_lowercase().starts_with("twilio-") || added == MAX_PARAM_HEADERS {
            continue;
        }
        invite.push(&format!("X-{name}"), header_value(value));
        added += 1;
    }
}

/// Printable ASCII only, trimmed, at most [`MAX_PARAM_VALUE_BYTES`].
fn header_value(value: &str) -> String {
    let kept: String =
        value.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(MAX_PARAM_VALUE_BYTES).collect();
    kept.trim().to_owned()
}

#[cfg(test)]
#[path = "leg_tests.rs"]
mod tests;
