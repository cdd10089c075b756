//! The API against its own spec: Schemathesis (`scripts/install-schemathesis.sh`, found via
//! `EQ_SCHEMATHESIS` or `.tools/schemathesis/bin/schemathesis`) fuzzes a real node from the
//! checked-in `openapi/openapi.json` with every check on (server errors, status codes,
//! content types, headers and bodies against the spec, schema-valid requests accepted,
//! schema-violating ones refused, auth, undeclared methods, use after delete, …), positive
//! and negative data, in all four phases (examples, coverage, fuzzing, stateful), with an
//! admin token, and must find nothing. Deterministic seed; every request goes to 127.0.0.1.
//!
//! `EQ_FUZZ_MAX_EXAMPLES` (default 150) and `EQ_FUZZ_SEED` (default 1) tune a run; the JUnit
//! report lands in `target/fuzz/junit.xml`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eq_tests::postgres::DbKind;
use eq_tests::{NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase, wait_for};
use serde_json::json;

/// Kills Schemathesis if it runs longer (nextest ends this test at 8 minutes).
const GUARD: Duration = Duration::from_secs(420);

/// What the checks cannot know, one operation at a time; everything else runs every check
/// with its defaults (`--checks` is not given on the command line: it would override these).
const CONFIG: &str = r#"
[checks]
enabled = true

# A machine with one ended stop (version 2), seeded by the test: without it every
# correction is a 404 and the handler's real work is never reached.
[dictionaries.stopped-machine]
values = ["press-1"]
[dictionaries.stop-version]
values = [2]

[[operations]]
include-operation-id = "correctStopReason"
parameters = { "path.id" = { dictionary = "stopped-machine", probability = 0.9 }, "path.version" = { dictionary = "stop-version", probability = 0.9 } }

# GET /v1/live never ends: read one event (`ready` at the latest, so no wait) and close.
# response_schema_conformance is off here alone. A false positive: poem-openapi documents an
# event stream, in this OpenAPI 3.0 spec, as `{type: array, format: event-stream, items:
# LiveEvent}` (the stream as an array of the events' `data`), while Schemathesis reads the
# `schema` of a 3.0 `text/event-stream` as the schema of *each* SSE event envelope
# `{event, id, data}` (OpenAPI 3.2's `itemSchema`), so every event "is not of type array".
# OpenAPI 3.0 defines neither reading. The stream's content is checked by tests/tests/live.rs.
[[operations]]
include-path = "/v1/live"
max-stream-events = 1
checks.response_schema_conformance.enabled = false

# positive_data_acceptance, plus 400: a report window is `from` before `to` and at most 400
# days long (documented in the operations); OpenAPI cannot state a rule between two
# parameters, so a schema-valid pair may still be refused (400 `invalid_range`).
[[operations]]
include-operation-id = ["getHistory", "getTimeInState", "listStops", "getAvailabilityReport", "getDowntimeReport"]
checks.positive_data_acceptance.expected-statuses = ["2XX", "3XX", "400", "401", "403", "404", "409", "429", "5XX"]

# positive_data_acceptance, plus 412: a well-formed `If-Match` naming a version that is no
# longer current is refused with 412, as documented (RFC 9110 preconditions depend on state).
[[operations]]
include-operation-id = ["updateEquipment", "decommissionEquipment", "setStatus", "correctStopReason"]
checks.positive_data_acceptance.expected-statuses = ["2XX", "3XX", "401", "403", "404", "409", "412", "429", "5XX"]

# use_after_free off for the reads under /v1/equipment/{id}: DELETE decommissions (as
# documented): the machine stays readable, with `decommissioned: true` and its history.
[[operations]]
include-operation-id = ["getEquipment", "getHistory", "getTimeInState", "listStops"]
checks.use_after_free.enabled = false
"#;

fn schemathesis_binary() -> PathBuf {
    eq_tests::installed_tool(
        "EQ_SCHEMATHESIS",
        ".tools/schemathesis/bin/schemathesis",
        "scripts/install-schemathesis.sh",
    )
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Registers two machines and gives one an ended stop at version 2 (red, then green), and
/// waits until the history has it.
async fn seed(node: &NodeProcess) {
    let client = node.client();
    for (id, line) in [("press-1", "line-1"), ("kiln-1", "line-2")] {
        let answer = client.register(id, "plant-a", line).await;
        assert_eq!(answer.status, 201, "{:?}", answer.body);
    }
    for body in [
        json!({"status": "red", "reason": "jam"}),
        json!({"status": "green"}),
    ] {
        let answer = client.set_status("press-1", body).await.unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    wait_for("the stop in the history", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let url = client.url("/v1/equipment/press-1/stops");
            let answer = client.send(client.http().get(url)).await.ok()?;
            let stop = &answer.body["stops"][0];
            (stop["version"] == 2 && stop["end"].is_string()).then_some(())
        }
    })
    .await;
}

/// Runs `command`, killing it after `GUARD`; returns whether it succeeded, and its output.
fn run_guarded(mut command: Command) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting schemathesis");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for schemathesis") {
            break Some(status);
        }
        if started.elapsed() > GUARD {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut output = out.join().unwrap_or_default();
    output.push_str(&err.join().unwrap_or_default());
    if status.is_none() {
        output.push_str(&format!("\n(killed after {GUARD:?})\n"));
    }
    let ok = status.is_some_and(|s| s.success());
    (ok, output, started.elapsed())
}

#[tokio::test]
async fn the_api_keeps_to_its_spec_under_schemathesis() {
    let binary = schemathesis_binary();
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Postgres).await;
    // The harness starts nodes with the rate limit off (EQ_RATE_LIMIT_PER_SEC=0).
    let node = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    seed(&node).await;

    let work = tempfile::Builder::new()
        .prefix("eq-fuzz-")
        .tempdir()
        .expect("temp dir");
    let config = work.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).expect("writing the config");
    let reports = eq_tests::workspace_root().join("target/fuzz");
    std::fs::create_dir_all(&reports).expect("report dir");
    let junit = reports.join("junit.xml");
    let spec = eq_tests::workspace_root().join("openapi/openapi.json");
    let max_examples = env_or("EQ_FUZZ_MAX_EXAMPLES", 150);
    let seed = env_or("EQ_FUZZ_SEED", 1);

    let mut command = Command::new(&binary);
    command
        // Its working files (Hypothesis' directory) stay out of the repository.
        .current_dir(work.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&spec)
        .args(["--url", &node.base_url()])
        .arg("--header")
        .arg(format!("Authorization: {}", eq_tests::auth::admin_bearer()))
        .args(["--mode", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", &max_examples.to_string()])
        .args(["--seed", &seed.to_string()])
        // An admin's drain really stops the node (and Schemathesis finds the node's name:
        // it links `GET /v1/cluster`'s `node` to the drain's path), which would end the run.
        .args(["--exclude-operation-id", "drainNode"])
        .args(["--request-timeout", "10"])
        // One worker: deterministic for the seed, and CPython 3.11's `ast.parse` (Hypothesis
        // describes its strategies with it) is not thread-safe ("AST constructor recursion
        // depth mismatch" with two workers).
        .args(["--workers", "1"])
        .args(["--generation-database", "none"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(&junit)
        .arg("--no-color")
        // Only 127.0.0.1: no proxy from the environment.
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env("NO_PROXY", "*");
    let (ok, output, took) = tokio::task::spawn_blocking(move || run_guarded(command))
        .await
        .expect("joining");
    assert!(
        ok,
        "schemathesis found problems (seed {seed}, {max_examples} examples per operation, \
         {took:?}; JUnit report {}):\n{output}",
        junit.display()
    );
    eprintln!("schemathesis passed in {took:?}:\n{output}");
}
