//! Cluster figures: set-status throughput through one node and through three, the pause a
//! shard's commands see during a graceful hand-off (SIGTERM), and how long a killed node's
//! shards take to answer again (SIGKILL).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eq_actors::domain::{EquipmentId, shard_of};
use eq_tests::postgres::DbKind;
use eq_tests::{
    ApiClient, NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase, wait_for,
};
use serde_json::json;

use crate::{Args, Load, STATUSES, drive, register_all};

pub struct ClusterFigures {
    pub one_node: Load,
    pub three_nodes: Load,
    /// Per moved machine: the longest a command waited during a graceful hand-off (ms).
    pub handoff_pause_ms: Vec<f64>,
    /// Per machine of the killed node: time from SIGKILL to its first success again (ms).
    pub reavailable_ms: Vec<f64>,
}

/// Percentile of sorted values.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn owners(client: &ApiClient) -> Vec<Option<String>> {
    let answer = client
        .send(client.http().get(client.url("/v1/cluster")))
        .await
        .expect("cluster status");
    answer.body["owners"]
        .as_array()
        .map(|a| a.iter().map(|o| o.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

async fn node_id(client: &ApiClient) -> String {
    let answer = client
        .send(client.http().get(client.url("/v1/cluster")))
        .await
        .expect("cluster");
    answer.body["node"].as_str().unwrap_or_default().to_string()
}

async fn wait_spread(client: &ApiClient, nodes: usize) {
    wait_for("shards spread", Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            let owners = owners(&client).await;
            let mut count: BTreeMap<String, usize> = BTreeMap::new();
            for o in &owners {
                *count.entry(o.clone()?).or_default() += 1;
            }
            (count.len() == nodes && owners.len() == 64).then_some(())
        }
    })
    .await;
}

/// One probe request: when it was sent, when it finished, whether it succeeded.
type Sample = (Instant, Instant, bool);
/// A machine's probe log.
type ProbeLog = (String, Vec<Sample>);

/// Sends status changes for `ids` in a loop through `gateways` until stopped; records
/// (sent, done, ok) per request and machine.
fn probe(
    gateways: Vec<String>,
    ids: Vec<String>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<ProbeLog>> {
    ids.into_iter()
        .enumerate()
        .map(|(n, id)| {
            let (gateways, stop) = (gateways.clone(), stop.clone());
            tokio::spawn(async move {
                let http = eq_tests::auth::admin_http();
                let mut log = Vec::new();
                let mut i = n;
                while !stop.load(Ordering::Relaxed) {
                    let gateway = &gateways[i % gateways.len()];
                    i += 1;
                    let sent = Instant::now();
                    let ok = http
                        .put(format!("{gateway}/v1/equipment/{id}/status"))
                        .timeout(Duration::from_secs(15))
                        .json(&json!({"status": STATUSES[i % 3]}))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    log.push((sent, Instant::now(), ok));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (id, log)
            })
        })
        .collect()
}

/// Runs probes on the machines of the node `victim`, applies `event` to it, and returns the
/// probes' logs and the moment of the event.
async fn around_event(
    nodes: &mut [NodeProcess],
    victim: usize,
    kill: bool,
    equipment: usize,
) -> (Instant, Vec<ProbeLog>) {
    let client = nodes[(victim + 1) % nodes.len()].client();
    let owners = owners(&client).await;
    let victim_id = node_id(&nodes[victim].client()).await;
    let ids: Vec<String> = (0..equipment)
        .map(|i| format!("bench-{i}"))
        .filter(|id| {
            let shard = shard_of(&EquipmentId::parse(id.as_str()).expect("id"), 64).0 as usize;
            owners.get(shard).cloned().flatten().as_deref() == Some(victim_id.as_str())
        })
        .take(64)
        .collect();
    let gateways: Vec<String> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n.base_url())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let probes = probe(gateways, ids, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at = Instant::now();
    if kill {
        nodes[victim].kill();
    } else {
        nodes[victim].terminate();
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for p in probes {
        if let Ok(log) = p.await {
            logs.push(log);
        }
    }
    (at, logs)
}

pub async fn run(args: &Args) -> anyhow::Result<ClusterFigures> {
    eprintln!("== cluster: one node");
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Postgres).await;
    let options = || NodeOptions::new(nats.url(), db.url.clone());
    let mut nodes = vec![NodeProcess::start(options()).await];
    wait_spread(&nodes[0].client(), 1).await;
    register_all(&nodes[0].client(), args.equipment, 64).await?;
    let one_node = http_load(&nodes, args).await;

    eprintln!("== cluster: three nodes");
    for _ in 0..2 {
        nodes.push(NodeProcess::start(options()).await);
    }
    wait_spread(&nodes[0].client(), 3).await;
    let three_nodes = http_load(&nodes, args).await;

    eprintln!("== cluster: graceful hand-off (SIGTERM)");
    let (at, logs) = around_event(&mut nodes, 2, false, args.equipment).await;
    let mut handoff_pause_ms: Vec<f64> = logs
        .iter()
        .map(|(_, log)| {
            log.iter()
                .filter(|(sent, done, _)| *done >= at && *sent <= at + Duration::from_secs(5))
                .map(|(sent, done, _)| done.duration_since(*sent).as_secs_f64() * 1000.0)
                .fold(0.0, f64::max)
        })
        .collect();
    handoff_pause_ms.sort_by(f64::total_cmp);
    nodes[2].relaunch().await;
    wait_spread(&nodes[0].client(), 3).await;

    eprintln!("== cluster: re-availability after SIGKILL");
    let (at, logs) = around_event(&mut nodes, 1, true, args.equipment).await;
    let mut reavailable_ms: Vec<f64> = logs
        .iter()
        .filter_map(|(_, log)| {
            log.iter()
                .filter(|(sent, _, ok)| *ok && *sent >= at)
                .map(|(_, done, _)| done.duration_since(at).as_secs_f64() * 1000.0)
                .next()
        })
        .collect();
    reavailable_ms.sort_by(f64::total_cmp);
    Ok(ClusterFigures {
        one_node,
        three_nodes,
        handoff_pause_ms,
        reavailable_ms,
    })
}

async fn http_load(nodes: &[NodeProcess], args: &Args) -> Load {
    let clients: Vec<ApiClient> = nodes.iter().map(|n| n.client()).collect();
    drive(
        args.concurrency,
        args.equipment,
        Duration::from_secs(args.seconds),
        move |worker, idx, it| {
            let client = clients[worker % clients.len()].clone();
            async move {
                let body =
                    json!({"status": STATUSES[(idx + it as usize) % 3], "updated_by": "bench"});
                let request = client
                    .http()
                    .put(client.url(&format!("/v1/equipment/bench-{idx}/status")))
                    .json(&body);
                match request.send().await {
                    Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        },
    )
    .await
}
