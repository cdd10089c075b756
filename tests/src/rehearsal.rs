//! A blue/green cut-over rehearsed on one machine, with real processes: a three-server NATS
//! cluster, PostgreSQL, three "blue" nodes (`--replicas 3`) under load; three "green" nodes
//! of a new build join; the load's gateway list switches to green (like a Service selector
//! or a load balancer's target group); then every blue node gets SIGTERM and must drain and
//! exit by itself with status 0 within a bound. The run then checks that no request failed
//! (after the load generator's retries, see [`crate::load`]), that every acknowledged change
//! is in the history exactly once (gapless versions; history rows against acknowledgements,
//! per machine; no Idempotency-Key applied twice), and that every shard ended on a green
//! node. [`run`] returns a readable report and the verdict; `src/bin/rehearse.rs` is the
//! command-line wrapper, `scripts/rehearse-blue-green.sh` the way to run it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::{Database, FromQueryResult, Statement};
use serde_json::Value;

use crate::load::{Load, LoadReport, verify_history};
use crate::node::node_binary;
use crate::postgres::DbKind;
use crate::{ApiClient, NatsCluster, NodeOptions, NodeProcess, TestDatabase, wait_for};

/// How the blue nodes are retired after the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainMode {
    /// SIGTERM to every blue node at once (scaling the blue deployment to zero).
    All,
    /// SIGTERM to one blue node, wait until it exited, then the next.
    OneByOne,
}

/// What to rehearse.
#[derive(Debug, Clone)]
pub struct Options {
    /// Load time of each phase.
    pub duration: Duration,
    pub machines: usize,
    pub workers: usize,
    /// Binary of the blue (old) nodes; `None`: [`node_binary()`].
    pub blue_bin: Option<PathBuf>,
    /// Binary of the green (new) nodes; `None`: [`node_binary()`].
    pub green_bin: Option<PathBuf>,
    pub drain: DrainMode,
    /// Time between the switch and the SIGTERMs; `None`: `duration`.
    pub term_after_switch: Option<Duration>,
    /// A blue node must have exited this long after its SIGTERM (then it is killed).
    pub exit_bound: Duration,
    /// Where the nodes' logs go (`<id>.log`, kept); `None`: a temporary directory, kept
    /// only if the rehearsal fails.
    pub log_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(20),
            machines: 100,
            workers: 16,
            blue_bin: None,
            green_bin: None,
            drain: DrainMode::All,
            term_after_switch: None,
            // The node's own worst case: 3 s to announce draining + 3 s to look for other
            // nodes + 20 s for the hand-over + 10 s HTTP grace + 3 × 3 s to leave and flush.
            exit_bound: Duration::from_secs(45),
            log_dir: None,
        }
    }
}

/// Command-line help of the rehearsal.
pub const USAGE: &str = "\
rehearse [--duration-secs 20] [--machines 100] [--workers 16]
         [--blue-bin PATH] [--green-bin PATH] [--drain all|one-by-one]
         [--term-after-switch-secs N (default: --duration-secs)] [--exit-bound-secs 45]
         [--log-dir DIR (default: a temporary one, kept on FAIL)]

Blue/green cut-over under load: 3 blue nodes, 3 green nodes join, the gateways switch to
green, the blue nodes get SIGTERM; then 0 failed requests, every acknowledged change in the
history exactly once and every shard on a green node, or FAIL (exit code 1).
Binaries default to equipment-live next to this program (or EQ_NODE_BIN).";

impl Options {
    /// Parses command-line arguments (without the program name). `Err` holds the usage,
    /// with what was wrong unless help was asked for.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut options = Self::default();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.to_string());
            }
            let Some(value) = args.next() else {
                return Err(format!("{flag} needs a value\n\n{USAGE}"));
            };
            let number = |what: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{what} needs a whole number, not {value:?}\n\n{USAGE}"))
            };
            match flag.as_str() {
                "--duration-secs" => options.duration = Duration::from_secs(number(&flag)?),
                "--machines" => options.machines = number(&flag)?.max(1) as usize,
                "--workers" => options.workers = number(&flag)?.max(1) as usize,
                "--blue-bin" => options.blue_bin = Some(PathBuf::from(value)),
                "--green-bin" => options.green_bin = Some(PathBuf::from(value)),
                "--drain" => {
                    options.drain = match value.as_str() {
                        "all" => DrainMode::All,
                        "one-by-one" => DrainMode::OneByOne,
                        _ => return Err(format!("--drain all|one-by-one\n\n{USAGE}")),
                    }
                }
                "--term-after-switch-secs" => {
                    options.term_after_switch = Some(Duration::from_secs(number(&flag)?));
                }
                "--exit-bound-secs" => options.exit_bound = Duration::from_secs(number(&flag)?),
                "--log-dir" => options.log_dir = Some(PathBuf::from(value)),
                _ => return Err(format!("unknown argument {flag}\n\n{USAGE}")),
            }
        }
        Ok(options)
    }
}

/// The verdict and the report to print.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub pass: bool,
    pub report: String,
}

const BLUE: [&str; 3] = ["blue-1", "blue-2", "blue-3"];
const GREEN: [&str; 3] = ["green-1", "green-2", "green-3"];

/// One line of the time line.
#[derive(Debug, Clone)]
struct Phase {
    offset: Duration,
    wall: String,
    text: String,
}

/// How a blue node ended.
#[derive(Debug, Clone)]
struct BlueExit {
    id: String,
    /// `Some(code)` for an exit, `None` for a signal or a kill after the bound.
    code: Option<i32>,
    how: String,
    after_sigterm: Duration,
}

/// One machine's history against what was acknowledged.
#[derive(Debug, Clone, FromQueryResult)]
struct Counted {
    equipment_id: String,
    n_rows: i64,
    /// Rows of changes (not the registration).
    n_changes: i64,
    n_keys: i64,
    n_distinct_keys: i64,
    first_version: i64,
    last_version: i64,
}

/// Everything the run found out, filled in as it goes (a panic keeps what came before).
#[derive(Debug, Default)]
struct Facts {
    phases: Vec<Phase>,
    /// (phase of the load, changes acknowledged in it, whether it was a timed phase that
    /// must show progress).
    load_phases: Vec<(String, u64, bool)>,
    blue_exits: Vec<BlueExit>,
    load: Option<LoadReport>,
    /// The load's count of 2xx answers when the stop was signalled (the workers each finish
    /// the change they are in, so a few more follow; the exact final count is not exposed).
    acked_at_stop: u64,
    history: Vec<Counted>,
    history_gaps: Vec<String>,
    verify: Option<Result<(), String>>,
    owners: BTreeMap<String, usize>,
    unassigned: usize,
    epoch: u64,
    nodes_at_end: Vec<String>,
    /// Counters of interest per node: blue just before its SIGTERM (after the switch no new
    /// request reaches it), green at the end.
    counters: Vec<(String, BTreeMap<String, f64>)>,
    aborted: Option<String>,
    /// (node, log file, lines with WARN, lines with ERROR).
    logs: Vec<(String, PathBuf, usize, usize)>,
}

/// The time line and the findings, shared with the running rehearsal.
#[derive(Clone)]
struct Journal {
    started: Instant,
    facts: Arc<Mutex<Facts>>,
}

impl Journal {
    fn phase(&self, text: impl Into<String>) {
        let phase = Phase {
            offset: self.started.elapsed(),
            wall: chrono::Local::now().format("%H:%M:%S%.3f").to_string(),
            text: text.into(),
        };
        eprintln!(
            "rehearse: +{:>6.1} s  {}  {}",
            phase.offset.as_secs_f64(),
            phase.wall,
            phase.text
        );
        self.facts.lock().unwrap().phases.push(phase);
    }

    fn with<T>(&self, f: impl FnOnce(&mut Facts) -> T) -> T {
        f(&mut self.facts.lock().unwrap())
    }
}

/// Runs the rehearsal and returns the verdict with its report.
pub async fn run(options: Options) -> Outcome {
    let journal = Journal {
        started: Instant::now(),
        facts: Arc::new(Mutex::new(Facts::default())),
    };
    let (logs, temporary) = match &options.log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).expect("creating the log directory");
            (dir.clone(), None)
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("eq-rehearsal-")
                .tempdir()
                .expect("temp dir");
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    let task = tokio::spawn(rehearse(options.clone(), journal.clone(), logs.clone()));
    if let Err(error) = task.await {
        let message = if error.is_panic() {
            panic_message(error.into_panic())
        } else {
            error.to_string()
        };
        journal.phase(format!("ABORTED: {message}"));
        journal.with(|f| f.aborted = Some(message));
    }
    let mut facts = std::mem::take(&mut *journal.facts.lock().unwrap());
    for id in BLUE.iter().chain(GREEN.iter()) {
        let path = logs.join(format!("{id}.log"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            let count = |level: &str| text.lines().filter(|l| l.contains(level)).count();
            facts
                .logs
                .push((id.to_string(), path, count("WARN"), count("ERROR")));
        }
    }
    let mut outcome = report(&options, &facts);
    let kept = match temporary {
        Some(dir) if !outcome.pass => {
            let _ = dir.keep();
            "kept, the rehearsal failed".to_string()
        }
        Some(_) => "removed after a PASS; --log-dir DIR keeps them".to_string(),
        None => "kept".to_string(),
    };
    outcome
        .report
        .push_str(&format!("node logs: {} ({kept})\n", logs.display()));
    outcome
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_else(|_| "a panic".into()),
    }
}

fn binary_of(choice: &Option<PathBuf>) -> PathBuf {
    choice.clone().unwrap_or_else(node_binary)
}

/// Starts the nodes `ids` at once (each logging to `<logs>/<id>.log`) and waits until each
/// is ready.
async fn start_nodes(
    nats: &NatsCluster,
    db: &TestDatabase,
    ids: &[&str],
    binary: &Path,
    logs: &Path,
) -> Vec<NodeProcess> {
    let mut nodes: Vec<NodeProcess> = ids
        .iter()
        .map(|id| {
            NodeProcess::spawn(
                NodeOptions::new(nats.urls(), db.url.clone())
                    .arg("--replicas", 3)
                    .arg("--group-commit", true)
                    .env_var("EQ_NODE_ID", id)
                    .binary(binary)
                    .logs_to(logs.join(format!("{id}.log"))),
            )
        })
        .collect();
    for node in &mut nodes {
        node.wait_ready().await;
    }
    nodes
}

/// `GET /v1/cluster` of one node.
async fn cluster_status(client: &ApiClient) -> Option<Value> {
    let answer = client
        .send(client.http().get(client.url("/v1/cluster")))
        .await
        .ok()?;
    (answer.status == 200).then_some(answer.body)
}

/// Shards per owner (`None` key count: unassigned) in a `/v1/cluster` answer.
fn owner_counts(status: &Value) -> (BTreeMap<String, usize>, usize) {
    let mut owners = BTreeMap::new();
    let mut unassigned = 0;
    for owner in status["owners"].as_array().into_iter().flatten() {
        match owner.as_str() {
            Some(id) => *owners.entry(id.to_string()).or_insert(0) += 1,
            None => unassigned += 1,
        }
    }
    (owners, unassigned)
}

fn describe_owners(owners: &BTreeMap<String, usize>) -> String {
    owners
        .iter()
        .map(|(id, n)| format!("{id} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until exactly the nodes `ids` host every shard, within one shard of each other;
/// returns the shards per node.
async fn wait_balanced(client: &ApiClient, ids: &[&str]) -> BTreeMap<String, usize> {
    let want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    wait_for(
        &format!("{} sharing the shards evenly", want.join(", ")),
        Duration::from_secs(60),
        || {
            let (client, want) = (client.clone(), want.clone());
            async move {
                let status = cluster_status(&client).await?;
                let mut live: Vec<String> = status["nodes"]
                    .as_array()?
                    .iter()
                    .filter(|n| n["hosts_shards"] == true && n["draining"] == false)
                    .filter_map(|n| n["id"].as_str().map(str::to_string))
                    .collect();
                live.sort();
                let (owners, unassigned) = owner_counts(&status);
                let mut owning: Vec<String> = owners.keys().cloned().collect();
                owning.sort();
                let (min, max) = (owners.values().min()?, owners.values().max()?);
                (live == want && owning == want && unassigned == 0 && max - min <= 1)
                    .then_some(owners)
            }
        },
    )
    .await
}

async fn register(client: &ApiClient, count: usize) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|i| format!("bg-{i:04}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let answer = client
            .register(id, "plant-a", &format!("line-{}", i % 4))
            .await;
        assert_eq!(answer.status, 201, "registering {id}: {:?}", answer.body);
    }
    ids
}

/// Lets the load run for `duration` and records how many changes it acknowledged (a phase
/// of no time is left out).
async fn load_phase(journal: &Journal, load: &Load, name: &str, duration: Duration) {
    if duration.is_zero() {
        return;
    }
    let before = load.acked();
    tokio::time::sleep(duration).await;
    let acked = load.acked() - before;
    journal.with(|f| f.load_phases.push((name.to_string(), acked, true)));
}

fn describe_status(status: std::process::ExitStatus) -> (Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), format!("exit {code}")),
        (None, Some(signal)) => (None, format!("killed by signal {signal}")),
        _ => (None, status.to_string()),
    }
}

/// Waits until each of `nodes` (already sent SIGTERM at `since`) exits, up to the bound;
/// a node still running then is killed and counts as failed.
async fn wait_exits(
    journal: &Journal,
    nodes: &mut [(&str, &mut NodeProcess)],
    since: Instant,
    bound: Duration,
) {
    let mut running: Vec<usize> = (0..nodes.len()).collect();
    while !running.is_empty() {
        let mut still = Vec::new();
        for i in running {
            let (id, node) = &mut nodes[i];
            if let Some(status) = node.try_exit_status() {
                let (code, how) = describe_status(status);
                let after = since.elapsed();
                journal.phase(format!(
                    "{id} exited by itself: {how}, {:.1} s after SIGTERM",
                    after.as_secs_f64()
                ));
                journal.with(|f| {
                    f.blue_exits.push(BlueExit {
                        id: id.to_string(),
                        code,
                        how,
                        after_sigterm: after,
                    });
                });
            } else if since.elapsed() > bound {
                node.kill();
                let how = format!("still running {} s after SIGTERM: killed", bound.as_secs());
                journal.phase(format!("{id} {how}"));
                journal.with(|f| {
                    f.blue_exits.push(BlueExit {
                        id: id.to_string(),
                        code: None,
                        how,
                        after_sigterm: since.elapsed(),
                    });
                });
            } else {
                still.push(i);
            }
        }
        running = still;
        if !running.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The rehearsal itself; what it finds goes into `journal` (a panic ends it early).
async fn rehearse(options: Options, journal: Journal, logs: PathBuf) {
    let blue_bin = binary_of(&options.blue_bin);
    let green_bin = binary_of(&options.green_bin);
    journal.phase(format!("blue build {}", describe_binary(&blue_bin)));
    journal.phase(format!("green build {}", describe_binary(&green_bin)));

    // The backbone: three clustered nats-servers (JetStream, fsync always) and a fresh
    // PostgreSQL database for the history.
    let nats = tokio::task::spawn_blocking(NatsCluster::start)
        .await
        .expect("starting the NATS cluster");
    let db = TestDatabase::new(DbKind::Postgres).await;
    journal.phase(format!(
        "NATS cluster up ({}), PostgreSQL database ready",
        nats.urls()
    ));

    // Blue: the running version, three nodes sharing the 64 shards.
    let mut blue = start_nodes(&nats, &db, &BLUE, &blue_bin, &logs).await;
    let shares = wait_balanced(&blue[0].client(), &BLUE).await;
    journal.phase(format!(
        "blue up: {} ready, shards {}",
        BLUE.join(", "),
        describe_owners(&shares)
    ));
    let ids = register(&blue[0].client(), options.machines).await;
    journal.phase(format!("{} machines registered", ids.len()));

    // Traffic: every worker sends its changes to the gateways in the list (round robin,
    // retrying elsewhere on a transport error and after Retry-After on a 503).
    let blue_gateways: Vec<String> = blue.iter().map(|n| n.base_url()).collect();
    let load = Load::start(blue_gateways, ids.clone(), options.workers);
    journal.phase(format!(
        "load started: {} workers over {} machines via the blue gateways",
        options.workers,
        ids.len()
    ));
    load_phase(&journal, &load, "blue only", options.duration).await;

    // Green joins the same cluster: the leader gives it its share of the shards at once
    // (commands for a moving shard wait for its new owner), while the traffic still enters
    // through blue.
    let green = start_nodes(&nats, &db, &GREEN, &green_bin, &logs).await;
    let all: Vec<&str> = BLUE.iter().chain(GREEN.iter()).copied().collect();
    let shares = wait_balanced(&green[0].client(), &all).await;
    journal.phase(format!(
        "green joined: {} ready, shards {}",
        GREEN.join(", "),
        describe_owners(&shares)
    ));
    load_phase(
        &journal,
        &load,
        "green joined, traffic via blue",
        options.duration,
    )
    .await;

    // The switch: the gateway list becomes the green nodes (a Service selector or a target
    // group switching). Requests already in flight at blue finish there.
    *load.gateways.write().unwrap() = green.iter().map(|n| n.base_url()).collect();
    journal.phase(format!("switched: gateways are {}", GREEN.join(", ")));
    load_phase(
        &journal,
        &load,
        "traffic via green, blue still up",
        options.term_after_switch.unwrap_or(options.duration),
    )
    .await;

    // Blue retires: SIGTERM, and each node must hand its shards over, finish what it has in
    // flight and exit with 0 by itself within the bound.
    for (id, node) in BLUE.iter().zip(&blue) {
        let counters = scrape(&node.client()).await;
        journal.with(|f| f.counters.push((id.to_string(), counters)));
    }
    let drain_started = load.acked();
    match options.drain {
        DrainMode::All => {
            for node in &blue {
                node.send_sigterm();
            }
            let since = Instant::now();
            journal.phase(format!("SIGTERM to {} at once", BLUE.join(", ")));
            let mut named: Vec<(&str, &mut NodeProcess)> =
                BLUE.iter().copied().zip(blue.iter_mut()).collect();
            wait_exits(&journal, &mut named, since, options.exit_bound).await;
        }
        DrainMode::OneByOne => {
            for (id, node) in BLUE.iter().zip(blue.iter_mut()) {
                node.send_sigterm();
                let since = Instant::now();
                journal.phase(format!("SIGTERM to {id}"));
                wait_exits(&journal, &mut [(*id, node)], since, options.exit_bound).await;
            }
        }
    }
    journal.phase("blue drained: no blue node left");
    let drained = load.acked() - drain_started;
    journal.with(|f| {
        f.load_phases
            .push(("during the drain".into(), drained, false))
    });
    load_phase(&journal, &load, "green only", options.duration).await;

    let acked_at_stop = load.acked();
    let report = load.stop().await;
    journal.phase(format!(
        "load stopped: {} changes acknowledged, {} failed",
        report.acked.len(),
        report.failed.len()
    ));
    journal.with(|f| {
        f.load = Some(report.clone());
        f.acked_at_stop = acked_at_stop;
    });

    // Where the shards are now, as the cluster itself says (no waiting: the blue nodes
    // handed everything over before they exited).
    let client = green[0].client();
    let status = cluster_status(&client)
        .await
        .expect("GET /v1/cluster from green-1");
    let (owners, unassigned) = owner_counts(&status);
    let nodes_at_end: Vec<String> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["id"].as_str().map(str::to_string))
        .collect();
    journal.with(|f| {
        f.owners = owners;
        f.unassigned = unassigned;
        f.epoch = status["epoch"].as_u64().unwrap_or(0);
        f.nodes_at_end = nodes_at_end;
    });

    // The history, through the API: every machine's versions 1..=n once, in order, and
    // every acknowledged (machine, version) with its status (waits for the consumer).
    let verified = {
        let (client, ids, report) = (client.clone(), ids.clone(), report.clone());
        tokio::spawn(async move { verify_history(&client, &ids, &report).await }).await
    };
    let verified = verified.map_err(|e| {
        if e.is_panic() {
            panic_message(e.into_panic())
        } else {
            e.to_string()
        }
    });
    journal.phase(match &verified {
        Ok(()) => "history verified through the API".to_string(),
        Err(e) => format!("history check through the API FAILED: {e}"),
    });
    journal.with(|f| f.verify = Some(verified));

    // The history, in the database itself: rows per machine and Idempotency-Keys seen twice.
    let conn = Database::connect(db.url.as_str())
        .await
        .expect("connecting to the history database");
    // (A registration routed to another node carries a generated `auto-…` command id; the
    // load's changes carry their Idempotency-Key.)
    let sql = "SELECT equipment_id, COUNT(*) AS n_rows, \
               COUNT(*) FILTER (WHERE kind <> 'registered') AS n_changes, \
               COUNT(command_id) FILTER (WHERE kind <> 'registered') AS n_keys, \
               COUNT(DISTINCT command_id) FILTER (WHERE kind <> 'registered') AS n_distinct_keys, \
               MIN(version) AS first_version, MAX(version) AS last_version \
               FROM equipment_event GROUP BY equipment_id ORDER BY equipment_id";
    let counted =
        Counted::find_by_statement(Statement::from_string(conn.get_database_backend(), sql))
            .all(&conn)
            .await
            .expect("counting the history rows");
    let gaps = eq_node::history::maintenance::gaps(&conn)
        .await
        .expect("the gap check");
    conn.close().await.ok();
    journal.with(|f| {
        f.history = counted;
        f.history_gaps = gaps
            .into_iter()
            .map(|g| {
                format!(
                    "{}: {} rows for versions {}..={}",
                    g.equipment_id, g.stored, g.first_version, g.last_version
                )
            })
            .collect();
    });

    for (id, node) in GREEN.iter().zip(&green) {
        let counters = scrape(&node.client()).await;
        journal.with(|f| f.counters.push((id.to_string(), counters)));
    }
    journal.phase("checks done");
    drop(green);
    drop(blue);
}

/// The counters that explain retries: 503 answers, API commands by result (all but
/// `accepted`), routing retries and timeouts, fenced appends, hand-offs.
async fn scrape(client: &ApiClient) -> BTreeMap<String, f64> {
    let mut counters = BTreeMap::new();
    let Ok(response) = client.http().get(client.url("/metrics")).send().await else {
        return counters;
    };
    let text = response.text().await.unwrap_or_default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let wanted = match series.split('{').next().unwrap_or_default() {
            // 503 answers to API calls (readiness probes are not counted here).
            "eq_http_rejects_total" => series.contains("code=\"unavailable\""),
            "eq_commands_total" => {
                series.contains("source=\"api\"") && !series.contains("result=\"accepted\"")
            }
            "eq_routing_retries_total"
            | "eq_routing_timeouts_total"
            | "eq_fenced_appends_total"
            | "eq_handoffs_total" => true,
            _ => false,
        };
        if wanted {
            counters.insert(series.to_string(), value);
        }
    }
    counters
}

fn describe_binary(path: &Path) -> String {
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| {
            chrono::DateTime::<chrono::Local>::from(t)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| "missing".into());
    format!("{} (built {modified})", path.display())
}

/// The verdict and the printed report.
fn report(options: &Options, f: &Facts) -> Outcome {
    use std::fmt::Write;
    let mut out = String::new();
    let mut checks: Vec<(bool, String)> = Vec::new();
    let _ = writeln!(out, "\n======== blue/green rehearsal ========");
    let _ = writeln!(
        out,
        "{} machines, {} workers, {} s per load phase, drain: {}, SIGTERM {} s after the \
         switch, exit bound {} s",
        options.machines,
        options.workers,
        options.duration.as_secs(),
        match options.drain {
            DrainMode::All => "all blue nodes at once",
            DrainMode::OneByOne => "one blue node after the other",
        },
        options
            .term_after_switch
            .unwrap_or(options.duration)
            .as_secs(),
        options.exit_bound.as_secs()
    );

    let _ = writeln!(out, "\nPhases");
    for p in &f.phases {
        let _ = writeln!(
            out,
            "  +{:>6.1} s  {}  {}",
            p.offset.as_secs_f64(),
            p.wall,
            p.text
        );
    }

    let _ = writeln!(out, "\nLoad (changes acknowledged per phase)");
    for (name, acked, _) in &f.load_phases {
        let _ = writeln!(out, "  {name:<34} {acked:>8}");
    }
    if let Some(load) = &f.load {
        let failed = load.failed.len() as u64;
        let acked = load.acked.len() as u64;
        let sent = acked + failed;
        let _ = writeln!(
            out,
            "  requests sent                      {sent:>8}  (each with its own Idempotency-Key)"
        );
        let _ = writeln!(
            out,
            "  acknowledged (2xx)                 {acked:>8}  distinct (machine, version); {} when \
             the stop was signalled, then each worker finished its change",
            f.acked_at_stop
        );
        let _ = writeln!(
            out,
            "  retried after a 503                {:>8}",
            load.retried_503
        );
        let _ = writeln!(
            out,
            "  retried after a transport error    {:>8}",
            load.retried_transport
        );
        let _ = writeln!(out, "  failed (never a 2xx)               {failed:>8}");
        for failure in load.failed.iter().take(20) {
            let _ = writeln!(out, "    {failure}");
        }
        checks.push((
            load.failed.is_empty(),
            format!("no failed request ({failed} failed of {sent})"),
        ));
        checks.push((
            f.acked_at_stop <= acked && acked <= f.acked_at_stop + options.workers as u64,
            format!(
                "no two 2xx for one (machine, version): {} at the stop signal <= {acked} \
                 distinct <= {} + {} workers finishing",
                f.acked_at_stop, f.acked_at_stop, options.workers
            ),
        ));
        checks.push((
            f.load_phases.iter().all(|(_, n, timed)| *n > 0 || !timed),
            "the load made progress in every timed phase".into(),
        ));
    }

    let _ = writeln!(out, "\nBlue nodes");
    for e in &f.blue_exits {
        let _ = writeln!(
            out,
            "  {:<8} {:<40} {:>5.1} s after SIGTERM",
            e.id,
            e.how,
            e.after_sigterm.as_secs_f64()
        );
    }
    checks.push((
        f.blue_exits.len() == BLUE.len() && f.blue_exits.iter().all(|e| e.code == Some(0)),
        format!(
            "every blue node exited by itself with 0 within {} s",
            options.exit_bound.as_secs()
        ),
    ));

    let _ = writeln!(out, "\nHistory (PostgreSQL equipment_event)");
    if let Some(load) = &f.load {
        let mut acked_per: BTreeMap<&str, u64> = BTreeMap::new();
        for (id, _) in load.acked.keys() {
            *acked_per.entry(id.as_str()).or_insert(0) += 1;
        }
        let rows: i64 = f.history.iter().map(|c| c.n_rows).sum();
        let changes: i64 = f.history.iter().map(|c| c.n_changes).sum();
        let changes = changes as u64;
        let keys: i64 = f.history.iter().map(|c| c.n_keys).sum();
        let distinct_keys: i64 = f.history.iter().map(|c| c.n_distinct_keys).sum();
        let acked = load.acked.len() as u64;
        let _ = writeln!(
            out,
            "  rows                               {rows:>8}  = {} registrations + {changes} changes",
            rows - changes as i64
        );
        let _ = writeln!(out, "  acknowledged changes               {acked:>8}");
        let _ = writeln!(
            out,
            "  changes with an Idempotency-Key    {keys:>8}  ({distinct_keys} distinct keys)"
        );
        let mut mismatches = Vec::new();
        for c in &f.history {
            let acked = acked_per.get(c.equipment_id.as_str()).copied().unwrap_or(0);
            if c.n_rows as u64 != acked + 1 || c.n_changes as u64 != acked {
                mismatches.push(format!(
                    "{}: {} rows, 1 + {acked} acknowledged",
                    c.equipment_id, c.n_rows
                ));
            }
        }
        let missing = options.machines.saturating_sub(f.history.len());
        let (lo, hi) = (
            acked_per.values().min().copied().unwrap_or(0),
            acked_per.values().max().copied().unwrap_or(0),
        );
        let _ = writeln!(
            out,
            "  per machine: rows = 1 + acknowledged on {} of {} machines \
             (acknowledged per machine {lo}..{hi})",
            f.history.len() - mismatches.len(),
            options.machines
        );
        for m in mismatches.iter().take(20) {
            let _ = writeln!(out, "    {m}");
        }
        let not_from_one = f
            .history
            .iter()
            .filter(|c| c.first_version != 1 || c.last_version != c.n_rows)
            .count();
        let _ = writeln!(
            out,
            "  version gaps                       {:>8}  (machines not holding exactly 1..=n: {not_from_one})",
            f.history_gaps.len()
        );
        for g in f.history_gaps.iter().take(20) {
            let _ = writeln!(out, "    {g}");
        }
        let api = match &f.verify {
            Some(Ok(())) => "ok".to_string(),
            Some(Err(e)) => format!("FAILED: {e}"),
            None => "not run".into(),
        };
        let _ = writeln!(
            out,
            "  verify_history (API: gapless, every acknowledged version with its status): {api}"
        );
        checks.push((
            matches!(f.verify, Some(Ok(()))),
            "verify_history: every machine's history gapless, every acknowledged change there \
             with its status"
                .into(),
        ));
        checks.push((
            mismatches.is_empty() && missing == 0,
            format!(
                "history rows = 1 + acknowledged changes on every machine ({} mismatched, {missing} \
                 without history)",
                mismatches.len()
            ),
        ));
        checks.push((
            changes == acked && keys as u64 == acked,
            format!(
                "history changes = acknowledged changes ({changes} rows, {keys} with a key, {acked} \
                 acknowledged)"
            ),
        ));
        checks.push((
            keys == distinct_keys && f.history_gaps.is_empty() && not_from_one == 0,
            format!(
                "no Idempotency-Key applied twice ({} twice), no version gap ({})",
                keys - distinct_keys,
                f.history_gaps.len()
            ),
        ));
    }

    let _ = writeln!(
        out,
        "\nShard owners at the end (GET /v1/cluster on green-1)"
    );
    let _ = writeln!(
        out,
        "  epoch {}: {} (unassigned: {})",
        f.epoch,
        describe_owners(&f.owners),
        f.unassigned
    );
    let _ = writeln!(out, "  nodes listed: {}", f.nodes_at_end.join(", "));
    let on_green = f.owners.keys().all(|o| GREEN.contains(&o.as_str()));
    let owned: usize = f.owners.values().sum();
    checks.push((
        on_green && f.unassigned == 0 && owned > 0,
        "every shard is owned by a green node".into(),
    ));
    let _ = writeln!(
        out,
        "\nNode counters (blue just before its SIGTERM, green at the end; non-zero only)"
    );
    for (id, counters) in &f.counters {
        let shown: Vec<String> = counters
            .iter()
            .filter(|(_, v)| **v != 0.0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "  {id:<8} {}", shown.join(", "));
    }

    let _ = writeln!(out, "\nNode logs (lines with WARN / ERROR)");
    for (id, path, warn, error) in &f.logs {
        let _ = writeln!(out, "  {id:<8} {warn:>5} / {error:<5} {}", path.display());
    }

    if let Some(aborted) = &f.aborted {
        checks.push((
            false,
            format!("the rehearsal ran to its end (aborted: {aborted})"),
        ));
    }
    let _ = writeln!(out, "\nChecks");
    for (ok, what) in &checks {
        let _ = writeln!(out, "  [{}] {what}", if *ok { " ok " } else { "FAIL" });
    }
    let pass = checks.iter().all(|(ok, _)| *ok) && f.aborted.is_none();
    let _ = writeln!(
        out,
        "\n{} (total {:.1} s)",
        if pass { "PASS" } else { "FAIL" },
        f.phases.last().map_or(0.0, |p| p.offset.as_secs_f64())
    );
    Outcome { pass, report: out }
}
