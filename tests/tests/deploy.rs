//! The deployment files (`deploy/Dockerfile`, `deploy/compose/`, `deploy/k8s/`,
//! `deploy/grafana/`) pass `scripts/validate-deploy.sh`: schemas of Kubernetes and Compose,
//! hadolint, `nats-server -t`, and the cross-checks between them and the code (every
//! dashboard query names a metric the nodes export, every mounted file exists, ...). All
//! offline, with the tools `scripts/install-deploy-validate.sh` puts in
//! `.tools/deploy-validate` (the only step that uses the registry). A second test breaks a
//! copy of the files and expects the script to say so: the checks are not vacuous.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The validation tools, each of which must be installed.
const TOOLS: &[&str] = &[
    "kubernetes-validate",
    "kubectl",
    "check-jsonschema",
    "hadolint",
    "docker-compose",
    "python",
];

fn venv() -> PathBuf {
    eq_tests::workspace_root().join(".tools/deploy-validate")
}

fn assert_tools_installed() {
    for tool in TOOLS {
        let path = venv().join("bin").join(tool);
        assert!(
            path.exists(),
            "{} is missing: run scripts/install-deploy-validate.sh",
            path.display()
        );
    }
}

/// Runs `scripts/validate-deploy.sh` of the tree at `root`.
fn validate(root: &Path) -> Output {
    Command::new("bash")
        .arg(root.join("scripts/validate-deploy.sh"))
        .current_dir(root)
        .output()
        .expect("bash runs scripts/validate-deploy.sh")
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_deployment_files_validate_offline() {
    assert_tools_installed();
    let output = validate(&eq_tests::workspace_root());
    let report = text(&output);
    assert!(
        output.status.success(),
        "scripts/validate-deploy.sh failed ({}):\n{report}",
        output.status
    );
    assert!(report.contains("deploy validation passed"), "{report}");
}

/// Copies `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Replaces `from` with `to` in `path` (which must contain it).
fn edit(path: &Path, from: &str, to: &str) {
    let content = std::fs::read_to_string(path).unwrap();
    assert!(content.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, content.replacen(from, to, 1)).unwrap();
}

#[test]
fn the_validation_catches_broken_deployment_files() {
    assert_tools_installed();
    let root = eq_tests::workspace_root();
    let scratch = tempfile::Builder::new()
        .prefix("eq-deploy-")
        .tempdir()
        .unwrap();
    let copy = scratch.path();
    // What the script reads: the deploy files, the code's metric names, the workspace
    // manifest, the docs that must name every Secret; the tools stay where they are.
    for dir in ["deploy", "scripts", "node/src", "actors/src", "docs"] {
        copy_tree(&root.join(dir), &copy.join(dir));
    }
    for file in ["Cargo.toml", ".dockerignore"] {
        std::fs::copy(root.join(file), copy.join(file)).unwrap();
    }
    std::fs::create_dir_all(copy.join(".tools")).unwrap();
    for tools in ["deploy-validate", "venv"] {
        std::os::unix::fs::symlink(
            root.join(".tools").join(tools),
            copy.join(".tools").join(tools),
        )
        .unwrap();
    }

    // A panel query with a mistyped metric, a compose mount of a file that does not exist,
    // and a green Deployment whose pods drifted from base's.
    edit(
        &copy.join("deploy/grafana/equipment-live.json"),
        "eq_handoffs_total",
        "eq_handoff_total",
    );
    edit(
        &copy.join("deploy/compose/compose.yaml"),
        "../nats/cluster/nats-2.conf",
        "../nats/cluster/nats-two.conf",
    );
    edit(
        &copy.join("deploy/k8s/blue-green/deployment-green.yaml"),
        "memory: 1Gi",
        "memory: 2Gi",
    );

    let output = validate(copy);
    let report = text(&output);
    assert!(!output.status.success(), "broken files passed:\n{report}");
    for expected in [
        "uses eq_handoff_total, which the nodes do not export",
        "mounts deploy/nats/cluster/nats-two.conf, which does not exist",
        "the green pod template differs from deploy/k8s/base/deployment.yaml",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
}
