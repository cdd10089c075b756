//! The benchmark: starts its own nats-server and node, and prints in one run, for both
//! durability settings, the raw JetStream baseline beside the system's figures:
//!
//! - raw JetStream publish with expected-subject-sequence at the same concurrency;
//! - HTTP set-status end to end (rate, p50/p99) over many equipment, and its ratio to raw;
//! - the device paths, request/reply and durable (JetStream ingest), and their ratio to raw;
//! - live fan-out: lag from a change's acknowledgement to its delivery on 1,000 SSE
//!   subscribers;
//! - history lag (largest backlog during the load, drain time after it);
//! - history: consumer throughput beside a raw batch insert, lag at 10,000 changes/s, and a
//!   30-day fleet report over 1,000 machines;
//! - memory per active actor with 100,000 machines active at once.
//!
//! `./scripts/bench --help` (builds the release node binary and this benchmark first)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod cluster;
mod history;
mod live;

use anyhow::Context;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use eq_tests::postgres::DbKind;
use eq_tests::{
    ApiClient, NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase, wait_for,
};
use serde_json::json;

struct Args {
    equipment: usize,
    concurrency: usize,
    seconds: u64,
    memory_actors: usize,
    modes: Vec<bool>,
    postgres: bool,
    cluster: bool,
    sse_subscribers: usize,
    history: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        equipment: 10_000,
        concurrency: 256,
        seconds: 10,
        memory_actors: 100_000,
        modes: vec![false, true],
        postgres: false,
        cluster: true,
        sse_subscribers: 1000,
        history: true,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < raw.len() {
        let value = raw.get(i + 1).cloned().unwrap_or_default();
        match raw[i].as_str() {
            "--equipment" => args.equipment = value.parse().expect("--equipment N"),
            "--concurrency" => args.concurrency = value.parse().expect("--concurrency N"),
            "--seconds" => args.seconds = value.parse().expect("--seconds N"),
            "--memory-actors" => args.memory_actors = value.parse().expect("--memory-actors N"),
            "--only-default" => {
                args.modes = vec![false];
                i -= 1;
            }
            "--only-always" => {
                args.modes = vec![true];
                i -= 1;
            }
            "--postgres" => {
                args.postgres = true;
                i -= 1;
            }
            "--no-cluster" => {
                args.cluster = false;
                i -= 1;
            }
            "--only-history" => {
                args.modes = vec![];
                args.memory_actors = 0;
                args.sse_subscribers = 0;
                args.cluster = false;
                i -= 1;
            }
            "--no-history" => {
                args.history = false;
                i -= 1;
            }
            "--sse-subscribers" => {
                args.sse_subscribers = value.parse().expect("--sse-subscribers N (0: skip)")
            }
            "--help" | "-h" => {
                println!(
                    "bench [--equipment 10000] [--concurrency 256] [--seconds 10] \
                     [--memory-actors 100000] [--only-default|--only-always] [--postgres] \
                     [--no-cluster] [--no-history|--only-history] [--sse-subscribers 1000]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    args
}

/// Rate and latency of one load phase.
struct Load {
    ok: u64,
    failed: u64,
    seconds: f64,
    latencies_us: Vec<u32>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let idx = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[idx]) / 1000.0
    }
}

/// Runs `concurrency` workers, each cycling through its own share of `equipment` ids,
/// calling `op(worker, id_index, iteration)` until the time is up.
async fn drive<F, Fut>(concurrency: usize, equipment: usize, duration: Duration, op: F) -> Load
where
    F: Fn(usize, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (op, stop, failed) = (op.clone(), stop.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mine: Vec<usize> = (worker..equipment).step_by(concurrency).collect();
            let mut iteration = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for &idx in &mine {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let t = Instant::now();
                    if op(worker, idx, iteration).await {
                        latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                iteration += 1;
            }
            latencies
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap_or_default());
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Load {
        ok: latencies.len() as u64,
        failed: failed.load(Ordering::Relaxed),
        seconds,
        latencies_us: latencies,
    }
}

/// A payload about the size of a real event.
fn raw_payload() -> Bytes {
    Bytes::from(vec![b'x'; 700])
}

/// Raw JetStream: publish with `Nats-Expected-Last-Subject-Sequence`, one in flight per
/// worker, over the same number of subjects as equipment.
async fn raw_baseline(nats: &NatsServer, args: &Args, with_msg_id: bool) -> anyhow::Result<Load> {
    let client = async_nats::connect(nats.url()).await?;
    let js = jetstream::new(client);
    let name = if with_msg_id { "RAW_MSGID" } else { "RAW" };
    let prefix = if with_msg_id { "rawid" } else { "raw" };
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![format!("{prefix}.>")],
        storage: stream::StorageType::File,
        allow_direct: true,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await?;
    let last = Arc::new(
        (0..args.equipment)
            .map(|_| AtomicU64::new(0))
            .collect::<Vec<_>>(),
    );
    let payload = raw_payload();
    let load = drive(
        args.concurrency,
        args.equipment,
        Duration::from_secs(args.seconds),
        move |_, idx, iteration| {
            let (js, last, payload) = (js.clone(), last.clone(), payload.clone());
            async move {
                let expected = last[idx].load(Ordering::Relaxed);
                let mut message = PublishMessage::build()
                    .payload(payload)
                    .expected_last_subject_sequence(expected);
                if with_msg_id {
                    message = message.message_id(format!("m{idx}-{iteration}"));
                }
                match js.send_publish(format!("{prefix}.{idx}"), message).await {
                    Ok(ack) => match ack.await {
                        Ok(ack) => {
                            last[idx].store(ack.sequence, Ordering::Relaxed);
                            true
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    Ok(load)
}

async fn metric(client: &ApiClient, name: &str) -> f64 {
    client.metric_sum(name, "").await
}

const STATUSES: [&str; 3] = ["green", "yellow", "red"];

struct ModeResult {
    sync_always: bool,
    raw: Load,
    raw_msgid: Load,
    http: Load,
    device: Load,
    /// Durable ingest: the devices' publish acks, and the rate at which the node applied.
    durable_publish: Load,
    durable_applied_per_second: f64,
    max_lag: f64,
    drain_seconds: f64,
}

async fn run_mode(args: &Args, sync_always: bool) -> anyhow::Result<ModeResult> {
    let label = if sync_always {
        "sync_interval: always"
    } else {
        "default sync"
    };
    eprintln!("== {label}: raw JetStream baseline");
    let nats = NatsServer::start(if sync_always {
        NatsOptions::durable()
    } else {
        NatsOptions::default()
    });
    let raw = raw_baseline(&nats, args, false).await?;
    let raw_msgid = raw_baseline(&nats, args, true).await?;

    eprintln!("== {label}: starting a node");
    let db = TestDatabase::new(if args.postgres {
        DbKind::Postgres
    } else {
        DbKind::Sqlite
    })
    .await;
    // Group commit where fsync dominates (see the node's --group-commit).
    let options = NodeOptions::new(nats.url(), db.url.clone()).arg("--group-commit", sync_always);
    let node = NodeProcess::start(options).await;
    let client = node.client();

    eprintln!("== {label}: registering {} equipment", args.equipment);
    register_all(&client, args.equipment, 64).await?;

    eprintln!(
        "== {label}: HTTP set-status load for {}s at {} in flight",
        args.seconds, args.concurrency
    );
    let max_lag = Arc::new(AtomicU64::new(0));
    let sampling = {
        let (client, max_lag) = (client.clone(), max_lag.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let lag = metric(&client, "eq_history_lag_events").await as u64;
                max_lag.fetch_max(lag, Ordering::Relaxed);
            }
        })
    };
    let http = {
        let client = client.clone();
        drive(args.concurrency, args.equipment, Duration::from_secs(args.seconds), move |_, idx, it| {
            let client = client.clone();
            async move {
                let body = json!({"status": STATUSES[(idx + it as usize) % 3], "reason": "bench", "updated_by": "bench"});
                // Status only: the load generator shares the 2 cores, so it skips JSON parsing.
                let request = client.http().put(client.url(&format!("/v1/equipment/bench-{idx}/status"))).json(&body);
                match request.send().await {
                    Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
    };
    sampling.abort();

    eprintln!("== {label}: waiting for the history to catch up");
    let drain_started = Instant::now();
    client
        .wait_history_written(args.equipment as u64 + http.ok, Duration::from_secs(600))
        .await;
    let drain_seconds = drain_started.elapsed().as_secs_f64();

    eprintln!("== {label}: device request/reply load");
    let nats_client = async_nats::connect(nats.url()).await?;
    let device = drive(args.concurrency, args.equipment, Duration::from_secs(args.seconds), move |_, idx, it| {
        let nats = nats_client.clone();
        async move {
            let body = json!({"status": STATUSES[(idx + it as usize + 1) % 3], "device_id": "bench-pi"});
            match nats.request(format!("eq.device.bench-{idx}.status"), body.to_string().into()).await {
                Ok(reply) => reply.payload.starts_with(b"{\"ok\":true"),
                Err(_) => false,
            }
        }
    })
    .await;
    eprintln!("== {label}: durable device ingest (JetStream publish, applied by the node)");
    let (durable_publish, durable_applied_per_second) = durable_ingest(&nats, args).await?;
    drop(node);
    Ok(ModeResult {
        sync_always,
        raw,
        raw_msgid,
        http,
        device,
        durable_publish,
        durable_applied_per_second,
        max_lag: max_lag.load(Ordering::Relaxed) as f64,
        drain_seconds,
    })
}

/// Devices publish through JetStream to `eq.ingest.<id>.status` (with `Nats-Msg-Id`, as the
/// example Pi does) for the phase's duration; then waits until the node applied everything
/// (the work queue is empty). Returns the publish figures and the end-to-end applied rate.
async fn durable_ingest(nats: &NatsServer, args: &Args) -> anyhow::Result<(Load, f64)> {
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    let queue = js.get_stream("EQ_INGEST").await?;
    let started = Instant::now();
    let publisher = js.clone();
    let publish = drive(args.concurrency, args.equipment, Duration::from_secs(args.seconds), move |_, idx, it| {
        let js = publisher.clone();
        async move {
            let command_id = format!("d{idx}-{it}");
            let body = json!({"status": STATUSES[(idx + it as usize + 2) % 3], "device_id": "bench-pi", "command_id": command_id});
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", command_id.as_str());
            match js.publish_with_headers(format!("eq.ingest.bench-{idx}.status"), headers, body.to_string().into()).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    wait_for("the ingest queue applied", Duration::from_secs(600), || {
        let mut queue = queue.clone();
        async move { (queue.info().await.ok()?.state.messages == 0).then_some(()) }
    })
    .await;
    let applied_per_second = publish.ok as f64 / started.elapsed().as_secs_f64();
    Ok((publish, applied_per_second))
}

/// Registers `bench-0..n` over HTTP with `concurrency` requests in flight.
async fn register_all(client: &ApiClient, n: usize, concurrency: usize) -> anyhow::Result<()> {
    register_range(client, 0, n, concurrency).await
}

/// Memory with `n` machines active at once.
struct Memory {
    machines: usize,
    /// RSS growth per machine while every machine has a running ractor actor.
    per_running_actor: f64,
    /// RSS growth per machine once the actors handed their state back to the shards.
    per_resident_machine: f64,
    registration_rate: f64,
}

/// Registers `n` machines on a fresh node and measures the RSS growth per machine, with the
/// given actor idle time, once `settled` holds for the node's (running, resident) counts.
async fn rss_per_machine(
    n: usize,
    actor_idle_secs: u64,
    expect_running: bool,
) -> anyhow::Result<(f64, f64)> {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    // No history consumer in this node: its SQLite page cache would count as actor memory.
    let options = NodeOptions::new(nats.url(), db.url.clone())
        .arg("--history", "false")
        .arg("--actor-idle-secs", actor_idle_secs);
    let node = NodeProcess::start(options).await;
    let client = node.client();
    // Warm up the HTTP and NATS paths so their buffers are not counted.
    register_all(&client, 2_000, 64).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = node.rss_bytes();
    let started = Instant::now();
    let rest = n.saturating_sub(2_000);
    register_range(&client, 2_000, 2_000 + rest, 64).await?;
    let rate = rest as f64 / started.elapsed().as_secs_f64();
    wait_for("actors settled", Duration::from_secs(120), || {
        let client = client.clone();
        async move {
            let running = metric(&client, "eq_active_actors").await as usize;
            let settled = if expect_running {
                running >= n
            } else {
                running == 0
            };
            settled.then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = node.rss_bytes();
    Ok((after.saturating_sub(before) as f64 / rest as f64, rate))
}

async fn memory(args: &Args) -> anyhow::Result<Memory> {
    eprintln!(
        "== memory: {} machines, each with a running actor",
        args.memory_actors
    );
    let (per_running_actor, registration_rate) =
        rss_per_machine(args.memory_actors, 3600, true).await?;
    eprintln!(
        "== memory: {} machines, actors handed their state back",
        args.memory_actors
    );
    let (per_resident_machine, _) = rss_per_machine(args.memory_actors, 1, false).await?;
    Ok(Memory {
        machines: args.memory_actors,
        per_running_actor,
        per_resident_machine,
        registration_rate,
    })
}

async fn register_range(
    client: &ApiClient,
    from: usize,
    to: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(from as u64));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= to {
                    return Ok::<_, anyhow::Error>(());
                }
                let answer = client
                    .register(&format!("bench-{i}"), "bench", "line-1")
                    .await;
                anyhow::ensure!(answer.status == 201, "register: {:?}", answer.body);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args();
    let mut results = Vec::new();
    for &sync_always in &args.modes {
        results.push(
            run_mode(&args, sync_always)
                .await
                .context("benchmark mode")?,
        );
    }
    let memory = if args.memory_actors > 0 {
        Some(memory(&args).await?)
    } else {
        None
    };
    let fan_out = if args.sse_subscribers > 0 {
        Some(live::run(args.sse_subscribers, 100, 100, args.seconds).await?)
    } else {
        None
    };
    let history = if args.history {
        Some(history::run(&args).await?)
    } else {
        None
    };
    let cluster = if args.cluster {
        Some(cluster::run(&args).await?)
    } else {
        None
    };

    println!();
    println!(
        "Equipment Live benchmark — {} equipment, {} in flight, {} s per phase, history on {}",
        args.equipment,
        args.concurrency,
        args.seconds,
        if args.postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    println!();
    println!("| durability | path | ok/s | p50 ms | p99 ms | failed | ratio to raw |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &results {
        let mode = if r.sync_always {
            "sync_interval: always (node: --group-commit true)"
        } else {
            "default sync (node: --group-commit false)"
        };
        let raw = r.raw.rate();
        for (path, load) in [
            (
                "raw JetStream publish, expected-subject-seq (baseline)",
                &r.raw,
            ),
            ("raw JetStream publish, + Nats-Msg-Id", &r.raw_msgid),
            ("HTTP PUT status, end to end", &r.http),
            ("device request/reply, end to end", &r.device),
            (
                "device durable (JetStream publish to eq.ingest; ack latency)",
                &r.durable_publish,
            ),
        ] {
            println!(
                "| {mode} | {path} | {:.0} | {:.2} | {:.2} | {} | {:.2}× |",
                load.rate(),
                load.percentile(0.5),
                load.percentile(0.99),
                load.failed,
                load.rate() / raw
            );
        }
    }
    println!();
    println!(
        "| durability | device durable path: applied by the node, end to end | ratio to raw |"
    );
    println!("|---|---:|---:|");
    for r in &results {
        let mode = if r.sync_always {
            "sync_interval: always"
        } else {
            "default sync"
        };
        println!(
            "| {mode} | {:.0}/s ({} published, all applied) | {:.2}× |",
            r.durable_applied_per_second,
            r.durable_publish.ok,
            r.durable_applied_per_second / r.raw.rate()
        );
    }
    println!();
    println!(
        "| durability | history: largest backlog during HTTP load (events) | drain time after load |"
    );
    println!("|---|---:|---:|");
    for r in &results {
        let mode = if r.sync_always {
            "sync_interval: always"
        } else {
            "default sync"
        };
        println!("| {mode} | {:.0} | {:.2} s |", r.max_lag, r.drain_seconds);
    }
    if let Some(m) = memory {
        println!();
        println!(
            "| memory, {} machines active at once | bytes per machine | KiB |",
            m.machines
        );
        println!("|---|---:|---:|");
        for (what, bytes) in [
            ("each with a running ractor actor", m.per_running_actor),
            (
                "actors stopped, state resident in the shard (ready, no JetStream read)",
                m.per_resident_machine,
            ),
        ] {
            println!("| {what} | {bytes:.0} | {:.2} |", bytes / 1024.0);
        }
        println!("(registration over HTTP: {:.0}/s)", m.registration_rate);
    }
    if let Some(f) = fan_out {
        println!();
        println!(
            "| live fan-out: {} SSE subscribers on one node, {} machines, {:.0} changes/s through the API | figure |",
            f.subscribers, f.machines, f.changes_per_second
        );
        println!("|---|---:|");
        println!(
            "| lag from the change's HTTP answer to its delivery, p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
            cluster::pct(&f.lag_ms, 0.5),
            cluster::pct(&f.lag_ms, 0.99),
            f.lag_ms.last().copied().unwrap_or(0.0)
        );
        println!(
            "| deliveries: expected / missing ({} changes × {} subscribers) | {} / {} |",
            f.changes, f.subscribers, f.expected, f.missing
        );
    }
    if let Some(h) = history {
        println!();
        println!(
            "| history ({}) | figure |",
            if args.postgres {
                "PostgreSQL"
            } else {
                "SQLite"
            }
        );
        println!("|---|---:|");
        println!(
            "| consumer catching up on {} events (events, current state, state spans) | {:.0} rows/s |",
            h.events, h.consumer_rows_per_s
        );
        println!(
            "| raw batch insert of the same number of event rows, 500 per transaction (baseline) | {:.0} rows/s |",
            h.raw_rows_per_s
        );
        println!(
            "| consumer / raw insert | {:.2}× |",
            h.consumer_rows_per_s / h.raw_rows_per_s
        );
        println!(
            "| sustained device changes (target {}/s): achieved | {:.0}/s |",
            h.target_rate, h.achieved_rate
        );
        println!(
            "| largest history backlog meanwhile (sampled every 250 ms) | {:.0} events |",
            h.max_lag_events
        );
        println!(
            "| 30-day availability report, {} machines, {} spans: p50 / max of 5 | {:.2} / {:.2} s |",
            h.report_machines,
            h.report_spans,
            cluster::pct(&h.report_seconds, 0.5),
            h.report_seconds.last().copied().unwrap_or(0.0)
        );
    }
    if let Some(c) = cluster {
        println!();
        println!("| cluster (one NATS, default sync, PostgreSQL history) | figure |");
        println!("|---|---:|");
        println!(
            "| HTTP set-status through 1 node | {:.0}/s (p99 {:.1} ms) |",
            c.one_node.rate(),
            c.one_node.percentile(0.99)
        );
        println!(
            "| HTTP set-status through 3 nodes | {:.0}/s (p99 {:.1} ms) |",
            c.three_nodes.rate(),
            c.three_nodes.percentile(0.99)
        );
        let (h, r) = (&c.handoff_pause_ms, &c.reavailable_ms);
        println!(
            "| graceful hand-off (SIGTERM): pause of a moved machine's commands, p50 / p99 / max over {} machines | {:.0} / {:.0} / {:.0} ms |",
            h.len(),
            cluster::pct(h, 0.5),
            cluster::pct(h, 0.99),
            h.last().copied().unwrap_or(0.0)
        );
        println!(
            "| re-availability after SIGKILL: first success again, p50 / p99 / max over {} machines | {:.0} / {:.0} / {:.0} ms |",
            r.len(),
            cluster::pct(r, 0.5),
            cluster::pct(r, 0.99),
            r.last().copied().unwrap_or(0.0)
        );
    }
    Ok(())
}
