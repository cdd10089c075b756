//! A client the project did not choose: openapi-python-client generates a Python client
//! from the checked-in spec, without dropping a model or an operation, and a tablet written
//! against it (`tests/e2e/python_client.py`) works against a real node. Needs the pinned
//! generator (`scripts/install-python-client.sh`, the only step that uses PyPI).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use eq_node::auth::Role;
use eq_tests::postgres::DbKind;
use eq_tests::{NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase};

const SITE: &str = "plant-a";
const LINE: &str = "line-1";
const OPERATOR: &str = "tablet-py-1";

fn generator() -> PathBuf {
    eq_tests::installed_tool(
        "EQ_PYTHON_CLIENT_GENERATOR",
        ".tools/python-client/bin/openapi-python-client",
        "scripts/install-python-client.sh",
    )
}

async fn run(mut command: Command) -> Output {
    let shown = format!("{command:?}");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("starting a Python tool");
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A name as the generator turns it into a module name (`getEquipment` → `get_equipment`,
/// `EquipmentView` → `equipment_view`).
fn snake_case(name: &str) -> String {
    let mut snake = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    snake
}

/// Every operation id of the spec.
fn operation_ids(spec: &serde_json::Value) -> Vec<String> {
    let mut ids = Vec::new();
    for operations in spec["paths"].as_object().unwrap().values() {
        for operation in operations.as_object().unwrap().values() {
            ids.push(operation["operationId"].as_str().unwrap().to_string());
        }
    }
    ids
}

fn python_files(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.extend(python_files(&path));
        } else if let Some(name) = path.file_stem() {
            all.push(name.to_string_lossy().to_string());
        }
    }
    all
}

#[tokio::test]
async fn a_python_client_generated_from_the_spec_works_against_a_real_node() {
    let generator = generator();
    let root = eq_tests::workspace_root();
    let scratch = tempfile::Builder::new()
        .prefix("eq-py-client-")
        .tempdir()
        .unwrap();
    let package = scratch.path().join("equipment_live_client");

    // Generate: the venv's bin first on PATH, so the generator's own formatter runs.
    let venv_bin = generator.parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut generate = Command::new(&generator);
    generate
        .args(["generate", "--meta", "none", "--path"])
        .arg(root.join("openapi/openapi.json"))
        .arg("--output-path")
        .arg(&package)
        .env("PATH", &path);
    let output = run(generate).await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !said.contains("Warning") && !said.contains("WARNING") && !said.contains("Unable"),
        "the generator could not read all of the spec:\n{said}"
    );
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("openapi/openapi.json")).unwrap())
            .unwrap();
    let modules = python_files(&package.join("api"));
    for operation in operation_ids(&spec) {
        let module = snake_case(&operation);
        assert!(modules.contains(&module), "no module for {operation}");
    }
    let models = python_files(&package.join("models"));
    for schema in spec["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            models.contains(&snake_case(schema)),
            "no model for {schema}"
        );
    }

    // A tablet written against it, against a real node.
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let node = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    let mut tablet = Command::new(venv_bin.join("python"));
    tablet
        .arg(root.join("tests/e2e/python_client.py"))
        .env("PYTHONPATH", scratch.path())
        .env("EQ_BASE_URL", node.base_url())
        .env("EQ_ADMIN_TOKEN", eq_tests::auth::admin_token())
        .env(
            "EQ_OPERATOR_TOKEN",
            eq_tests::auth::token(OPERATOR, Role::Operator, &[&format!("{SITE}/{LINE}")]),
        )
        .env("EQ_OPERATOR_SUBJECT", OPERATOR)
        .env("EQ_SITE", SITE)
        .env("EQ_LINE", LINE);
    let output = run(tablet).await;
    assert!(String::from_utf8_lossy(&output.stdout).contains("python client: ok"));
}
