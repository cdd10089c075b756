//! The tablets' TypeScript client (`openapi/ts-client`, generated from `openapi/openapi.json`
//! with `@hey-api/openapi-ts`): the committed copy must be what the generator makes of the
//! spec, it must compile, and its end-to-end test (`node --test`) must pass against a real
//! node. Needs Node.js 20.19+ and the client's tools (`scripts/install-ts-client.sh`, the
//! only step that uses the npm registry).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use eq_node::auth::Role;
use eq_tests::postgres::DbKind;
use eq_tests::{NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase};

/// Where the end-to-end test registers its machine (the operator token covers it).
const SITE: &str = "plant-a";
const LINE: &str = "line-1";

fn client_dir() -> PathBuf {
    eq_tests::workspace_root().join("openapi/ts-client")
}

/// Every pinned tool is installed at its pinned version.
fn assert_tools_installed(dir: &Path) {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("package.json")).unwrap()).unwrap();
    for (name, pinned) in manifest["devDependencies"].as_object().unwrap() {
        let installed =
            std::fs::read_to_string(dir.join("node_modules").join(name).join("package.json"))
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|p| p["version"].as_str().map(str::to_string));
        assert_eq!(
            installed.as_deref(),
            pinned.as_str(),
            "{name} is not installed at its pinned version in openapi/ts-client: run scripts/install-ts-client.sh"
        );
    }
}

/// `npm run <script>` in the client's directory, on a blocking thread; the registry is never
/// asked (offline, no update check).
async fn npm_run(script: &str, env: Vec<(&'static str, String)>) -> Output {
    let mut command = Command::new("npm");
    command
        .arg("run")
        .arg(script)
        .current_dir(client_dir())
        .env("npm_config_offline", "true")
        .env("npm_config_update_notifier", "false")
        .env("npm_config_fund", "false")
        .envs(env);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("npm runs (Node.js 20.19+ with npm)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "npm run {script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    output
}

/// Every file under `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, into);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                into.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    let mut all = BTreeMap::new();
    walk(dir, dir, &mut all);
    all
}

#[tokio::test]
async fn the_generated_typescript_client_works_against_a_real_node() {
    let dir = client_dir();
    assert_tools_installed(&dir);

    // The committed client is what the generator makes of the checked-in spec.
    let scratch = tempfile::Builder::new()
        .prefix("eq-ts-client-")
        .tempdir()
        .unwrap();
    let fresh = scratch.path().join("generated");
    npm_run(
        "generate",
        vec![("EQ_TS_CLIENT_OUT", fresh.display().to_string())],
    )
    .await;
    let committed = files(&dir.join("src/generated"));
    let regenerated = files(&fresh);
    let drifted: Vec<String> = committed
        .keys()
        .chain(regenerated.keys())
        .filter(|path| committed.get(*path) != regenerated.get(*path))
        .map(|path| path.display().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        drifted.is_empty(),
        "openapi/ts-client/src/generated is out of date with openapi/openapi.json \
         (differs: {drifted:?}): run `npm run generate` in openapi/ts-client"
    );

    npm_run("build", Vec::new()).await;

    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Postgres).await;
    let node = NodeProcess::start(NodeOptions::new(nats.url(), db.url.clone())).await;
    let output = npm_run(
        "test",
        vec![
            ("EQ_BASE_URL", node.base_url()),
            ("EQ_ADMIN_TOKEN", eq_tests::auth::admin_token().to_string()),
            (
                "EQ_OPERATOR_TOKEN",
                eq_tests::auth::token("tablet-1", Role::Operator, &[&format!("{SITE}/{LINE}")]),
            ),
            (
                "EQ_VIEWER_TOKEN",
                eq_tests::auth::token("wall-screen-1", Role::Viewer, &[]),
            ),
            ("EQ_SITE", SITE.to_string()),
            ("EQ_LINE", LINE.to_string()),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("# pass 1") && stdout.contains("# fail 0"),
        "the end-to-end test did not run as expected:\n{stdout}"
    );
}
