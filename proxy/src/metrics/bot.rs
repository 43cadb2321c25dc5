//! `voxproxy_bot_*`: the WebSocket bot legs (`ws://`/`wss://` backends).
//!
//! Each bot call keeps plain [`BotTotals`] and reports what changed since
//! its last report with [`BotMetrics::add`], about once a second and at the
//! end, as the SIP legs do; one mutex for a handful of additions per call
//! per second.

use std::sync::Mutex;

use super::Exposition;

/// Counters of bot legs; one call's, or the process's sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BotTotals {
    /// WebSocket messages received from bots.
    pub messages_in: u64,
    /// WebSocket messages sent to bots.
    pub messages_out: u64,
    /// Bot messages refused (malformed, too large, out of protocol) and dropped.
    pub bad_messages: u64,
    /// Caller audio frames not sent because the bot was not reading.
    pub caller_frames_dropped: u64,
    /// Events (echoes, DTMF) not sent because the bot was not reading.
    pub events_dropped: u64,
    /// μ-law bytes of bot audio dropped over `ws.max_queued_ms`.
    pub bot_audio_dropped_bytes: u64,
    /// Bots that could not be reached in `ws.connect_timeout` or refused the handshake.
    pub connect_failures: u64,
    /// Clears sent to Twilio because the caller spoke over the bot (`ws.barge_in`).
    pub barge_ins: u64,
}

impl BotTotals {
    fn add_delta(&mut self, reported: &BotTotals, now: &BotTotals) {
        let add = |t: &mut u64, n: u64, r: u64| *t += n.saturating_sub(r);
        add(&mut self.messages_in, now.messages_in, reported.messages_in);
        add(&mut self.messages_out, now.messages_out, reported.messages_out);
        add(&mut self.bad_messages, now.bad_messages, reported.bad_messages);
        add(&mut self.caller_frames_dropped, now.caller_frames_dropped, reported.caller_frames_dropped);
        add(&mut self.events_dropped, now.events_dropped, reported.events_dropped);
        add(&mut self.bot_audio_dropped_bytes, now.bot_audio_dropped_bytes, reported.bot_audio_dropped_bytes);
        add(&mut self.connect_failures, now.connect_failures, reported.connect_failures);
        add(&mut self.barge_ins, now.barge_ins, reported.barge_ins);
    }
}

/// Bot counters of the process. See `metrics/bot.rs`'s module documentation.
#[derive(Debug, Default)]
pub struct BotMetrics {
    totals: Mutex<BotTotals>,
}

impl BotMetrics {
    /// Adds `now − reported`: the caller keeps what it reported last.
    pub fn add(&self, reported: &BotTotals, now: &BotTotals) {
        let mut totals = self.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        totals.add_delta(reported, now);
    }

    /// The process's totals.
    #[must_use]
    pub fn totals(&self) -> BotTotals {
        *self.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn render(&self, x: &mut Exposition<'_>) {
        let t = self.totals();
        let messages = "voxproxy_bot_messages_total";
        x.family(
            messages,
            "WebSocket messages exchanged with bots, by direction (in: from the bot).",
            "counter",
        );
        x.sample(messages, &[("direction", "in")], t.messages_in);
        x.sample(messages, &[("direction", "out")], t.messages_out);
        let bad = "voxproxy_bot_messages_bad_total";
        x.family(bad, "Bot messages refused (malformed, too large, out of protocol) and dropped.", "counter");
        x.sample(bad, &[], t.bad_messages);
        let dropped = "voxproxy_bot_messages_dropped_total";
        x.family(
            dropped,
            "Messages for a bot dropped because it was not reading, by kind (caller audio frames, events).",
            "counter",
        );
        x.sample(dropped, &[("kind", "caller_audio")], t.caller_frames_dropped);
        x.sample(dropped, &[("kind", "event")], t.events_dropped);
        let audio = "voxproxy_bot_audio_dropped_bytes_total";
        x.family(audio, "μ-law bytes of bot audio dropped over ws.max_queued_ms.", "counter");
        x.sample(audio, &[], t.bot_audio_dropped_bytes);
        let failures = "voxproxy_bot_connect_failures_total";
        x.family(
            failures,
            "Bots not reached within ws.connect_timeout or refusing the handshake.",
            "counter",
        );
        x.sample(failures, &[], t.connect_failures);
        let barge = "voxproxy_bot_barge_ins_total";
        x.family(
            barge,
            "Clears sent to Twilio because the caller spoke over a bot (ws.barge_in).",
            "counter",
        );
        x.sample(barge, &[], t.barge_ins);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_deltas_and_renders_every_series() {
        let metrics = BotMetrics::default();
        let first = BotTotals { messages_in: 3, bad_messages: 1, ..BotTotals::default() };
        metrics.add(&BotTotals::default(), &first);
        let later = BotTotals { messages_in: 10, bot_audio_dropped_bytes: 160, ..first };
        metrics.add(&first, &later);
        assert_eq!(metrics.totals(), later);
        let mut out = String::new();
        metrics.render(&mut Exposition { out: &mut out });
        for line in [
            "voxproxy_bot_messages_total{direction=\"in\"} 10",
            "voxproxy_bot_messages_bad_total 1",
            "voxproxy_bot_audio_dropped_bytes_total 160",
            "voxproxy_bot_messages_dropped_total{kind=\"caller_audio\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }
}
