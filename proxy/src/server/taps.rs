//! What a call does for its recording and its latency breakdown, kept out
//! of the call loops (`call.rs`, `bot_call.rs`) so every leg can share it: whether the call
//! is recorded (its route, else `recording.enabled`), moving the bridge's
//! final 20 ms slots to the writer after each turn, reporting the
//! breakdown to metrics and `/v1/sessions` with the call's other counters,
//! and the record's fields at the end.

use voxproxy_adapters::bridge::CallBridge;
use voxproxy_adapters::latency::LatencyBreakdown;
use voxproxy_adapters::rest::StartRecording;
use voxproxy_adapters::route::{ROUTE_PARAMETER, route_by_label};
use voxproxy_core::Instant;

use super::WorkerContext;
use crate::cdr::ledger::RecordingInput;
use crate::cdr::{CallRecord, LatencyRecord};
use crate::config::Config;
use crate::recording::{CallRecording, file_for};

/// A call's recording and what it last reported of its breakdown.
#[derive(Debug, Default)]
pub(crate) struct CallTaps {
    recording: Option<CallRecording>,
    reported: LatencyBreakdown,
}

impl CallTaps {
    /// Starts recording a started call if its route (or, without one
    /// saying so, `recording.enabled`) asks for it.
    pub(crate) fn start(ctx: &WorkerContext, config: &Config, bridge: &mut CallBridge) -> CallTaps {
        let mut taps = CallTaps::default();
        let Some(start) = bridge.stream() else { return taps };
        let route = start
            .custom_parameter(ROUTE_PARAMETER)
            .and_then(|label| route_by_label(&config.routes, &config.default_route, label));
        let wanted = route.and_then(|m| m.route.recording).unwrap_or(config.recording.enabled);
        if route.and_then(|m| m.route.twilio_recording).unwrap_or(config.recording.twilio) {
            start_twilio_recording(ctx, config, start.call_sid.as_str());
        }
        if wanted {
            let path = file_for(&config.recording.dir, start.call_sid.as_str(), start.stream_sid.as_str());
            taps.recording = Some(ctx.shared.recorder.start(path));
            bridge.start_recording();
        }
        taps
    }

    /// Hands the slots that became final to the writer; after every turn.
    pub(crate) fn drain(&mut self, bridge: &mut CallBridge, now: Instant) {
        let Some(recording) = &mut self.recording else { return };
        while let Some(block) = bridge.poll_recording(now) {
            recording.push(block);
        }
    }

    /// The call's recording while it runs, for a leg that owns the bridge
    /// (a bot call) to move the final slots into after each turn.
    pub(crate) fn recording_mut(&mut self) -> Option<&mut CallRecording> {
        self.recording.as_mut()
    }

    /// Adds the breakdown's new observations to the metrics; with the call's
    /// other counters, about once a second and at the end.
    pub(crate) fn report(&mut self, ctx: &WorkerContext, bridge: &CallBridge) {
        let now = *bridge.latency();
        ctx.shared.metrics.breakdown().add(&self.reported, &now);
        self.reported = now;
    }

    /// The call ended: the rest of the recording goes to the writer, and
    /// the record gets the file's name and the breakdown.
    pub(crate) fn finish(&mut self, bridge: &mut CallBridge, now: Instant, record: &mut CallRecord) {
        record.latency = Some(Box::new(LatencyRecord::from(&bridge.latency_summary())));
        let Some(mut recording) = self.recording.take() else { return };
        bridge.finish_recording();
        while let Some(block) = bridge.poll_recording(now) {
            recording.push(block);
        }
        if !recording.failed() {
            record.recording_file = Some(recording.path().display().to_string());
        }
        recording.finish();
    }
}

/// Where Twilio posts the status of the recordings voxproxy starts.
pub(crate) const RECORDING_STATUS_PATH: &str = "/twilio/recording-status";

/// Starts the call's Twilio-side recording (`recording.twilio`) through the
/// REST API without waiting for it: dual-channel, its status callback to
/// [`RECORDING_STATUS_PATH`]. At the stream's start rather than at the voice
/// webhook: Twilio records only a call in progress (during the webhook it is
/// still being answered), and a stream whose TwiML another server answered
/// is recorded too. The call's record waits for the recording's final
/// status; a request that fails is counted and in the record, and the call
/// goes on.
fn start_twilio_recording(ctx: &WorkerContext, config: &Config, call_sid: &str) {
    let calls = std::sync::Arc::clone(&ctx.shared.calls);
    let stats = std::sync::Arc::clone(ctx.shared.recorder.stats());
    calls.recording_requested(call_sid);
    let request = StartRecording::dual(format!("{}{RECORDING_STATUS_PATH}", config.server.public_url));
    let client = ctx.rest_client();
    let call_sid = call_sid.to_owned();
    tokio::task::spawn_local(async move {
        let answer = match client {
            Ok(client) => client.start_recording(&call_sid, &request).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let mut input = RecordingInput {
            call_sid: &call_sid,
            sid: None,
            status: "failed",
            url: None,
            duration_s: None,
            channels: None,
            error: None,
            is_final: true,
        };
        match &answer {
            Ok(recording) => {
                stats.twilio_started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(call_sid, recording_sid = %recording.sid, "Twilio recording started");
                input.sid = Some(&recording.sid);
                input.status = recording.status.as_deref().unwrap_or("in-progress");
                input.is_final = false;
            }
            Err(e) => {
                stats.twilio_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(call_sid, error = %e, "Twilio recording not started; the call goes on unrecorded by Twilio");
                input.error = Some(e);
            }
        }
        calls.recording(&input);
    });
}
