//! The header record and the SIP start record: tagged fields (tag u8,
//! length u16 LE, value), so a later version can add fields that this
//! reader skips (docs/capture.md, *Header*).

use core::time::Duration;
use std::net::SocketAddr;

use voxproxy_core::Instant;

use super::format::{Body, CaptureHeader, LegKind, SipStart, codec_code, codec_from_code, nanos, put_addr};
use crate::bridge::BridgeConfig;
use crate::sip::auth::Credentials;
use crate::sip::{CallInfo, MediaOffer, SipLegConfig, SipUri, Timers, Transport};

/// What a replay answers a digest challenge with: the capture holds no credentials.
pub(super) const PLACEHOLDER: &str = "redacted";

fn field(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    // Every value here is short (a number, an address, a SIP URI or a
    // Twilio id); longer text is cut, never a malformed field.
    let len = value.len().min(usize::from(u16::MAX));
    out.push(tag);
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&value[..len]);
}

fn field_u64(out: &mut Vec<u8>, tag: u8, v: u64) {
    field(out, tag, &v.to_le_bytes());
}

fn field_addr(out: &mut Vec<u8>, tag: u8, addr: Option<SocketAddr>) {
    let mut value = Vec::with_capacity(19);
    put_addr(&mut value, addr);
    field(out, tag, &value);
}

/// Calls `each(tag, value)` for every field; `Err` names the defect.
fn fields<'a>(
    body: &'a [u8],
    mut each: impl FnMut(u8, Body<'a>) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    let mut body = Body { bytes: body };
    while !body.bytes.is_empty() {
        let (Some(tag), Some(len)) = (body.u8(), body.u16()) else { return Err("a field is cut short") };
        let value = body.take(usize::from(len)).ok_or("a field's value is cut short")?;
        each(tag, Body { bytes: value })?;
    }
    Ok(())
}

fn num(mut value: Body<'_>) -> Result<u64, &'static str> {
    let v = match value.bytes.len() {
        1 => value.u8().map(u64::from),
        2 => value.u16().map(u64::from),
        4 => value.u32().map(u64::from),
        8 => value.u64(),
        _ => None,
    };
    v.ok_or("a number field has a bad length")
}

fn small<T: TryFrom<u64>>(value: Body<'_>) -> Result<T, &'static str> {
    T::try_from(num(value)?).map_err(|_| "a number field is out of range")
}

fn text(value: Body<'_>) -> Result<String, &'static str> {
    core::str::from_utf8(value.bytes).map(str::to_owned).map_err(|_| "a text field is not UTF-8")
}

fn addr(mut value: Body<'_>) -> Result<Option<SocketAddr>, &'static str> {
    value.addr().ok_or("an address field is malformed")
}

fn duration(value: Body<'_>) -> Result<Duration, &'static str> {
    num(value).map(Duration::from_nanos)
}

/// Writes the header's fields; returns the offset in `out` of the leg
/// byte, which [`super::Encoder::set_leg`] may still change.
pub(super) fn encode_header(out: &mut Vec<u8>, h: &CaptureHeader) -> usize {
    let c = &h.bridge;
    field(out, 1, h.voxproxy_version.as_bytes());
    field(out, 2, &[leg_code(h.leg)]);
    let leg_at = out.len() - 1;
    field_u64(out, 3, h.created_at.as_nanos());
    field_addr(out, 10, c.backend);
    field(out, 11, &[codec_code(c.codec)]);
    field(out, 12, &[c.payload_type]);
    field_u64(out, 13, nanos(c.ptime));
    field(out, 14, &[c.dtmf_payload_type]);
    field_u64(out, 15, nanos(c.dtmf_duration));
    field_u64(out, 16, nanos(c.jitter_max_delay));
    field(out, 17, &[c.vad_mode]);
    field(out, 18, &[u8::from(c.barge_in)]);
    field_u64(out, 19, nanos(c.ping_interval));
    field_u64(out, 20, nanos(c.idle_timeout));
    field_u64(out, 21, nanos(c.rtp_keepalive_interval));
    field_u64(out, 22, nanos(c.backend_timeout));
    field_u64(out, 23, nanos(c.talkspurt_gap));
    field_u64(out, 24, c.max_frame_bytes as u64);
    field_u64(out, 25, nanos(c.start_timeout));
    field_u64(out, 26, u64::from(c.ssrc));
    field_u64(out, 27, u64::from(c.initial_sequence));
    field_u64(out, 28, u64::from(c.initial_timestamp));
    field_u64(out, 29, u64::from(c.outbound_ssrc));
    field_u64(out, 30, u64::from(c.outbound_initial_sequence));
    field_u64(out, 31, u64::from(c.outbound_initial_timestamp));
    leg_at
}

pub(super) const fn leg_code(leg: LegKind) -> u8 {
    match leg {
        LegKind::Rtp => 0,
        LegKind::Sip => 1,
        LegKind::Bot => 2,
    }
}

pub(super) fn decode_header(body: &[u8]) -> Result<CaptureHeader, &'static str> {
    let mut h = CaptureHeader {
        voxproxy_version: String::new(),
        leg: LegKind::Rtp,
        created_at: Instant::ZERO,
        bridge: BridgeConfig::default(),
    };
    let mut seen_leg = false;
    fields(body, |tag, v| {
        let c = &mut h.bridge;
        match tag {
            1 => h.voxproxy_version = text(v)?,
            2 => {
                h.leg = match num(v)? {
                    0 => LegKind::Rtp,
                    1 => LegKind::Sip,
                    2 => LegKind::Bot,
                    _ => return Err("unknown leg kind"),
                };
                seen_leg = true;
            }
            3 => h.created_at = Instant::from_nanos(num(v)?),
            10 => c.backend = addr(v)?,
            11 => c.codec = codec_from_code(small(v)?).ok_or("unknown codec")?,
            12 => c.payload_type = small(v)?,
            13 => c.ptime = duration(v)?,
            14 => c.dtmf_payload_type = small(v)?,
            15 => c.dtmf_duration = duration(v)?,
            16 => c.jitter_max_delay = duration(v)?,
            17 => c.vad_mode = small(v)?,
            18 => c.barge_in = num(v)? != 0,
            19 => c.ping_interval = duration(v)?,
            20 => c.idle_timeout = duration(v)?,
            21 => c.rtp_keepalive_interval = duration(v)?,
            22 => c.backend_timeout = duration(v)?,
            23 => c.talkspurt_gap = duration(v)?,
            24 => c.max_frame_bytes = small(v)?,
            25 => c.start_timeout = duration(v)?,
            26 => c.ssrc = small(v)?,
            27 => c.initial_sequence = small(v)?,
            28 => c.initial_timestamp = small(v)?,
            29 => c.outbound_ssrc = small(v)?,
            30 => c.outbound_initial_sequence = small(v)?,
            31 => c.outbound_initial_timestamp = small(v)?,
            // A later version's field: this reader does without it.
            _ => {}
        }
        Ok(())
    })?;
    if !seen_leg {
        return Err("the header does not name the leg");
    }
    h.bridge.stream_token = None;
    Ok(h)
}

pub(super) fn encode_sip_start(out: &mut Vec<u8>, config: &SipLegConfig, info: &CallInfo) {
    field(out, 1, config.target.to_string().as_bytes());
    field_addr(out, 2, Some(config.next_hop));
    field(
        out,
        3,
        &[match config.transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
        }],
    );
    field_addr(out, 4, Some(config.local));
    field_addr(out, 5, Some(SocketAddr::new(config.media.address, 0)));
    field_u64(out, 6, u64::from(config.media.port));
    field(out, 7, &[codec_code(config.media.codec)]);
    field(out, 8, &[config.media.telephone_event]);
    field(out, 9, &[u8::from(config.credentials.is_some())]);
    field_u64(out, 10, nanos(config.timers.t1));
    field_u64(out, 11, nanos(config.timers.t2));
    field_u64(out, 12, nanos(config.timers.t4));
    if let Some(k) = config.keepalive {
        field_u64(out, 13, nanos(k));
    }
    if let Some(r) = config.ring_timeout {
        field_u64(out, 14, nanos(r));
    }
    field_u64(out, 15, config.seed);
    field(out, 20, info.call_sid.as_bytes());
    field(out, 21, info.stream_sid.as_bytes());
    field(out, 22, info.from.as_bytes());
    field(out, 23, info.to.as_bytes());
    for (name, value) in &info.params {
        field(out, 24, name.as_bytes());
        field(out, 25, value.as_bytes());
    }
    // The INVITE carries it when tracing is on: the replay must send it too.
    if let Some(traceparent) = &info.traceparent {
        field(out, 26, traceparent.as_bytes());
    }
}

pub(super) fn decode_sip_start(body: &[u8]) -> Result<SipStart, &'static str> {
    let unset: SocketAddr = ([0, 0, 0, 0], 0).into();
    let mut target = None;
    let mut config = SipLegConfig {
        target: SipUri::parse("sip:unset.invalid").map_err(|_| "placeholder URI")?,
        next_hop: unset,
        transport: Transport::Udp,
        local: unset,
        media: MediaOffer {
            address: unset.ip(),
            port: 0,
            codec: crate::bridge::BackendCodec::Pcmu,
            telephone_event: 101,
        },
        credentials: None,
        timers: Timers::default(),
        keepalive: None,
        ring_timeout: None,
        seed: 0,
    };
    let mut info = CallInfo::default();
    fields(body, |tag, v| {
        match tag {
            1 => target = Some(SipUri::parse(&text(v)?).map_err(|_| "the SIP target is not a SIP URI")?),
            2 => config.next_hop = addr(v)?.ok_or("no next hop")?,
            3 => {
                config.transport = match num(v)? {
                    0 => Transport::Udp,
                    1 => Transport::Tcp,
                    _ => return Err("unknown SIP transport"),
                }
            }
            4 => config.local = addr(v)?.ok_or("no local address")?,
            5 => config.media.address = addr(v)?.ok_or("no media address")?.ip(),
            6 => config.media.port = small(v)?,
            7 => config.media.codec = codec_from_code(small(v)?).ok_or("unknown codec")?,
            8 => config.media.telephone_event = small(v)?,
            9 => {
                config.credentials = (num(v)? != 0).then(|| Credentials {
                    username: PLACEHOLDER.to_owned(),
                    password: PLACEHOLDER.to_owned(),
                });
            }
            10 => config.timers.t1 = duration(v)?,
            11 => config.timers.t2 = duration(v)?,
            12 => config.timers.t4 = duration(v)?,
            13 => config.keepalive = Some(duration(v)?),
            14 => config.ring_timeout = Some(duration(v)?),
            15 => config.seed = num(v)?,
            20 => info.call_sid = text(v)?,
            21 => info.stream_sid = text(v)?,
            22 => info.from = text(v)?,
            23 => info.to = text(v)?,
            24 => info.params.push((text(v)?, String::new())),
            25 => info.params.last_mut().ok_or("a parameter value without a name")?.1 = text(v)?,
            26 => info.traceparent = Some(text(v)?),
            _ => {}
        }
        Ok(())
    })?;
    config.target = target.ok_or("the SIP start names no target")?;
    // voxproxy never writes others; a damaged file must not make a replay
    // spin on zero-length timers or wait a year.
    let sane = |d: Duration| (Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&d);
    let t = &config.timers;
    let optional = [config.keepalive, config.ring_timeout];
    if ![t.t1, t.t2, t.t4].into_iter().chain(optional.into_iter().flatten()).all(sane) {
        return Err("a SIP timer is out of range");
    }
    Ok(SipStart { config, info })
}
