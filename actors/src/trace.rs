//! Trace context across processes: a command's trace travels as a W3C `traceparent` header
//! on every NATS message it causes (the routed request to the shard's owner, the event in
//! JetStream), so one trace shows HTTP or device → owner → JetStream → history.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Inject<'a>(&'a mut HeaderMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct Extract<'a>(&'a HeaderMap);

/// Only `traceparent` is taken from a message: a sender's `tracestate` (up to ~16 KB) would
/// otherwise be copied onto every event stored for good.
impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT)
            .then(|| self.0.get(key).map(|v| v.as_str()))
            .flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

const TRACEPARENT: &str = "traceparent";

/// Writes `span`'s trace context into NATS headers (nothing if it has none).
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut Inject(headers))
    });
}

/// Makes `span` a child of the trace context in NATS headers, if they carry one.
pub fn follow(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let Some(headers) = headers else { return };
    if headers.get("traceparent").is_none() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(headers)));
    let _ = span.set_parent(parent);
}

/// A root span of this process that continues the trace in `headers` (if any), with its
/// `trace_id` field recorded for the logs.
pub fn joined(span: tracing::Span, headers: Option<&HeaderMap>) -> tracing::Span {
    follow(&span, headers);
    record_trace_id(&span);
    span
}

/// The trace id of `span` (32 hex digits), if it belongs to a trace.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Records `trace_id` on a span that declared the field (for the logs).
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id.as_str());
    }
}
