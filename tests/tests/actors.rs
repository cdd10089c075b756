//! The equipment actor and its shard supervisor in-process, against a real nats-server:
//! restart after a panic, passivation, and fencing of a stale writer by JetStream itself.

use std::sync::Arc;
use std::time::Duration;

use eq_actors::domain::{EquipmentId, Line, Site, Source, Status, Version};
use eq_actors::equipment::{
    Action, Command, CommandError, EquipmentMsg, Registration, Rules, StatusChange, decide,
};
use eq_actors::shard::{ShardContext, ShardHost, ShardHostConfig};
use eq_actors::store::{EventStore, StoreError};
use eq_actors::subjects::Subjects;
use eq_tests::{NatsOptions, NatsServer, wait_for};

async fn store(nats: &NatsServer) -> EventStore {
    store_with(nats, false).await
}

async fn store_with(nats: &NatsServer, group_commit: bool) -> EventStore {
    let client = async_nats::connect(nats.url()).await.unwrap();
    EventStore::open_with(
        async_nats::jetstream::new(client),
        Subjects::default(),
        1,
        group_commit,
    )
    .await
    .unwrap()
}

async fn host(store: EventStore, idle: Duration) -> Arc<ShardHost> {
    host_with(store, idle, idle * 2).await
}

async fn host_with(store: EventStore, actor_idle: Duration, idle: Duration) -> Arc<ShardHost> {
    let ctx = Arc::new(ShardContext {
        store,
        rules: Rules::default(),
        listener: None,
    });
    let host = ShardHost::new(
        ShardHostConfig {
            shard_count: 4,
            actor_idle,
            idle_timeout: idle,
            command_deadline: Duration::from_secs(5),
        },
        ctx,
    );
    host.host_all().await.unwrap();
    host
}

fn id(s: &str) -> EquipmentId {
    EquipmentId::parse(s).unwrap()
}

fn register(equipment: &str) -> Command {
    Command {
        equipment_id: id(equipment),
        action: Action::Register(Registration {
            name: "m".into(),
            description: String::new(),
            site: Site::parse("s").unwrap(),
            line: Line::parse("l").unwrap(),
            tags: vec![],
            status: Status::Green,
        }),
        command_id: None,
        expected_version: None,
        updated_by: "t".into(),
        source: Source::Api,
        ingest: None,
        scope: None,
    }
}

fn set(equipment: &str, status: Status) -> Command {
    Command {
        equipment_id: id(equipment),
        action: Action::SetStatus(StatusChange {
            status,
            reason: None,
            note: None,
            occurred_at: None,
        }),
        command_id: None,
        expected_version: None,
        updated_by: "t".into(),
        source: Source::Api,
        ingest: None,
        scope: None,
    }
}

#[tokio::test]
async fn a_panicking_actor_is_restarted_with_its_state_intact() {
    let nats = NatsServer::start(NatsOptions::default());
    let host = host(store(&nats).await, Duration::from_secs(600)).await;
    host.execute(register("m-1")).await.unwrap();
    host.execute(set("m-1", Status::Red)).await.unwrap();
    host.send(&id("m-1"), EquipmentMsg::Crash).unwrap();
    // The supervisor restarts it; the new actor reads its state back from its last event.
    let state = wait_for("state after restart", Duration::from_secs(10), || {
        let host = host.clone();
        async move { host.get(&id("m-1")).await.ok().flatten() }
    })
    .await;
    assert_eq!(state.version, Version(2));
    assert_eq!(state.status, Status::Red);
    let next = host.execute(set("m-1", Status::Green)).await.unwrap();
    assert_eq!(next.equipment.version, Version(3));
}

#[tokio::test]
async fn idle_actors_hand_back_their_state_and_idle_machines_are_forgotten() {
    let nats = NatsServer::start(NatsOptions::default());
    let host = host_with(
        store(&nats).await,
        Duration::from_millis(200),
        Duration::from_secs(2),
    )
    .await;
    for i in 0..10 {
        host.execute(register(&format!("p-{i}"))).await.unwrap();
        host.execute(set(&format!("p-{i}"), Status::Yellow))
            .await
            .unwrap();
    }
    assert!(host.active_actors().await > 0);
    // First the actors stop, but the machines stay in memory ...
    wait_for("all actors stopped", Duration::from_secs(10), || {
        let host = host.clone();
        async move { (host.active_actors().await == 0).then_some(()) }
    })
    .await;
    assert_eq!(host.resident_machines().await, 10);
    // ... and a new actor continues from the handed-back state.
    let next = host.execute(set("p-3", Status::Red)).await.unwrap();
    assert_eq!(next.equipment.version, Version(3));
    // Later the idle machines are forgotten entirely and read back from JetStream.
    wait_for("machines forgotten", Duration::from_secs(10), || {
        let host = host.clone();
        async move { (host.resident_machines().await == 0).then_some(()) }
    })
    .await;
    let state = host.get(&id("p-3")).await.unwrap().unwrap();
    assert_eq!(state.version, Version(3));
    assert_eq!(state.status, Status::Red);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_arriving_while_an_actor_stops_go_to_its_successor_in_order() {
    let nats = NatsServer::start(NatsOptions::default());
    // Actors stop after 10 ms idle, so commands keep racing the hand-over.
    let host = host_with(
        store(&nats).await,
        Duration::from_millis(10),
        Duration::from_secs(60),
    )
    .await;
    let ids: Vec<String> = (0..16).map(|i| format!("r-{i}")).collect();
    for id in &ids {
        host.execute(register(id)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for (n, id) in ids.clone().into_iter().enumerate() {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..30u64 {
                tokio::time::sleep(Duration::from_millis((i * 7 + n as u64) % 25)).await;
                let outcome = host.execute(set(&id, Status::Green)).await.unwrap();
                assert_eq!(outcome.equipment.version, Version(i + 2), "{id}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(host.resident_machines().await, ids.len());
}

#[tokio::test]
async fn jetstream_refuses_a_stale_writer() {
    let nats = NatsServer::start(NatsOptions::default());
    let store = store(&nats).await;
    let host = host(store.clone(), Duration::from_secs(600)).await;
    host.execute(register("f-1")).await.unwrap();
    // A writer that read version 1 ...
    let stale = store.load(&id("f-1")).await.unwrap();
    // ... while the owner moves on to version 2.
    host.execute(set("f-1", Status::Red)).await.unwrap();
    let eq_actors::equipment::Decision::Append(event) = decide(
        &stale.state,
        &set("f-1", Status::Yellow),
        chrono::Utc::now(),
        &Rules::default(),
    )
    .unwrap() else {
        panic!("expected an event")
    };
    assert_eq!(
        event.version,
        Version(2),
        "the stale writer would write version 2 again"
    );
    match store.append(&event, stale.last_seq).await {
        Err(StoreError::Fenced) => {}
        other => panic!("a stale append must be fenced, got {other:?}"),
    }
    let current = store.load(&id("f-1")).await.unwrap();
    assert_eq!(current.state.equipment.unwrap().status, Status::Red);
}

#[tokio::test]
async fn two_hosts_owning_the_same_shard_never_write_a_version_twice() {
    two_hosts_on_one_shard(false).await;
}

#[tokio::test]
async fn two_hosts_on_one_shard_with_group_commit_never_write_a_version_twice() {
    two_hosts_on_one_shard(true).await;
}

async fn two_hosts_on_one_shard(group_commit: bool) {
    let nats = NatsServer::start(NatsOptions::default());
    let store = store_with(&nats, group_commit).await;
    // Two "nodes" both believe they own every shard (a hand-off not yet noticed).
    let a = host(store.clone(), Duration::from_secs(600)).await;
    let b = host(store.clone(), Duration::from_secs(600)).await;
    a.execute(register("both-1")).await.unwrap();
    let mut tasks = Vec::new();
    for (n, h) in [a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for i in 0..50 {
                let status = [Status::Green, Status::Red][(i + n) % 2];
                match h.execute(set("both-1", status)).await {
                    Ok(o) => versions.push(o.equipment.version.0),
                    Err(CommandError::Fenced) => {}
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            versions
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let unique: std::collections::BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "no version was acknowledged twice");
    let last = store.load(&id("both-1")).await.unwrap();
    let final_version = last.state.equipment.unwrap().version.0;
    assert_eq!(
        final_version,
        all.len() as u64 + 1,
        "every acknowledged write is one version"
    );
    // The stream holds exactly versions 1..=final, each once, in order.
    let stream = store.stream();
    let mut seen = Vec::new();
    let mut seq = 1;
    while let Ok(msg) = stream.direct_get(seq).await {
        let event = eq_actors::store::decode(seq, &msg.payload).unwrap();
        seen.push(event.version.0);
        seq += 1;
    }
    assert_eq!(seen, (1..=final_version).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_many_equipment_and_keeps_each_gapless() {
    let nats = NatsServer::start(NatsOptions::default());
    let store = store_with(&nats, true).await;
    let host = host(store.clone(), Duration::from_secs(600)).await;
    let ids: Vec<String> = (0..64).map(|i| format!("g-{i}")).collect();
    for id in &ids {
        host.execute(register(id)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let status = [Status::Green, Status::Red, Status::Yellow][i % 3];
                let outcome = host.execute(set(&id, status)).await.unwrap();
                assert_eq!(outcome.equipment.version, Version(i as u64 + 2));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every event is in the stream once, and each equipment's versions are 1..=21 in order.
    let mut per_id: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let mut seq = 1;
    while let Ok(msg) = store.stream().direct_get(seq).await {
        let event = eq_actors::store::decode(seq, &msg.payload).unwrap();
        per_id
            .entry(event.equipment_id.to_string())
            .or_default()
            .push(event.version.0);
        seq += 1;
    }
    assert_eq!(per_id.len(), 64);
    for (id, versions) in per_id {
        assert_eq!(versions, (1..=21).collect::<Vec<u64>>(), "{id}");
    }
}
