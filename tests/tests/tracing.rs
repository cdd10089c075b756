//! One trace per command, across processes: a tablet's `traceparent` goes through a
//! gateway-only node, over NATS to the node that owns the machine, into the event stored in
//! JetStream, and to the history consumer; the JSON log lines on the way carry the node,
//! the equipment id, the shard and the trace id as fields; and with `--otlp-endpoint` the
//! spans of both nodes reach an OTLP/gRPC receiver as one trace.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use eq_tests::postgres::DbKind;
use eq_tests::{
    ApiClient, NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase, wait_for,
};
use serde_json::{Value, json};

/// The `traceparent` header of the last event stored for `subject`.
async fn stored_traceparent(nats: &async_nats::Client, subject: &str) -> String {
    let js = async_nats::jetstream::new(nats.clone());
    let stored = js
        .get_stream("EQ_EVENTS")
        .await
        .unwrap()
        .direct_get_last_for_subject(subject)
        .await
        .unwrap();
    stored
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_string())
        .unwrap_or_default()
}

/// The JSON log lines of a file written so far.
fn log_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A tablet registers `press-1` and sets it red inside a trace of its own (sampled):
/// the trace id, the tablet's span id, and the answer.
async fn tablet_sets_press_red(client: &ApiClient) -> (String, String, reqwest::Response) {
    assert_eq!(
        client.register("press-1", "plant-a", "line-1").await.status,
        201
    );
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let tablet_span = format!("{:016x}", rand::random::<u64>() | 1);
    let response = client
        .http()
        .put(client.url("/v1/equipment/press-1/status"))
        .header("traceparent", format!("00-{trace_id}-{tablet_span}-01"))
        .json(&json!({"status": "red", "reason": "jam"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    (trace_id, tablet_span, response)
}

#[tokio::test]
async fn a_command_keeps_one_trace_from_http_through_the_owner_to_the_history() {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let logs = tempfile::tempdir().unwrap();
    let owner_log = logs.path().join("owner.log");
    let _owner = NodeProcess::start(
        NodeOptions::new(nats.url(), db.url.clone())
            .env_var("EQ_NODE_ID", "owner-1")
            .env_var("EQ_LOG_FORMAT", "json")
            .env_var("RUST_LOG", "warn,eq_actors=debug,eq_node::history=debug")
            .logs_to(&owner_log),
    )
    .await;
    // A gateway that hosts no shard: every command crosses NATS to the owner.
    let gateway = NodeProcess::start(
        NodeOptions::new(nats.url(), db.url.clone())
            .env_var("EQ_NODE_ID", "gateway-1")
            .arg("--host-shards", false)
            .arg("--history", false),
    )
    .await;
    let client = gateway.client();
    let (trace_id, _, response) = tablet_sets_press_red(&client).await;
    let answered = response
        .headers()
        .get("x-trace-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(answered.as_deref(), Some(trace_id.as_str()), "X-Trace-Id");

    // The event in JetStream carries the trace.
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let header = stored_traceparent(&watcher, "eq.events.press-1").await;
    assert!(
        header.contains(&trace_id),
        "the stored event's traceparent {header:?} continues {trace_id}"
    );

    // The owner's logs: the actor handled it, and the history recorded it, in that trace.
    let (handled, recorded) = wait_for(
        "the owner's log lines of the command",
        Duration::from_secs(30),
        || {
            let lines = log_lines(&owner_log);
            let in_trace = |span: &str| {
                lines
                    .iter()
                    .find(|l| l["span"] == span && l["trace_id"] == trace_id.as_str())
                    .cloned()
            };
            let found = in_trace("equipment.command").zip(in_trace("history.record"));
            async move { found }
        },
    )
    .await;
    for line in [&handled, &recorded] {
        assert_eq!(line["node"], "owner-1", "{line}");
        assert_eq!(line["equipment_id"], "press-1", "{line}");
    }
    assert!(handled["shard"].is_u64(), "the shard is a field: {handled}");
    assert_eq!(handled["outcome"], "accepted", "{handled}");
    assert_eq!(handled["version"], 2, "{handled}");
    assert_eq!(recorded["version"], 2, "{recorded}");
}

#[tokio::test]
async fn a_device_message_starts_a_trace_that_reaches_the_event() {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let node = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    assert_eq!(
        node.client()
            .register("kiln-1", "plant-a", "line-1")
            .await
            .status,
        201
    );
    let nats_client = async_nats::connect(nats.url()).await.unwrap();
    let reply = nats_client
        .request(
            "eq.device.kiln-1.status",
            json!({"status": "green", "command_id": "c-1"})
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["ok"], true);
    let header = stored_traceparent(&nats_client, "eq.events.kiln-1").await;
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {header:?}");
    assert_eq!(parts[1].len(), 32);
    assert_ne!(parts[1], "0".repeat(32));
}

/// One exported span: the service and node that sent it, its trace, its id, its parent and
/// its name.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    node: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    name: String,
}

/// The receiving end of OTLP/gRPC trace export (what a collector such as the OpenTelemetry
/// Collector, Jaeger or Tempo listens with on 4317): keeps what nodes send.
#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let attributes = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            let attribute = |key: &str| {
                attributes
                    .iter()
                    .find(|a| a.key == key)
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                s,
                            ),
                        ) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default()
            };
            // Checked by the test, not here: a panic in the handler would only poison the lock.
            let service = attribute("service.name");
            let node = attribute("service.instance.id");
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        node: node.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_id: hex(&span.parent_span_id),
                        name: span.name,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn both_nodes_export_the_spans_of_one_command_as_one_trace_over_otlp() {
    let receiver = Receiver::default();
    let port = eq_tests::free_port();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve(([127, 0, 0, 1], port).into()),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let exporting = |id: &str| {
        NodeOptions::new(nats.url(), db.url.clone())
            .env_var("EQ_NODE_ID", id)
            .arg("--otlp-endpoint", &endpoint)
            // Export batches every 200 ms rather than every 5 s.
            .env_var("OTEL_BSP_SCHEDULE_DELAY", 200)
    };
    let _owner = NodeProcess::start(exporting("owner-1")).await;
    let gateway = NodeProcess::start(
        exporting("gateway-1")
            .arg("--host-shards", false)
            .arg("--history", false),
    )
    .await;
    let (trace_id, tablet_span, _) = tablet_sets_press_red(&gateway.client()).await;

    // The gateway's request span, the owner's command span and the history's span, in the
    // tablet's trace.
    let spans = wait_for(
        "the command's spans at the receiver",
        Duration::from_secs(30),
        || {
            let spans: Vec<ReceivedSpan> = receiver
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            let has =
                |node: &str, name: &str| spans.iter().any(|s| s.node == node && s.name == name);
            // One tree (parents end, and are exported, after their children: wait for them):
            // every span's parent is the tablet's span or a span of this trace.
            let ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
            let connected = spans
                .iter()
                .all(|s| s.parent_id == tablet_span || ids.contains(&s.parent_id.as_str()));
            let complete = has("gateway-1", "http.request")
                && has("owner-1", "equipment.command")
                && has("owner-1", "history.record")
                && connected;
            async move { complete.then_some(spans) }
        },
    )
    .await;
    assert!(
        spans.iter().all(|s| s.service == "equipment-live"),
        "{spans:#?}"
    );
    // The tablet's span is the parent of the gateway's request, and of nothing else.
    let roots: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_id == tablet_span)
        .collect();
    assert!(
        roots.len() == 1 && roots[0].node == "gateway-1" && roots[0].name == "http.request",
        "{spans:#?}"
    );
    server.abort();
}
