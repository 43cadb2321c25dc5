//! Structured logs on stderr, as text for people or JSON lines for machines.
//!
//! # How to drive it
//!
//! Call [`init`] once at start, before the workers spawn, with the format
//! and a filter in `RUST_LOG` syntax (`"info"`, `"voxproxy=debug,hyper=warn"`).
//! It installs the process-wide `tracing` subscriber; a second call returns
//! [`LoggingError::AlreadyInitialised`] and changes nothing. Keep the
//! [`LogWriter`] it returns until the process ends: dropping it flushes what
//! is queued and stops the writer.
//!
//! Lines are written to stderr by a thread of their own (`voxproxy-log`),
//! never by the thread that logs: a media worker must not stall its calls
//! on a slow disk or a full pipe to journald. The writer's queue holds
//! [`LOG_QUEUE_LINES`] lines; when stderr does not keep up, further lines
//! are dropped and counted ([`LogWriter::dropped_lines`], the
//! `voxproxy_log_dropped_lines_total` metric) rather than waited for.
//!
//! Code logs with the `tracing` macros. A call task runs inside a span that
//! carries the call's identity, and every event inside it is tagged with
//! those fields without repeating them:
//!
//! ```
//! use voxproxy::logging::{LogFormat, init};
//!
//! let format: LogFormat = "json".parse()?;
//! let _log = init(format, "off")?; // a real server passes "info" or the user's filter
//! assert!(init(LogFormat::Text, "info").is_err()); // only once per process
//!
//! let call = tracing::info_span!("call", call_sid = "CA01", stream_sid = tracing::field::Empty);
//! let _entered = call.enter();
//! call.record("stream_sid", "MZ01"); // once Twilio's `start` names it
//! tracing::info!(frames = 3u64, "backend timeout");
//! # Ok::<(), voxproxy::logging::LoggingError>(())
//! ```
//!
//! # Formats
//!
//! [`LogFormat::Text`] is tracing-subscriber's usual line: time, level, the
//! span chain with its fields (`call{call_sid="CA01" stream_sid="MZ01"}:`), the
//! target, the message and the event's fields; colours only when stderr is
//! a terminal.
//!
//! [`LogFormat::Json`] writes one JSON object per line:
//! `timestamp` (RFC 3339, UTC, microseconds), `level`, `target`, `span` (the
//! innermost span's name, when inside one), then, sorted by name, the fields
//! of every span in scope flattened into the object together with the
//! event's own fields and `message`. An inner span's field replaces an outer
//! span's of the same name, and an event's field replaces a span's. A field
//! named like one of the four fixed keys is written as `field.<name>` rather
//! than lost. JSON escaping keeps hostile text (a header value with a
//! newline) inside its string.

use std::fmt;
use std::io::{IsTerminal as _, Write};
use std::str::FromStr;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// Human-readable lines (`text`).
    #[default]
    Text,
    /// One JSON object per line (`json`).
    Json,
}

impl LogFormat {
    /// The name used on the command line and in config: `text` or `json`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LogFormat {
    type Err = LoggingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(LoggingError::UnknownFormat { given: s.to_owned() }),
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoggingError {
    /// The format name is neither `text` nor `json`.
    UnknownFormat {
        /// The name given.
        given: String,
    },
    /// The filter is not valid `RUST_LOG` syntax.
    BadFilter {
        /// The filter given.
        filter: String,
        /// What the parser said.
        detail: String,
    },
    /// A process-wide subscriber is already installed (by an earlier
    /// [`init`]); the existing one stays.
    AlreadyInitialised,
}

impl fmt::Display for LoggingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoggingError::UnknownFormat { given } => {
                write!(f, "unknown log format {given:?}: expected \"text\" or \"json\"")
            }
            LoggingError::BadFilter { filter, detail } => write!(
                f,
                "invalid log filter {filter:?}: {detail} (expected e.g. \"info\" or \"voxproxy=debug,hyper=warn\")"
            ),
            LoggingError::AlreadyInitialised => {
                f.write_str("logging was already initialised in this process")
            }
        }
    }
}

impl core::error::Error for LoggingError {}

/// Lines the log writer's queue holds (about 2 MB of typical lines); when
/// stderr falls that far behind, further lines are dropped and counted.
pub const LOG_QUEUE_LINES: usize = 8_192;

/// The log writer [`init`] started: keep it until the process ends.
/// Dropping it writes out what is queued and stops the writer thread.
#[must_use = "dropping the LogWriter stops the log writer"]
pub struct LogWriter {
    _guard: WorkerGuard,
    dropped: ErrorCounter,
}

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogWriter").field("dropped_lines", &self.dropped_lines()).finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Lines dropped so far because the queue was full.
    #[must_use]
    pub fn dropped_lines(&self) -> u64 {
        self.dropped.dropped_lines() as u64
    }

    /// A reader of [`LogWriter::dropped_lines`] for the metrics: it reads
    /// the same counter, and may outlive this writer.
    pub fn dropped_lines_reader(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let counter = self.dropped.clone();
        move || counter.dropped_lines() as u64
    }
}

/// Installs the process-wide subscriber writing `format` lines to stderr
/// from the log writer's thread, keeping the events `filter` (`RUST_LOG`
/// syntax) lets through.
pub fn init(format: LogFormat, filter: &str) -> Result<LogWriter, LoggingError> {
    let (writer, guard) = non_blocking(std::io::stderr());
    let dropped = writer.error_counter();
    let subscriber = subscriber(format, filter, writer, std::io::stderr().is_terminal())?;
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LoggingError::AlreadyInitialised)?;
    Ok(LogWriter { _guard: guard, dropped })
}

/// A writer that queues lines for a thread writing them to `sink`, dropping
/// (and counting) lines beyond [`LOG_QUEUE_LINES`] instead of blocking.
fn non_blocking<W: Write + Send + 'static>(sink: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("voxproxy-log")
        .finish(sink)
}

/// The subscriber [`init`] installs, writing to `writer` instead of stderr.
fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
    ansi: bool,
) -> Result<Box<dyn Subscriber + Send + Sync>, LoggingError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder()
        .parse(filter)
        .map_err(|e| LoggingError::BadFilter { filter: filter.to_owned(), detail: e.to_string() })?;
    let registry = tracing_subscriber::registry().with(filter);
    Ok(match format {
        LogFormat::Text => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(escaped_text_fields())
                    .with_writer(writer)
                    .with_ansi(ansi),
            ),
        ),
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(FlatJson)
                    .with_writer(writer)
                    .with_ansi(false),
            ),
        ),
    })
}

/// Text-format fields with every control character escaped, in the message
/// and in span and event fields alike: a caller's `From` with a newline (or
/// a terminal escape) in it must not forge a log line of its own.
fn escaped_text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        if field.name() != "message" {
            write!(writer, "{field}=")?;
        }
        write_escaped(writer, &text)
    })
    .delimited(" ")
}

/// Writes `text` with control characters as `\n`, `\r`, `\t` or `\u{…}`.
fn write_escaped(writer: &mut Writer<'_>, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(char::is_control) {
        writer.write_str(&rest[..at])?;
        let c = rest[at..].chars().next().unwrap_or_default();
        match c {
            '\n' => writer.write_str("\\n")?,
            '\r' => writer.write_str("\\r")?,
            '\t' => writer.write_str("\\t")?,
            other => write!(writer, "\\u{{{:x}}}", u32::from(other))?,
        }
        rest = &rest[at + c.len_utf8()..];
    }
    writer.write_str(rest)
}

/// The JSON line format: fixed keys, then span and event fields in one
/// sorted map. Span fields come from the `FormattedFields<JsonFields>`
/// the fmt layer keeps on each span, which is a JSON object.
struct FlatJson;

/// Keys every JSON line has; fields of the same name are renamed.
const FIXED_KEYS: [&str; 4] = ["timestamp", "level", "target", "span"];

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        let mut innermost = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                innermost = Some(span.name());
                let extensions = span.extensions();
                let Some(recorded) = extensions.get::<FormattedFields<JsonFields>>() else { continue };
                // Spans without fields have an empty string, not `{}`.
                if let Ok(Value::Object(span_fields)) = serde_json::from_str::<Value>(recorded) {
                    fields.extend(span_fields);
                }
            }
        }
        event.record(&mut FieldMap(&mut fields));

        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut out = String::with_capacity(256);
        out.push('{');
        push_pair(&mut out, "timestamp", &Value::String(timestamp))?;
        push_pair(&mut out, "level", &meta.level().as_str().into())?;
        push_pair(&mut out, "target", &meta.target().into())?;
        if let Some(name) = innermost {
            push_pair(&mut out, "span", &name.into())?;
        }
        for (key, value) in &fields {
            if FIXED_KEYS.contains(&key.as_str()) {
                push_pair(&mut out, &format!("field.{key}"), value)?;
            } else {
                push_pair(&mut out, key, value)?;
            }
        }
        out.push_str("}\n");
        writer.write_str(&out)
    }
}

/// Appends `"key":value` to a JSON object being written, after a comma
/// unless it is the first pair.
fn push_pair(out: &mut String, key: &str, value: &Value) -> fmt::Result {
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str(&serde_json::to_string(key).map_err(|_| fmt::Error)?);
    out.push(':');
    out.push_str(&serde_json::to_string(value).map_err(|_| fmt::Error)?);
    Ok(())
}

/// Records an event's fields as JSON values, keeping numbers and booleans
/// typed.
struct FieldMap<'a>(&'a mut Map<String, Value>);

impl Visit for FieldMap<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    /// Collects everything a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn capture(format: LogFormat, filter: &str, body: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = subscriber(format, filter, move || writer.clone(), false).unwrap();
        tracing::subscriber::with_default(subscriber, body);
        out.text()
    }

    /// A sink that blocks every write until released, as stderr does when
    /// its pipe is full.
    struct Stuck(std::sync::mpsc::Receiver<()>, Captured);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            self.1.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_stderr_drops_and_counts_lines_instead_of_blocking_the_logger() {
        let (release, gate) = std::sync::mpsc::channel();
        let out = Captured::default();
        let (writer, guard) = non_blocking(Stuck(gate, out.clone()));
        let dropped = writer.error_counter();
        let subscriber = subscriber(LogFormat::Text, "info", writer, false).unwrap();
        let lines = LOG_QUEUE_LINES + 100;
        let started = std::time::Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..lines {
                tracing::info!(i, "a line while stderr is stuck");
            }
        });
        // Bounded by formatting, not by the stuck sink (which would never return).
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        // One line may be in the writer's hands; the queue holds the rest.
        let lost = dropped.dropped_lines();
        assert!((99..=101).contains(&lost), "{lost} lines dropped");
        for _ in 0..lines {
            let _ = release.send(());
        }
        drop(release);
        drop(guard); // flushes what was queued
        assert_eq!(out.text().lines().count() + lost, lines);
    }

    fn json_lines(text: &str) -> Vec<Map<String, Value>> {
        text.lines()
            .map(|line| match serde_json::from_str(line) {
                Ok(Value::Object(map)) => map,
                other => panic!("not a JSON object: {line} ({other:?})"),
            })
            .collect()
    }

    #[test]
    fn json_lines_carry_the_call_span_fields() {
        let text = capture(LogFormat::Json, "debug", || {
            tracing::info!("before the call");
            let call = tracing::info_span!("call", call_sid = "CA123", stream_sid = tracing::field::Empty);
            let _call = call.enter();
            tracing::info!("websocket accepted");
            call.record("stream_sid", "MZ456");
            tracing::warn!(frames = 3u64, gap_ms = -20i64, "backend timeout");
            let rtp = tracing::debug_span!("rtp", port = 40_000u64, call_sid = "CA-inner");
            let _rtp = rtp.enter();
            tracing::debug!(late = true, level = "x", "late packet\nforged line");
        });
        let lines = json_lines(&text);
        assert_eq!(lines.len(), 4, "{text}");

        assert_eq!(lines[0]["message"], "before the call");
        assert!(!lines[0].contains_key("call_sid") && !lines[0].contains_key("span"));

        assert_eq!(lines[1]["message"], "websocket accepted");
        assert_eq!(lines[1]["level"], "INFO");
        assert_eq!(lines[1]["span"], "call");
        assert_eq!(lines[1]["call_sid"], "CA123");
        assert!(!lines[1].contains_key("stream_sid"), "not recorded yet: {text}");

        assert_eq!(lines[2]["level"], "WARN");
        assert_eq!(lines[2]["call_sid"], "CA123");
        assert_eq!(lines[2]["stream_sid"], "MZ456");
        assert_eq!(lines[2]["frames"], 3);
        assert_eq!(lines[2]["gap_ms"], -20);
        assert_eq!(lines[2]["message"], "backend timeout");

        let inner = &lines[3];
        assert_eq!(inner["span"], "rtp");
        assert_eq!(inner["call_sid"], "CA-inner", "the inner span's field wins");
        assert_eq!(inner["stream_sid"], "MZ456");
        assert_eq!(inner["port"], 40_000);
        assert_eq!(inner["late"], true);
        assert_eq!(inner["level"], "DEBUG");
        assert_eq!(inner["field.level"], "x");
        assert_eq!(inner["message"], "late packet\nforged line");

        for line in &lines {
            assert_eq!(line["target"], "voxproxy::logging::tests");
            let ts = line["timestamp"].as_str().unwrap();
            assert!(ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        }
        // The first keys are the fixed ones, in a fixed order.
        assert!(text.lines().all(|l| l.starts_with("{\"timestamp\":\"")), "{text}");
        assert!(text.lines().nth(1).unwrap().contains("\",\"level\":\"INFO\",\"target\":\""), "{text}");
    }

    #[test]
    fn the_filter_decides_what_is_written() {
        let text = capture(LogFormat::Json, "warn", || {
            tracing::info!("dropped");
            tracing::warn!("kept");
        });
        let lines = json_lines(&text);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["message"], "kept");

        let text = capture(LogFormat::Text, "voxproxy=debug,other=error", || {
            tracing::debug!("ours");
            tracing::warn!(target: "other", "theirs");
        });
        assert!(text.contains("ours") && !text.contains("theirs"), "{text}");
    }

    #[test]
    fn text_lines_show_span_fields() {
        let text = capture(LogFormat::Text, "info", || {
            let call = tracing::info_span!("call", call_sid = "CA9", stream_sid = "MZ9");
            let _call = call.enter();
            tracing::info!(digit = "5", "dtmf");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(" call{call_sid=\"CA9\" stream_sid=\"MZ9\"}: "), "{text}");
        assert!(text.contains("dtmf") && text.contains("digit=\"5\"") && text.contains("INFO"), "{text}");
        assert!(!text.contains('\u{1b}'), "no colours when not asked: {text}");
    }

    #[test]
    fn text_lines_escape_control_characters_in_every_field() {
        let forged = "+1555\n2026-01-01T00:00:00Z  INFO voxproxy: forged\r\u{1b}[2J\u{85}";
        let text = capture(LogFormat::Text, "info", || {
            let call = tracing::info_span!("call", call_sid = forged);
            let _call = call.enter();
            tracing::info!(from = %forged, to = forged, error = %io::Error::other(forged), "say {forged}");
        });
        assert_eq!(text.lines().count(), 1, "one event, one line: {text}");
        assert!(!text.contains(['\r', '\u{1b}', '\u{85}']), "{text}");
        assert!(
            text.contains("from=+1555\\n2026-01-01T00:00:00Z  INFO voxproxy: forged\\r\\u{1b}[2J\\u{85}"),
            "{text}"
        );
        assert!(text.contains("say +1555\\n2026"), "the message is escaped too: {text}");
        assert!(
            text.contains("call{call_sid=\"+1555\\n2026"),
            "string fields keep their Debug quoting: {text}"
        );
    }

    #[test]
    fn bad_filters_and_formats_are_refused() {
        let err = subscriber(LogFormat::Text, "voxproxy=loud", io::sink, false).err().unwrap();
        assert!(matches!(&err, LoggingError::BadFilter { filter, .. } if filter == "voxproxy=loud"), "{err}");
        assert!(err.to_string().contains("voxproxy=loud"), "{err}");

        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        let err = "JSON".parse::<LogFormat>().unwrap_err();
        assert!(matches!(&err, LoggingError::UnknownFormat { given } if given == "JSON"));
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.to_string().parse::<LogFormat>().unwrap(), format);
        }
    }

    #[test]
    fn init_twice_is_an_error_not_a_panic() {
        // The only test touching the global subscriber; "off" keeps it from
        // writing other tests' events to stderr.
        let first = init(LogFormat::Json, "off");
        let second = init(LogFormat::Text, "info");
        assert!(first.is_ok(), "{first:?}");
        assert!(matches!(second, Err(LoggingError::AlreadyInitialised)));
    }
}
