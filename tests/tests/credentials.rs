//! NATS accounts and users from `deploy/nats/secure.conf`, with device credentials issued
//! by the node's own subcommand: a node connects as the service user, each device may only
//! act for its own machine, a dashboard may only watch.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use eq_tests::postgres::DbKind;
use eq_tests::{
    NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase, run_pi_publisher,
    workspace_root,
};
use futures::StreamExt;
use serde_json::{Value, json};

/// What the `device-credential` subcommand printed, taken apart.
struct Issued {
    block: String,
    seed: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

fn issue(id: &str, kind: &str) -> Issued {
    let output = std::process::Command::new(eq_tests::node::node_binary())
        .args(["device-credential", id, "--kind", kind])
        .output()
        .expect("running device-credential");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let block: String = text
        .lines()
        .skip_while(|l| !l.starts_with("  # device"))
        .take_while(|l| !l.starts_with("# For the device"))
        .collect::<Vec<_>>()
        .join("\n");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("#   {name}:")))
            .map(|v| v.trim().to_string())
    };
    Issued {
        block,
        seed: field("nkey seed"),
        user: field("user"),
        password: field("password"),
    }
}

/// Copies the shipped config and pastes the device blocks above the final `]` of the users,
/// exactly as an operator would.
fn secured_config(dir: &std::path::Path, devices: &[&Issued]) -> std::path::PathBuf {
    let deploy = workspace_root().join("deploy/nats");
    std::fs::copy(deploy.join("secure.conf"), dir.join("secure.conf")).unwrap();
    let users = std::fs::read_to_string(deploy.join("users.conf")).unwrap();
    let end = users.rfind(']').expect("users.conf ends with ]");
    let blocks: Vec<&str> = devices.iter().map(|d| d.block.as_str()).collect();
    let pasted = format!("{}{}\n{}", &users[..end], blocks.join("\n"), &users[end..]);
    std::fs::write(dir.join("users.conf"), pasted).unwrap();
    dir.join("secure.conf")
}

/// A client that records the server's asynchronous errors (permission violations).
async fn connect(
    url: &str,
    options: async_nats::ConnectOptions,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    let client = options
        .event_callback(move |event| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(event.to_string().to_lowercase());
            }
        })
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(url)
        .await
        .expect("connecting");
    (client, errors)
}

async fn saw_violation(errors: &Arc<Mutex<Vec<String>>>, subject: &str) -> bool {
    let needle = subject.to_lowercase();
    for _ in 0..50 {
        if errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("permissions violation") && e.contains(&needle))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn devices_act_only_for_their_own_machine_and_dashboards_only_watch() {
    let press = issue("press-1", "nkey");
    let kiln = issue("kiln-2", "password");
    let config_dir = tempfile::tempdir().unwrap();
    let config = secured_config(config_dir.path(), &[&press, &kiln]);
    let secret = |n: u8| format!("s{n}{}", uuid::Uuid::new_v4().simple());
    let (node_password, dashboard_password) = (secret(1), secret(2));
    let nats = NatsServer::start(NatsOptions::config_file(
        config,
        vec![
            ("EQ_NODE_PASSWORD".into(), node_password.clone()),
            ("EQ_DASHBOARD_PASSWORD".into(), dashboard_password.clone()),
            ("EQ_ADMIN_PASSWORD".into(), secret(3)),
        ],
    ));
    // Nothing connects without credentials.
    assert!(async_nats::connect(nats.url()).await.is_err());

    let db = TestDatabase::new(DbKind::Sqlite).await;
    let mut options = NodeOptions::new(nats.url(), db.url.clone());
    options.env.push(("EQ_NATS_USER".into(), "eq-node".into()));
    options
        .env
        .push(("EQ_NATS_PASSWORD".into(), node_password.clone()));
    let node = NodeProcess::start(options).await;
    for id in ["press-1", "kiln-2"] {
        assert_eq!(
            node.client().register(id, "plant-a", "line-1").await.status,
            201
        );
    }
    let (service, _) = connect(
        &nats.url(),
        async_nats::ConnectOptions::with_user_and_password("eq-node".into(), node_password),
    )
    .await;
    let mut device_subjects = service.subscribe("eq.device.>").await.unwrap();
    let mut ingest_stream = jetstream::new(service.clone())
        .get_stream("EQ_INGEST")
        .await
        .unwrap();
    let (dashboard, dashboard_errors) = connect(
        &nats.url(),
        async_nats::ConnectOptions::with_user_and_password("dashboard".into(), dashboard_password),
    )
    .await;
    let mut live = dashboard.subscribe("eq.live.>").await.unwrap();
    dashboard.flush().await.unwrap();

    // Device press-1 (nkey) reports for its own machine: request/reply and durable.
    let (press_device, press_errors) = connect(
        &nats.url(),
        async_nats::ConnectOptions::with_nkey(press.seed.clone().unwrap())
            .custom_inbox_prefix("_INBOX.press-1"),
    )
    .await;
    let reply = press_device
        .request(
            "eq.device.press-1.status",
            json!({"status": "red", "reason": "jam"}).to_string().into(),
        )
        .await
        .expect("a reply on the device's own inbox");
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply, json!({"ok": true, "version": 2}));
    let ack = jetstream::new(press_device.clone())
        .publish(
            "eq.ingest.press-1.status",
            json!({"status": "green"}).to_string().into(),
        )
        .await
        .unwrap()
        .await
        .expect("a JetStream publish ack on the device's own inbox");
    assert_eq!(ack.stream, "EQ_INGEST");
    let event = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .expect("the dashboard sees the change")
        .unwrap();
    assert_eq!(event.subject.as_str(), "eq.live.plant-a.line-1.press-1");

    // press-1 cannot act as kiln-2, on either path, nor use the JetStream API.
    while tokio::time::timeout(Duration::from_millis(200), device_subjects.next())
        .await
        .is_ok()
    {}
    let _ = press_device
        .publish(
            "eq.device.kiln-2.status",
            json!({"status": "red"}).to_string().into(),
        )
        .await;
    assert!(saw_violation(&press_errors, "eq.device.kiln-2.status").await);
    let before = ingest_stream.info().await.unwrap().state.messages;
    let forged = jetstream::new(press_device.clone())
        .publish(
            "eq.ingest.kiln-2.status",
            json!({"status": "red"}).to_string().into(),
        )
        .await;
    if let Ok(ack) = forged {
        assert!(ack.await.is_err(), "no ack for a forged durable message");
    }
    assert!(saw_violation(&press_errors, "eq.ingest.kiln-2.status").await);
    assert!(
        press_device
            .request("$JS.API.INFO", "".into())
            .await
            .is_err(),
        "no JetStream API for devices"
    );
    assert!(saw_violation(&press_errors, "$js.api.info").await);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), device_subjects.next())
            .await
            .is_err(),
        "nothing from press-1 reached another machine's subject"
    );
    assert_eq!(ingest_stream.info().await.unwrap().state.messages, before);
    assert_eq!(
        node.client().get("kiln-2").await.version(),
        1,
        "kiln-2 unchanged"
    );

    // Device kiln-2 (password) may report for kiln-2, and cannot read press-1's replies.
    let (kiln_device, kiln_errors) = connect(
        &nats.url(),
        async_nats::ConnectOptions::with_user_and_password(
            kiln.user.clone().unwrap(),
            kiln.password.clone().unwrap(),
        )
        .custom_inbox_prefix("_INBOX.kiln-2"),
    )
    .await;
    let reply = kiln_device
        .request(
            "eq.device.kiln-2.status",
            json!({"status": "yellow"}).to_string().into(),
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&reply.payload).unwrap()["ok"],
        true
    );
    let _snoop = kiln_device.subscribe("_INBOX.press-1.>").await;
    assert!(saw_violation(&kiln_errors, "_inbox.press-1.>").await);

    // The example Pi publisher with the issued nkey seed: its own machine yes, another no.
    let seed_file = config_dir.path().join("press-1.nk");
    std::fs::write(&seed_file, press.seed.clone().unwrap()).unwrap();
    let seed_path = seed_file.display().to_string();
    let url = nats.url();
    let pi = |id: &'static str, durable: bool| {
        let mut args = vec!["--server", &url, "--id", id, "--nkey-seed-file", &seed_path];
        args.extend(["--attempts", "1", "--timeout", "1"]);
        if durable {
            args.push("--durable");
        }
        args.push("yellow");
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    for durable in [false, true] {
        let args = pi("press-1", durable);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run_pi_publisher(&args).await;
        assert!(output.status.success(), "durable={durable}: {output:?}");
        let args = pi("kiln-2", durable);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run_pi_publisher(&args).await;
        assert_eq!(output.status.code(), Some(2), "not delivered: {output:?}");
    }
    assert_eq!(node.client().get("kiln-2").await.body["status"], "yellow");
    assert_eq!(
        node.client().get("kiln-2").await.version(),
        2,
        "only its own device changed it"
    );

    // The dashboard watches, and nothing else.
    let _ = dashboard.subscribe("eq.device.>").await;
    assert!(saw_violation(&dashboard_errors, "eq.device.>").await);
    let _ = dashboard
        .publish(
            "eq.device.press-1.status",
            json!({"status": "red"}).to_string().into(),
        )
        .await;
    assert!(saw_violation(&dashboard_errors, "eq.device.press-1.status").await);
}
