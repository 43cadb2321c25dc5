use std::io::Write as _;

use clap::Parser;
use proptest::prelude::*;

use std::net::Ipv4Addr;

use voxproxy_adapters::route::{OnMissed, StreamMode};
use voxproxy_adapters::twiml::StreamTrack;

use super::*;

const NO_ENV: [(&str, &str); 0] = [];

fn from_file(text: &str) -> Result<Config, ConfigError> {
    Config::from_sources(Some((Path::new("test.toml"), text)), &ServeArgs::default(), NO_ENV)
}

fn from_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_sources(None, &ServeArgs::default(), pairs.iter().copied())
}

fn error_text(result: Result<Config, ConfigError>) -> String {
    match result {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

#[derive(Parser)]
struct TestCli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn flags(argv: &[&str]) -> ServeArgs {
    TestCli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied())).unwrap().serve
}

#[test]
fn empty_config_is_valid_and_uses_documented_defaults() {
    let c = Config::from_sources(None, &ServeArgs::default(), NO_ENV).unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.server.public_url.as_str(), "http://127.0.0.1:8080");
    assert_eq!(c.server.io, IoMode::Auto);
    assert_eq!(c.server.tls, None);
    assert_eq!(c.twilio.account_sid, None);
    assert_eq!(c.twilio.api_base.as_str(), "https://api.twilio.com");
    assert!(c.twilio.validate_signatures);
    assert_eq!(c.rtp.bind, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
    assert_eq!(c.rtp.ports, PortRange { low: 40000, high: 44999 });
    assert_eq!(c.rtp.ports.len(), 5000);
    assert_eq!(c.rtp.backend, "127.0.0.1:4000".parse().unwrap());
    assert_eq!(c.rtp.codec, Codec::Pcmu);
    assert_eq!(c.rtp.ptime_ms, 20);
    assert_eq!(c.rtp.dtmf_payload_type, 101);
    assert_eq!(c.rtp.payload_type, 0);
    assert_eq!(c.jitter.max_delay_ms, 60);
    assert_eq!(c.vad, VadSettings { mode: 2, barge_in: true });
    assert_eq!(
        c.keepalive,
        KeepaliveSettings { ping_interval: Duration::from_secs(10), idle_timeout: Duration::from_secs(30) }
    );
    assert_eq!(
        c.limits,
        Limits {
            max_calls: 2000,
            max_frame_bytes: 16384,
            webhook_rate_per_ip: Some(20),
            max_body_bytes: 65536,
            calls_per_caller_per_minute: None
        }
    );
    assert_eq!(c.cdr.path, PathBuf::from("voxproxy-cdr.jsonl"));
    assert_eq!(c.drain.timeout, Duration::from_secs(5));
    assert!(c.secrets.twilio_auth_token.is_none() && c.secrets.admin_token.is_none());
    // An empty file is the same as no file.
    let from_empty_file = from_file("").unwrap();
    assert_eq!(from_empty_file.server, c.server);
    assert_eq!(from_empty_file.rtp, c.rtp);
}

#[test]
fn minimal_file_from_the_design_loads() {
    let c =
        from_file("[cdr]\npath = \"/var/lib/voxproxy/cdr.jsonl\"\n\n[drain]\ntimeout = \"5s\"\n").unwrap();
    assert_eq!(c.cdr.path, PathBuf::from("/var/lib/voxproxy/cdr.jsonl"));
    assert_eq!(c.drain.timeout, Duration::from_secs(5));
}

#[test]
fn a_full_file_sets_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, "cert").unwrap();
    std::fs::write(&key, "key").unwrap();
    let text = format!(
        r#"
[server]
listen = "[::1]:9443"
public_url = "https://voice.example.com/proxy/"
workers = 3
io = "epoll"
tls = {{ cert = {cert:?}, key = {key:?} }}

[twilio]
account_sid = "AC0123456789abcdef0123456789ABCDEF"
api_base = "http://127.0.0.1:9999"
validate_signatures = false

[rtp]
bind = "0.0.0.0"
ports = "20000-20009"
backend = "10.1.2.3:5004"
codec = "l16-16k"
ptime_ms = 40
dtmf_payload_type = 110
payload_type = 98

[jitter]
max_delay_ms = 120

[vad]
mode = 0
barge_in = false

[keepalive]
ping_interval = "2s500ms"
idle_timeout = "1m"

[limits]
max_calls = 10
max_frame_bytes = 4096
webhook_rate_per_ip = 0
max_body_bytes = 2048

[cdr]
path = "calls.jsonl"

[drain]
timeout = "0s"
"#
    );
    let c = from_file(&text).unwrap();
    assert_eq!(c.server.listen, "[::1]:9443".parse().unwrap());
    assert_eq!(c.server.public_url.as_str(), "https://voice.example.com/proxy");
    assert_eq!(c.server.workers.get(), 3);
    assert_eq!(c.server.io, IoMode::Epoll);
    assert_eq!(c.server.tls, Some(TlsFiles { cert, key }));
    assert_eq!(c.twilio.account_sid.as_deref(), Some("AC0123456789abcdef0123456789ABCDEF"));
    assert_eq!(c.twilio.api_base.as_str(), "http://127.0.0.1:9999");
    assert!(!c.twilio.validate_signatures);
    assert_eq!(c.rtp.bind, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!(c.rtp.ports, PortRange { low: 20000, high: 20009 });
    assert_eq!(c.rtp.backend, "10.1.2.3:5004".parse().unwrap());
    assert_eq!(c.rtp.codec, Codec::L16Wideband);
    assert_eq!((c.rtp.ptime_ms, c.rtp.dtmf_payload_type, c.rtp.payload_type), (40, 110, 98));
    assert_eq!(c.jitter.max_delay_ms, 120);
    assert_eq!(c.vad, VadSettings { mode: 0, barge_in: false });
    assert_eq!(c.keepalive.ping_interval, Duration::from_millis(2500));
    assert_eq!(c.keepalive.idle_timeout, Duration::from_secs(60));
    assert_eq!(
        c.limits,
        Limits {
            max_calls: 10,
            max_frame_bytes: 4096,
            webhook_rate_per_ip: None,
            max_body_bytes: 2048,
            calls_per_caller_per_minute: None
        }
    );
    assert_eq!(c.cdr.path, PathBuf::from("calls.jsonl"));
    assert_eq!(c.drain.timeout, Duration::ZERO);
    assert_eq!(c.warnings().len(), 2, "{:?}", c.warnings());
}

#[test]
fn file_then_env_then_flag_for_the_same_key() {
    let file = Some((Path::new("p.toml"), "[server]\nlisten = \"127.0.0.1:1001\"\n"));
    let env = [("VOXPROXY_SERVER_LISTEN", "127.0.0.1:1002")];
    let flag = flags(&["--listen", "127.0.0.1:1003"]);
    let none = ServeArgs::default();

    let port = |file, args: &ServeArgs, env: &[(&str, &str)]| {
        Config::from_sources(file, args, env.iter().copied()).unwrap().server.listen.port()
    };
    assert_eq!(port(None, &none, &[]), 8080);
    assert_eq!(port(file, &none, &[]), 1001);
    assert_eq!(port(file, &none, &env), 1002);
    assert_eq!(port(file, &flag, &env), 1003);
    assert_eq!(port(None, &flag, &[]), 1003);
    assert_eq!(port(file, &flag, &[]), 1003);
}

#[test]
fn every_flag_overrides_its_key() {
    let args = flags(&[
        "--listen",
        "0.0.0.0:80",
        "--public-url",
        "https://a.example",
        "--backend",
        "192.0.2.1:7000",
        "--rtp-ports",
        "30000-30001",
        "--workers",
        "7",
        "--io",
        "uring",
    ]);
    let file = "[server]\nworkers = 2\nio = \"epoll\"\n[rtp]\nports = \"50000-50001\"\n";
    let c = Config::from_sources(Some((Path::new("f.toml"), file)), &args, [("VOXPROXY_SERVER_IO", "auto")])
        .unwrap();
    assert_eq!(c.server.listen, "0.0.0.0:80".parse().unwrap());
    assert_eq!(c.server.public_url.as_str(), "https://a.example");
    assert_eq!(c.rtp.backend, "192.0.2.1:7000".parse().unwrap());
    assert_eq!(c.rtp.ports, PortRange { low: 30000, high: 30001 });
    assert_eq!(c.server.workers.get(), 7);
    assert_eq!(c.server.io, IoMode::Uring);
}

#[test]
fn clap_rejects_an_io_mode_it_does_not_know() {
    assert!(TestCli::try_parse_from(["serve", "--io", "kqueue"]).is_err());
}

#[test]
fn env_names_follow_section_and_key_upper_cased() {
    for (i, info) in KEYS.iter().enumerate() {
        assert_eq!(info.key as usize, i, "KEYS is out of order at {}", info.path);
        let derived = format!("VOXPROXY_{}", info.path.to_ascii_uppercase().replace('.', "_"));
        assert_eq!(info.env(), derived);
    }
}

#[test]
fn every_key_can_be_set_from_the_environment() {
    let c = from_env(&[
        ("VOXPROXY_SERVER_PUBLIC_URL", "https://b.example:8443"),
        ("VOXPROXY_SERVER_WORKERS", "5"),
        ("VOXPROXY_TWILIO_VALIDATE_SIGNATURES", "no"),
        ("VOXPROXY_RTP_CODEC", "pcma"),
        ("VOXPROXY_RTP_PTIME_MS", "10"),
        ("VOXPROXY_RTP_DTMF_PAYLOAD_TYPE", "96"),
        ("VOXPROXY_JITTER_MAX_DELAY_MS", "0"),
        ("VOXPROXY_VAD_MODE", "3"),
        ("VOXPROXY_VAD_BARGE_IN", "FALSE"),
        ("VOXPROXY_KEEPALIVE_PING_INTERVAL", "250ms"),
        ("VOXPROXY_KEEPALIVE_IDLE_TIMEOUT", "1h"),
        ("VOXPROXY_LIMITS_MAX_CALLS", "1"),
        ("VOXPROXY_CDR_PATH", "/tmp/x.jsonl"),
        ("VOXPROXY_DRAIN_TIMEOUT", "1m"),
        ("VOXPROXY_RTP_PORTS", "80-81"),
        ("VOXPROXY_RTP_ALLOW_PRIVILEGED_PORTS", "true"),
        ("PATH", "/usr/bin"),
        ("TWILIO_OTHER_THING", "ignored"),
    ])
    .unwrap();
    assert_eq!(c.server.public_url.as_str(), "https://b.example:8443");
    assert_eq!(c.server.workers.get(), 5);
    assert!(!c.twilio.validate_signatures);
    assert_eq!((c.rtp.codec, c.rtp.payload_type), (Codec::Pcma, 8));
    assert_eq!((c.rtp.ptime_ms, c.rtp.dtmf_payload_type), (10, 96));
    assert_eq!(c.jitter.max_delay_ms, 0);
    assert_eq!(c.vad, VadSettings { mode: 3, barge_in: false });
    assert_eq!(c.keepalive.ping_interval, Duration::from_millis(250));
    assert_eq!(c.keepalive.idle_timeout, Duration::from_secs(3600));
    assert_eq!(c.limits.max_calls, 1);
    assert_eq!(c.cdr.path, PathBuf::from("/tmp/x.jsonl"));
    assert_eq!(c.drain.timeout, Duration::from_secs(60));
    assert_eq!(c.rtp.ports, PortRange { low: 80, high: 81 });
}

#[test]
fn empty_env_variable_counts_as_unset() {
    let file = Some((Path::new("f.toml"), "[rtp]\ncodec = \"pcma\"\n"));
    let c = Config::from_sources(file, &ServeArgs::default(), [("VOXPROXY_RTP_CODEC", "")]).unwrap();
    assert_eq!(c.rtp.codec, Codec::Pcma);
}

#[test]
fn unknown_voxproxy_variable_is_rejected() {
    let msg = error_text(from_env(&[("VOXPROXY_SERVER_LISTNE", "127.0.0.1:1")]));
    assert!(msg.contains("VOXPROXY_SERVER_LISTNE"), "{msg}");
}

#[test]
fn secrets_come_from_the_environment_and_never_show() {
    let token = "f00dfeedf00dfeedf00dfeedf00dfeed";
    let admin = "admin-token-long-enough-42";
    let c = from_env(&[
        ("TWILIO_AUTH_TOKEN", token),
        ("VOXPROXY_ADMIN_TOKEN", admin),
        ("TWILIO_ACCOUNT_SID", "ACffffffffffffffffffffffffffffffff"),
    ])
    .unwrap();
    assert_eq!(c.secrets.twilio_auth_token.as_ref().map(Secret::expose), Some(token));
    assert_eq!(c.secrets.admin_token.as_ref().map(Secret::expose), Some(admin));
    assert_eq!(c.twilio.account_sid.as_deref(), Some("ACffffffffffffffffffffffffffffffff"));
    let debug = format!("{c:?} {:?} {}", c.secrets, c.secrets.admin_token.as_ref().unwrap());
    assert!(!debug.contains(token) && !debug.contains(admin), "{debug}");
    assert!(debug.contains("<redacted>"));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn secret_errors_never_show_the_value() {
    let msg = error_text(from_env(&[("TWILIO_AUTH_TOKEN", "abc def")]));
    assert!(msg.contains("TWILIO_AUTH_TOKEN") && !msg.contains("abc"), "{msg}");
    let msg = error_text(from_env(&[("VOXPROXY_ADMIN_TOKEN", "short1")]));
    assert!(msg.contains("VOXPROXY_ADMIN_TOKEN") && !msg.contains("short1"), "{msg}");
}

#[test]
fn the_sip_password_is_a_secret_from_the_environment() {
    let c =
        from_env(&[("VOXPROXY_SIP_USERNAME", "voxproxy"), ("VOXPROXY_SIP_PASSWORD", "s3cret-sip")]).unwrap();
    assert_eq!(c.sip.username.as_deref(), Some("voxproxy"));
    assert_eq!(c.secrets.sip_password.as_ref().map(Secret::expose), Some("s3cret-sip"));
    let shown = c.redacted_json().to_string();
    assert!(
        !shown.contains("s3cret-sip") && shown.contains(r#""VOXPROXY_SIP_PASSWORD":"<redacted>""#),
        "{shown}"
    );
    assert!(shown.contains(r#""sip.username":"voxproxy""#), "{shown}");
    let msg = error_text(from_file("[sip]\npassword = \"hunter2\"\n"));
    assert!(msg.contains("sip.password") && msg.contains("VOXPROXY_SIP_PASSWORD"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    let c = from_env(&[("VOXPROXY_RTP_ADVERTISE", "203.0.113.7")]).unwrap();
    assert_eq!(c.rtp.media_address(), "203.0.113.7".parse::<IpAddr>().unwrap());
    assert_eq!(from_env(&[]).unwrap().rtp.media_address(), from_env(&[]).unwrap().rtp.bind);
}

#[test]
fn secrets_in_the_file_are_refused() {
    let msg = error_text(from_file("[twilio]\nauth_token = \"hunter2\"\n"));
    assert!(msg.contains("twilio.auth_token") && msg.contains("TWILIO_AUTH_TOKEN"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn account_sid_spellings_must_agree() {
    let a = "AC00000000000000000000000000000000";
    let b = "AC11111111111111111111111111111111";
    let msg = error_text(from_env(&[("TWILIO_ACCOUNT_SID", a), ("VOXPROXY_TWILIO_ACCOUNT_SID", b)]));
    assert!(msg.starts_with("twilio.account_sid = "), "{msg}");
    let c = from_env(&[("TWILIO_ACCOUNT_SID", a), ("VOXPROXY_TWILIO_ACCOUNT_SID", a)]).unwrap();
    assert_eq!(c.twilio.account_sid.as_deref(), Some(a));
}

#[test]
fn unknown_keys_are_named_with_their_section() {
    for (text, key) in [
        ("[server]\nlistne = \"x\"\n", "server.listne"),
        ("server.tls.crt = \"a\"\n", "server.tls.crt"),
        ("[bogus]\na = 1\n", "bogus"),
        ("listen = \"127.0.0.1:1\"\n", "listen"),
        ("[rtp]\ncodec = \"pcmu\"\n[rtp.extra]\nx = 1\n", "rtp.extra"),
    ] {
        let msg = error_text(from_file(text));
        assert!(msg.contains(&format!("unknown key `{key}`")), "{text:?}: {msg}");
    }
    let msg = error_text(from_file("\n\n[server]\nlistne = \"x\"\n"));
    assert!(msg.contains("test.toml line 4"), "{msg}");
    assert!(msg.contains("listen, public_url, workers, io, tls"), "{msg}");
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let msg = error_text(from_file("[server]\nlisten = \n"));
    assert!(msg.starts_with("test.toml is not valid TOML at line 2"), "{msg}");
}

#[test]
fn a_section_that_is_not_a_table_is_refused() {
    let msg = error_text(from_file("server = 5\n"));
    assert!(msg.starts_with("server = 5 (from test.toml line 1)"), "{msg}");
}

/// Each case: file text, the key its error must name, the value shown.
const BAD_FILE_VALUES: &[(&str, &str, &str)] = &[
    ("[server]\nlisten = \"localhost\"", "server.listen", "\"localhost\""),
    ("[server]\nlisten = 8080", "server.listen", "8080"),
    ("[server]\npublic_url = \"ftp://x\"", "server.public_url", "\"ftp://x\""),
    ("[server]\npublic_url = \"https://x/?a=1\"", "server.public_url", "\"https://x/?a=1\""),
    ("[server]\npublic_url = \"https://x/#f\"", "server.public_url", "\"https://x/#f\""),
    ("[server]\npublic_url = \"https://\"", "server.public_url", "\"https://\""),
    ("[server]\npublic_url = \"https://u:p@x\"", "server.public_url", "\"https://u:p@x\""),
    ("[server]\npublic_url = \"https://x:99999\"", "server.public_url", "\"https://x:99999\""),
    ("[server]\npublic_url = \"https://[::1\"", "server.public_url", "\"https://[::1\""),
    ("[server]\nworkers = 0", "server.workers", "0"),
    ("[server]\nworkers = 1025", "server.workers", "1025"),
    ("[server]\nworkers = \"four\"", "server.workers", "\"four\""),
    ("[server]\nio = \"kqueue\"", "server.io", "\"kqueue\""),
    ("[server.tls]\ncert = \"/nonexistent/cert.pem\"", "server.tls.cert", "\"/nonexistent/cert.pem\""),
    ("[server.tls]\nkey = \"/\"", "server.tls.key", "\"/\""),
    ("[twilio]\naccount_sid = \"AC123\"", "twilio.account_sid", "\"AC123\""),
    ("[twilio]\naccount_sid = \"XX0123456789abcdef0123456789abcdef\"", "twilio.account_sid", "\"XX"),
    ("[twilio]\napi_base = \"api.twilio.com\"", "twilio.api_base", "\"api.twilio.com\""),
    ("[twilio]\nvalidate_signatures = \"yes\"", "twilio.validate_signatures", "\"yes\""),
    ("[rtp]\nbind = \"127.0.0.1:5\"", "rtp.bind", "\"127.0.0.1:5\""),
    ("[rtp]\nports = \"5000-4000\"", "rtp.ports", "\"5000-4000\""),
    ("[log]\nformat = \"xml\"", "log.format", "\"xml\""),
    ("[twilio]\nstream_parameters = \"Tenant\"", "twilio.stream_parameters", "\"Tenant\""),
    ("[twilio]\ncaller_id = \"4155550100\"", "twilio.caller_id", "\"4155550100\""),
    ("[sip]\nlisten = \"127.0.0.1\"", "sip.listen", "\"127.0.0.1\""),
    ("[sip]\nallow = \"10.0.0.0/33\"", "sip.allow", "\"10.0.0.0/33\""),
    ("[sip]\nallow = \"pbx.example.com\"", "sip.allow", "\"pbx.example.com\""),
    ("[log]\nlevel = \"info debug\"", "log.level", "\"info debug\""),
    ("[rtp]\nports = \"5000\"", "rtp.ports", "\"5000\""),
    ("[rtp]\nports = \"0-10\"", "rtp.ports", "\"0-10\""),
    ("[rtp]\nports = \"5000-70000\"", "rtp.ports", "\"5000-70000\""),
    ("[rtp]\nports = \"80-90\"", "rtp.ports", "\"80-90\""),
    ("[rtp]\nports = 5000", "rtp.ports", "5000"),
    ("[rtp]\nallow_privileged_ports = 1", "rtp.allow_privileged_ports", "1"),
    ("[rtp]\nbackend = \"0.0.0.0:4000\"", "rtp.backend", "\"0.0.0.0:4000\""),
    ("[rtp]\nbackend = \"backend:4000\"", "rtp.backend", "\"backend:4000\""),
    ("[rtp]\ncodec = \"opus\"", "rtp.codec", "\"opus\""),
    ("[rtp]\nptime_ms = 25", "rtp.ptime_ms", "25"),
    ("[rtp]\nptime_ms = 60", "rtp.ptime_ms", "60"),
    ("[rtp]\ndtmf_payload_type = 128", "rtp.dtmf_payload_type", "128"),
    ("[rtp]\ndtmf_payload_type = 72", "rtp.dtmf_payload_type", "72"),
    ("[rtp]\ndtmf_payload_type = -1", "rtp.dtmf_payload_type", "-1"),
    ("[rtp]\npayload_type = 200", "rtp.payload_type", "200"),
    ("[rtp]\npayload_type = 101", "rtp.payload_type", "101"),
    ("[rtp]\ndtmf_payload_type = 0", "rtp.dtmf_payload_type", "0"),
    ("[jitter]\nmax_delay_ms = 1001", "jitter.max_delay_ms", "1001"),
    ("[jitter]\nmax_delay_ms = \"60ms\"", "jitter.max_delay_ms", "\"60ms\""),
    ("[vad]\nmode = 4", "vad.mode", "4"),
    ("[vad]\nbarge_in = \"true\"", "vad.barge_in", "\"true\""),
    ("[keepalive]\nping_interval = \"0s\"", "keepalive.ping_interval", "\"0s\""),
    ("[keepalive]\nping_interval = \"2h\"", "keepalive.ping_interval", "\"2h\""),
    ("[keepalive]\nping_interval = 10", "keepalive.ping_interval", "10"),
    ("[keepalive]\nping_interval = \"40s\"", "keepalive.ping_interval", "\"40s\""),
    ("[keepalive]\nidle_timeout = \"10s\"", "keepalive.idle_timeout", "\"10s\""),
    ("[keepalive]\nidle_timeout = \"30 s\"", "keepalive.idle_timeout", "\"30 s\""),
    ("[keepalive]\nidle_timeout = \"25h\"", "keepalive.idle_timeout", "\"25h\""),
    ("[ws]\nprotocol = \"vonage\"", "ws.protocol", "\"vonage\""),
    ("[ws]\nsample_rate = 44100", "ws.sample_rate", "44100"),
    ("[ws]\nsample_rate = 11025", "ws.sample_rate", "11025"),
    ("[ws]\nconnect_timeout = \"2m\"", "ws.connect_timeout", "\"2m\""),
    ("[sip]\nring_timeout = \"11m\"", "sip.ring_timeout", "\"11m\""),
    ("[sip]\nmax_calls = 0", "sip.max_calls", "0"),
    ("[sip]\nmax_calls_per_source = 100001", "sip.max_calls_per_source", "100001"),
    ("[sip]\nmax_calls_per_source = 9\nmax_calls = 8", "sip.max_calls_per_source", "9"),
    ("[sip]\ninvites_per_second = 0", "sip.invites_per_second", "0"),
    ("[sip]\nmax_tcp_connections = -1", "sip.max_tcp_connections", "-1"),
    ("[ws]\nbarge_in = 1", "ws.barge_in", "1"),
    ("[ws]\nmax_queued_ms = 10", "ws.max_queued_ms", "10"),
    ("[limits]\nmax_calls = 0", "limits.max_calls", "0"),
    ("[limits]\ncalls_per_caller_per_minute = 100001", "limits.calls_per_caller_per_minute", "100001"),
    ("[limits]\nmax_frame_bytes = 100", "limits.max_frame_bytes", "100"),
    ("[limits]\nwebhook_rate_per_ip = -5", "limits.webhook_rate_per_ip", "-5"),
    ("[limits]\nmax_body_bytes = 99999999999", "limits.max_body_bytes", "99999999999"),
    ("[cdr]\npath = \"\"", "cdr.path", "\"\""),
    ("[cdr]\npath = \"/\"", "cdr.path", "\"/\""),
    ("[drain]\ntimeout = \"5\"", "drain.timeout", "\"5\""),
    ("[drain]\ntimeout = \"2h\"", "drain.timeout", "\"2h\""),
    ("[recording]\nenabled = \"yes\"", "recording.enabled", "\"yes\""),
    ("[recording]\ndir = \"\"", "recording.dir", "\"\""),
    ("[recording]\ntwilio = 1", "recording.twilio", "1"),
    ("[capture]\nenabled = 1", "capture.enabled", "1"),
    ("[capture]\ndir = \"\"", "capture.dir", "\"\""),
    ("[capture]\nmax_bytes = 1000", "capture.max_bytes", "1000"),
    ("[store]\nurl = \"mysql://db/voxproxy\"", "store.url", "\"mysql://db/voxproxy\""),
    ("[store]\nurl = \"postgres://db:notaport/x\"", "store.url", "\"postgres://db:notaport/x\""),
    ("[store]\ninstance_id = \"a b\"", "store.instance_id", "\"a b\""),
    ("[store]\nadmin_url = \"https://10.0.0.5:9090\"", "store.admin_url", "\"https://10.0.0.5:9090\""),
    ("[store]\nquery_timeout = \"0s\"", "store.query_timeout", "\"0s\""),
    ("[server]\nadmin_listen = \"localhost:9090\"", "server.admin_listen", "\"localhost:9090\""),
    (
        "[server]\nadmin_listen = \"127.0.0.1:8080\"\nlisten = \"127.0.0.1:8080\"",
        "server.admin_listen",
        "\"127.0.0.1:8080\"",
    ),
    ("[rtp]\nadvertise = \"0.0.0.0\"", "rtp.advertise", "\"0.0.0.0\""),
    ("[rtp]\nadvertise = \"nat.example.com\"", "rtp.advertise", "\"nat.example.com\""),
    ("[sip]\nusername = \"a\\\"b\"", "sip.username", "\"a\\\"b\""),
    ("[otel]\nendpoint = \"grpc://127.0.0.1:4317\"", "otel.endpoint", "\"grpc://127.0.0.1:4317\""),
    ("[otel]\nendpoint = \"http://127.0.0.1:4318?x=1\"", "otel.endpoint", "\"http://127.0.0.1:4318?x=1\""),
    ("[otel]\nservice_name = \"\"", "otel.service_name", "\"\""),
    ("[otel]\nservice_name = \"a\\nb\"", "otel.service_name", "\"a\\nb\""),
    ("[otel]\nsample_percent = 101", "otel.sample_percent", "101"),
    ("[otel]\nmax_queue = 10", "otel.max_queue", "10"),
    ("[otel]\nexport_timeout = \"0s\"", "otel.export_timeout", "\"0s\""),
    ("[otel]\nexport_timeout = \"2m\"", "otel.export_timeout", "\"2m\""),
];

#[test]
fn backend_port_zero_means_learn_it_from_the_backend() {
    let c = from_file("[rtp]\nbackend = \"10.0.0.7:0\"\n").expect("port 0 latches");
    assert_eq!(c.rtp.backend, "10.0.0.7:0".parse().unwrap());
}

#[test]
fn every_bad_file_value_names_its_key_and_value() {
    for (text, key, value) in BAD_FILE_VALUES {
        let msg = error_text(from_file(text));
        let start = format!("{key} = {value}");
        assert!(msg.starts_with(&start), "{text:?} gave: {msg}");
        assert!(msg.contains("(from test.toml line 2)"), "{text:?} gave: {msg}");
        assert!(!msg.contains('\n'), "{text:?} gave a multi-line message: {msg}");
    }
}

#[test]
fn every_key_is_exercised_by_a_bad_value() {
    for info in KEYS {
        let covered = BAD_FILE_VALUES.iter().any(|(_, key, _)| *key == info.path);
        assert!(covered, "no bad-value test for {}", info.path);
    }
}

#[test]
fn bad_env_values_name_the_key_and_the_variable() {
    let msg = error_text(from_env(&[("VOXPROXY_RTP_PORTS", "5000-4000")]));
    assert_eq!(
        msg,
        "rtp.ports = \"5000-4000\" (from VOXPROXY_RTP_PORTS): the low port must not exceed the high port"
    );
    let msg = error_text(from_env(&[("VOXPROXY_JITTER_MAX_DELAY_MS", "lots")]));
    assert!(msg.starts_with("jitter.max_delay_ms = \"lots\" (from VOXPROXY_JITTER_MAX_DELAY_MS): "), "{msg}");
    let msg = error_text(from_env(&[("VOXPROXY_VAD_BARGE_IN", "maybe")]));
    assert!(msg.starts_with("vad.barge_in = \"maybe\" (from VOXPROXY_VAD_BARGE_IN): expected true"), "{msg}");
}

#[test]
fn bad_flag_values_name_the_key_and_the_flag() {
    let args = flags(&["--workers", "0"]);
    let msg = error_text(Config::from_sources(None, &args, NO_ENV));
    assert!(msg.starts_with("server.workers = \"0\" (from --workers): expected an integer from 1"), "{msg}");
}

#[test]
fn cross_field_errors_blame_the_key_that_was_set() {
    // ping set above the default idle timeout: the ping is at fault.
    let msg = error_text(from_env(&[("VOXPROXY_KEEPALIVE_PING_INTERVAL", "45s")]));
    assert!(msg.starts_with("keepalive.ping_interval = \"45s\""), "{msg}");
    // Both set: the idle timeout is named.
    let msg = error_text(from_env(&[
        ("VOXPROXY_KEEPALIVE_PING_INTERVAL", "5s"),
        ("VOXPROXY_KEEPALIVE_IDLE_TIMEOUT", "5s"),
    ]));
    assert!(msg.starts_with("keepalive.idle_timeout = \"5s\""), "{msg}");
    // The DTMF type collides with L16's default dynamic type 96.
    let msg =
        error_text(from_env(&[("VOXPROXY_RTP_CODEC", "l16-8k"), ("VOXPROXY_RTP_DTMF_PAYLOAD_TYPE", "96")]));
    assert!(msg.starts_with("rtp.dtmf_payload_type = \"96\""), "{msg}");
}

#[test]
fn tls_needs_cert_and_key_together() {
    let mut cert = tempfile::NamedTempFile::new().unwrap();
    cert.write_all(b"pem").unwrap();
    let path = cert.path().to_str().unwrap().to_owned();
    let msg = error_text(from_env(&[("VOXPROXY_SERVER_TLS_CERT", &path)]));
    assert!(msg.starts_with("server.tls.cert = ") && msg.contains("server.tls.key must be set too"), "{msg}");
    let msg = error_text(from_env(&[("VOXPROXY_SERVER_TLS_KEY", &path)]));
    assert!(msg.starts_with("server.tls.key = ") && msg.contains("server.tls.cert must be set too"), "{msg}");
    let c = from_env(&[("VOXPROXY_SERVER_TLS_CERT", &path), ("VOXPROXY_SERVER_TLS_KEY", &path)]).unwrap();
    assert_eq!(c.server.tls.map(|t| t.key), Some(PathBuf::from(&path)));
}

#[test]
fn load_reads_the_named_file_or_says_which_it_could_not_read() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"[vad]\nmode = 1\n").unwrap();
    let args = ServeArgs { config: Some(file.path().to_path_buf()), ..ServeArgs::default() };
    assert_eq!(Config::load(&args, NO_ENV).unwrap().vad.mode, 1);

    let missing = file.path().with_extension("missing");
    let args = ServeArgs { config: Some(missing.clone()), ..ServeArgs::default() };
    let msg = error_text(Config::load(&args, NO_ENV));
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
}

#[test]
fn base_urls_lose_trailing_slashes() {
    let base = |s| check_base_url(s).map(|u| u.to_string());
    assert_eq!(base("https://x.example/"), Ok("https://x.example".to_owned()));
    assert_eq!(base("HTTP://[::1]:80/a/"), Ok("http://[::1]:80/a".to_owned()));
    assert!(check_base_url("https://x.example:0").is_err());
    assert!(check_base_url("https://bad host").is_err());
}

#[test]
fn upper_case_scheme_and_host_are_accepted_and_normalised() {
    // Issue 9 item 8: this was refused with a wrong message.
    let c = from_env(&[
        ("VOXPROXY_SERVER_PUBLIC_URL", "HTTPS://Voice.Example.com/"),
        ("VOXPROXY_TWILIO_API_BASE", "Http://API.Example.com:8080/Base/"),
    ])
    .unwrap();
    assert_eq!(c.server.public_url.as_str(), "https://voice.example.com");
    assert_eq!(c.twilio.api_base.as_str(), "http://api.example.com:8080/Base");
    let msg = error_text(from_env(&[("VOXPROXY_SERVER_PUBLIC_URL", "wss://x.example")]));
    assert_eq!(
        msg,
        "server.public_url = \"wss://x.example\" (from VOXPROXY_SERVER_PUBLIC_URL): the URL's scheme is \
         \"wss\"; it must start with http:// or https://"
    );
}

#[test]
fn durations_parse_as_documented() {
    let ms = Duration::from_millis;
    assert_eq!(parse_duration("250ms"), Ok(ms(250)));
    assert_eq!(parse_duration("5s"), Ok(ms(5_000)));
    assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
    assert_eq!(parse_duration("1h30m"), Ok(ms(5_400_000)));
    assert_eq!(parse_duration("1h2m3s4ms"), Ok(ms(3_723_004)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    assert_eq!(parse_duration("007s"), Ok(ms(7_000)));
    assert_eq!(parse_duration(""), Err(DurationError::Empty));
    assert_eq!(parse_duration("5"), Err(DurationError::MissingUnit));
    assert_eq!(parse_duration("s"), Err(DurationError::MissingNumber));
    assert_eq!(parse_duration("5sec"), Err(DurationError::UnknownUnit { unit: "sec".into() }));
    assert_eq!(parse_duration("1.5s"), Err(DurationError::UnexpectedCharacter { found: '.' }));
    assert_eq!(parse_duration("-1s"), Err(DurationError::UnexpectedCharacter { found: '-' }));
    assert_eq!(parse_duration("5 s"), Err(DurationError::UnexpectedCharacter { found: ' ' }));
    assert_eq!(parse_duration("1s1m"), Err(DurationError::UnitOrder));
    assert_eq!(parse_duration("1s1s"), Err(DurationError::UnitOrder));
    assert_eq!(parse_duration("5µs"), Err(DurationError::UnexpectedCharacter { found: 'µ' }));
    assert_eq!(parse_duration("99999999999999999999ms"), Err(DurationError::TooLarge));
    assert_eq!(parse_duration("18446744073709551615h"), Err(DurationError::TooLarge));
    assert_eq!(parse_duration("18446744073709551615ms"), Ok(ms(u64::MAX)));
}

#[test]
fn durations_format_canonically() {
    assert_eq!(format_duration(Duration::ZERO), "0s");
    assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    assert_eq!(format_duration(Duration::from_micros(1500)), "1ms");
}

proptest! {
    #[test]
    fn duration_round_trips(total_ms in 0u64..=u64::MAX / 2) {
        let d = Duration::from_millis(total_ms);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn duration_parts_add_up(
        h in proptest::option::of(0u64..100_000),
        m in proptest::option::of(0u64..100_000),
        s in proptest::option::of(0u64..100_000),
        ms in proptest::option::of(0u64..100_000),
    ) {
        prop_assume!(h.is_some() || m.is_some() || s.is_some() || ms.is_some());
        let mut text = String::new();
        let mut expected = 0u64;
        for (part, unit, factor) in [(h, "h", 3_600_000), (m, "m", 60_000), (s, "s", 1_000), (ms, "ms", 1)] {
            if let Some(n) = part {
                text.push_str(&format!("{n}{unit}"));
                expected += n * factor;
            }
        }
        prop_assert_eq!(parse_duration(&text), Ok(Duration::from_millis(expected)));
    }

    #[test]
    fn duration_parser_never_panics(text in "\\PC{0,24}") {
        let _ = parse_duration(&text);
    }

    #[test]
    fn any_env_value_gives_a_config_or_a_one_line_error(
        key in proptest::sample::select(KEYS.iter().map(|i| i.env()).collect::<Vec<_>>()),
        value in "\\PC{0,40}",
    ) {
        if let Err(e) = from_env(&[(key.as_str(), value.as_str())]) {
            let msg = e.to_string();
            prop_assert!(!msg.contains('\n'));
            // Cross-field errors may blame the partner key; either way the
            // message starts by naming a key.
            prop_assert!(KEYS.iter().any(|i| msg.starts_with(&format!("{} = ", i.path))), "{}", msg);
        }
    }
}

#[test]
fn the_docs_key_table_is_the_declared_one() {
    let source = include_str!("mod.rs");
    let rendered: String = key_table().lines().map(|line| format!("//! {line}\n")).collect();
    assert!(
        source.contains(&rendered),
        "the key table in the docs of config/mod.rs is not the one declared in keys.rs; replace it with:\n{rendered}"
    );
}

#[test]
fn the_example_file_loads_with_its_routes() {
    let text = include_str!("../../../examples/voxproxy.toml");
    let c = Config::from_sources(Some((Path::new("voxproxy.toml"), text)), &ServeArgs::default(), NO_ENV)
        .expect("examples/voxproxy.toml is valid");
    assert_eq!(c.routes.len(), 3);
    let front = &c.routes[0];
    assert_eq!(front.to, RouteTo::Number("+14155550199".into()));
    assert_eq!(front.backend, Backend::Rtp("10.0.0.8:4000".parse().unwrap()));
    let greeting = front.greeting.as_ref().expect("a greeting");
    assert_eq!(greeting.voice.as_deref(), Some("Polly.Joanna"));
    assert_eq!(
        front.parameters,
        [("agent".into(), "frontdesk".into()), ("tenant_id".into(), "clinic_123".into())]
    );
    assert_eq!((front.forward_to.as_deref(), front.forward_timeout_secs), (Some("+14155550111"), 20));
    let fork = &c.routes[1];
    assert_eq!(
        (fork.mode, fork.track, fork.on_missed),
        (StreamMode::Fork, Some(StreamTrack::BothTracks), OnMissed::Sms)
    );
    assert_eq!(fork.backend, c.rtp.backend, "no backend: the global one");
    assert_eq!(c.routes[2].to, RouteTo::Any);
    assert_eq!(c.default_route.parameters, [("tenant_id".into(), "default".into())]);
    assert_eq!(c.not_runnable_yet(), None, "routes with RTP backends are served");
}

/// Every key of the one key table appears in the example file, set or as
/// a commented-out `# key = value` line of its section, so the example
/// cannot fall behind the keys; commented values are valid TOML.
#[test]
fn the_example_file_shows_every_key() {
    let text = include_str!("../../../examples/voxproxy.toml");
    // Uncomment `# name = value` lines (a comment of prose has no ` = `
    // right after one word).
    let uncommented: String = text
        .lines()
        .map(|line| {
            let body = line.strip_prefix("# ").unwrap_or(line);
            let is_setting = body.split_once(" = ").is_some_and(|(name, _)| {
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            });
            if is_setting { body } else { line }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let table: toml::Table = uncommented.parse().expect("the example, uncommented, is TOML");
    for info in KEYS {
        let mut parts = info.path.split('.');
        let first = parts.next().and_then(|part| table.get(part));
        let found = parts.fold(first, |node, part| node.and_then(|n| n.get(part)));
        assert!(found.is_some(), "examples/voxproxy.toml does not show {}", info.path);
    }
}

fn routes_file(routes: &str) -> String {
    format!(
        "# Routes first, so that a top-level key among them stays top-level.\n\n\n{routes}\n\n[rtp]\nbackend = \"127.0.0.1:4000\"\n"
    )
}

#[test]
fn routes_match_in_order_with_the_global_settings_last() {
    let text = routes_file(
        "[[routes]]\nto = \"+14155550199\"\nbackend = \"10.0.0.9:5000\"\n\n[[routes]]\nto = \"*\"\ngreeting = \"Hi\"\n",
    );
    let c = from_file(&text).unwrap();
    let matched = voxproxy_adapters::route::match_route(&c.routes, &c.default_route, "+14155550199");
    assert_eq!(matched.label(), "routes[0]");
    let matched = voxproxy_adapters::route::match_route(&c.routes, &c.default_route, "+14155550100");
    assert_eq!(matched.label(), "routes[1]");
    let c = from_file(&routes_file("[[routes]]\nto = \"+14155550199\"\n")).unwrap();
    let matched = voxproxy_adapters::route::match_route(&c.routes, &c.default_route, "+14155550100");
    assert_eq!((matched.label(), &matched.route.backend), ("default".to_owned(), &c.rtp.backend));
}

/// Each case: the routes, then the start of the error (key and value) and a
/// part of the problem. The file's routes start on line 4.
const BAD_ROUTES: &[(&str, &str, &str)] = &[
    (
        "[[routes]]\nbackend = \"10.0.0.9:1\"",
        "routes[0].to = (not set) (from test.toml line 4)",
        "needs `to`",
    ),
    ("[[routes]]\nto = \"4155550199\"", "routes[0].to = \"4155550199\" (from test.toml line 5)", "E.164"),
    ("[[routes]]\nto = 14155550199", "routes[0].to = 14155550199", "expected \"*\""),
    (
        "[[routes]]\nto = \"*\"\n[[routes]]\nto = \"+14155550199\"",
        "routes[1].to = \"+14155550199\"",
        "routes[0] already",
    ),
    (
        "[[routes]]\nto = \"+14155550199\"\n[[routes]]\nto = \"+14155550199\"",
        "routes[1].to",
        "could never match",
    ),
    (
        "[[routes]]\nto = \"*\"\nbackend = \"pbx:5060\"",
        "routes[0].backend = \"pbx:5060\"",
        "expected the IP address",
    ),
    ("[[routes]]\nto = \"*\"\nbackend = \"sip:a b@pbx\"", "routes[0].backend", "SIP URI"),
    ("[[routes]]\nto = \"*\"\ngreeting = \"\"", "routes[0].greeting = \"\"", "not an empty string"),
    ("[[routes]]\nto = \"*\"\ngreeting = \"a\\nb\"", "routes[0].greeting", "line breaks"),
    ("[[routes]]\nto = \"*\"\nvoice = \"Polly.Joanna\"", "routes[0].voice", "set one of them"),
    (
        "[[routes]]\nto = \"*\"\nparameters = \"tenant=a\"",
        "routes[0].parameters = \"tenant=a\"",
        "table of parameter",
    ),
    ("[[routes]]\nto = \"*\"\nparameters = { n = 5 }", "routes[0].parameters.n = 5", "string values"),
    (
        "[[routes]]\nto = \"*\"\nparameters = { \"a b\" = \"x\" }",
        "routes[0].parameters.a b",
        "letters, digits",
    ),
    (
        "[[routes]]\nto = \"*\"\nparameters = { CallSid = \"x\" }",
        "routes[0].parameters.CallSid",
        "always sent",
    ),
    ("[[routes]]\nto = \"*\"\nmode = \"both\"", "routes[0].mode = \"both\"", "\"connect\" or \"fork\""),
    ("[[routes]]\nto = \"*\"\nmode = \"fork\"", "routes[0].mode = \"fork\"", "needs forward_to"),
    ("[[routes]]\nto = \"*\"\ntrack = \"both_tracks\"", "routes[0].track", "fork\" only"),
    (
        "[[routes]]\nto = \"*\"\nmode = \"fork\"\nforward_to = \"+14155550111\"\ntrack = \"both\"",
        "routes[0].track = \"both\"",
        "inbound_track",
    ),
    ("[[routes]]\nto = \"*\"\nforward_to = \"0111\"", "routes[0].forward_to = \"0111\"", "E.164"),
    (
        "[[routes]]\nto = \"*\"\nforward_to = \"+14155550111\"\nforward_timeout = \"20x\"",
        "routes[0].forward_timeout = \"20x\"",
        "unknown unit",
    ),
    (
        "[[routes]]\nto = \"*\"\nforward_to = \"+14155550111\"\nforward_timeout = \"2s\"",
        "routes[0].forward_timeout",
        "5s to 10m",
    ),
    (
        "[[routes]]\nto = \"*\"\nforward_to = \"+14155550111\"\nforward_timeout = \"20s500ms\"",
        "routes[0].forward_timeout",
        "whole seconds",
    ),
    (
        "[[routes]]\nto = \"*\"\nforward_timeout = \"20s\"",
        "routes[0].forward_timeout",
        "forward_to, which is not set",
    ),
    (
        "[[routes]]\nto = \"*\"\non_missed = \"voicemail\"",
        "routes[0].on_missed = \"voicemail\"",
        "\"stream\", \"sms\"",
    ),
    ("[[routes]]\nto = \"*\"\non_missed = \"sms\"", "routes[0].on_missed", "needs sms_text"),
    ("[[routes]]\nto = \"*\"\nsms_text = \"hi\"", "routes[0].sms_text", "only sent with"),
    ("[routes]\nto = \"*\"", "routes = ", "array of tables"),
    ("routes = [1]", "routes[0] = 1", "table of route settings"),
];

#[test]
fn every_bad_route_names_routes_n_key() {
    for (routes, start, problem) in BAD_ROUTES {
        let msg = error_text(from_file(&routes_file(routes)));
        assert!(msg.starts_with(start), "{routes:?} gave: {msg}");
        assert!(msg.contains(problem), "{routes:?} gave: {msg}");
        assert!(!msg.contains('\n'), "{routes:?} gave a multi-line message: {msg}");
    }
}

#[test]
fn unknown_route_keys_are_named_with_their_index() {
    let msg = error_text(from_file(&routes_file(
        "[[routes]]\nto = \"*\"\n[[routes]]\nto = \"+14155550199\"\nforward = \"x\"\n",
    )));
    assert!(msg.starts_with("unknown key `routes[1].forward` in test.toml line 8"), "{msg}");
    assert!(msg.contains("forward_to, forward_timeout"), "{msg}");
    let msg = error_text(from_file("[[routs]]\nto = \"*\"\n"));
    assert!(msg.contains("unknown key `routs`") && msg.contains("routes"), "{msg}");
}

#[test]
fn backends_of_every_leg_are_checked_and_serve_refuses_the_ones_it_cannot_run() {
    let c = from_env(&[("VOXPROXY_RTP_BACKEND", "wss://bot.example.com/agent?x=1")]).unwrap();
    assert_eq!(c.rtp.backend.leg().as_str(), "WebSocket");
    assert_eq!(c.not_runnable_yet(), None, "WebSocket bots are served");
    let backend = "sip:{to}@10.0.0.7;transport=tcp";
    let c = from_env(&[("VOXPROXY_RTP_BACKEND", backend)]).unwrap();
    assert_eq!(c.not_runnable_yet(), None, "SIP over UDP and TCP is served");
    let c = from_env(&[("VOXPROXY_RTP_BACKEND", "sips:{to}@10.0.0.7")]).unwrap();
    let refusal = c.not_runnable_yet().expect("SIP over TLS is not served yet");
    assert!(refusal.starts_with("rtp.backend = \"") && refusal.contains("needs SIP over TLS"), "{refusal}");
    let args = flags(&["--backend", backend]);
    let c = Config::from_sources(None, &args, NO_ENV).unwrap();
    assert_eq!(c.rtp.backend.leg().as_str(), "SIP");
    let c =
        from_file(&routes_file("[[routes]]\nto = \"*\"\nbackend = \"sips:desk@pbx.example.com\"\n")).unwrap();
    assert!(
        c.not_runnable_yet()
            .unwrap()
            .starts_with("routes[0].backend = \"sips:desk@pbx.example.com\" needs SIP over TLS")
    );
    assert_eq!(from_env(&[]).unwrap().not_runnable_yet(), None);
    let msg = error_text(from_env(&[("VOXPROXY_RTP_BACKEND", "sip:pbx;transport=sctp")]));
    assert!(
        msg.starts_with(
            "rtp.backend = \"sip:pbx;transport=sctp\" (from VOXPROXY_RTP_BACKEND): not a usable SIP URI"
        ),
        "{msg}"
    );
}

#[test]
fn recording_is_off_by_default_and_set_globally_or_per_route() {
    let c = from_file("").unwrap();
    assert!(!c.recording.enabled);
    assert_eq!(c.recording.dir, PathBuf::from("recordings"));
    assert!(!c.records_anything());

    let c =
        from_env(&[("VOXPROXY_RECORDING_ENABLED", "yes"), ("VOXPROXY_RECORDING_DIR", "/var/rec")]).unwrap();
    assert!(c.recording.enabled && c.records_anything());
    assert_eq!(c.recording.dir, PathBuf::from("/var/rec"));

    let text = routes_file(
        "[[routes]]\nto = \"+14155550199\"\nrecording.enabled = true\n\n[[routes]]\nto = \"*\"\nrecording = { enabled = false }\n",
    );
    let c = from_file(&text).unwrap();
    assert_eq!((c.routes[0].recording, c.routes[1].recording), (Some(true), Some(false)));
    assert_eq!(c.default_route.recording, None, "the global route follows recording.enabled");
    assert!(c.records_anything());

    assert!(!from_file("").unwrap().recording.twilio);
    assert!(from_env(&[("VOXPROXY_RECORDING_TWILIO", "true")]).unwrap().recording.twilio);
    let text = routes_file("[[routes]]\nto = \"*\"\nrecording = { twilio = true }\n");
    let c = from_file(&text).unwrap();
    assert_eq!((c.routes[0].recording, c.routes[0].twilio_recording), (None, Some(true)));
}

#[test]
fn bad_route_recording_is_named() {
    let text = routes_file("[[routes]]\nto = \"*\"\nrecording.enabled = \"yes\"\n");
    let e = error_text(from_file(&text));
    assert!(e.contains("routes[0].recording.enabled") && e.contains("true or false"), "{e}");
    let text = routes_file("[[routes]]\nto = \"*\"\nrecording.on = true\n");
    let e = error_text(from_file(&text));
    assert!(e.contains("routes[0].recording.on") && e.contains("enabled, twilio"), "{e}");
    let text = routes_file("[[routes]]\nto = \"*\"\nrecording.twilio = \"yes\"\n");
    let e = error_text(from_file(&text));
    assert!(e.contains("routes[0].recording.twilio") && e.contains("true or false"), "{e}");
}

#[test]
fn ws_keys_choose_the_bot_protocol_and_rate_with_errors_naming_the_key() {
    use voxproxy_adapters::bot::{BotProtocol, L16Rate};
    let c = from_env(&[]).unwrap();
    assert_eq!(c.ws.protocol, BotProtocol::Twilio);
    assert_eq!(c.ws.sample_rate, 16000);
    assert_eq!(c.ws.connect_timeout, Duration::from_secs(3));
    assert!(c.ws.barge_in);
    assert_eq!(c.ws.max_queued_ms, 30_000);
    let c = from_env(&[
        ("VOXPROXY_WS_PROTOCOL", "l16"),
        ("VOXPROXY_WS_SAMPLE_RATE", "24000"),
        ("VOXPROXY_WS_CONNECT_TIMEOUT", "500ms"),
        ("VOXPROXY_WS_BARGE_IN", "false"),
        ("VOXPROXY_WS_MAX_QUEUED_MS", "2000"),
    ])
    .unwrap();
    assert_eq!(c.ws.protocol, BotProtocol::L16(L16Rate::Hz24000));
    assert_eq!(c.ws.bot_config().max_queued_ms, 2000);
    assert_eq!(c.ws.connect_timeout, Duration::from_millis(500));
    assert!(!c.ws.barge_in);
    let msg = error_text(from_env(&[("VOXPROXY_WS_SAMPLE_RATE", "11025")]));
    assert!(msg.starts_with("ws.sample_rate = \"11025\" (from VOXPROXY_WS_SAMPLE_RATE)"), "{msg}");
    let msg = error_text(from_env(&[("VOXPROXY_WS_PROTOCOL", "vonage")]));
    assert!(msg.contains("ws.protocol") && msg.contains("\"twilio\" or \"l16\""), "{msg}");
    let msg = error_text(from_env(&[("VOXPROXY_WS_MAX_QUEUED_MS", "5")]));
    assert!(msg.starts_with("ws.max_queued_ms = \"5\""), "{msg}");
}

#[test]
fn capture_is_off_by_default_and_set_globally_or_per_route() {
    let c = from_file("").unwrap();
    assert!(!c.capture.enabled && !c.captures_anything());
    assert_eq!((c.capture.dir.as_path(), c.capture.max_bytes), (Path::new("captures"), 64 << 20));

    let c =
        from_env(&[("VOXPROXY_CAPTURE_ENABLED", "true"), ("VOXPROXY_CAPTURE_MAX_BYTES", "65536")]).unwrap();
    assert!(c.capture.enabled && c.captures_anything());
    assert_eq!(c.capture.max_bytes, 65_536);

    let text = routes_file(
        "[[routes]]\nto = \"+14155550199\"\ncapture.enabled = true\n\n[[routes]]\nto = \"*\"\ncapture = { enabled = false }\n",
    );
    let c = from_file(&text).unwrap();
    assert_eq!((c.routes[0].capture, c.routes[1].capture), (Some(true), Some(false)));
    assert!(c.captures_anything() && !c.capture.enabled);
    let e = error_text(from_file(&routes_file("[[routes]]\nto = \"*\"\ncapture.enabled = \"yes\"\n")));
    assert!(e.contains("routes[0].capture.enabled") && e.contains("true or false"), "{e}");
    let e = error_text(from_file(&routes_file("[[routes]]\nto = \"*\"\ncapture.dir = \"x\"\n")));
    assert!(e.contains("routes[0].capture.dir") && e.contains("enabled"), "{e}");
}

#[test]
fn the_store_url_is_checked_and_its_password_never_shown() {
    let c = from_env(&[
        (
            "VOXPROXY_STORE_URL",
            "postgres://vp:s3cret-pg@db.internal:5432/voxproxy?sslmode=disable&password=other",
        ),
        ("VOXPROXY_STORE_INSTANCE_ID", "vp-1.eu_west"),
        ("VOXPROXY_STORE_ADMIN_URL", "http://10.0.0.5:9090/"),
    ])
    .unwrap();
    let url = c.store.url.as_ref().expect("store.url");
    assert!(url.expose().contains("s3cret-pg"), "the connecting code gets the password");
    assert_eq!(
        url.to_string(),
        "postgres://vp:<redacted>@db.internal:5432/voxproxy?sslmode=disable&password=<redacted>"
    );
    assert!(!format!("{c:?}").contains("s3cret-pg") && !format!("{c:?}").contains("other"));
    let shown = c.redacted_json().to_string();
    assert!(!shown.contains("s3cret-pg") && shown.contains("db.internal"), "{shown}");
    assert_eq!(c.store.instance_id.as_deref(), Some("vp-1.eu_west"));
    assert_eq!(c.store.admin_url.as_deref(), Some("http://10.0.0.5:9090"));
    assert_eq!(c.store.query_timeout, Duration::from_secs(5));
    // Without a user or password there is nothing to hide.
    let plain = from_env(&[("VOXPROXY_STORE_URL", "postgresql://db/voxproxy")]).unwrap();
    assert_eq!(plain.store.url.unwrap().to_string(), "postgresql://db/voxproxy");
    assert_eq!(from_env(&[]).unwrap().store.url, None, "no store by default");
    // A refused URL's message does not repeat the password.
    let msg = error_text(from_env(&[("VOXPROXY_STORE_URL", "postgres://vp:s3cret-pg@db:notaport/x")]));
    assert!(msg.starts_with("store.url = \"postgres://vp:<redacted>@db:notaport/x\""), "{msg}");
    assert!(!msg.contains("s3cret-pg"), "{msg}");
}
