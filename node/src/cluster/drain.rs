//! Draining a named node from any gateway. Behind a load balancer, "drain the node that
//! happens to take this request" drains a random one; an operator names the node (its id in
//! `GET /v1/cluster`) and whichever gateway takes the request forwards it over NATS. Every
//! node listens on one subject; only the node named in a request answers it.

use std::time::Duration;

use eq_actors::subjects::Subjects;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a forwarded drain request waits for the named node.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// What the named node answers.
const ACCEPTED: &[u8] = b"draining";

/// Why a forwarded drain was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("node {0} did not answer the drain request")]
    NoAnswer(String),
}

/// Answers drain requests naming `node_id` by cancelling `shutdown` (what SIGTERM does),
/// until `stop`.
pub async fn listen(
    client: async_nats::Client,
    subjects: Subjects,
    node_id: String,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    let mut requests = match client.subscribe(subjects.node_drain()).await {
        Ok(s) => s,
        Err(error) => {
            warn!(%error, "cannot listen for drain requests; SIGTERM still drains");
            return;
        }
    };
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => return,
            request = requests.next() => match request {
                Some(r) => r,
                None => return,
            },
        };
        if request.payload.as_ref() != node_id.as_bytes() {
            continue;
        }
        info!("drain requested through another gateway");
        if let Some(reply) = request.reply {
            let _ = client.publish(reply, ACCEPTED.into()).await;
            let _ = client.flush().await;
        }
        shutdown.cancel();
    }
}

/// Asks the node `node_id` to drain; `Ok` once it accepted.
pub async fn request(
    client: &async_nats::Client,
    subjects: &Subjects,
    node_id: &str,
) -> Result<(), DrainError> {
    let asked = client.request(subjects.node_drain(), node_id.to_string().into());
    match tokio::time::timeout(ANSWER_WITHIN, asked).await {
        Ok(Ok(answer)) if answer.payload.as_ref() == ACCEPTED => Ok(()),
        _ => Err(DrainError::NoAnswer(node_id.to_string())),
    }
}
