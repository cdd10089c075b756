//! Logs (text or JSON, filtered by `RUST_LOG`), traces (OpenTelemetry; exported over OTLP
//! when configured) and the Prometheus metrics recorder.
//!
//! Traces always run, exporter or not: every command gets a trace id that travels as a W3C
//! `traceparent` header over NATS (`eq_actors::trace`) and shows in the logs, so the lines
//! of one command can be found on every node it touched even without a collector.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

mod json_log;

/// What the logs and traces need to know.
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// This node's id: a field of every JSON log line and a resource attribute of traces.
    pub node_id: String,
    /// OTLP/gRPC endpoint (`http://collector:4317`); `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces to keep (a trace that arrives with a parent follows its
    /// parent's decision).
    pub sample_ratio: f64,
}

/// Flushes the traces still buffered when dropped (at exit).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global log and trace subscriber (once; later calls change nothing).
pub fn init(config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,sea_orm=warn,async_nats=warn,poem=warn")
    });
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // Without an exporter nothing is recorded (spans still get ids, which travel and show
    // in the logs); with one, a fraction of new traces, callers' traces as they decided.
    let sampler = if config.otlp_endpoint.is_some() {
        Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio.clamp(0.0, 1.0),
        )))
    } else {
        Sampler::AlwaysOff
    };
    let mut provider = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("equipment-live")
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.instance.id",
                    config.node_id.clone(),
                ))
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        );
    let exporting = config.otlp_endpoint.is_some();
    if let Some(endpoint) = &config.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    // Each layer has its own filter: `RUST_LOG` quietens the logs, never the traces (a
    // span filtered out globally would not exist, and its trace would break there).
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("equipment-live"))
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("eq_node", tracing::Level::INFO)
                .with_target("eq_actors", tracing::Level::INFO),
        );
    let logs = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(json_log::FlatJson::new(&config.node_id))
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    };
    // The logs see our spans whatever `RUST_LOG` says, so that a line logged inside them
    // carries their fields (trace id, shard, …) even when the spans' own level is quiet.
    let our_spans = tracing_subscriber::filter::filter_fn(|meta| {
        meta.is_span() && meta.target().starts_with("eq_")
    });
    let installed = tracing_subscriber::registry()
        .with(traces)
        .with(logs.with_filter(filter.or(our_spans)))
        .try_init()
        .is_ok();
    if installed && exporting {
        tracing::info!(endpoint = ?config.otlp_endpoint, "exporting traces over OTLP");
    }
    Ok(Telemetry {
        provider: installed.then_some(provider),
    })
}

/// Makes `span` a child of the trace context in HTTP headers (`traceparent`), if any.
pub fn follow_http(span: &tracing::Span, headers: &poem::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    struct Headers<'a>(&'a poem::http::HeaderMap);
    // Only `traceparent`: a client's `tracestate` is not carried into stored events.
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent")
                .then(|| self.0.get(key).and_then(|v| v.to_str().ok()))
                .flatten()
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    let _ = span.set_parent(parent);
}

/// Latency buckets (seconds) for every histogram.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("buckets are not empty")
                .set_buckets_for_metric(
                    Matcher::Full("eq_append_batch_size".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                )
                .expect("buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            let upkeep = handle.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}
