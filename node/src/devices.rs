//! The device subject `eq.device.<id>.status`: Raspberry Pis publish status changes here
//! (no HTTP in between). With a reply subject the device gets `{ok, version}` or
//! `{ok:false, error}`; a refused message is also published on `eq.rejects.<id>` and counted.

use std::sync::Arc;

use async_nats::Message;
use chrono::{DateTime, Utc};
use eq_actors::domain::{
    self, EquipmentId, MAX_ACTOR_LEN, MAX_NOTE_LEN, ReasonCode, Source, Status,
};
use eq_actors::equipment::{Action, Command, StatusChange, outcome_label};
use eq_actors::subjects::Subjects;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::cluster::router::Router;

/// Largest accepted device message.
pub const MAX_DEVICE_PAYLOAD: usize = 8 * 1024;

/// What a device publishes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceStatus {
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub command_id: Option<String>,
    /// Optional: if present it must equal the subject's id.
    #[serde(default, alias = "equipment_id")]
    pub id: Option<String>,
}

/// The reply to a device.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct DeviceReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeviceError>,
}

/// Why a device message was refused.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct DeviceError {
    pub code: String,
    pub message: String,
}

/// A refusal, published on `eq.rejects.<id>`.
#[derive(Debug, Serialize)]
struct RejectNotice<'a> {
    subject: &'a str,
    code: &'a str,
    message: &'a str,
    payload: String,
    rejected_at: DateTime<Utc>,
}

/// A refusal with a stable code.
pub fn refuse(code: &str, message: impl Into<String>) -> DeviceError {
    DeviceError {
        code: code.into(),
        message: message.into(),
    }
}

/// Parses and validates a message on `eq.device.<id>.status` into a command (pure).
pub fn parse(subjects: &Subjects, subject: &str, payload: &[u8]) -> Result<Command, DeviceError> {
    parse_body(subjects.id_from_device_subject(subject), payload)
}

/// Parses and validates a device message whose subject names `raw_id` (`None`: the subject
/// had no id token) into a command (pure; unit-tested). Shared by the request/reply and the
/// durable ingest paths.
pub fn parse_body(raw_id: Option<&str>, payload: &[u8]) -> Result<Command, DeviceError> {
    if payload.len() > MAX_DEVICE_PAYLOAD {
        return Err(refuse(
            "payload_too_large",
            format!("message exceeds {MAX_DEVICE_PAYLOAD} bytes"),
        ));
    }
    let raw_id =
        raw_id.ok_or_else(|| refuse("invalid_subject", "subject is not eq.device.<id>.status"))?;
    let id = EquipmentId::parse(raw_id).map_err(|e| refuse("invalid_id", e.to_string()))?;
    let body: DeviceStatus =
        serde_json::from_slice(payload).map_err(|e| refuse("malformed_json", e.to_string()))?;
    if let Some(body_id) = &body.id
        && body_id != id.as_str()
    {
        return Err(refuse(
            "subject_mismatch",
            format!("body id {body_id:?} differs from subject id {id:?}"),
        ));
    }
    let status =
        Status::parse(&body.status).map_err(|e| refuse("invalid_status", e.to_string()))?;
    let reason = body
        .reason
        .map(ReasonCode::parse)
        .transpose()
        .map_err(|e| refuse("invalid_reason", e.to_string()))?;
    if let Some(note) = &body.note {
        domain::check_text("note", note, MAX_NOTE_LEN)
            .map_err(|e| refuse("invalid_note", e.to_string()))?;
    }
    let by = body.device_id.unwrap_or_else(|| format!("device:{id}"));
    domain::check_text("device_id", &by, MAX_ACTOR_LEN)
        .map_err(|e| refuse("invalid_device_id", e.to_string()))?;
    if let Some(key) = &body.command_id {
        domain::check_command_id(key).map_err(|e| refuse("invalid_command_id", e.to_string()))?;
    }
    Ok(Command {
        equipment_id: id,
        action: Action::SetStatus(StatusChange {
            status,
            reason,
            note: body.note,
            occurred_at: body.occurred_at,
        }),
        command_id: body.command_id,
        expected_version: None,
        updated_by: by,
        source: Source::Device,
        ingest: None,
        scope: None,
    })
}

/// Subscribes to the device subject (queue group: each message handled by one node) until
/// `shutdown`.
pub async fn run(
    client: async_nats::Client,
    subjects: Subjects,
    router: Arc<Router>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut subscription = client
        .queue_subscribe(subjects.device_status_all(), "eq-devices".to_string())
        .await?;
    info!(subject = %subjects.device_status_all(), "listening for devices");
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = subscription.next() => match message {
                Some(m) => m,
                None => break,
            },
        };
        let client = client.clone();
        let subjects = subjects.clone();
        let router = router.clone();
        // A device may send a `traceparent` header: the command then joins its trace.
        let span = eq_actors::trace::joined(
            tracing::info_span!(
                "device.message",
                subject = %message.subject,
                trace_id = tracing::field::Empty,
            ),
            message.headers.as_ref(),
        );
        tokio::spawn(handle(client, subjects, router, message).instrument(span));
    }
    let _ = subscription.unsubscribe().await;
    Ok(())
}

async fn handle(
    client: async_nats::Client,
    subjects: Subjects,
    router: Arc<Router>,
    message: Message,
) {
    let refused = Refused {
        subject: &message.subject,
        raw_id: subjects.id_from_device_subject(&message.subject),
        payload: &message.payload,
    };
    let reply = match parse(&subjects, &message.subject, &message.payload) {
        Err(error) => {
            reject(&client, &subjects, &refused, &error).await;
            DeviceReply {
                ok: false,
                version: None,
                error: Some(error),
            }
        }
        Ok(command) => {
            let started = std::time::Instant::now();
            let result = router.execute(command).await;
            let outcome = outcome_label(&result);
            metrics::counter!("eq_commands_total", "source" => "device", "result" => outcome)
                .increment(1);
            metrics::histogram!("eq_command_duration_seconds", "source" => "device")
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(outcome) => DeviceReply {
                    ok: true,
                    version: Some(outcome.equipment.version.0),
                    error: None,
                },
                Err(e) => {
                    let error = refuse(e.code(), e.to_string());
                    if !e.is_transient() {
                        reject(&client, &subjects, &refused, &error).await;
                    }
                    DeviceReply {
                        ok: false,
                        version: None,
                        error: Some(error),
                    }
                }
            }
        }
    };
    if let Some(reply_to) = message.reply {
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        if let Err(error) = client.publish(reply_to, body.into()).await {
            debug!(%error, "device reply not sent");
        }
    }
}

/// A device message that was refused: where it came from and what it said.
pub struct Refused<'a> {
    pub subject: &'a str,
    /// The id token of the subject, unvalidated.
    pub raw_id: Option<&'a str>,
    pub payload: &'a [u8],
}

/// Counts a refused device message and publishes it on `eq.rejects.<id>` with the reason.
pub async fn reject(
    client: &async_nats::Client,
    subjects: &Subjects,
    refused: &Refused<'_>,
    error: &DeviceError,
) {
    let Refused {
        subject,
        raw_id,
        payload,
    } = *refused;
    metrics::counter!("eq_device_rejects_total", "code" => error.code.clone()).increment(1);
    let token = raw_id
        .filter(|t| domain::check_token("id", t).is_ok())
        .unwrap_or("_invalid");
    warn!(%subject, code = %error.code, "device message refused");
    let preview: String = String::from_utf8_lossy(payload).chars().take(512).collect();
    let notice = RejectNotice {
        subject,
        code: &error.code,
        message: &error.message,
        payload: preview,
        rejected_at: Utc::now(),
    };
    let body = serde_json::to_vec(&notice).unwrap_or_default();
    let _ = client.publish(subjects.rejects(token), body.into()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(subject: &str, body: &str) -> Command {
        parse(&Subjects::default(), subject, body.as_bytes()).expect("accepted")
    }

    fn parse_err(subject: &str, body: &[u8]) -> String {
        parse(&Subjects::default(), subject, body)
            .expect_err("refused")
            .code
    }

    #[test]
    fn accepts_a_minimal_message() {
        let cmd = parse_ok(
            "eq.device.press-1.status",
            r#"{"status":"red","reason":"jam"}"#,
        );
        assert_eq!(cmd.equipment_id.as_str(), "press-1");
        assert_eq!(cmd.source, Source::Device);
        assert_eq!(cmd.updated_by, "device:press-1");
    }

    #[test]
    fn refuses_bad_messages_with_a_code() {
        let s = "eq.device.press-1.status";
        assert_eq!(parse_err(s, b"{not json"), "malformed_json");
        assert_eq!(parse_err(s, br#"{"status":"blue"}"#), "invalid_status");
        assert_eq!(
            parse_err(s, br#"{"status":"red","id":"press-2"}"#),
            "subject_mismatch"
        );
        assert_eq!(
            parse_err(s, br#"{"status":"red","reason":"a b"}"#),
            "invalid_reason"
        );
        assert_eq!(
            parse_err(s, br#"{"status":"red","extra":1}"#),
            "malformed_json"
        );
        assert_eq!(
            parse_err(s, &vec![b' '; MAX_DEVICE_PAYLOAD + 1]),
            "payload_too_large"
        );
        let long_note = format!(
            r#"{{"status":"red","note":"{}"}}"#,
            "x".repeat(MAX_NOTE_LEN + 1)
        );
        assert_eq!(parse_err(s, long_note.as_bytes()), "invalid_note");
    }
}
