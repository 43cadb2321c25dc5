//! The running configuration as JSON for `GET /v1/config`, secrets redacted.
//!
//! Every scalar key comes from the one key table ([`KEYS`]), in its order and
//! under its dotted name, so a new row there shows up here without another
//! list to keep in step; [`shown`] is an exhaustive `match` on [`Setting`],
//! so a key without a way to show its value does not compile. Secrets are
//! not keys (they come only from the environment) and are shown as whether
//! they are set, never as their value.

use serde_json::{Map, Value, json};
use voxproxy_adapters::route::{Route, RouteTo, StreamMode};

use super::keys::{KEYS, Setting};
use super::{Config, Secret};

/// What a set secret is shown as.
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// The configuration as JSON: `{"keys": {"server.listen": …, …},
    /// "routes": […], "secrets": {"TWILIO_AUTH_TOKEN": "<redacted>" | null, …}}`.
    /// No secret's value is ever part of it.
    #[must_use]
    pub fn redacted_json(&self) -> Value {
        let mut keys = Map::new();
        for info in KEYS {
            keys.insert(info.path.to_owned(), shown(self, info.key));
        }
        let secret = |s: &Option<Secret>| s.as_ref().map_or(Value::Null, |_| Value::from(REDACTED));
        json!({
            "keys": keys,
            "routes": self.routes.iter().map(route).collect::<Vec<_>>(),
            "secrets": {
                "TWILIO_AUTH_TOKEN": secret(&self.secrets.twilio_auth_token),
                "VOXPROXY_ADMIN_TOKEN": secret(&self.secrets.admin_token),
                "VOXPROXY_SIP_PASSWORD": secret(&self.secrets.sip_password),
            },
        })
    }
}

/// One key's value as the file would hold it; `null` when unset.
fn shown(c: &Config, key: Setting) -> Value {
    let text = |v: &dyn std::fmt::Display| Value::from(v.to_string());
    let secs = |d: std::time::Duration| Value::from(super::format_duration(d));
    match key {
        Setting::ServerListen => text(&c.server.listen),
        Setting::ServerPublicUrl => text(&c.server.public_url),
        Setting::ServerWorkers => c.server.workers.get().into(),
        Setting::ServerIo => c.server.io.as_str().into(),
        Setting::ServerTlsCert => c.server.tls.as_ref().map_or(Value::Null, |t| text(&t.cert.display())),
        Setting::ServerTlsKey => c.server.tls.as_ref().map_or(Value::Null, |t| text(&t.key.display())),
        Setting::ServerAdminListen => c.server.admin_listen.map_or(Value::Null, |a| text(&a)),
        Setting::TwilioAccountSid => c.twilio.account_sid.clone().into(),
        Setting::TwilioApiBase => text(&c.twilio.api_base),
        Setting::TwilioValidateSignatures => c.twilio.validate_signatures.into(),
        Setting::TwilioStreamParameters => parameters(&c.twilio.stream_parameters),
        Setting::TwilioCallerId => c.twilio.caller_id.clone().into(),
        Setting::RtpBind => text(&c.rtp.bind),
        Setting::RtpPorts => text(&c.rtp.ports),
        Setting::RtpAllowPrivilegedPorts => c.rtp.allow_privileged_ports.into(),
        Setting::RtpBackend => text(&c.rtp.backend),
        Setting::RtpCodec => c.rtp.codec.name().into(),
        Setting::RtpPtimeMs => c.rtp.ptime_ms.into(),
        Setting::RtpDtmfPayloadType => c.rtp.dtmf_payload_type.into(),
        Setting::RtpPayloadType => c.rtp.payload_type.into(),
        Setting::RtpAdvertise => c.rtp.advertise.map_or(Value::Null, |ip| text(&ip)),
        Setting::SipListen => c.sip.listen.map_or(Value::Null, |a| text(&a)),
        Setting::SipAllow => {
            let nets: Vec<String> = c.sip.allow.iter().map(ToString::to_string).collect();
            nets.join(",").into()
        }
        Setting::SipUsername => c.sip.username.clone().into(),
        Setting::SipRingTimeout => secs(c.sip.ring_timeout),
        Setting::SipMaxCalls => c.sip.limits.max_calls.into(),
        Setting::SipMaxCallsPerSource => c.sip.limits.max_calls_per_source.into(),
        Setting::SipInvitesPerSecond => c.sip.invites_per_second.into(),
        Setting::SipMaxTcpConnections => c.sip.max_tcp_connections.into(),
        Setting::JitterMaxDelayMs => c.jitter.max_delay_ms.into(),
        Setting::VadMode => c.vad.mode.into(),
        Setting::VadBargeIn => c.vad.barge_in.into(),
        Setting::KeepalivePingInterval => secs(c.keepalive.ping_interval),
        Setting::KeepaliveIdleTimeout => secs(c.keepalive.idle_timeout),
        Setting::WsProtocol => c.ws.protocol_name().into(),
        Setting::WsSampleRate => c.ws.sample_rate.into(),
        Setting::WsConnectTimeout => secs(c.ws.connect_timeout),
        Setting::WsBargeIn => c.ws.barge_in.into(),
        Setting::WsMaxQueuedMs => c.ws.max_queued_ms.into(),
        Setting::LimitsMaxCalls => c.limits.max_calls.into(),
        Setting::LimitsMaxFrameBytes => c.limits.max_frame_bytes.into(),
        Setting::LimitsWebhookRatePerIp => c.limits.webhook_rate_per_ip.unwrap_or(0).into(),
        Setting::LimitsMaxBodyBytes => c.limits.max_body_bytes.into(),
        Setting::LimitsCallsPerCallerPerMinute => c.limits.calls_per_caller_per_minute.unwrap_or(0).into(),
        Setting::CdrPath => text(&c.cdr.path.display()),
        Setting::DrainTimeout => secs(c.drain.timeout),
        Setting::LogFormat => c.log.format.name().into(),
        Setting::LogLevel => c.log.level.clone().into(),
        Setting::RecordingEnabled => c.recording.enabled.into(),
        Setting::RecordingDir => text(&c.recording.dir.display()),
        Setting::RecordingTwilio => c.recording.twilio.into(),
        Setting::CaptureEnabled => c.capture.enabled.into(),
        Setting::CaptureDir => text(&c.capture.dir.display()),
        Setting::CaptureMaxBytes => c.capture.max_bytes.into(),
        Setting::OtelEndpoint => c.otel.endpoint.as_ref().map_or(Value::Null, |u| text(u)),
        Setting::OtelServiceName => c.otel.service_name.clone().into(),
        Setting::OtelSamplePercent => c.otel.sample_percent.into(),
        Setting::OtelMaxQueue => c.otel.max_queue.into(),
        Setting::OtelExportTimeout => secs(c.otel.export_timeout),
        Setting::StoreUrl => c.store.url.as_ref().map_or(Value::Null, |u| u.redacted().into()),
        Setting::StoreInstanceId => c.store.instance_id.clone().into(),
        Setting::StoreAdminUrl => c.store.admin_url.clone().into(),
        Setting::StoreQueryTimeout => secs(c.store.query_timeout),
    }
}

/// `Name=value,…` as the key is written.
fn parameters(pairs: &[(String, String)]) -> Value {
    let written: Vec<String> = pairs.iter().map(|(name, value)| format!("{name}={value}")).collect();
    written.join(",").into()
}

fn route(r: &Route) -> Value {
    json!({
        "to": match &r.to { RouteTo::Any => "*", RouteTo::Number(n) => n.as_str() },
        "backend": r.backend.to_string(),
        "greeting": r.greeting.as_ref().map(|g| g.text.clone()),
        "parameters": r.parameters.iter().map(|(n, v)| (n.clone(), Value::from(v.clone()))).collect::<Map<_, _>>(),
        "mode": match r.mode { StreamMode::Connect => "connect", StreamMode::Fork => "fork" },
        "track": r.track.map(|t| t.to_string()),
        "forward_to": r.forward_to,
        "forward_timeout": format!("{}s", r.forward_timeout_secs),
        "on_missed": r.on_missed.as_str(),
        "sms_text": r.sms_text,
        "fallback": r.fallback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;

    #[test]
    fn every_key_is_shown_and_no_secret_value_is() {
        let file =
            "[rtp]\nports = \"1000-1010\"\nallow_privileged_ports = true\n[drain]\ntimeout = \"1m30s\"\n";
        let env = [
            ("TWILIO_AUTH_TOKEN", "auth-secret-0123456789"),
            ("VOXPROXY_ADMIN_TOKEN", "admin-secret-9876543210"),
            ("VOXPROXY_TWILIO_STREAM_PARAMETERS", "Tenant=acme,Queue=sales"),
        ];
        let path = std::path::Path::new("voxproxy.toml");
        let config = Config::from_sources(Some((path, file)), &ServeArgs::default(), env).unwrap();
        let shown = config.redacted_json();
        let text = shown.to_string();
        assert!(!text.contains("auth-secret") && !text.contains("admin-secret"), "{text}");
        assert_eq!(shown["secrets"]["TWILIO_AUTH_TOKEN"], REDACTED);
        let keys = shown["keys"].as_object().unwrap();
        assert_eq!(keys.len(), KEYS.len());
        assert!(KEYS.iter().all(|info| keys.contains_key(info.path)));
        assert_eq!(keys["rtp.ports"], "1000-1010");
        assert_eq!(keys["rtp.allow_privileged_ports"], true);
        assert_eq!(keys["drain.timeout"], "1m30s");
        assert_eq!(keys["twilio.stream_parameters"], "Tenant=acme,Queue=sales");
        assert_eq!(keys["server.tls.cert"], Value::Null);
        assert_eq!(keys["limits.max_calls"], 2000);
    }

    #[test]
    fn unset_secrets_are_null() {
        let config = Config::from_sources(None, &ServeArgs::default(), [("A", "b")]).unwrap();
        let shown = config.redacted_json();
        assert_eq!(shown["secrets"]["VOXPROXY_ADMIN_TOKEN"], Value::Null);
        assert_eq!(shown["routes"], json!([]));
    }
}
