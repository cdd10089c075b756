//! Live fan-out: many SSE subscribers on one node (`GET /v1/live`), a steady stream of
//! status changes through the API, and the lag from the change's acknowledgement to its
//! delivery on every subscriber. Also counts what was not delivered (must be nothing).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eq_tests::postgres::DbKind;
use eq_tests::sse::SseClient;
use eq_tests::{NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase, wait_for};
use serde_json::json;

use crate::STATUSES;

pub struct FanOut {
    pub subscribers: usize,
    pub machines: usize,
    pub changes: usize,
    pub changes_per_second: f64,
    /// Lag of every delivery, ms, sorted.
    pub lag_ms: Vec<f64>,
    /// Deliveries expected (changes × subscribers) and missing.
    pub expected: usize,
    pub missing: usize,
}

/// Runs the phase: `subscribers` clients watch a site of `machines` machines while changes
/// are made at `rate` per second for `seconds`.
pub async fn run(
    subscribers: usize,
    machines: usize,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<FanOut> {
    eprintln!(
        "== live fan-out: {subscribers} SSE subscribers, {machines} machines, {rate} changes/s"
    );
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let node = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    let client = node.client();
    for i in 0..machines {
        let answer = client
            .register(&format!("sse-{i}"), "fanout", "line-1")
            .await;
        anyhow::ensure!(answer.status == 201, "register: {:?}", answer.body);
    }

    // Subscribers: each reads its snapshot, then records when each change arrives.
    let url = client.url("/v1/live?site=fanout");
    let ready = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let (url, ready, stop) = (url.clone(), ready.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut sse = SseClient::connect(&url, None).await;
            let mut seen: Vec<(String, u64, Instant)> = Vec::new();
            loop {
                let Some(frame) = sse.next(Duration::from_millis(500)).await else {
                    if stop.load(Ordering::Relaxed) {
                        return seen;
                    }
                    continue;
                };
                match frame.event.as_str() {
                    "ready" => {
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                    "change" => seen.push((
                        frame.equipment_id().to_string(),
                        frame.version(),
                        Instant::now(),
                    )),
                    _ => {}
                }
            }
        }));
    }
    wait_for("every subscriber ready", Duration::from_secs(120), || {
        let ready = ready.clone();
        async move { (ready.load(Ordering::Relaxed) == subscribers).then_some(()) }
    })
    .await;

    // The writer: `rate` changes per second, round robin; the acknowledgement time of each.
    let mut acked: HashMap<(String, u64), Instant> = HashMap::new();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut next = started;
    let mut n = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let id = format!("sse-{}", n % machines);
        let answer = client
            .set_status(&id, json!({"status": STATUSES[(n / machines + 1) % 3]}))
            .await?;
        if answer.status == 200 {
            acked.insert((id, answer.version()), Instant::now());
        }
        n += 1;
    }
    let changes_per_second = acked.len() as f64 / started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);

    let mut lag_ms = Vec::new();
    let mut delivered = 0usize;
    for task in tasks {
        for (id, version, at) in task.await? {
            if let Some(acked_at) = acked.get(&(id, version)) {
                delivered += 1;
                // A delivery can beat the HTTP answer to the writer: count it as no lag.
                lag_ms.push(at.saturating_duration_since(*acked_at).as_secs_f64() * 1000.0);
            }
        }
    }
    lag_ms.sort_by(f64::total_cmp);
    let expected = acked.len() * subscribers;
    Ok(FanOut {
        subscribers,
        machines,
        changes: acked.len(),
        changes_per_second,
        lag_ms,
        expected,
        missing: expected.saturating_sub(delivered),
    })
}
