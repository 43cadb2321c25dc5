//! The spans of a call's trace (`crate::otel`), recorded by the server at
//! the few points where a call changes state: the voice webhook, the leg's
//! setup, every Twilio REST request, and the call's end. None is on the
//! media path, and each is one `Option` check when `otel.endpoint` is
//! unset. See docs/ARCHITECTURE.md, *Traces*.

use std::fmt::Display;
use std::time::SystemTime;

use opentelemetry::trace::SpanKind;

use super::Shared;
use crate::cdr::CallRecord;
use crate::otel::{CallTrace, SpanRecord};

/// The trace of the call `call_sid`; `None` when tracing is off.
pub(super) fn call_trace(shared: &Shared, call_sid: &str) -> Option<CallTrace> {
    shared.otel.as_ref().map(|otel| otel.call(call_sid))
}

/// `twilio.webhook`: the voice webhook of `call_sid`, from `started` to
/// now, answered with `answer` (`stream`, `busy`, `hangup`) on `route`.
pub(super) fn webhook(
    shared: &Shared,
    call_sid: &str,
    started: SystemTime,
    route: &str,
    answer: &'static str,
) {
    let Some(otel) = &shared.otel else { return };
    let trace = otel.call(call_sid);
    let span = otel
        .span(&trace, "twilio.webhook", SpanKind::Server, started)
        .attr("twilio.call_sid", call_sid.to_owned())
        .attr("voxproxy.route", route.to_owned())
        .attr("voxproxy.answer", answer);
    otel.finish(span, SystemTime::now());
}

/// A Twilio REST request named as Twilio's API names it
/// (`twilio.call.create`, `twilio.call.update`, `twilio.message.create`,
/// `twilio.stream.update`), from `started` to now, in the trace of
/// `call_sid`. A `twilio.call.create` learns its CallSid from the answer;
/// one that failed has no call and is left out.
pub(super) fn rest<T, E: Display>(
    shared: &Shared,
    name: &'static str,
    call_sid: Option<&str>,
    started: SystemTime,
    result: &Result<T, E>,
) {
    let (Some(otel), Some(call_sid)) = (&shared.otel, call_sid) else { return };
    let trace = otel.call(call_sid);
    let mut span = otel
        .span(&trace, name, SpanKind::Client, started)
        .attr("twilio.call_sid", call_sid.to_owned())
        .attr("rpc.system", "twilio");
    if let Err(e) = result {
        span = span.failed(e.to_string());
    }
    otel.finish(span, SystemTime::now());
}

/// A span of a leg's setup (`rtp.setup`, `ws.connect`, `sip.invite`) begun
/// now-ish at `started`, with a fresh id a peer may be told in a
/// `traceparent` before it ends; `None` when the call is not traced.
pub(super) fn begin(
    shared: &Shared,
    trace: Option<CallTrace>,
    name: &'static str,
    kind: SpanKind,
    started: SystemTime,
) -> Option<(SpanRecord, String)> {
    let (otel, trace) = (shared.otel.as_ref()?, trace?);
    let span = otel.span(&trace, name, kind, started);
    let traceparent = trace.traceparent(span.id());
    Some((span, traceparent))
}

/// Ends a span from [`begin`] now.
pub(super) fn end(shared: &Shared, span: Option<SpanRecord>) {
    if let (Some(otel), Some(span)) = (&shared.otel, span) {
        otel.finish(span, SystemTime::now());
    }
}

/// The call's last two spans: `call.end` (from `ending`, when the stream
/// ended, to its record being written) and the root `call` (from the
/// stream's start), both from the call's record.
pub(super) fn call_ended(shared: &Shared, trace: Option<CallTrace>, ending: SystemTime, record: &CallRecord) {
    let (Some(otel), Some(trace)) = (&shared.otel, trace) else { return };
    let now = SystemTime::now();
    let mut end = otel
        .span(&trace, "call.end", SpanKind::Internal, ending)
        .attr("voxproxy.end_reason", record.end_reason.clone())
        .attr("voxproxy.duration_ms", i64::try_from(record.duration_ms).unwrap_or(i64::MAX));
    if let Some(by) = record.hung_up_by.as_ref().or(record.bot.as_ref().map(|b| &b.ended_by)) {
        end = end.attr("voxproxy.hung_up_by", by.clone());
    }
    otel.finish(end, now);
    let started = now.checked_sub(std::time::Duration::from_millis(record.duration_ms)).unwrap_or(ending);
    let mut root = otel
        .span(&trace, "call", SpanKind::Server, started)
        .as_root(&trace)
        .attr("twilio.call_sid", record.call_sid.clone())
        .attr("twilio.stream_sid", record.stream_sid.clone())
        .attr("voxproxy.io_backend", record.io_backend.clone())
        .attr("voxproxy.end_reason", record.end_reason.clone());
    if let Some(route) = &record.route {
        root = root.attr("voxproxy.route", route.clone());
    }
    if let Some(leg) = &record.leg {
        root = root.attr("voxproxy.leg", leg.clone());
    }
    otel.finish(root, now);
}

/// Records the call's trace and root span ids on the current `tracing`
/// span (the call's), so every log line of the call carries them.
pub(super) fn log_ids(trace: Option<CallTrace>) {
    let Some(trace) = trace else { return };
    let span = tracing::Span::current();
    span.record("trace_id", tracing::field::display(format_args!("{:032x}", trace.trace_id())));
    span.record("span_id", tracing::field::display(format_args!("{:016x}", trace.root_span_id())));
}
