//! Live subjects: every event, once JetStream acknowledged it, is published on
//! `eq.live.<site>.<line>.<id>` for dashboards, and watchdog alerts also on
//! `eq.alerts.<id>`. The actor only enqueues (it never waits on
//! dashboards); one task publishes.

use std::sync::Arc;

use bytes::Bytes;
use eq_actors::equipment::EventKind;
use eq_actors::shard::EventListener;
use eq_actors::subjects::Subjects;
use tokio::sync::mpsc;

/// Publishes accepted events on the live subjects.
pub struct LivePublisher {
    tx: mpsc::UnboundedSender<(String, Bytes)>,
    client: async_nats::Client,
    subjects: Subjects,
}

impl LivePublisher {
    pub fn start(client: async_nats::Client, subjects: Subjects) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Bytes)>();
        let publisher = client.clone();
        tokio::spawn(async move {
            while let Some((subject, payload)) = rx.recv().await {
                if publisher.publish(subject, payload).await.is_err() {
                    metrics::counter!("eq_live_publish_errors_total").increment(1);
                }
            }
        });
        Self {
            tx,
            client,
            subjects,
        }
    }

    /// The hook the actors call.
    pub fn listener(&self) -> EventListener {
        let tx = self.tx.clone();
        let subjects = self.subjects.clone();
        Arc::new(move |event, payload| {
            let subject = subjects.live(&event.state.site, &event.state.line, &event.equipment_id);
            let _ = tx.send((subject, payload.clone()));
            // Alerts also go to their own subject, for whoever pages people.
            if event.kind == EventKind::AlertRaised {
                let _ = tx.send((subjects.alerts(&event.equipment_id), payload.clone()));
            }
        })
    }

    /// Waits until what was queued so far is written to the server.
    pub async fn flush(&self) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let _ = self.client.flush().await;
    }
}
