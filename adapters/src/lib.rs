//! # voxproxy-adapters
//!
//! Protocol translation between Twilio and an RTP voice stack, sans-IO where
//! it can be: Twilio Media Streams messages, TwiML, webhook signatures and
//! bodies, the Twilio REST client, SDP, and the per-call bridge that ties them
//! to `voxproxy-core`; and a WAV reader for the audio files the command line,
//! the recorder and the simulator handle.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bot;
pub mod bot_call;
pub mod bridge;
pub mod capture;
pub mod form;
pub mod latency;
pub mod media_stream;
pub mod recording;
pub mod rest;
pub mod route;
pub mod sdp;
pub mod signature;
pub mod sip;
pub mod stream_token;
pub mod twiml;
pub mod url;
pub mod wav;
pub mod webhook;
pub mod websocket;
