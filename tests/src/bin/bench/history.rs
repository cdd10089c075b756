//! History figures: the consumer's throughput catching up on a backlog (beside a raw batch
//! insert into the same kind of database, in the same run), the history lag under a
//! sustained 10,000 changes/s, and the time of a 30-day fleet availability report over
//! 1,000 machines and millions of state spans.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eq_entities::{equipment_event, state_interval};
use eq_tests::postgres::DbKind;
use eq_tests::{ApiClient, NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase};
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait};
use serde_json::json;

use crate::{Args, STATUSES, drive, register_range};

pub struct HistoryFigures {
    pub events: u64,
    pub consumer_rows_per_s: f64,
    pub raw_rows_per_s: f64,
    pub target_rate: u64,
    pub achieved_rate: f64,
    pub max_lag_events: f64,
    pub report_spans: u64,
    pub report_machines: usize,
    /// Seconds per report, sorted.
    pub report_seconds: Vec<f64>,
}

pub async fn run(args: &Args) -> anyhow::Result<HistoryFigures> {
    let kind = if args.postgres {
        DbKind::Postgres
    } else {
        DbKind::Sqlite
    };
    let machines = 2_000;
    eprintln!("== history: a backlog of device changes, written while no history consumer runs");
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(kind).await;
    let writer =
        NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone()).arg("--history", false))
            .await;
    register_range(&writer.client(), 0, machines, 64).await?;
    let nats_client = async_nats::connect(nats.url()).await?;
    let load = {
        let nats = nats_client.clone();
        drive(
            args.concurrency,
            machines,
            Duration::from_secs(args.seconds),
            move |_, idx, it| {
                let nats = nats.clone();
                async move {
                    let body =
                        json!({"status": STATUSES[(idx + it as usize) % 3], "reason": "bench"});
                    nats.request(
                        format!("eq.device.bench-{idx}.status"),
                        body.to_string().into(),
                    )
                    .await
                    .is_ok_and(|r| r.payload.starts_with(b"{\"ok\":true"))
                }
            },
        )
        .await
    };
    let events = machines as u64 + load.ok;
    drop(writer);

    eprintln!("== history: a node with the consumer catches up on {events} events");
    let started = Instant::now();
    let node = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    let client = node.client();
    client
        .wait_history_written(events, Duration::from_secs(900))
        .await;
    let consumer_rows_per_s = events as f64 / started.elapsed().as_secs_f64();

    eprintln!("== history: raw batch insert of {events} rows into the same kind of database");
    let scratch = TestDatabase::new(kind).await;
    let raw = connect(&scratch.url).await?;
    let raw_rows_per_s = raw_insert(&raw, events).await?;

    eprintln!("== history: lag under a sustained 10,000 changes/s");
    let (achieved_rate, max_lag_events) =
        sustained(&client, &nats_client, machines, 10_000, args.seconds).await;
    drop(node);

    eprintln!("== history: a 30-day fleet report over 1,000 machines");
    let report_db = TestDatabase::new(kind).await;
    let spans_db = connect(&report_db.url).await?;
    let (report_machines, spans_per_machine) = (1_000, 2_000);
    let report_spans = synthetic_month(&spans_db, report_machines, spans_per_machine).await?;
    // Its own NATS and no consumer: the report reads only the synthetic month.
    let quiet = NatsServer::start(NatsOptions::default());
    let reporter = NodeProcess::start(
        NodeOptions::new(quiet.url(), report_db.url.clone()).arg("--history", false),
    )
    .await;
    let to = chrono::Utc::now();
    let from = to - chrono::Duration::days(30);
    let url = reporter.client().url(&format!(
        "/v1/reports/availability?from={}&to={}",
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    let mut report_seconds = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let answer = reporter
            .client()
            .send(reporter.client().http().get(&url))
            .await?;
        anyhow::ensure!(answer.status == 200, "report: {:?}", answer.status);
        let listed = answer.body["machines"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(
            listed == report_machines,
            "{listed} of {report_machines} machines in the report"
        );
        report_seconds.push(t.elapsed().as_secs_f64());
    }
    report_seconds.sort_by(f64::total_cmp);
    Ok(HistoryFigures {
        events,
        consumer_rows_per_s,
        raw_rows_per_s,
        target_rate: 10_000,
        achieved_rate,
        max_lag_events,
        report_spans,
        report_machines,
        report_seconds,
    })
}

/// Connects to a history database and creates its tables (the node's migrations).
async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    use eq_migration::{Migrator, MigratorTrait};
    let db = sea_orm::Database::connect(url).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// Inserts `n` event-shaped rows in batches of 500, one transaction per batch (what the
/// consumer's own event insert does, without the rest of its work): rows per second.
async fn raw_insert(db: &DatabaseConnection, n: u64) -> anyhow::Result<f64> {
    use sea_orm::TransactionTrait;
    let started = Instant::now();
    let mut written = 0u64;
    while written < n {
        let batch = (n - written).min(500);
        let rows: Vec<equipment_event::ActiveModel> = (0..batch)
            .map(|i| {
                let v = (written + i) as i64;
                equipment_event::ActiveModel {
                    equipment_id: Set(format!("raw-{}", v % 2_000)),
                    version: Set(v),
                    stream_seq: Set(v),
                    kind: Set("status_changed".into()),
                    site: Set("bench".into()),
                    line: Set("line-1".into()),
                    status: Set("red".into()),
                    previous_status: Set(Some("green".into())),
                    reason: Set(Some("bench".into())),
                    note: Set(None),
                    updated_by: Set("device:raw".into()),
                    source: Set("device".into()),
                    occurred_at_ms: Set(None),
                    recorded_at_ms: Set(v),
                    clock_suspect: Set(false),
                    command_id: Set(None),
                }
            })
            .collect();
        let txn = db.begin().await?;
        equipment_event::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        written += batch;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Device changes at `rate` per second for `seconds`; returns the achieved rate and the
/// largest history backlog sampled meanwhile.
async fn sustained(
    client: &ApiClient,
    nats: &async_nats::Client,
    machines: usize,
    rate: u64,
    seconds: u64,
) -> (f64, f64) {
    let done = Arc::new(AtomicU64::new(0));
    let workers = 256u64;
    let per_worker = Duration::from_secs_f64(workers as f64 / rate as f64);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (nats, done) = (nats.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut next = Instant::now() + per_worker.mul_f64(w as f64 / workers as f64);
            let mut n = w as usize;
            while next < until {
                tokio::time::sleep_until(next.into()).await;
                next += per_worker;
                let idx = n % machines;
                n += workers as usize;
                let body = json!({"status": STATUSES[n % 3]});
                if nats
                    .request(
                        format!("eq.device.bench-{idx}.status"),
                        body.to_string().into(),
                    )
                    .await
                    .is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut max_lag = 0.0f64;
    while Instant::now() < until + Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        max_lag = max_lag.max(client.metric_sum("eq_history_lag_events", "").await);
    }
    for t in tasks {
        let _ = t.await;
    }
    let achieved = done.load(Ordering::Relaxed) as f64 / seconds as f64;
    (achieved, max_lag)
}

/// A month of state spans for `machines` machines, `per_machine` each (statuses and reasons
/// cycling, spans of random length, the last one open).
async fn synthetic_month(
    db: &DatabaseConnection,
    machines: usize,
    per_machine: usize,
) -> anyhow::Result<u64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(30);
    let end = chrono::Utc::now().timestamp_millis();
    let start = end - 30 * 24 * 3_600_000;
    let mean = (end - start) / per_machine as i64;
    let mut rows = Vec::with_capacity(2_000);
    let mut total = 0u64;
    for m in 0..machines {
        let mut t = start;
        for v in 0..per_machine {
            let status = ["green", "green", "yellow", "red"][rng.random_range(0..4)];
            let length = rng.random_range(mean / 2..mean * 3 / 2);
            let last = v + 1 == per_machine;
            rows.push(state_interval::ActiveModel {
                equipment_id: Set(format!("m-{m}")),
                version: Set(v as i64 + 1),
                site: Set("works".into()),
                line: Set(format!("line-{}", m % 20)),
                status: Set(status.into()),
                reason: Set((status == "red").then(|| ["jam", "power", "tool"][v % 3].into())),
                recorded_reason: Set(None),
                in_service: Set(true),
                starts_stop: Set(status == "red"),
                start_ms: Set(t),
                end_ms: Set((!last).then_some(t + length)),
            });
            t += length;
            // 2,000 rows × 11 columns stays under SQLite's 32,766 variables.
            if rows.len() == 2_000 {
                state_interval::Entity::insert_many(std::mem::take(&mut rows))
                    .exec_without_returning(db)
                    .await?;
                total += 2_000;
            }
        }
    }
    if !rows.is_empty() {
        total += rows.len() as u64;
        state_interval::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    Ok(total)
}
