//! Watchdogs: a machine red past its limit, and a device gone silent, each raise one alert
//! (an `alert_raised` event and a message on `eq.alerts.<id>`) per occurrence — also when
//! the node restarts in between.

use std::time::Duration;

use eq_tests::postgres::DbKind;
use eq_tests::{NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase, wait_for};
use futures::StreamExt;
use serde_json::{Value, json};

/// The kinds of `alert_raised` events in a machine's history.
async fn alerts_in_history(node: &NodeProcess, id: &str) -> Vec<String> {
    node.client()
        .history(id)
        .await
        .iter()
        .filter(|e| e["kind"] == "alert_raised")
        .map(|e| e["status"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn each_occurrence_is_alerted_once_across_a_node_restart() {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let mut node = NodeProcess::start(
        NodeOptions::new(nats.url(), db.url.clone())
            .arg("--alert-red-after-secs", 2)
            .arg("--alert-device-silent-after-secs", 3)
            .arg("--watchdog-interval-secs", 1),
    )
    .await;
    let client = node.client();
    for id in ["press-1", "kiln-1"] {
        assert_eq!(client.register(id, "plant-a", "line-1").await.status, 201);
    }
    let nats_client = async_nats::connect(nats.url()).await.unwrap();
    let mut alerts = nats_client.subscribe("eq.alerts.>").await.unwrap();
    nats_client.flush().await.unwrap();
    // press-1 goes red; kiln-1's device reports once, then falls silent.
    client
        .set_status("press-1", json!({"status": "red", "reason": "jam"}))
        .await
        .unwrap();
    let reply = nats_client
        .request(
            "eq.device.kiln-1.status",
            json!({"status": "green"}).to_string().into(),
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&reply.payload).unwrap()["ok"],
        true
    );

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(20), alerts.next())
            .await
            .expect("an alert")
            .unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(event["kind"], "alert_raised");
        seen.push((
            message.subject.to_string(),
            event["alert"]["kind"].as_str().unwrap().to_string(),
        ));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("eq.alerts.kiln-1".to_string(), "device_silent".to_string()),
            ("eq.alerts.press-1".to_string(), "red_too_long".to_string())
        ]
    );
    // The node restarts while both conditions still hold: no second alert for them.
    node.restart().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), alerts.next())
            .await
            .is_err(),
        "no alert twice for one occurrence"
    );
    assert_eq!(alerts_in_history(&node, "press-1").await.len(), 1);
    assert_eq!(alerts_in_history(&node, "kiln-1").await.len(), 1);
    // A new red period is a new occurrence.
    let client = node.client();
    client
        .set_status("press-1", json!({"status": "green"}))
        .await
        .unwrap();
    client
        .set_status("press-1", json!({"status": "red"}))
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(20), alerts.next())
        .await
        .expect("the second red period's alert")
        .unwrap();
    assert_eq!(message.subject.as_str(), "eq.alerts.press-1");
    wait_for(
        "two alerts in press-1's history",
        Duration::from_secs(10),
        || {
            let node = &node;
            async move { (alerts_in_history(node, "press-1").await.len() == 2).then_some(()) }
        },
    )
    .await;
}
