//! The backbone, end to end through real processes: a nats-server, SQLite or PostgreSQL,
//! and an Equipment Live node process driven over HTTP and the device subject.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eq_tests::load::{LoadReport, verify_history};
use eq_tests::postgres::DbKind;
use eq_tests::{
    NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase, assert_gapless, wait_for,
};
use futures::StreamExt;
use serde_json::{Value, json};

struct Setup {
    node: NodeProcess,
    // Kept alive for the test's duration (dropped after the node).
    _db: TestDatabase,
    nats: NatsServer,
}

async fn setup(kind: DbKind) -> Setup {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(kind).await;
    let node = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    Setup {
        node,
        _db: db,
        nats,
    }
}

/// Waits until the history holds `count` entries for `id`, and returns them.
async fn history_of(node: &NodeProcess, id: &str, count: usize) -> Vec<Value> {
    let client = node.client();
    wait_for(
        &format!("{count} history entries of {id}"),
        Duration::from_secs(30),
        || {
            let client = client.clone();
            async move {
                let items = client.history(id).await;
                (items.len() >= count).then_some(items)
            }
        },
    )
    .await
}

const STATUSES: [&str; 3] = ["green", "yellow", "red"];

async fn http_round_trip(kind: DbKind) {
    let s = setup(kind).await;
    let client = s.node.client();
    let created = client.register("press-1", "plant-a", "line-1").await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.etag.as_deref(), Some("\"1\""));
    for i in 0..20 {
        let status = STATUSES[i % 3];
        let answer = client
            .set_status(
                "press-1",
                json!({"status": status, "reason": format!("r{i}"), "note": "n"}),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.version(), i as u64 + 2);
    }
    let current = client.get("press-1").await;
    assert_eq!(current.status, 200);
    assert_eq!(current.version(), 21);
    assert_eq!(current.body["status"], STATUSES[19 % 3]);
    assert_eq!(current.etag.as_deref(), Some("\"21\""));
    let items = history_of(&s.node, "press-1", 21).await;
    assert_eq!(items.len(), 21);
    assert_gapless("history", &items);
    assert_eq!(items[0]["kind"], "registered");
    for (i, item) in items[1..].iter().enumerate() {
        assert_eq!(item["status"], STATUSES[i % 3]);
        assert_eq!(item["reason"], format!("r{i}"));
        assert_eq!(item["source"], "api");
    }
    // Listing shows the current state once the consumer wrote it.
    let list = client
        .send(
            client
                .http()
                .get(client.url("/v1/equipment?site=plant-a&line=line-1")),
        )
        .await
        .unwrap();
    assert_eq!(list.body["items"][0]["id"], "press-1");
    assert_eq!(list.body["items"][0]["version"], 21);
}

#[tokio::test]
async fn http_round_trip_sqlite() {
    http_round_trip(DbKind::Sqlite).await;
}

#[tokio::test]
async fn http_round_trip_postgres() {
    http_round_trip(DbKind::Postgres).await;
}

async fn device_round_trip(kind: DbKind) {
    let s = setup(kind).await;
    let client = s.node.client();
    assert_eq!(
        client.register("kiln-1", "plant-a", "line-2").await.status,
        201
    );
    let nats = async_nats::connect(s.nats.url()).await.unwrap();
    for i in 0..15u64 {
        let body = json!({"status": STATUSES[i as usize % 3], "device_id": "pi-7", "command_id": format!("c-{i}")});
        let reply = nats
            .request("eq.device.kiln-1.status", body.to_string().into())
            .await
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply, json!({"ok": true, "version": i + 2}));
    }
    // A device retry (same command_id) gets the same answer and writes nothing.
    let retry = nats
        .request(
            "eq.device.kiln-1.status",
            json!({"status": "red", "device_id": "pi-7", "command_id": "c-14"})
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    let retry: Value = serde_json::from_slice(&retry.payload).unwrap();
    assert_eq!(retry, json!({"ok": true, "version": 16}));
    let current = client.get("kiln-1").await;
    assert_eq!(current.version(), 16);
    assert_eq!(current.body["updated_by"], "pi-7");
    assert_eq!(current.body["source"], "device");
    let items = history_of(&s.node, "kiln-1", 16).await;
    assert_eq!(items.len(), 16);
    assert_gapless("history", &items);
    assert!(items[1..].iter().all(|i| i["source"] == "device"));
}

#[tokio::test]
async fn device_round_trip_sqlite() {
    device_round_trip(DbKind::Sqlite).await;
}

#[tokio::test]
async fn device_round_trip_postgres() {
    device_round_trip(DbKind::Postgres).await;
}

#[tokio::test]
async fn idempotency_key_gives_one_event_and_the_same_answer() {
    let s = setup(DbKind::Sqlite).await;
    let client = s.node.client();
    client.register("mixer-1", "plant-a", "line-1").await;
    let put = |key: &str, status: &str| {
        client
            .http()
            .put(client.url("/v1/equipment/mixer-1/status"))
            .header("Idempotency-Key", key)
            .json(&json!({"status": status, "note": "same"}))
    };
    let first = client.send(put("key-1", "red")).await.unwrap();
    let second = client.send(put("key-1", "red")).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 200);
    assert_eq!(first.body, second.body, "a retry gets the identical answer");
    assert_eq!(first.etag, second.etag);
    assert!(!first.replayed && second.replayed);
    // Another change, then the old key again: still the original answer, no event.
    let other = client.send(put("key-2", "green")).await.unwrap();
    assert_eq!(other.version(), 3);
    let third = client.send(put("key-1", "red")).await.unwrap();
    assert_eq!(third.body, first.body);
    // The same key for a different request is a conflict, not a silent replay.
    let reused = client.send(put("key-1", "yellow")).await.unwrap();
    assert_eq!(reused.status, 409);
    assert!(reused.is_problem());
    assert_eq!(client.get("mixer-1").await.version(), 3);
    let items = history_of(&s.node, "mixer-1", 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.history("mixer-1").await.len(), 3, "{items:?}");
}

#[tokio::test]
async fn stale_if_match_is_412_and_current_if_match_applies() {
    let s = setup(DbKind::Sqlite).await;
    let client = s.node.client();
    client.register("saw-1", "plant-a", "line-1").await;
    let put = |etag: &str, status: &str| {
        client
            .http()
            .put(client.url("/v1/equipment/saw-1/status"))
            .header("If-Match", etag)
            .json(&json!({"status": status}))
    };
    let ok = client.send(put("\"1\"", "green")).await.unwrap();
    assert_eq!(ok.status, 200);
    let stale = client.send(put("\"1\"", "red")).await.unwrap();
    assert_eq!(stale.status, 412);
    assert!(stale.is_problem());
    assert_eq!(stale.body["code"], "version_mismatch");
    assert_eq!(client.get("saw-1").await.body["status"], "green");
    let patch = client
        .send(
            client
                .http()
                .patch(client.url("/v1/equipment/saw-1"))
                .header("If-Match", "\"1\"")
                .json(&json!({"name": "x"})),
        )
        .await
        .unwrap();
    assert_eq!(patch.status, 412);
}

#[tokio::test]
async fn concurrent_writers_on_one_equipment_keep_versions_gapless() {
    let s = setup(DbKind::Sqlite).await;
    let client = s.node.client();
    client.register("robot-1", "plant-a", "line-1").await;
    let versions = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let client = client.clone();
        let versions = versions.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let answer = client
                    .set_status("robot-1", json!({"status": STATUSES[(writer + i) % 3], "updated_by": format!("w{writer}")}))
                    .await
                    .unwrap();
                assert_eq!(answer.status, 200, "{:?}", answer.body);
                versions.lock().unwrap().push(answer.version());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut versions = versions.lock().unwrap().clone();
    versions.sort();
    assert_eq!(
        versions,
        (2..=201).collect::<Vec<u64>>(),
        "every writer got its own version"
    );
    let items = history_of(&s.node, "robot-1", 201).await;
    assert_eq!(items.len(), 201);
    assert_gapless("history", &items);
}

#[tokio::test]
async fn bad_input_gets_a_problem_changes_nothing_and_is_counted() {
    let s = setup(DbKind::Sqlite).await;
    let client = s.node.client();
    client.register("press-9", "plant-a", "line-1").await;
    client.register("old-1", "plant-a", "line-1").await;
    let gone = client
        .send(client.http().delete(client.url("/v1/equipment/old-1")))
        .await
        .unwrap();
    assert_eq!(gone.status, 200);
    assert_eq!(gone.body["decommissioned"], true);
    let http = client.http();
    let put = |id: &str| http.put(client.url(&format!("/v1/equipment/{id}/status")));
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "malformed json",
            put("press-9")
                .header("content-type", "application/json")
                .body("{\"status\": "),
            400,
        ),
        (
            "unknown status",
            put("press-9").json(&json!({"status": "blue"})),
            400,
        ),
        (
            "missing status",
            put("press-9").json(&json!({"note": "x"})),
            400,
        ),
        (
            "unknown equipment",
            put("nope-1").json(&json!({"status": "red"})),
            404,
        ),
        (
            "id with a dot",
            put("a.b").json(&json!({"status": "red"})),
            400,
        ),
        (
            "id with a star",
            put("a*").json(&json!({"status": "red"})),
            400,
        ),
        (
            "id with a gt",
            put("a%3E").json(&json!({"status": "red"})),
            400,
        ),
        (
            "id with a space",
            put("a%20b").json(&json!({"status": "red"})),
            400,
        ),
        (
            "over-long note",
            put("press-9").json(&json!({"status": "red", "note": "x".repeat(1001)})),
            400,
        ),
        (
            "bad reason",
            put("press-9").json(&json!({"status": "red", "reason": "a b"})),
            400,
        ),
        (
            "oversized body",
            put("press-9")
                .header("content-type", "application/json")
                .body(vec![b' '; 100_000]),
            413,
        ),
        (
            "decommissioned",
            put("old-1").json(&json!({"status": "red"})),
            409,
        ),
        (
            "bad if-match",
            put("press-9")
                .header("If-Match", "yesterday")
                .json(&json!({"status": "red"})),
            400,
        ),
        (
            "duplicate id",
            http.post(client.url("/v1/equipment"))
                .json(&json!({"id": "press-9", "name": "x", "site": "s", "line": "l"})),
            409,
        ),
        (
            "bad register id",
            http.post(client.url("/v1/equipment"))
                .json(&json!({"id": "a.b", "name": "x", "site": "s", "line": "l"})),
            400,
        ),
        (
            "wrong content type",
            put("press-9")
                .header("content-type", "text/plain")
                .body("status=red"),
            415,
        ),
        ("unknown route", http.get(client.url("/v2/nothing")), 404),
    ];
    for (what, request, expected) in cases {
        let answer = client
            .send(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(answer.status, expected, "{what}: {:?}", answer.body);
        assert!(
            answer.is_problem(),
            "{what}: not a problem: {:?} {:?}",
            answer.content_type,
            answer.body
        );
    }
    // A chunked body over the limit (no Content-Length) is refused as well.
    let chunks = futures::stream::iter((0..100).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let chunked = client
        .send(
            put("press-9")
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(chunks)),
        )
        .await
        .unwrap();
    assert_eq!(chunked.status, 413);
    assert!(chunked.is_problem());

    // Nothing changed.
    assert_eq!(client.get("press-9").await.version(), 1);
    assert_eq!(client.get("old-1").await.version(), 2);
    assert_eq!(client.get("nope-1").await.status, 404);

    // The device subject refuses bad input with an error reply and a rejects message.
    let nats = async_nats::connect(s.nats.url()).await.unwrap();
    let mut rejects = nats.subscribe("eq.rejects.>").await.unwrap();
    nats.flush().await.unwrap();
    let device_cases: Vec<(&str, String, &str)> = vec![
        ("eq.device.press-9.status", "{oops".into(), "malformed_json"),
        (
            "eq.device.press-9.status",
            json!({"status": "purple"}).to_string(),
            "invalid_status",
        ),
        (
            "eq.device.press-9.status",
            json!({"status": "red", "id": "other-1"}).to_string(),
            "subject_mismatch",
        ),
        (
            "eq.device.nope-2.status",
            json!({"status": "red"}).to_string(),
            "not_found",
        ),
        (
            "eq.device.old-1.status",
            json!({"status": "red"}).to_string(),
            "decommissioned",
        ),
        (
            "eq.device.press-9.status",
            " ".repeat(20_000),
            "payload_too_large",
        ),
    ];
    for (subject, payload, code) in &device_cases {
        let reply = nats
            .request(subject.to_string(), payload.clone().into())
            .await
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply["ok"], false, "{subject} {payload}");
        assert_eq!(reply["error"]["code"], *code, "{reply}");
        let notice = tokio::time::timeout(Duration::from_secs(5), rejects.next())
            .await
            .unwrap()
            .unwrap();
        let notice: Value = serde_json::from_slice(&notice.payload).unwrap();
        assert_eq!(notice["code"], *code);
    }
    assert_eq!(client.get("press-9").await.version(), 1);

    let http_rejects = client.metric_sum("eq_http_rejects_total", "").await;
    let device_rejects = client.metric_sum("eq_device_rejects_total", "").await;
    assert!(http_rejects >= 18.0, "http rejects counted: {http_rejects}");
    assert!(
        device_rejects >= 6.0,
        "device rejects counted: {device_rejects}"
    );
    // And the history holds exactly the accepted events.
    let items = history_of(&s.node, "press-9", 1).await;
    assert_eq!(items.len(), 1);
}

#[tokio::test]
async fn killed_node_loses_no_acknowledged_change() {
    let mut s = setup(DbKind::Sqlite).await;
    let client = s.node.client();
    let ids: Vec<String> = (0..20).map(|i| format!("line-m{i}")).collect();
    for id in &ids {
        assert_eq!(client.register(id, "plant-a", "line-1").await.status, 201);
    }
    // Writers record every acknowledged (id, version, status); the node dies under them.
    let acked: Arc<Mutex<BTreeMap<(String, u64), String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, id) in ids.iter().enumerate() {
        let (client, acked, stop, id) = (client.clone(), acked.clone(), stop.clone(), id.clone());
        writers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = STATUSES[i % 3];
                i += 1;
                if let Ok(answer) = client.set_status(&id, json!({"status": status})).await
                    && answer.status == 200
                {
                    acked
                        .lock()
                        .unwrap()
                        .insert((id.clone(), answer.version()), status.to_string());
                }
            }
        }));
    }
    wait_for("some acknowledged changes", Duration::from_secs(30), || {
        let n = acked.lock().unwrap().len();
        async move { (n >= 200).then_some(()) }
    })
    .await;
    s.node.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let report = LoadReport {
        acked: acked.lock().unwrap().clone(),
        ..LoadReport::default()
    };
    s.node.restart().await;
    // Every acknowledged change is in the state and in the history, exactly once.
    verify_history(&s.node.client(), &ids, &report).await;
}

#[tokio::test]
async fn nats_outage_flips_readiness_and_loses_nothing() {
    let mut s = setup(DbKind::Sqlite).await;
    let client = s.node.client();
    client.register("oven-1", "plant-a", "line-1").await;
    for status in ["green", "red", "yellow"] {
        assert_eq!(
            client
                .set_status("oven-1", json!({"status": status}))
                .await
                .unwrap()
                .status,
            200
        );
    }
    s.nats.stop();
    wait_for("readyz false", Duration::from_secs(20), || {
        let client = client.clone();
        async move { (!client.ready().await).then_some(()) }
    })
    .await;
    // While NATS is down a change is refused with 503 (and Retry-After), not lost silently.
    let during = client
        .set_status("oven-1", json!({"status": "green"}))
        .await
        .unwrap();
    assert_eq!(during.status, 503, "{:?}", during.body);
    assert!(during.is_problem());
    s.nats.restart();
    wait_for("readyz true", Duration::from_secs(30), || {
        let client = client.clone();
        async move { client.ready().await.then_some(()) }
    })
    .await;
    let current = client.get("oven-1").await;
    assert_eq!(current.body["status"], "yellow");
    assert_eq!(current.version(), 4);
    let after = client
        .set_status("oven-1", json!({"status": "green"}))
        .await
        .unwrap();
    assert_eq!(after.status, 200, "{:?}", after.body);
    assert_eq!(after.version(), 5);
    let items = history_of(&s.node, "oven-1", 5).await;
    assert_gapless("history", &items);
    let statuses: HashSet<&str> = items.iter().filter_map(|i| i["status"].as_str()).collect();
    assert!(statuses.contains("red"));
}
