//! Start-up checks of the configuration the running binary makes: backends
//! whose leg `serve` cannot run yet and invalid `[[routes]]` are refused
//! with one sentence naming the key, never served as RTP or ignored.

use crate::harness::{self, AUTH_TOKEN};

fn refused(env: &[(&str, &str)], args: &[&str]) -> String {
    let mut env = env.to_vec();
    env.push(("TWILIO_AUTH_TOKEN", AUTH_TOKEN));
    let (status, stderr) = harness::run_to_exit(&env, args);
    assert!(!status.success(), "voxproxy serve {args:?} {env:?} must refuse to start; stderr: {stderr}");
    stderr
}

#[test]
fn sips_backends_are_refused_naming_the_key() {
    // SIP over UDP and TCP is served (tests/e2e/sip.rs); over TLS not yet.
    let stderr = refused(&[], &["--io", "epoll", "--backend", "sips:agent@127.0.0.1:5061"]);
    assert!(stderr.contains("rtp.backend = \"sips:agent@127.0.0.1:5061\" needs SIP over TLS"), "{stderr}");
    let stderr = refused(&[], &["--io", "epoll", "--backend", "sip:agent@127.0.0.1;transport=sctp"]);
    assert!(
        stderr.contains("rtp.backend = \"sip:agent@127.0.0.1;transport=sctp\" (from --backend)"),
        "{stderr}"
    );
}

#[test]
fn invalid_routes_and_routes_to_legs_not_wired_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("voxproxy.toml");
    std::fs::write(&file, "[[routes]]\nto = \"*\"\nforward_timeout = \"20s\"\n").expect("write config");
    let path = file.to_str().expect("UTF-8 path");
    let stderr = refused(&[], &["--io", "epoll", "--config", path]);
    assert!(stderr.contains("routes[0].forward_timeout = \"20s\""), "{stderr}");
    assert!(stderr.contains("forward_to, which is not set"), "{stderr}");

    std::fs::write(&file, "[[routes]]\nto = \"*\"\nbackend = \"sips:desk@127.0.0.1\"\n")
        .expect("write config");
    let stderr = refused(&[], &["--io", "epoll", "--config", path]);
    assert!(stderr.contains("routes[0].backend = \"sips:desk@127.0.0.1\" needs SIP over TLS"), "{stderr}");
}
