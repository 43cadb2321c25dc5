//! What a call does for its recording and its latency breakdown, kept out
//! of the call loop (`call.rs`) so every leg can share it: whether the call
//! is recorded (its route, else `recording.enabled`), moving the bridge's
//! final 20 ms slots to the writer after each turn, reporting the
//! breakdown to metrics and `/v1/sessions` with the call's other counters,
//! and the record's fields at the end.

use voxproxy_adapters::bridge::CallBridge;
use voxproxy_adapters::latency::LatencyBreakdown;
use voxproxy_adapters::route::{ROUTE_PARAMETER, route_by_label};
use voxproxy_core::Instant;

use super::WorkerContext;
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
        record.latency = Some(LatencyRecord::from(&bridge.latency_summary()));
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
