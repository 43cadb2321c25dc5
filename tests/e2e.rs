//! End-to-end tests of the real `voxproxy serve` binary: a fake Twilio
//! (signed webhooks, Media Streams over WebSocket, plain and TLS), a fake
//! voice stack on UDP, a fake Twilio REST API, and ffmpeg as a real RTP peer.
//!
//! Every behavioural test runs once per I/O backend (`…::uring`,
//! `…::epoll`). `VOXPROXY_E2E_SKIP_URING=1` skips the io_uring variants on a
//! kernel that refuses io_uring; without it they fail there, loudly.

/// Generates `<name>::uring` and `<name>::epoll` from `async fn <name>(io: Io)`.
macro_rules! both_io {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn uring() {
                crate::harness::run(crate::harness::Io::Uring, super::$name).await;
            }
            #[tokio::test]
            async fn epoll() {
                crate::harness::run(crate::harness::Io::Epoll, super::$name).await;
            }
        }
    )+};
}

#[path = "e2e/admin.rs"]
mod admin;
#[path = "e2e/audio.rs"]
mod audio;
#[path = "e2e/capture.rs"]
mod capture;
#[path = "e2e/config.rs"]
mod config;
#[path = "e2e/control.rs"]
mod control;
#[path = "e2e/deploy.rs"]
mod deploy;
#[path = "e2e/ffmpeg.rs"]
mod ffmpeg;
#[path = "e2e/guard.rs"]
mod guard;
#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/media.rs"]
mod media;
#[path = "e2e/otel.rs"]
mod otel;
#[path = "e2e/outage.rs"]
mod outage;
#[path = "e2e/recording.rs"]
mod recording;
#[path = "e2e/reload.rs"]
mod reload;
#[path = "e2e/routes.rs"]
mod routes;
#[path = "e2e/sip.rs"]
mod sip;
#[path = "e2e/sip_inbound.rs"]
mod sip_inbound;
#[path = "e2e/store.rs"]
mod store;
#[path = "e2e/vad_line.rs"]
mod vad_line;
#[path = "e2e/ws_leg.rs"]
mod ws_leg;
