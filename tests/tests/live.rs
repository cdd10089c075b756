//! Watching the floor live: the `eq.live.*` subjects, `GET /v1/live` (snapshot, then every
//! change with no gap and no duplicate, resume with `Last-Event-ID`) across two nodes, and
//! the floor board in headless Chromium.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eq_node::auth::Role;
use eq_tests::postgres::DbKind;
use eq_tests::sse::{SseClient, SseFrame};
use eq_tests::{NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase};
use futures::StreamExt;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

struct Floor {
    writer: NodeProcess,
    watcher: NodeProcess,
    _db: TestDatabase,
    nats: NatsServer,
}

/// Two nodes: changes are made through one and watched through the other.
async fn floor() -> Floor {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Postgres).await;
    let writer = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    let watcher = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    for (id, line) in [
        ("press-1", "line-1"),
        ("press-2", "line-1"),
        ("kiln-1", "line-2"),
    ] {
        let answer = writer.client().register(id, "plant-a", line).await;
        assert_eq!(answer.status, 201, "{:?}", answer.body);
    }
    Floor {
        writer,
        watcher,
        _db: db,
        nats,
    }
}

/// Reads frames until `ready`, returning the snapshot and the ready frame.
async fn read_snapshot(sse: &mut SseClient) -> (BTreeMap<String, u64>, SseFrame) {
    let mut snapshot = BTreeMap::new();
    loop {
        let frame = sse.next(WAIT).await.expect("snapshot frames then ready");
        match frame.event.as_str() {
            "snapshot" => {
                assert!(frame.id.is_none(), "snapshot frames carry no id");
                let previous = snapshot.insert(frame.equipment_id().to_string(), frame.version());
                assert!(previous.is_none(), "one snapshot frame per machine");
            }
            "ready" => return (snapshot, frame),
            other => panic!("unexpected {other} before ready"),
        }
    }
}

/// Changes status of `ids` round-robin until stopped.
fn hammer(client: eq_tests::ApiClient, ids: Vec<&'static str>, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let mut n = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let id = ids[n % ids.len()];
            let status = ["green", "yellow", "red"][n % 3];
            let _ = client.set_status(id, json!({"status": status})).await;
            n += 1;
        }
    });
}

#[tokio::test]
async fn snapshot_then_every_change_without_gap_or_duplicate_and_resume() {
    let f = floor().await;
    let stop = Arc::new(AtomicBool::new(false));
    hammer(
        f.writer.client(),
        vec!["press-1", "press-2", "kiln-1"],
        stop.clone(),
    );
    // Connect in the middle of the writes, on the other node, to line 1 only.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = f.watcher.client().url("/v1/live?site=plant-a&line=line-1");
    let mut sse = SseClient::connect(&url, None).await;
    let (snapshot, ready) = read_snapshot(&mut sse).await;
    assert_eq!(
        snapshot.keys().collect::<Vec<_>>(),
        ["press-1", "press-2"],
        "only line 1"
    );
    assert!(ready.id.is_some(), "ready carries the position");
    let mut last: BTreeMap<String, u64> = snapshot.clone();
    let mut last_id = ready.id.clone().unwrap();
    let check = |frame: &SseFrame, last: &mut BTreeMap<String, u64>| {
        assert_eq!(frame.event, "change");
        let id = frame.equipment_id().to_string();
        assert_ne!(id, "kiln-1", "filtered out");
        let seen = last.get(&id).copied().unwrap();
        assert_eq!(
            frame.version(),
            seen + 1,
            "{id}: the next version, no gap, no duplicate"
        );
        last.insert(id, frame.version());
    };
    for _ in 0..30 {
        let frame = sse.next(WAIT).await.expect("a change");
        check(&frame, &mut last);
        last_id = frame.id.clone().expect("changes carry their position");
    }
    // The client goes away for a while, then resumes from its last id.
    drop(sse);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sse = SseClient::connect(&url, Some(&last_id)).await;
    let mut resumed = 0;
    let mut caught_up = false;
    while resumed < 30 || !caught_up {
        let frame = sse.next(WAIT).await.expect("a change after resuming");
        if frame.event == "ready" {
            caught_up = true;
            continue;
        }
        check(&frame, &mut last);
        resumed += 1;
    }
    stop.store(true, Ordering::Relaxed);
    // Once the writes stop, the stream reaches the machines' final versions.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in ["press-1", "press-2"] {
        let current = f.writer.client().get(id).await.version();
        while last[id] < current {
            let frame = sse.next(WAIT).await.expect("the remaining changes");
            check(&frame, &mut last);
        }
        assert_eq!(last[id], current, "{id} reached its final version");
    }
}

/// The next message of a live-subject subscription: its subject and event.
async fn next_live(subscription: &mut async_nats::Subscriber) -> (String, serde_json::Value) {
    let message = tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("a live message")
        .unwrap();
    let event = serde_json::from_slice(&message.payload).unwrap();
    (message.subject.to_string(), event)
}

#[tokio::test]
async fn live_subjects_carry_every_change_for_wildcard_subscribers() {
    let f = floor().await;
    let nats = async_nats::connect(f.nats.url()).await.unwrap();
    let mut line_1 = nats.subscribe("eq.live.plant-a.line-1.*").await.unwrap();
    let mut one = nats.subscribe("eq.live.*.*.kiln-1").await.unwrap();
    nats.flush().await.unwrap();
    for (id, status) in [
        ("press-1", "red"),
        ("kiln-1", "yellow"),
        ("press-2", "green"),
    ] {
        let answer = f
            .writer
            .client()
            .set_status(id, json!({"status": status}))
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
    }
    let (subject, event) = next_live(&mut line_1).await;
    assert_eq!(subject, "eq.live.plant-a.line-1.press-1");
    assert_eq!(event["state"]["status"], "red");
    let (subject, event) = next_live(&mut line_1).await;
    assert_eq!(subject, "eq.live.plant-a.line-1.press-2");
    assert_eq!(event["version"], 2);
    let (subject, event) = next_live(&mut one).await;
    assert_eq!(subject, "eq.live.plant-a.line-2.kiln-1");
    assert_eq!(event["state"]["status"], "yellow");
}

#[tokio::test]
async fn live_filters_resume_from_an_old_position_and_refuse_bad_input() {
    let f = floor().await;
    let client = f.watcher.client();
    // One machine only.
    let mut sse = SseClient::connect(&client.url("/v1/live?id=kiln-1"), None).await;
    let (snapshot, ready) = read_snapshot(&mut sse).await;
    assert_eq!(snapshot.keys().collect::<Vec<_>>(), ["kiln-1"]);
    let writer = f.writer.client();
    for status in ["red", "green"] {
        writer
            .set_status("kiln-1", json!({"status": status}))
            .await
            .unwrap();
        writer
            .set_status("press-1", json!({"status": status}))
            .await
            .unwrap();
    }
    let versions: Vec<u64> = [sse.next(WAIT).await.unwrap(), sse.next(WAIT).await.unwrap()]
        .iter()
        .map(|f| {
            assert_eq!(f.equipment_id(), "kiln-1");
            f.version()
        })
        .collect();
    assert_eq!(versions, [2, 3]);
    // Resuming from position 0 replays every change of the log (registrations included).
    let mut sse = SseClient::connect(&client.url("/v1/live?id=kiln-1"), Some("0")).await;
    let mut replayed: Vec<(String, u64)> = Vec::new();
    loop {
        let frame = sse.next(WAIT).await.expect("replayed changes, then ready");
        if frame.event == "ready" {
            break;
        }
        replayed.push((
            frame.data["kind"].as_str().unwrap().to_string(),
            frame.version(),
        ));
    }
    assert_eq!(
        replayed,
        [
            ("registered".to_string(), 1),
            ("status_changed".to_string(), 2),
            ("status_changed".to_string(), 3)
        ]
    );
    assert!(ready.id.is_some());
    // Bad input: a clear problem, not a stream.
    for path in [
        "/v1/live?site=no%20spaces",
        "/v1/live?id=a.b",
        "/v1/live?line=*",
    ] {
        let answer = client
            .send(client.http().get(client.url(path)))
            .await
            .unwrap();
        assert_eq!(answer.status, 400, "{path}: {:?}", answer.body);
        assert!(answer.is_problem(), "{path}");
    }
    let answer = client
        .send(
            client
                .http()
                .get(client.url("/v1/live"))
                .header("Last-Event-ID", "yesterday"),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["code"], "invalid_last_event_id");
}

/// The floor board at `/`, in headless Chromium: a change made through the API turns the
/// machine's tile red without a reload. Set `EQ_BOARD_SCREENSHOT=path.png` to keep a picture.
#[tokio::test]
async fn the_floor_board_turns_a_tile_red_in_a_real_browser() {
    let f = floor().await;
    let page = f
        .watcher
        .client()
        .send(f.watcher.client().http().get(f.watcher.client().url("/")))
        .await;
    assert!(page.is_ok());
    let mut command = std::process::Command::new("node");
    command
        .arg("--experimental-websocket")
        .arg(eq_tests::workspace_root().join("tests/e2e/board.mjs"))
        .arg(f.watcher.base_url())
        .arg("press-1")
        .env(
            "EQ_BOARD_TOKEN",
            eq_tests::auth::token("wall-screen-1", Role::Viewer, &[]),
        )
        .env("EQ_API_TOKEN", eq_tests::auth::admin_token());
    if let Ok(path) = std::env::var("EQ_BOARD_SCREENSHOT") {
        command.arg(path);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("node runs (Node.js 20+ and Debian's chromium; scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed: {stdout}\n{stderr}"
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["after"]["status"], "red");
    assert_ne!(result["before"]["colour"], result["after"]["colour"]);
}

/// The hub follows the log only while watched: after the last client left it forgets, and
/// the next client gets a fresh snapshot; a client resuming from before that is replayed
/// from the log, still without a gap.
#[tokio::test]
async fn an_idle_hub_forgets_and_still_serves_snapshots_and_resumes() {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let node = NodeProcess::start(
        NodeOptions::new(nats.url(), db.url.clone())
            .arg("--live-linger-secs", 1)
            .arg("--sse-heartbeat-secs", 1),
    )
    .await;
    let client = node.client();
    assert_eq!(
        client.register("press-1", "plant-a", "line-1").await.status,
        201
    );
    let url = client.url("/v1/live");
    let mut sse = SseClient::connect(&url, None).await;
    let (snapshot, ready) = read_snapshot(&mut sse).await;
    assert_eq!(snapshot["press-1"], 1);
    drop(sse);
    // Nobody watches: the hub stops following (1 s linger, checked every second).
    let subscribers = || async { client.metric_sum("eq_sse_subscribers", "").await };
    eq_tests::wait_for("the client gone", WAIT, || async {
        (subscribers().await == 0.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for status in ["red", "green", "yellow"] {
        client
            .set_status("press-1", json!({"status": status}))
            .await
            .unwrap();
    }
    let mut fresh = SseClient::connect(&url, None).await;
    let (snapshot, _) = read_snapshot(&mut fresh).await;
    assert_eq!(
        snapshot["press-1"], 4,
        "a fresh snapshot after the hub restarted"
    );
    let mut resumed = SseClient::connect(&url, ready.id.as_deref()).await;
    let mut versions = Vec::new();
    loop {
        let frame = resumed
            .next(WAIT)
            .await
            .expect("replayed changes, then ready");
        if frame.event == "ready" {
            break;
        }
        versions.push(frame.version());
    }
    assert_eq!(versions, [2, 3, 4], "exactly the changes missed");
}
