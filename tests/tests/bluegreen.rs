//! The blue/green rehearsal, short: three blue nodes under load, three green nodes join,
//! the gateways switch to green, the blue nodes get SIGTERM at once. It runs the built
//! `rehearse` binary (cargo builds a package's binaries for its integration tests) with the
//! node binary next to it, and asserts PASS: no failed request, every acknowledged change
//! in the history once, every blue node exited by itself with 0, every shard on green.

use std::process::Command;

#[test]
fn blue_green_cut_over_under_load_passes_the_rehearsal() {
    let output = Command::new(env!("CARGO_BIN_EXE_rehearse"))
        .args(["--duration-secs", "3", "--machines", "50", "--workers", "8"])
        .output()
        .expect("running the rehearsal");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success() && stdout.contains("\nPASS"),
        "the rehearsal did not pass ({}):\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
}
