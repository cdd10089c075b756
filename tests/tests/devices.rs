//! Devices publishing straight onto NATS, as a Raspberry Pi would (a plain NATS client):
//! the durable ingest through JetStream, with and without a node up, across node restarts,
//! and the example Pi publisher of `deploy/devices/`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use eq_actors::EquipmentId;
use eq_actors::domain::shard_of;
use eq_tests::postgres::DbKind;
use eq_tests::{
    NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase, assert_gapless,
    run_pi_publisher, wait_for,
};
use futures::StreamExt;
use serde_json::{Value, json};

const STATUSES: [&str; 3] = ["green", "yellow", "red"];

/// Publishes one durable device message the way a Pi does: JetStream publish with the
/// command id as `Nats-Msg-Id`, waiting for the stream's ack.
async fn publish_durable(js: &jetstream::Context, id: &str, body: &Value, msg_id: &str) -> u64 {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    let ack = js
        .publish_with_headers(
            format!("eq.ingest.{id}.status"),
            headers,
            body.to_string().into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored by JetStream");
    ack.sequence
}

/// The notes of an equipment's status changes, in version order, once history holds
/// `count` entries.
async fn notes_in_history(node: &NodeProcess, id: &str, count: usize) -> Vec<String> {
    let client = node.client();
    let items = wait_for(
        &format!("{count} history entries of {id}"),
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                let items = client.history(id).await;
                (items.len() >= count).then_some(items)
            }
        },
    )
    .await;
    assert_gapless(id, &items);
    items
        .iter()
        .filter(|i| i["kind"] == "status_changed")
        .map(|i| i["note"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn durable_messages_are_stored_without_a_node_and_applied_later_in_order_once() {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let mut node = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    let ids = ["press-1", "kiln-2", "dryer-3"];
    for id in ids {
        let answer = node.client().register(id, "plant-a", "line-1").await;
        assert_eq!(answer.status, 201, "{:?}", answer.body);
    }
    // No node runs now: JetStream alone acknowledges what the devices publish.
    node.terminate();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut rejects = client.subscribe("eq.rejects.>").await.unwrap();
    const PER_DEVICE: usize = 40;
    for n in 1..=PER_DEVICE {
        for id in ids {
            let body = json!({
                "status": STATUSES[n % 3],
                "note": format!("n={n:03}"),
                "command_id": format!("{id}-{n}"),
                "occurred_at": "1999-12-31T23:59:00Z",
            });
            publish_durable(&js, id, &body, &format!("{id}-{n}")).await;
        }
    }
    // A device that lost an ack re-sends with the same id: JetStream keeps one copy.
    let again = json!({"status": "red", "note": "n=040", "command_id": "press-1-40", "occurred_at": "1999-12-31T23:59:00Z"});
    publish_durable(&js, "press-1", &again, "press-1-40").await;
    // The same command under another message id (a device that restarted): stored twice,
    // applied once, by its command id.
    let body = json!({"status": STATUSES[PER_DEVICE % 3], "note": format!("n={PER_DEVICE:03}"), "command_id": format!("kiln-2-{PER_DEVICE}"), "occurred_at": "1999-12-31T23:59:00Z"});
    publish_durable(&js, "kiln-2", &body, "another-message-id").await;
    // Refused messages: to the rejects subject, acknowledged, nothing changed.
    publish_durable(&js, "press-1", &json!({"status": "purple"}), "bad-1").await;
    publish_durable(&js, "ghost-9", &json!({"status": "red"}), "bad-2").await;
    let mut stream = js.get_stream("EQ_INGEST").await.unwrap();
    let stored = stream.info().await.unwrap().state.messages;
    assert_eq!(stored, (PER_DEVICE * ids.len() + 3) as u64);

    node.relaunch().await;
    for id in ids {
        let notes = notes_in_history(&node, id, PER_DEVICE + 1).await;
        let expected: Vec<String> = (1..=PER_DEVICE).map(|n| format!("n={n:03}")).collect();
        assert_eq!(
            notes, expected,
            "{id}: every message once, in publish order"
        );
    }
    // Nothing more arrives: the duplicates were not applied.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in ids {
        let current = node.client().get(id).await;
        assert_eq!(current.version(), PER_DEVICE as u64 + 1, "{id}");
        assert_eq!(current.body["source"], "device");
        assert_eq!(
            current.body["clock_suspect"], true,
            "a Pi that believes it is 1999"
        );
    }
    let mut codes = BTreeMap::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(10), rejects.next())
            .await
            .expect("a reject notice")
            .unwrap();
        let notice: Value = serde_json::from_slice(&message.payload).unwrap();
        codes.insert(
            message.subject.to_string(),
            notice["code"].as_str().unwrap().to_string(),
        );
    }
    assert_eq!(codes["eq.rejects.press-1"], "invalid_status");
    assert_eq!(codes["eq.rejects.ghost-9"], "not_found");
    // Applied messages leave the work queue.
    wait_for("ingest queue empty", Duration::from_secs(10), || {
        let mut stream = stream.clone();
        async move { (stream.info().await.ok()?.state.messages == 0).then_some(()) }
    })
    .await;
    let _ = stream.info().await;
}

#[tokio::test]
async fn the_server_files_durable_messages_under_the_shard_the_node_computes() {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let mut node = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    node.terminate();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stream = js.get_stream("EQ_INGEST").await.unwrap();
    for n in 0..200 {
        let id = format!("machine-{n}");
        let seq = publish_durable(&js, &id, &json!({"status": "red"}), &id).await;
        let stored = stream.get_raw_message(seq).await.unwrap();
        let shard = shard_of(&EquipmentId::parse(&id).unwrap(), 64);
        assert_eq!(
            stored.subject.as_str(),
            format!("eq.ingest.{shard}.{id}.status"),
            "NATS partition() and shard_of agree for {id}"
        );
    }
}

struct TwoNodes {
    nats: NatsServer,
    /// Runs the history consumer; stays up.
    a: NodeProcess,
    /// Gets killed and restarted.
    b: NodeProcess,
    _db: TestDatabase,
}

async fn two_nodes() -> TwoNodes {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Postgres).await;
    let start = |n: usize| {
        NodeOptions::new(nats.url(), db.url.clone())
            .arg("--node-id", format!("node-{n}"))
            .arg("--history", n == 0)
    };
    let a = NodeProcess::start(start(0)).await;
    let b = NodeProcess::start(start(1)).await;
    TwoNodes {
        nats,
        a,
        b,
        _db: db,
    }
}

#[tokio::test]
async fn durable_ingest_survives_killed_and_restarted_nodes() {
    // Bound in this order so that the nodes go first, the servers last.
    let TwoNodes {
        _db,
        nats,
        a,
        mut b,
    } = two_nodes().await;
    let ids: Vec<String> = (0..12).map(|n| format!("cell-{n}")).collect();
    for id in &ids {
        assert_eq!(
            a.client().register(id, "plant-a", "line-1").await.status,
            201
        );
    }
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    const ROUNDS: usize = 60;
    for n in 1..=ROUNDS {
        for id in &ids {
            let body = json!({"status": STATUSES[n % 2], "note": format!("n={n:03}"), "command_id": format!("{id}-{n}")});
            publish_durable(&js, id, &body, &format!("{id}-{n}")).await;
        }
        match n {
            15 => b.kill(),
            30 => b.relaunch().await,
            45 => {
                b.terminate();
                b.relaunch().await;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        let notes = notes_in_history(&a, id, ROUNDS + 1).await;
        let expected: Vec<String> = (1..=ROUNDS).map(|n| format!("n={n:03}")).collect();
        assert_eq!(
            notes, expected,
            "{id}: every message once, in publish order"
        );
    }
}

#[tokio::test]
async fn the_example_pi_publisher_reports_through_both_paths() {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let node = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    assert_eq!(
        node.client()
            .register("press-1", "plant-a", "line-1")
            .await
            .status,
        201
    );
    let url = nats.url();
    let output = run_pi_publisher(&[
        "--server", &url, "--id", "press-1", "red", "--reason", "jam",
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    let output =
        run_pi_publisher(&["--server", &url, "--id", "press-1", "--durable", "yellow"]).await;
    assert!(output.status.success(), "{output:?}");
    let client = node.client();
    let current = wait_for(
        "the durable change applied",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move {
                let current = client.get("press-1").await;
                (current.version() == 3).then_some(current)
            }
        },
    )
    .await;
    assert_eq!(current.body["status"], "yellow");
    assert_eq!(current.body["source"], "device");
    let history = client.history("press-1").await;
    assert_eq!(history[1]["reason"], "jam");
    // A refusal: exit code 1 and the error code.
    let output = run_pi_publisher(&["--server", &url, "--id", "ghost-1", "red"]).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("not_found")
            || String::from_utf8_lossy(&output.stderr).contains("not_found")
    );
}

/// A device's request/reply loop: each change gets its own command id and is re-sent with
/// the same id until the answer is `ok` (as the example Pi does).
async fn report_until_ok(client: &async_nats::Client, id: &str, n: usize) {
    let body = json!({"status": STATUSES[n % 3], "note": format!("n={n:03}"), "command_id": format!("{id}-{n}")});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} change {n} never accepted"
        );
        let request = client.request(format!("eq.device.{id}.status"), body.to_string().into());
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(3), request).await
            && serde_json::from_slice::<Value>(&reply.payload).is_ok_and(|r| r["ok"] == true)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn device_requests_retried_across_node_restarts_apply_once_in_order() {
    // Bound in this order so that the nodes go first, the servers last.
    let TwoNodes {
        _db,
        nats,
        a,
        mut b,
    } = two_nodes().await;
    let ids: Vec<String> = (0..8).map(|n| format!("pi-{n}")).collect();
    for id in &ids {
        assert_eq!(
            a.client().register(id, "plant-a", "line-1").await.status,
            201
        );
    }
    const CHANGES: usize = 40;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let devices: Vec<_> = ids
        .iter()
        .map(|id| {
            let (client, id) = (client.clone(), id.clone());
            tokio::spawn(async move {
                for n in 1..=CHANGES {
                    report_until_ok(&client, &id, n).await;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.relaunch().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.terminate();
    for device in devices {
        device.await.unwrap();
    }
    for id in &ids {
        let notes = notes_in_history(&a, id, CHANGES + 1).await;
        let expected: Vec<String> = (1..=CHANGES).map(|n| format!("n={n:03}")).collect();
        assert_eq!(notes, expected, "{id}: every change once, in order");
    }
}

/// Sends one message with a raw `HPUB`, as any NATS client can: header bytes exactly as given.
async fn raw_hpub(nats_url: &str, subject: &str, header_lines: &str, payload: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = nats_url.trim_start_matches("nats://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut info = [0u8; 4096];
    let _ = socket.read(&mut info).await.unwrap();
    let headers = format!("NATS/1.0\r\n{header_lines}\r\n\r\n");
    let frame = format!(
        "CONNECT {{\"verbose\":false,\"headers\":true}}\r\nHPUB {subject} {} {}\r\n{headers}{payload}\r\nPING\r\n",
        headers.len(),
        headers.len() + payload.len()
    );
    socket.write_all(frame.as_bytes()).await.unwrap();
    let mut pong = [0u8; 64];
    let n = socket.read(&mut pong).await.unwrap();
    assert!(
        String::from_utf8_lossy(&pong[..n]).contains("PONG"),
        "the server took the message"
    );
}

/// A header value with a bare `\r` (a trace header, say) used to panic the node's NATS
/// client and stop every subscription: on the device subject at once, and, stored in
/// `EQ_INGEST`, on every node that fetched it (async-nats is patched, see
/// vendor/async-nats/PATCHED.md). Such messages are applied like any other, and the node
/// keeps serving.
#[tokio::test]
async fn a_header_with_a_bare_carriage_return_does_not_break_the_node() {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let node = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    assert_eq!(
        node.client()
            .register("press-1", "plant-a", "line-1")
            .await
            .status,
        201
    );
    let bad = "tracestate: a=b\rc";
    raw_hpub(
        &nats.url(),
        "eq.device.press-1.status",
        bad,
        r#"{"status":"red","note":"n=000","command_id":"raw-1"}"#,
    )
    .await;
    raw_hpub(
        &nats.url(),
        "eq.ingest.press-1.status",
        bad,
        r#"{"status":"green","note":"n=001","command_id":"raw-2"}"#,
    )
    .await;
    // The node still answers devices and applies durable messages after those.
    let client = async_nats::connect(nats.url()).await.unwrap();
    report_until_ok(&client, "press-1", 2).await;
    let js = jetstream::new(client);
    publish_durable(
        &js,
        "press-1",
        &json!({"status": "red", "note": "n=003", "command_id": "raw-4"}),
        "raw-4",
    )
    .await;
    let mut notes = notes_in_history(&node, "press-1", 5).await;
    // The durable one (n=001) is applied whenever the owner's ingest consumer gets to it.
    notes.sort();
    assert_eq!(notes, ["n=000", "n=001", "n=002", "n=003"]);
    assert!(node.client().ready().await);
}
