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

/// Subscribes to drain requests; done before the node joins the cluster, so that a request
/// forwarded as soon as others see it is heard.
pub async fn subscribe(
    client: &async_nats::Client,
    subjects: &Subjects,
) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
    client.subscribe(subjects.node_drain()).await
}

/// Answers drain requests naming `node_id` by cancelling `shutdown` (what SIGTERM does),
/// until `stop`.
pub async fn listen(
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    node_id: String,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => return,
            request = requests.next() => match request {
                Some(r) => r,
                None => {
                    warn!("drain requests no longer heard; SIGTERM still drains");
                    return;
                }
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
