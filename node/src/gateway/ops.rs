//! Operational endpoints outside the API spec: liveness, readiness, Prometheus metrics.

use std::sync::Arc;
use std::time::Duration;

use poem::web::Data;
use poem::{IntoResponse, Response, handler, http::StatusCode};

use super::AppState;

/// Liveness: the process answers.
#[handler]
pub fn healthz() -> &'static str {
    "ok"
}

/// Readiness: NATS connected, JetStream answering, the history database answering, and not
/// draining. A load balancer stops sending here while it is false.
#[handler]
pub async fn readyz(state: Data<&Arc<AppState>>) -> Response {
    let nats = matches!(
        state.nats.connection_state(),
        async_nats::connection::State::Connected
    );
    let jetstream = nats && state.store.ping(Duration::from_secs(1)).await;
    let database = match &state.db {
        Some(db) => crate::history::ping(db, Duration::from_secs(1)).await,
        None => true,
    };
    let draining = state.is_draining();
    // A shard host is ready once it knows which shards are its own.
    let cluster = state.cluster.is_settled();
    let ready = nats && jetstream && database && cluster && !draining;
    metrics::gauge!("eq_ready").set(if ready { 1.0 } else { 0.0 });
    let body = serde_json::json!({
        "ready": ready,
        "nats": nats,
        "jetstream": jetstream,
        "database": database,
        "cluster": cluster,
        "draining": draining,
        "node": state.node_id,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, poem::web::Json(body)).into_response()
}

/// Prometheus text format.
#[handler]
pub async fn prometheus(state: Data<&Arc<AppState>>) -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
