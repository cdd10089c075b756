//! A load generator for cluster tests: workers set statuses through a changing set of
//! gateways, like a client behind a load balancer. Each change has its own idempotency key
//! and is retried with it — on a transport error at another gateway, on a 503 after its
//! `Retry-After` — so a request only "fails" if it never gets a 2xx. Every acknowledged
//! (equipment, version, status) is recorded, to be compared with the history afterwards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::ApiClient;

const STATUSES: [&str; 3] = ["green", "yellow", "red"];

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Every acknowledged change: (equipment, version) → status.
    pub acked: BTreeMap<(String, u64), String>,
    /// Requests that never got a 2xx, with the last answer.
    pub failed: Vec<String>,
    /// 503 answers that were retried after `Retry-After`.
    pub retried_503: u64,
    /// Transport errors (node gone) that were retried elsewhere.
    pub retried_transport: u64,
}

/// A running load.
pub struct Load {
    pub gateways: Arc<RwLock<Vec<String>>>,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
    acked: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` workers over `ids` through `gateways` (base URLs).
    pub fn start(gateways: Vec<String>, ids: Vec<String>, workers: usize) -> Self {
        let gateways = Arc::new(RwLock::new(gateways));
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let acked = Arc::new(AtomicU64::new(0));
        let client = ApiClient::new("http://unused");
        let mut tasks = Vec::new();
        for w in 0..workers {
            let (gateways, stop, report, acked, http) = (
                gateways.clone(),
                stop.clone(),
                report.clone(),
                acked.clone(),
                client.http().clone(),
            );
            let mine: Vec<String> = ids.iter().skip(w).step_by(workers).cloned().collect();
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    for id in &mine {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let status = STATUSES[i % 3];
                        i += 1;
                        let key = uuid::Uuid::new_v4().to_string();
                        let body = json!({"status": status, "updated_by": format!("load-{w}")});
                        change(&http, &gateways, id, &key, &body, i, &report, &acked).await;
                    }
                }
            }));
        }
        Self {
            gateways,
            stop,
            report,
            acked,
            tasks,
        }
    }

    /// How many changes were acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` further changes are acknowledged (or panics after `timeout`).
    pub async fn wait_for_more(&self, more: u64, timeout: Duration) {
        let target = self.acked() + more;
        let deadline = tokio::time::Instant::now() + timeout;
        while self.acked() < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "load stalled: {} of {target} acknowledged; failures so far: {:?}",
                self.acked(),
                self.report.lock().unwrap().failed
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the workers (each finishes its current change) and returns what they saw.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.report.lock().unwrap().clone()
    }
}

#[allow(clippy::too_many_arguments)]
async fn change(
    http: &reqwest::Client,
    gateways: &RwLock<Vec<String>>,
    id: &str,
    key: &str,
    body: &Value,
    start: usize,
    report: &Mutex<LoadReport>,
    acked: &AtomicU64,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut attempt = start;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        let gateway = {
            let g = gateways.read().unwrap();
            g[attempt % g.len()].clone()
        };
        attempt += 1;
        let request = http
            .put(format!("{gateway}/v1/equipment/{id}/status"))
            .header("Idempotency-Key", key)
            .timeout(Duration::from_secs(20))
            .json(body);
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                let value: Value = response.json().await.unwrap_or(Value::Null);
                let version = value["version"].as_u64().unwrap_or(0);
                let status = value["status"].as_str().unwrap_or_default().to_string();
                report
                    .lock()
                    .unwrap()
                    .acked
                    .insert((id.to_string(), version), status);
                acked.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(response) if response.status().as_u16() == 503 => {
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                report.lock().unwrap().retried_503 += 1;
                last = format!("503 {}", response.text().await.unwrap_or_default());
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                report
                    .lock()
                    .unwrap()
                    .failed
                    .push(format!("{id} via {gateway}: {status} {text}"));
                return;
            }
            Err(e) => {
                report.lock().unwrap().retried_transport += 1;
                last = format!("transport: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    report
        .lock()
        .unwrap()
        .failed
        .push(format!("{id}: gave up, last answer {last}"));
}

/// Checks the history against what was acknowledged: for every equipment the history holds
/// versions 1..=current exactly once, and every acknowledged change is there with its status.
pub async fn verify_history(client: &ApiClient, ids: &[String], report: &LoadReport) {
    for id in ids {
        let current = client.get(id).await;
        assert_eq!(current.status, 200, "{id}: {:?}", current.body);
        let version = current.version();
        let max_acked = report
            .acked
            .keys()
            .filter(|(i, _)| i == id)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(1);
        assert!(
            version >= max_acked,
            "{id}: state v{version} lost acknowledged v{max_acked}"
        );
        let items = crate::wait_for(&format!("history of {id}"), Duration::from_secs(60), || {
            let client = client.clone();
            let id = id.clone();
            async move {
                let items = client.history(&id).await;
                (items.len() as u64 >= version).then_some(items)
            }
        })
        .await;
        crate::assert_gapless(id, &items[..]);
        assert_eq!(
            items.len() as u64,
            version,
            "{id}: history reaches the state"
        );
        for item in &items {
            let v = item["version"].as_u64().unwrap();
            if let Some(status) = report.acked.get(&(id.clone(), v)) {
                assert_eq!(&item["status"], status, "{id} v{v}");
            }
        }
    }
}
