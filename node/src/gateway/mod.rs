//! The HTTP gateway (poem-openapi): one file per API tag, the problem mapping, and the
//! middleware every request passes (body limit, errors as `application/problem+json`,
//! request metrics).

// `ApiError` carries a whole problem document and is returned once per failed request: its
// size is no cost worth boxing every variant for.
#![allow(clippy::result_large_err)]

pub mod access;
pub mod analytics;
pub mod auth;
pub mod cluster;
pub mod equipment;
mod examples;
pub mod history;
pub mod listener;
pub mod live;
pub mod models;
pub mod ops;
pub mod problem;
mod spec;
pub mod status;
pub mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::cluster::router::Router;
use eq_actors::equipment::{Action, Command, CommandError, Rejection};
use eq_actors::store::EventStore;
use eq_actors::{EquipmentId, Version};
use eq_entities::equipment as equipment_row;
use metrics_exporter_prometheus::PrometheusHandle;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::{OpenApiService, Tags};
use sea_orm::DatabaseConnection;
use tokio::io::AsyncReadExt;
use tracing::Instrument;

use models::EquipmentView;
use problem::{ApiError, problem_response};

/// Tags of the API operations.
#[derive(Tags)]
pub enum ApiTags {
    /// Register, list, read, change and decommission equipment.
    Equipment,
    /// Set an equipment's status.
    Status,
    /// What happened, when.
    History,
    /// Nodes, leader, shard owners; draining a node.
    Cluster,
    /// The floor's changes, live.
    Live,
    /// Time in state, availability, downtime by reason, MTBF and MTTR.
    Analytics,
    /// Revoking API tokens before they expire.
    Access,
}

/// What the API handlers share.
pub struct AppState {
    pub router: Arc<Router>,
    pub cluster: Arc<Cluster>,
    /// Cancelling it drains and stops the node (SIGTERM, or the admin endpoint).
    pub shutdown: tokio_util::sync::CancellationToken,
    pub store: EventStore,
    pub db: Option<DatabaseConnection>,
    pub nats: async_nats::Client,
    pub metrics: PrometheusHandle,
    pub live: Arc<crate::live::LiveHub>,
    /// Shifts per site and the reason catalogue (`--calendar-file`).
    pub calendar: Arc<crate::history::calendar::Calendar>,
    /// Keep-alive interval of live (SSE) streams; also how soon a vanished client is noticed.
    pub sse_heartbeat: Duration,
    pub draining: AtomicBool,
    pub node_id: String,
    /// Token verification and the per-token rate limit.
    pub auth: crate::auth::Auth,
}

/// The outcome of a command, as the API presents it.
pub struct CommandAnswer {
    pub view: EquipmentView,
    pub replayed: bool,
}

impl AppState {
    /// Runs a command on the owning actor and counts the outcome.
    pub async fn execute(&self, command: Command) -> Result<CommandAnswer, ApiError> {
        let started = Instant::now();
        let result = self.router.execute(command).await;
        let outcome = eq_actors::equipment::outcome_label(&result);
        metrics::counter!("eq_commands_total", "source" => "api", "result" => outcome).increment(1);
        metrics::histogram!("eq_command_duration_seconds", "source" => "api")
            .record(started.elapsed().as_secs_f64());
        let outcome = result?;
        Ok(CommandAnswer {
            view: outcome.equipment.into(),
            replayed: outcome.duplicate,
        })
    }

    /// The current state from the event log; 404 if never registered.
    pub async fn current(&self, id: &EquipmentId) -> Result<EquipmentView, ApiError> {
        let loaded = self
            .store
            .load(id)
            .await
            .map_err(|e| ApiError::from(CommandError::Unavailable(e.to_string())))?;
        match loaded.state.equipment {
            Some(e) => Ok(e.into()),
            None => Err(ApiError::from(CommandError::Rejected(Rejection::NotFound))),
        }
    }

    /// The history database, or 503 when this node runs without one.
    pub fn db(&self) -> Result<&DatabaseConnection, ApiError> {
        self.db
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("this node has no history database"))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Builds a command from an API request's parts and its `If-Match` / `Idempotency-Key`.
/// The caller's identity is the change's `updated_by`, and its scope travels to the owning
/// actor, which checks it against the machine's site and line.
pub fn api_command(
    id: EquipmentId,
    action: Action,
    caller: &crate::auth::Principal,
    if_match: Option<token::IfMatch>,
    idempotency_key: Option<token::IdempotencyKey>,
) -> Result<Command, ApiError> {
    Ok(Command {
        equipment_id: id,
        action,
        command_id: parse_key(idempotency_key.map(token::IdempotencyKey::into_inner))?,
        expected_version: parse_if_match(if_match.as_ref().map(token::IfMatch::as_str))?,
        updated_by: caller.subject.clone(),
        source: eq_actors::Source::Api,
        ingest: None,
        scope: caller.command_scope(),
    })
}

/// `ETag` of a version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// Parses `If-Match`: `"5"`, `5` or `W/"5"`; `*` means any version. Accepts exactly what
/// [`token::IF_MATCH_PATTERN`] documents.
pub fn parse_if_match(value: Option<&str>) -> Result<Option<Version>, ApiError> {
    let Some(value) = value.map(str::trim) else {
        return Ok(None);
    };
    if value == "*" {
        return Ok(None);
    }
    fn quoted(v: &str) -> Option<&str> {
        v.strip_prefix('"').and_then(|v| v.strip_suffix('"'))
    }
    let bare = match value.strip_prefix("W/") {
        Some(weak) => quoted(weak),
        None => quoted(value).or(Some(value)),
    };
    bare.and_then(parse_digits)
        .map(|v| Some(Version(v)))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_if_match",
                "If-Match must be a version ETag such as \"5\"",
            )
        })
}

/// 1 to 19 ASCII digits (any such number fits a `u64`), as a number; `None` otherwise
/// (`str::parse` would also take a sign).
pub fn parse_digits(value: &str) -> Option<u64> {
    let digits = (1..=19).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| value.parse().ok()).flatten()
}

/// Validates an `Idempotency-Key`.
pub fn parse_key(value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(key) => {
            eq_actors::domain::check_command_id(&key)
                .map_err(|e| ApiError::bad_request("invalid_idempotency_key", e.to_string()))?;
            Ok(Some(key))
        }
        None => Ok(None),
    }
}

/// Validates a path id.
pub fn parse_id(id: String) -> Result<EquipmentId, ApiError> {
    EquipmentId::parse(id).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))
}

/// Converts a current-state row to the API view.
pub fn view_from_row(row: equipment_row::Model) -> EquipmentView {
    EquipmentView {
        id: row.id,
        name: row.name,
        description: row.description,
        site: row.site,
        line: row.line,
        tags: serde_json::from_str(&row.tags).unwrap_or_default(),
        status: models::status_from_str(&row.status),
        reason: row.reason,
        note: row.note,
        updated_by: row.updated_by,
        source: models::Source::from_stored(&row.source),
        status_since: history::millis_to_time(row.status_since_ms),
        occurred_at: None,
        clock_suspect: false,
        version: row.version as u64,
        decommissioned: row.decommissioned,
        registered_at: history::millis_to_time(row.registered_at_ms),
        updated_at: history::millis_to_time(row.updated_at_ms),
    }
}

/// Every operation of the API, by tag.
pub type Apis = (
    equipment::EquipmentApi,
    status::StatusApi,
    history::HistoryApi,
    analytics::AnalyticsApi,
    live::LiveApi,
    cluster::ClusterApi,
    access::AccessApi,
);

/// The OpenAPI service (also used to write `openapi/openapi.json`).
pub fn api_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(Apis::default(), "Equipment Live", env!("CARGO_PKG_VERSION")).description(
        "Live status (green / yellow / red) of every machine on a factory floor, with its \
         full history. Errors are `application/problem+json` (RFC 9457).",
    )
}

pub use spec::spec_json;

/// Settings of the HTTP gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
        }
    }
}

/// The whole HTTP application.
pub fn app(state: Arc<AppState>, config: &GatewayConfig) -> impl Endpoint + 'static {
    let service = api_service();
    let docs = service.swagger_ui();
    let max_body = config.max_body_bytes;
    Route::new()
        .nest("/", service)
        .at("/openapi.json", openapi_json)
        .nest("/docs", docs)
        .at("/healthz", ops::healthz)
        .at("/readyz", ops::readyz)
        .at("/metrics", ops::prometheus)
        .data(state)
        .around(move |next, req| limit_body(next, req, max_body))
        .around(unreadable_headers)
        .catch_all_error(to_problem)
        .around(allow_header)
        .around(observe)
}

/// `GET /openapi.json`: the document, as checked in.
#[poem::handler]
fn openapi_json() -> poem::Response {
    poem::Response::builder()
        .content_type("application/json; charset=utf-8")
        .body(spec_json())
}

/// Adds `Allow` to a 405, as RFC 9110 §15.5.6 requires: the methods the spec documents for
/// the path (HEAD too wherever GET is, as the router answers it).
async fn allow_header<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let path = req.uri().path().to_owned();
    let mut response = next.call(req).await?.into_response();
    if response.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = allowed_methods(&path)
        && let Ok(value) = poem::http::HeaderValue::from_str(allow)
    {
        response
            .headers_mut()
            .insert(poem::http::header::ALLOW, value);
    }
    Ok(response)
}

/// The `Allow` value of a concrete path: its template's methods in the spec (`{id}` matches
/// any one segment).
fn allowed_methods(path: &str) -> Option<&'static str> {
    static TEMPLATES: std::sync::OnceLock<Vec<(Vec<String>, String)>> = std::sync::OnceLock::new();
    let templates = TEMPLATES.get_or_init(|| {
        let spec: serde_json::Value = serde_json::from_str(spec_json()).unwrap_or_default();
        let paths = spec["paths"].as_object().cloned().unwrap_or_default();
        paths
            .into_iter()
            .map(|(template, operations)| {
                let mut methods: Vec<String> = operations
                    .as_object()
                    .map(|ops| ops.keys().map(|m| m.to_ascii_uppercase()).collect())
                    .unwrap_or_default();
                if methods.iter().any(|m| m == "GET") {
                    methods.push("HEAD".into());
                }
                let segments = template.split('/').map(str::to_owned).collect();
                (segments, methods.join(", "))
            })
            .collect()
    });
    let segments: Vec<&str> = path.split('/').collect();
    templates
        .iter()
        .find(|(template, _)| {
            template.len() == segments.len()
                && template.iter().zip(&segments).all(|(t, s)| {
                    t == s || (t.starts_with('{') && t.ends_with('}') && !s.is_empty())
                })
        })
        .map(|(_, allow)| allow.as_str())
}

/// The API's own request headers, and the problem code of a malformed one.
const CHECKED_HEADERS: [(&str, &str); 3] = [
    ("If-Match", "invalid_if_match"),
    ("Idempotency-Key", "invalid_idempotency_key"),
    ("Last-Event-ID", "invalid_last_event_id"),
];

/// Refuses (400) a request whose `If-Match`, `Idempotency-Key` or `Last-Event-ID` is not
/// visible ASCII: poem-openapi would skip such a value as if the header were absent, and a
/// conditional write would then apply unconditionally.
async fn unreadable_headers<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    for (name, code) in CHECKED_HEADERS {
        if req
            .headers()
            .get_all(name)
            .iter()
            .any(|value| value.to_str().is_err())
        {
            return Ok(problem_response(
                400,
                code,
                format!("{name} must be visible ASCII"),
            ));
        }
    }
    next.call(req).await.map(IntoResponse::into_response)
}

/// How much of an oversized body is read and discarded before the 413 is sent.
const DISCARD_LIMIT: usize = 1024 * 1024;

/// Reads the body up to the limit, whether or not it has a `Content-Length` (chunked bodies
/// are cut off at the limit too).
async fn limit_body<E: Endpoint>(
    next: Arc<E>,
    mut req: Request,
    max: usize,
) -> poem::Result<Response> {
    let declared = req
        .header(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max + DISCARD_LIMIT) {
        return Ok(too_large(max));
    }
    // Past the limit the rest is read and discarded (up to a bound) before answering: a
    // client still sending a chunked body would otherwise see a broken pipe, not the 413.
    let mut reader = req.take_body().into_async_read();
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut total = 0usize;
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) => return Ok(problem_response(400, "unreadable_body", e.to_string())),
        };
        if n == 0 {
            break;
        }
        total += n;
        if total <= max {
            kept.extend_from_slice(&chunk[..n]);
        } else if total > max + DISCARD_LIMIT {
            break;
        }
    }
    if total > max {
        return Ok(too_large(max));
    }
    let is_json = req
        .content_type()
        .is_some_and(|c| c.to_ascii_lowercase().contains("json"));
    if is_json && json_depth(&kept) > MAX_JSON_DEPTH {
        return Ok(problem_response(
            400,
            "json_too_deep",
            format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    req.set_body(kept);
    next.call(req).await.map(IntoResponse::into_response)
}

/// Deepest JSON nesting a body may have (the API's own bodies need 2): refused before any
/// parser walks it.
pub const MAX_JSON_DEPTH: usize = 16;

/// The deepest nesting of arrays and objects in a JSON text (strings skipped; the text need
/// not be valid: the parser judges that afterwards).
pub fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// 413, and the connection is closed: the unread rest of the body cannot be skipped, so
/// the client must not reuse the connection.
fn too_large(max: usize) -> Response {
    let mut response = problem_response(
        413,
        "body_too_large",
        format!("the body exceeds {max} bytes"),
    );
    response.headers_mut().insert(
        poem::http::header::CONNECTION,
        poem::http::HeaderValue::from_static("close"),
    );
    response
}

/// Turns any error that escaped the handlers into a problem; a problem already built by a
/// handler passes through unchanged.
async fn to_problem(err: poem::Error) -> Response {
    if let Some(refused) = problem::auth_refusal(&err) {
        return refused.into_response();
    }
    let status = err.status();
    let detail = err.to_string();
    let response = err.into_response();
    let is_problem = response
        .content_type()
        .is_some_and(|c| c.starts_with("application/problem+json"));
    if is_problem {
        return response;
    }
    let code = match status.as_u16() {
        404 => "no_such_route",
        405 => "method_not_allowed",
        413 => "body_too_large",
        415 => "unsupported_media_type",
        s if s >= 500 => "internal",
        _ => "bad_request",
    };
    problem_response(status.as_u16(), code, detail)
}

/// Counts requests by status and logs slow ones.
async fn observe<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    // Each request is a trace (or joins the caller's, given a `traceparent` header); the
    // answer names it in `X-Trace-Id`, for a tablet developer's bug report.
    let span = tracing::info_span!(
        "http.request",
        method = %method,
        path = uri.path(),
        status = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    crate::telemetry::follow_http(&span, req.headers());
    let trace_id = eq_actors::trace::trace_id(&span);
    if let Some(id) = &trace_id {
        span.record("trace_id", id.as_str());
    }
    let mut response = next
        .call(req)
        .instrument(span.clone())
        .await?
        .into_response();
    let status = response.status();
    span.record("status", status.as_u16());
    if let Some(id) = trace_id
        && let Ok(value) = poem::http::HeaderValue::from_str(&id)
    {
        response.headers_mut().insert("x-trace-id", value);
    }
    let elapsed = started.elapsed();
    metrics::counter!("eq_http_requests_total", "status" => status.as_str().to_owned())
        .increment(1);
    metrics::histogram!("eq_http_request_duration_seconds").record(elapsed.as_secs_f64());
    if elapsed > Duration::from_secs(1) {
        let status = status.as_u16();
        let path = uri.path();
        tracing::warn!(%method, path, status, elapsed_ms = elapsed.as_millis() as u64, "slow request");
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth(br#"{"status":"red"}"#), 1);
        assert_eq!(json_depth(br#"{"tags":["a","b"]}"#), 2);
        assert_eq!(json_depth(br#"{"note":"[[[{{{\"[[["}"#), 1);
        assert_eq!(json_depth(br#"{"note":"\\","x":[[1]]}"#), 3);
        let deep = "[".repeat(100_000);
        assert_eq!(json_depth(deep.as_bytes()), 100_000);
        assert_eq!(json_depth(b"not json"), 0);
    }

    #[test]
    fn allow_lists_the_documented_methods_of_a_path() {
        assert_eq!(
            allowed_methods("/v1/equipment/press-1"),
            Some("DELETE, GET, PATCH, HEAD")
        );
        assert_eq!(allowed_methods("/v1/cluster"), Some("GET, HEAD"));
        assert_eq!(allowed_methods("/v1/equipment//status"), None);
        assert_eq!(allowed_methods("/nowhere"), None);
    }

    #[test]
    fn if_match_accepts_the_etag_forms() {
        assert_eq!(parse_if_match(Some("\"5\"")).unwrap(), Some(Version(5)));
        assert_eq!(parse_if_match(Some("W/\"5\"")).unwrap(), Some(Version(5)));
        assert_eq!(parse_if_match(Some("*")).unwrap(), None);
        assert!(parse_if_match(Some("five")).is_err());
        for bad in [
            "",
            "W/5",
            "\"5",
            "W/W/\"5\"",
            "+5",
            "\"\"5\"\"",
            "5 6",
            &"9".repeat(20),
        ] {
            assert!(
                parse_if_match(Some(bad)).is_err(),
                "{bad:?} must be refused"
            );
        }
        assert_eq!(
            parse_if_match(Some(&"9".repeat(19))).unwrap(),
            Some(Version(9_999_999_999_999_999_999))
        );
    }
}
