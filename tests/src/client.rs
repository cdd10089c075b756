//! A small client of the HTTP API for tests and the benchmark (plain reqwest, no generated
//! code, so the tests check the wire format itself).

use std::time::Duration;

use serde_json::{Value, json};

/// An HTTP answer: status, headers of interest and JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub replayed: bool,
    pub body: Value,
}

impl Answer {
    pub fn version(&self) -> u64 {
        self.body["version"].as_u64().unwrap_or(0)
    }

    pub fn is_problem(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/problem+json"))
            && self.body["status"].as_u64() == Some(u64::from(self.status))
            && self.body["code"].is_string()
    }
}

/// Client of one node's API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client that calls with the harness's admin token.
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_token(base, crate::auth::admin_token())
    }

    /// A client that calls with `token`.
    pub fn with_token(base: impl Into<String>, token: &str) -> Self {
        Self {
            base: base.into(),
            http: crate::auth::authorized(token)
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(1024)
                .build()
                .expect("http client"),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request and collects the answer; `Err` only for transport failures.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header("etag");
        let content_type = header("content-type");
        let replayed = header("idempotent-replayed").as_deref() == Some("true");
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            etag,
            content_type,
            replayed,
            body,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn ready(&self) -> bool {
        matches!(
            self.http
                .get(self.url("/readyz"))
                .timeout(Duration::from_secs(3))
                .send()
                .await,
            Ok(r) if r.status().is_success()
        )
    }

    pub async fn register(&self, id: &str, site: &str, line: &str) -> Answer {
        self.send(self.http.post(self.url("/v1/equipment")).json(&json!({
            "id": id, "name": format!("Machine {id}"), "site": site, "line": line, "tags": ["test"],
        })))
        .await
        .expect("register request")
    }

    pub async fn set_status(&self, id: &str, body: Value) -> Result<Answer, reqwest::Error> {
        self.send(
            self.http
                .put(self.url(&format!("/v1/equipment/{id}/status")))
                .json(&body),
        )
        .await
    }

    pub async fn get(&self, id: &str) -> Answer {
        self.send(self.http.get(self.url(&format!("/v1/equipment/{id}"))))
            .await
            .expect("get request")
    }

    /// Every history entry of an equipment (all pages).
    pub async fn history(&self, id: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.url(&format!("/v1/equipment/{id}/history?limit=1000"));
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let answer = self
                .send(self.http.get(url))
                .await
                .expect("history request");
            assert_eq!(answer.status, 200, "history: {:?}", answer.body);
            items.extend(answer.body["items"].as_array().cloned().unwrap_or_default());
            match answer.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return items,
            }
        }
    }

    /// Waits until this node's history consumer has written `events` events (its
    /// `eq_history_events_written_total`), or panics after `timeout`.
    pub async fn wait_history_written(&self, events: u64, timeout: Duration) {
        crate::wait_for("the history caught up", timeout, || async {
            (self.metric_sum("eq_history_events_written_total", "").await >= events as f64)
                .then_some(())
        })
        .await;
    }

    /// The value of a Prometheus counter summed over all its label sets that contain
    /// `label_filter`.
    pub async fn metric_sum(&self, name: &str, label_filter: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(label_filter))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}
