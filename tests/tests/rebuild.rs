//! Rebuild and audit: the history database rebuilt from the event log into an empty one
//! equals the one the consumer built incrementally (every table, row for row), on SQLite
//! and PostgreSQL; the gap check finds a missing version; raw-event retention deletes old
//! rows while the reports, read from the state spans, stay whole.

use std::time::Duration;

use eq_entities::{equipment, equipment_event, reason_correction, state_interval};
use eq_tests::postgres::DbKind;
use eq_tests::{NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase, wait_for};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder};
use serde_json::json;

/// Every row of the four history tables, in key order.
async fn dump(
    db: &DatabaseConnection,
) -> (
    Vec<equipment_event::Model>,
    Vec<equipment::Model>,
    Vec<state_interval::Model>,
    Vec<reason_correction::Model>,
) {
    (
        equipment_event::Entity::find()
            .order_by_asc(equipment_event::Column::EquipmentId)
            .order_by_asc(equipment_event::Column::Version)
            .all(db)
            .await
            .unwrap(),
        equipment::Entity::find()
            .order_by_asc(equipment::Column::Id)
            .all(db)
            .await
            .unwrap(),
        state_interval::Entity::find()
            .order_by_asc(state_interval::Column::EquipmentId)
            .order_by_asc(state_interval::Column::Version)
            .all(db)
            .await
            .unwrap(),
        reason_correction::Entity::find()
            .order_by_asc(reason_correction::Column::EquipmentId)
            .order_by_asc(reason_correction::Column::Version)
            .all(db)
            .await
            .unwrap(),
    )
}

/// Runs the node binary's maintenance subcommand against `database_url`.
fn maintenance(nats_url: &str, database_url: &str, command: &str) -> std::process::Output {
    std::process::Command::new(eq_tests::node::node_binary())
        .args([
            "--nats-url",
            nats_url,
            "--database-url",
            database_url,
            command,
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running the node binary")
}

async fn rebuild_equals_incremental(kind: DbKind) {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(kind).await;
    let mut node = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    let client = node.client();
    for (id, line) in [
        ("press-1", "line-1"),
        ("press-2", "line-1"),
        ("kiln-1", "line-2"),
    ] {
        assert_eq!(client.register(id, "plant-a", line).await.status, 201);
    }
    let mut events = 3;
    for n in 0..30 {
        let id = ["press-1", "press-2", "kiln-1"][n % 3];
        let body = match n % 4 {
            0 => json!({"status": "red"}),
            1 => json!({"status": "red", "reason": "jam"}),
            2 => json!({"status": "green"}),
            _ => json!({"status": "yellow", "note": "slow"}),
        };
        assert_eq!(client.set_status(id, body).await.unwrap().status, 200);
        events += 1;
    }
    // A line move, a correction of a past stop, a decommission.
    let patch = client
        .send(
            client
                .http()
                .patch(client.url("/v1/equipment/press-2"))
                .json(&json!({"line": "line-2"})),
        )
        .await
        .unwrap();
    assert_eq!(patch.status, 200, "{:?}", patch.body);
    let stops = wait_for("press-1's stops", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let answer = client
                .send(client.http().get(client.url("/v1/equipment/press-1/stops")))
                .await
                .ok()?;
            let stops = answer.body["stops"].as_array()?.clone();
            (stops.len() >= 2).then_some(stops)
        }
    })
    .await;
    let version = stops[0]["version"].as_u64().unwrap();
    let corrected = client
        .send(
            client
                .http()
                .put(client.url(&format!("/v1/equipment/press-1/stops/{version}/reason")))
                .json(&json!({"reason": "power"})),
        )
        .await
        .unwrap();
    assert_eq!(corrected.status, 200, "{:?}", corrected.body);
    let gone = client
        .send(client.http().delete(client.url("/v1/equipment/kiln-1")))
        .await
        .unwrap();
    assert_eq!(gone.status, 200, "{:?}", gone.body);
    events += 3;
    client
        .wait_history_written(events as u64, Duration::from_secs(30))
        .await;
    node.terminate();

    let rebuilt = TestDatabase::new(kind).await;
    let output = maintenance(&nats.url(), &rebuilt.url, "rebuild-history");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("{events} events")), "{stdout}");
    let original = eq_node::history::connect(&db.url).await.unwrap();
    let copy = eq_node::history::connect(&rebuilt.url).await.unwrap();
    let (a, b) = (dump(&original).await, dump(&copy).await);
    assert_eq!(a.0.len(), events);
    assert!(!a.3.is_empty(), "the correction is there");
    assert_eq!(a.0, b.0, "equipment_event");
    assert_eq!(a.1, b.1, "equipment");
    assert_eq!(a.2, b.2, "state_interval");
    assert_eq!(a.3, b.3, "reason_correction");
    // A second rebuild into a database that is not empty is refused.
    assert!(
        !maintenance(&nats.url(), &rebuilt.url, "rebuild-history")
            .status
            .success()
    );

    // The gap check: clean, then one missing version is reported.
    let output = maintenance(&nats.url(), &rebuilt.url, "audit-history");
    assert!(output.status.success(), "{output:?}");
    copy.execute_unprepared(
        "DELETE FROM equipment_event WHERE equipment_id = 'press-2' AND version = 3",
    )
    .await
    .unwrap();
    let output = maintenance(&nats.url(), &rebuilt.url, "audit-history");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("gap: press-2"));
}

#[tokio::test]
async fn a_rebuilt_history_equals_the_incremental_one_sqlite() {
    rebuild_equals_incremental(DbKind::Sqlite).await;
}

#[tokio::test]
async fn a_rebuilt_history_equals_the_incremental_one_postgres() {
    rebuild_equals_incremental(DbKind::Postgres).await;
}

#[tokio::test]
async fn retention_removes_old_raw_events_but_not_the_reports() {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let node = NodeProcess::start(
        NodeOptions::new(nats.url(), db.url.clone()).arg("--raw-event-retention-secs", 2),
    )
    .await;
    let client = node.client();
    assert_eq!(
        client.register("press-1", "plant-a", "line-1").await.status,
        201
    );
    client
        .set_status("press-1", json!({"status": "red"}))
        .await
        .unwrap();
    let from = chrono::Utc::now() - chrono::Duration::minutes(1);
    wait_for("the raw events written", Duration::from_secs(20), || {
        let client = client.clone();
        async move { (client.history("press-1").await.len() == 2).then_some(()) }
    })
    .await;
    wait_for("old raw events deleted", Duration::from_secs(20), || {
        let client = client.clone();
        async move { client.history("press-1").await.is_empty().then_some(()) }
    })
    .await;
    let url = client.url(&format!(
        "/v1/equipment/press-1/time-in-state?from={}",
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    let answer = client.send(client.http().get(url)).await.unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let figures = &answer.body["figures"];
    assert!(figures["red_seconds"].as_f64().unwrap() >= 2.0, "{figures}");
    assert_eq!(figures["stops"], 1);
}

/// Three nodes started together against a fresh PostgreSQL database (compose, a new
/// Kubernetes install) all bring the schema up on their first try: they take turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_at_once_migrate_a_fresh_postgres_database_once() {
    let database = TestDatabase::new(DbKind::Postgres).await;
    let attempts: Vec<_> = (0..4)
        .map(|_| {
            let url = database.url.clone();
            tokio::spawn(async move { eq_node::history::connect(&url).await })
        })
        .collect();
    for attempt in attempts {
        let db = attempt
            .await
            .unwrap()
            .expect("every node migrates on its first try");
        db.close().await.unwrap();
    }
    // Each migration is recorded once.
    let db = sea_orm::Database::connect(database.url.as_str())
        .await
        .unwrap();
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT COUNT(*) AS n, COUNT(DISTINCT version) AS d FROM seaql_migrations",
        ))
        .await
        .unwrap()
        .unwrap();
    let (n, d): (i64, i64) = (row.try_get("", "n").unwrap(), row.try_get("", "d").unwrap());
    assert!(n > 0);
    assert_eq!(n, d);
}
