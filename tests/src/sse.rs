//! A Server-Sent Events client written for the tests from the SSE specification (not the
//! node's code): it parses `event:`, `id:`, `data:` fields and comments from a raw HTTP
//! body stream.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;

/// One SSE event.
#[derive(Debug, Clone)]
pub struct SseFrame {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

impl SseFrame {
    /// `equipment.id` of the payload.
    pub fn equipment_id(&self) -> &str {
        self.data["equipment"]["id"].as_str().unwrap_or_default()
    }

    /// `equipment.version` of the payload.
    pub fn version(&self) -> u64 {
        self.data["equipment"]["version"]
            .as_u64()
            .unwrap_or_default()
    }
}

/// An open event stream.
pub struct SseClient {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    /// Comment lines seen so far (keep-alives).
    pub comments: usize,
}

impl SseClient {
    /// Opens `url` (with `Last-Event-ID` if given); panics unless the answer is a 200
    /// `text/event-stream`.
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> Self {
        let client = crate::auth::admin_http();
        let mut request = client.get(url).header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("SSE request");
        assert_eq!(response.status(), 200, "SSE status");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            content_type.starts_with("text/event-stream"),
            "content type {content_type}"
        );
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event, or `None` if the stream ends or nothing arrives within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseFrame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(frame) = self.take_frame() {
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??
                .ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Parses one complete event (blank-line terminated) off the buffer.
    fn take_frame(&mut self) -> Option<SseFrame> {
        loop {
            let normalized = self.buffer.replace("\r\n", "\n");
            let end = normalized.find("\n\n")?;
            let block = normalized[..end].to_string();
            self.buffer = normalized[end + 2..].to_string();
            let (mut event, mut id, mut data) = ("message".to_string(), None, Vec::new());
            let mut fields = 0;
            for line in block.lines() {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                fields += 1;
                match field {
                    "event" => event = value.to_string(),
                    "id" => id = Some(value.to_string()),
                    "data" => data.push(value.to_string()),
                    _ => {}
                }
            }
            if fields == 0 {
                continue;
            }
            let data = serde_json::from_str(&data.join("\n")).unwrap_or(Value::Null);
            return Some(SseFrame { event, id, data });
        }
    }
}
