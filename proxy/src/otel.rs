//! OpenTelemetry traces: one trace per call, exported over OTLP/HTTP
//! protobuf to `otel.endpoint` (see docs/ARCHITECTURE.md, *Traces*).
//!
//! # How to drive it
//!
//! [`Telemetry::start`] (at server start, only when `otel.endpoint` is set)
//! spawns the exporter: the SDK's batch span processor on its own thread,
//! with a bounded queue (`otel.max_queue`, full means dropped, never
//! waiting), exporting through a hyper client that runs on one more
//! thread's current-thread runtime. No worker ever waits on the collector.
//!
//! Spans are recorded **after the fact**: code notes when an operation
//! started, and once it is over hands a finished [`SpanRecord`] to
//! [`Telemetry::finish`]. No span object lives across a call's media loop,
//! so the media path has no span and nothing to allocate; with
//! `otel.endpoint` unset there is no [`Telemetry`] at all.
//!
//! ```
//! use std::time::SystemTime;
//! use voxproxy::otel::CallTrace;
//!
//! let call = CallTrace::of("CA0123456789abcdef0123456789abcdef", true);
//! // The trace id is the CallSid's hex; the root span's id follows from it.
//! assert_eq!(call.trace_id().to_string(), "0123456789abcdef0123456789abcdef");
//! assert_eq!(CallTrace::of("CA0123456789abcdef0123456789abcdef", true).root_span_id(), call.root_span_id());
//! assert!(call.traceparent(call.root_span_id()).starts_with("00-0123456789abcdef0123456789abcdef-"));
//! assert!(call.traceparent(call.root_span_id()).ends_with("-01"));
//! ```
//!
//! # One trace per call, without shared state
//!
//! The voice webhook arrives before the media stream, may be answered by
//! another worker (or another instance behind the same name), and nothing
//! but the CallSid links the two. So both ids are derived from the CallSid:
//! the trace id is its 32 hex digits (an operator can paste a CallSid into
//! a trace search), the root `call` span's id the first 8 bytes of a
//! SHA-256 of it. The webhook span names that root as its parent before the
//! root exists; the root itself is recorded when the call ends, with the
//! stream's start as its start. Sampling is decided from the trace id too
//! (`otel.sample_percent`, the SDK's trace-id ratio sampler), so every
//! span of a call, on every instance, agrees.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator as _, RandomIdGenerator, Sampler, SamplingDecision,
    ShouldSample as _, SpanData, SpanEvents, SpanExporter, SpanLinks, SpanProcessor as _,
};
use sha2::{Digest as _, Sha256};

use crate::config::OtelSettings;
use crate::metrics::Metrics;

/// Spans sent in one export request at most.
const MAX_EXPORT_BATCH: usize = 512;
/// How long finished spans may wait before an export.
const EXPORT_DELAY: Duration = Duration::from_secs(1);
/// Largest collector answer read; an OTLP answer is a few bytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why tracing could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum OtelError {
    /// The OTLP exporter refused its configuration (the endpoint URL).
    Exporter {
        /// What the exporter said.
        detail: String,
    },
    /// The export thread could not be started.
    Thread(std::io::Error),
}

impl fmt::Display for OtelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OtelError::Exporter { detail } => {
                write!(f, "otel.endpoint: the OTLP exporter cannot be built: {detail}")
            }
            OtelError::Thread(e) => write!(f, "the OpenTelemetry export thread cannot be started: {e}"),
        }
    }
}

impl core::error::Error for OtelError {}

/// A call's trace: its ids, derived from the CallSid, and whether it is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallTrace {
    trace_id: TraceId,
    root: SpanId,
    sampled: bool,
}

impl CallTrace {
    /// The trace of the call `call_sid`: the trace id is the CallSid's 32
    /// hex digits when it is `CA` and 32 hex digits (as Twilio's are),
    /// else the first 16 bytes of its SHA-256.
    #[must_use]
    pub fn of(call_sid: &str, sampled: bool) -> CallTrace {
        let digest = Sha256::digest(call_sid.as_bytes());
        let hex =
            call_sid.strip_prefix("CA").filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        let trace_id = match hex.and_then(|h| TraceId::from_hex(h).ok()) {
            Some(id) if id != TraceId::INVALID => id,
            _ => TraceId::from_bytes(digest[..16].try_into().unwrap_or([1; 16])),
        };
        // A different digest from the trace id's, so a hashed CallSid's
        // root span id is not the trace id's first half.
        let root =
            Sha256::new().chain_update(b"voxproxy call span ").chain_update(call_sid.as_bytes()).finalize();
        let mut root: [u8; 8] = root[..8].try_into().unwrap_or([1; 8]);
        if root == [0; 8] {
            root[7] = 1;
        }
        CallTrace { trace_id, root: SpanId::from_bytes(root), sampled }
    }

    /// The trace id.
    #[must_use]
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The id of the call's root span (`call`).
    #[must_use]
    pub fn root_span_id(&self) -> SpanId {
        self.root
    }

    /// Whether the call's spans are exported.
    #[must_use]
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// The W3C `traceparent` naming `parent` (a span of this trace) as the
    /// peer's parent: `00-<trace>-<span>-<flags>`.
    #[must_use]
    pub fn traceparent(&self, parent: SpanId) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, parent, u8::from(self.sampled))
    }
}

/// A finished span, built by [`Telemetry::span`] and recorded by
/// [`Telemetry::finish`].
#[derive(Debug)]
pub struct SpanRecord {
    /// Boxed: a span waits inside a call's task (the SIP INVITE's), whose
    /// size is memory per call.
    data: Box<SpanData>,
    sampled: bool,
}

impl SpanRecord {
    /// Gives the span a chosen id (one already sent to a peer in a
    /// `traceparent`).
    #[must_use]
    pub fn with_id(mut self, id: SpanId) -> Self {
        let c = &self.data.span_context;
        self.data.span_context = SpanContext::new(c.trace_id(), id, c.trace_flags(), false, TraceState::NONE);
        self
    }

    /// Makes the span the call's root: its id is the root id, no parent.
    #[must_use]
    pub fn as_root(self, trace: &CallTrace) -> Self {
        let mut span = self.with_id(trace.root);
        span.data.parent_span_id = SpanId::INVALID;
        span
    }

    /// Adds an attribute.
    #[must_use]
    pub fn attr(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.data.attributes.push(KeyValue::new(key, value));
        self
    }

    /// Marks the operation failed, saying why.
    #[must_use]
    pub fn failed(mut self, description: impl Into<Cow<'static, str>>) -> Self {
        self.data.status = Status::error(description);
        self
    }

    /// The span's id.
    #[must_use]
    pub fn id(&self) -> SpanId {
        self.data.span_context.span_id()
    }
}

/// The process's trace exporter. See the [module docs](self).
pub struct Telemetry {
    processor: BatchSpanProcessor,
    sampler: Sampler,
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
    metrics: Arc<Metrics>,
    export_timeout: Duration,
    /// Stops the export client's runtime thread.
    runtime: Mutex<Option<(tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>)>>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").field("sampler", &self.sampler).finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Starts the exporter when `settings.endpoint` is set; `Ok(None)` when
    /// tracing is off.
    pub fn start(settings: &OtelSettings, metrics: Arc<Metrics>) -> Result<Option<Telemetry>, OtelError> {
        let Some(endpoint) = &settings.endpoint else { return Ok(None) };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("voxproxy-otel".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => return drop(handle_tx.send(Err(e))),
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                let _ = runtime.block_on(stopped);
            })
            .map_err(OtelError::Thread)?;
        let handle = handle_rx
            .recv()
            .map_err(|_| OtelError::Thread(std::io::Error::other("the runtime thread ended")))?
            .map_err(OtelError::Thread)?;
        let client = ExportClient { handle, http: http_client()?, timeout: settings.export_timeout };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .with_timeout(settings.export_timeout)
            .build()
            .map_err(|e| OtelError::Exporter { detail: e.to_string() })?;
        let resource = Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        exporter.set_resource(&resource);
        let exporter = CountingExporter { inner: exporter, metrics: Arc::clone(&metrics) };
        let queue = settings.max_queue as usize;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(queue)
            .with_max_export_batch_size(MAX_EXPORT_BATCH.min(queue))
            .with_scheduled_delay(EXPORT_DELAY)
            .build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        let sampler = match settings.sample_percent {
            100 => Sampler::AlwaysOn,
            0 => Sampler::AlwaysOff,
            percent => Sampler::TraceIdRatioBased(f64::from(percent) / 100.0),
        };
        let scope = InstrumentationScope::builder("voxproxy").with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(Some(Telemetry {
            processor,
            sampler,
            ids: RandomIdGenerator::default(),
            scope,
            metrics,
            export_timeout: settings.export_timeout,
            runtime: Mutex::new(Some((stop, thread))),
        }))
    }

    /// The trace of the call `call_sid`, sampled or not by `otel.sample_percent`.
    #[must_use]
    pub fn call(&self, call_sid: &str) -> CallTrace {
        let trace = CallTrace::of(call_sid, true);
        let decision =
            self.sampler.should_sample(None, trace.trace_id, "call", &SpanKind::Server, &[], &[]).decision;
        CallTrace { sampled: decision == SamplingDecision::RecordAndSample, ..trace }
    }

    /// A fresh random span id, for a span whose id a peer learns before it ends.
    #[must_use]
    pub fn new_span_id(&self) -> SpanId {
        self.ids.new_span_id()
    }

    /// A span of `trace` named `name`, a child of the call's root, that
    /// started at `start`; add attributes, then [`finish`](Self::finish) it.
    #[must_use]
    pub fn span(
        &self,
        trace: &CallTrace,
        name: &'static str,
        kind: SpanKind,
        start: SystemTime,
    ) -> SpanRecord {
        let flags = if trace.sampled { TraceFlags::SAMPLED } else { TraceFlags::NOT_SAMPLED };
        let context = SpanContext::new(trace.trace_id, self.new_span_id(), flags, false, TraceState::NONE);
        let data = SpanData {
            span_context: context,
            parent_span_id: trace.root,
            parent_span_is_remote: false,
            span_kind: kind,
            name: Cow::Borrowed(name),
            start_time: start,
            end_time: start,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: self.scope.clone(),
        };
        SpanRecord { data: Box::new(data), sampled: trace.sampled }
    }

    /// Ends `span` at `end` and queues it for export (dropped when the
    /// queue is full or the trace is not sampled; never waits).
    pub fn finish(&self, mut span: SpanRecord, end: SystemTime) {
        if !span.sampled {
            return;
        }
        span.data.end_time = end.max(span.data.start_time);
        self.metrics.otel().span_recorded();
        self.processor.on_end(*span.data);
    }

    /// Exports what is queued (bounded by `otel.export_timeout`) and stops
    /// the export threads; later spans are dropped.
    pub fn shutdown(&self) {
        if let Err(e) = self.processor.shutdown_with_timeout(self.export_timeout + Duration::from_secs(1)) {
            tracing::warn!(error = %e, "OpenTelemetry: the last spans were not all exported");
        }
        let runtime = self.runtime.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some((stop, thread)) = runtime {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

/// The collector client: plain HTTP or HTTPS (rustls, the webpki roots, as
/// the REST client), HTTP/1.1.
type Https = hyper_rustls::HttpsConnector<HttpConnector>;

fn http_client() -> Result<Client<Https, Full<Bytes>>, OtelError> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| OtelError::Exporter { detail: format!("TLS: {e}") })?
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}

/// The OTLP exporter's HTTP client. The SDK's batch thread blocks on the
/// export future, which has no tokio reactor, so each request runs on the
/// export runtime thread and the batch thread waits for its result.
#[derive(Debug)]
struct ExportClient {
    handle: tokio::runtime::Handle,
    http: Client<Https, Full<Bytes>>,
    timeout: Duration,
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (http, timeout) = (self.http.clone(), self.timeout);
        let task = self.handle.spawn(async move {
            let (parts, body) = request.into_parts();
            let request = Request::from_parts(parts, Full::new(body));
            let response = tokio::time::timeout(timeout, http.request(request)).await??;
            let (parts, body) = response.into_parts();
            let body =
                tokio::time::timeout(timeout, Limited::new(body, MAX_RESPONSE_BYTES).collect()).await?;
            Ok::<_, HttpError>(Response::from_parts(parts, body?.to_bytes()))
        });
        task.await?
    }
}

/// Counts what the OTLP exporter exported and lost, and says so in the
/// log when exports start and stop failing (not once per failure).
#[derive(Debug)]
struct CountingExporter {
    inner: opentelemetry_otlp::SpanExporter,
    metrics: Arc<Metrics>,
}

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        let otel = self.metrics.otel();
        match &result {
            Ok(()) => {
                otel.exported(spans);
                if otel.failing() {
                    otel.set_failing(false);
                    tracing::info!("OpenTelemetry: exports to otel.endpoint succeed again");
                }
            }
            Err(e) => {
                otel.export_failed(spans);
                if !otel.failing() {
                    otel.set_failing(true);
                    tracing::warn!(error = %e, spans, "OpenTelemetry: export to otel.endpoint failed; spans are dropped until it works (voxproxy_otel_export_errors_total)");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_twilio_call_sid_is_the_trace_id_and_others_are_hashed() {
        let sid = "CA0123456789abcdef0123456789ABCDEF";
        let call = CallTrace::of(sid, true);
        assert_eq!(format!("{:032x}", call.trace_id()), "0123456789abcdef0123456789abcdef");
        assert_eq!(call, CallTrace::of(sid, true), "derived, not random");
        assert_ne!(call.root_span_id(), SpanId::INVALID);

        let odd = CallTrace::of("CA-not-hex", true);
        assert_ne!(odd.trace_id(), TraceId::INVALID);
        assert_eq!(odd, CallTrace::of("CA-not-hex", true));
        assert_ne!(odd.trace_id(), CallTrace::of("CA-not-hex2", true).trace_id());
        let zero = CallTrace::of(&format!("CA{}", "0".repeat(32)), true);
        assert_ne!(zero.trace_id(), TraceId::INVALID, "an all-zero CallSid is hashed, not an invalid id");
    }

    #[test]
    fn traceparent_is_w3c_version_00() {
        let call = CallTrace::of("CAffffffffffffffffffffffffffffffff", false);
        let parent = SpanId::from_bytes([0, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(call.traceparent(parent), "00-ffffffffffffffffffffffffffffffff-0000000000000009-00");
        let sampled = CallTrace { sampled: true, ..call };
        assert!(sampled.traceparent(parent).ends_with("-01"));
    }

    fn settings(percent: u8) -> OtelSettings {
        OtelSettings {
            // A closed port: nothing is exported in these tests.
            endpoint: Some(
                voxproxy_adapters::url::Url::parse_base(
                    "http://127.0.0.1:9",
                    &[voxproxy_adapters::url::Scheme::Http],
                )
                .unwrap(),
            ),
            service_name: "voxproxy".to_owned(),
            sample_percent: percent,
            max_queue: 64,
            export_timeout: Duration::from_millis(200),
        }
    }

    #[test]
    fn sampling_follows_the_trace_id_and_the_percentage() {
        let metrics = Arc::new(Metrics::new(1, "epoll"));
        let all = Telemetry::start(&settings(100), Arc::clone(&metrics)).unwrap().unwrap();
        let none = Telemetry::start(&settings(0), Arc::clone(&metrics)).unwrap().unwrap();
        let half = Telemetry::start(&settings(50), Arc::clone(&metrics)).unwrap().unwrap();
        // Hashed ids: uniform, as Twilio's random CallSids are.
        let sids: Vec<String> = (0..400).map(|i| format!("CA-test-{i}")).collect();
        assert!(sids.iter().all(|s| all.call(s).is_sampled()));
        assert!(sids.iter().all(|s| !none.call(s).is_sampled()));
        let kept = sids.iter().filter(|s| half.call(s).is_sampled()).count();
        assert!((120..=280).contains(&kept), "50 % of 400 calls, got {kept}");
        assert!(sids.iter().all(|s| half.call(s) == half.call(s)), "the same call decides alike");

        // Not sampled: nothing recorded.
        let call = none.call(&sids[0]);
        none.finish(none.span(&call, "call.end", SpanKind::Internal, SystemTime::now()), SystemTime::now());
        assert_eq!(metrics.otel().totals().0, 0);
        let call = all.call(&sids[0]);
        let span = all.span(&call, "call", SpanKind::Server, SystemTime::now()).as_root(&call);
        assert_eq!(span.id(), call.root_span_id());
        all.finish(span, SystemTime::now());
        assert_eq!(metrics.otel().totals().0, 1);
        for t in [all, none, half] {
            t.shutdown();
        }
    }
}
