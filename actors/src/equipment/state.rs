//! The pure equipment state machine: `decide(state, command) -> Decision | Rejection` and
//! `apply(state, event) -> state`. No I/O and no clock reads here: the actor passes `now` in,
//! so every rule is unit-tested without NATS.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{EquipmentId, Line, ReasonCode, Site, Source, Status, Version, fnv1a64};
use crate::scope::Scope;

/// How many recent idempotency keys each equipment remembers (in its events, so they survive
/// restarts and hand-offs; JetStream's `Nats-Msg-Id` window backs this up cluster-wide).
pub const RECENT_COMMANDS: usize = 8;

/// The full state of one equipment, as carried by every event and returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Equipment {
    pub id: EquipmentId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub site: Site,
    pub line: Line,
    #[serde(default)]
    pub tags: Vec<String>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReasonCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who made the last change (person or device id).
    pub updated_by: String,
    /// Where the last change came from.
    pub source: Source,
    /// Server time at which the current status began (a re-sent identical status keeps it).
    pub status_since: DateTime<Utc>,
    /// The client's clock for the last status change (may be wrong; see `clock_suspect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// The client's `occurred_at` was implausibly far from the server clock.
    #[serde(default)]
    pub clock_suspect: bool,
    /// Server time of the last change that came from a device (for the silence watchdog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_seen_at: Option<DateTime<Utc>>,
    pub version: Version,
    #[serde(default)]
    pub decommissioned: bool,
    pub registered_at: DateTime<Utc>,
    /// Server time of the last accepted event.
    pub updated_at: DateTime<Utc>,
}

/// One remembered idempotency key: the version it produced and the stream sequence of that
/// event (0 while it is the event being written: the reader fills it in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentCommand {
    pub key: String,
    pub fingerprint: u64,
    pub version: Version,
    #[serde(default)]
    pub seq: u64,
    /// Who used the key (a hash of `updated_by`; 0 in events written before it was kept):
    /// another caller's same key and body must not be answered with this caller's result.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub caller: u64,
}

/// What the actor holds: the equipment (if registered) and its recent idempotency keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EquipmentState {
    pub equipment: Option<Equipment>,
    pub recent: Vec<RecentCommand>,
    /// Highest `EQ_INGEST` sequence applied to this machine (0: none), in the stream of
    /// `ingest_epoch`. Durable device messages arrive in stream order, so anything at or
    /// below it was applied already.
    pub ingest_high: u64,
    pub ingest_epoch: i64,
    /// Which occurrences were already alerted (so each is alerted once).
    pub alerted: AlertMarks,
}

/// The occurrences a machine's watchdog alerts were raised for, carried in every event so
/// that a restart or a hand-off never alerts the same occurrence twice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertMarks {
    /// `status_since` of the red period last alerted as too long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub red_since: Option<DateTime<Utc>>,
    /// `device_seen_at` of the silence last alerted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_seen_at: Option<DateTime<Utc>>,
}

impl AlertMarks {
    fn is_empty(&self) -> bool {
        *self == AlertMarks::default()
    }
}

/// A watchdog's finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AlertKind {
    /// Red for longer than `after_secs`.
    RedTooLong { after_secs: u64 },
    /// No change from the machine's device for `after_secs`.
    DeviceSilent { after_secs: u64 },
}

/// An alert, as recorded in its event and published on `eq.alerts.<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    #[serde(flatten)]
    pub kind: AlertKind,
    /// When the condition began (the red period's start, or the device's last change).
    pub since: DateTime<Utc>,
}

/// Kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Registered,
    MetadataUpdated,
    StatusChanged,
    Decommissioned,
    /// The reason of a past stop was assigned or corrected (the state's status is as it was).
    ReasonCorrected,
    /// A watchdog found the machine red too long, or its device silent.
    AlertRaised,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::MetadataUpdated => "metadata_updated",
            EventKind::StatusChanged => "status_changed",
            EventKind::Decommissioned => "decommissioned",
            EventKind::ReasonCorrected => "reason_corrected",
            EventKind::AlertRaised => "alert_raised",
        }
    }
}

/// A persisted event: what happened, and the full resulting state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub equipment_id: EquipmentId,
    pub version: Version,
    pub recorded_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// Status before this event (status changes only), for consumers that want transitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<Status>,
    pub state: Equipment,
    /// For `reason_corrected`: which stop, and its reason now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<ReasonCorrection>,
    /// Recent idempotency keys, so a reloaded actor still recognises retries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_commands: Vec<RecentCommand>,
    /// Carried forward like `recent_commands`: see [`EquipmentState::ingest_high`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingest_high: u64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ingest_epoch: i64,
    /// For `alert_raised`: the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
    /// Carried forward: see [`EquipmentState::alerted`].
    #[serde(default, skip_serializing_if = "AlertMarks::is_empty")]
    pub alerted: AlertMarks,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn is_zero_i64(value: &i64) -> bool {
    *value == 0
}

/// Registration data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub name: String,
    pub description: String,
    pub site: Site,
    pub line: Line,
    pub tags: Vec<String>,
    pub status: Status,
}

/// A metadata change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub site: Option<Site>,
    pub line: Option<Line>,
    pub tags: Option<Vec<String>>,
}

impl MetadataPatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.site.is_none()
            && self.line.is_none()
            && self.tags.is_none()
    }
}

/// Assigns or corrects the reason of a past stop: the red time that began with the event of
/// version `stop_version` (until the machine left red). The history is never overwritten:
/// this is an event of its own, and reports apply it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasonCorrection {
    pub stop_version: Version,
    /// `None` makes the stop unqualified again.
    pub reason: Option<ReasonCode>,
}

/// A status change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: Status,
    pub reason: Option<ReasonCode>,
    pub note: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    Register(Registration),
    UpdateMetadata(MetadataPatch),
    Decommission,
    SetStatus(StatusChange),
    CorrectReason(ReasonCorrection),
    RaiseAlert(AlertKind),
}

/// A command to one equipment, already validated at the edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// The equipment this command is addressed to.
    pub equipment_id: EquipmentId,
    pub action: Action,
    /// Idempotency key (HTTP `Idempotency-Key`, NATS `command_id`).
    pub command_id: Option<String>,
    /// Optimistic concurrency (HTTP `If-Match`).
    pub expected_version: Option<Version>,
    pub updated_by: String,
    pub source: Source,
    /// Where the durable device message this command came from sits in `EQ_INGEST`: the
    /// exactly-once key for redeliveries, whatever the dedupe windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestMark>,
    /// Where the caller may change things (an API token's site/line scope); `None` for
    /// devices and the system, whose subjects or roles already bound them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// A durable device message's place in `EQ_INGEST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestMark {
    /// The stream's creation time (ns): a stream deleted and created again starts its
    /// sequences over, and must not look already applied.
    pub epoch: i64,
    pub seq: u64,
    /// When the stream stored it (the device's message reached us then, even if it is
    /// applied later).
    pub stored_at: DateTime<Utc>,
}

impl Command {
    /// A stable fingerprint of what the command asks, to tell a retry from a reused key.
    pub fn fingerprint(&self) -> u64 {
        let bytes = serde_json::to_vec(&self.action).unwrap_or_default();
        fnv1a64(&bytes)
    }

    /// Who sends it, as remembered with its idempotency key (never 0).
    pub fn caller_fingerprint(&self) -> u64 {
        fnv1a64(self.updated_by.as_bytes()).max(1)
    }
}

/// Business rules that vary per installation.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Sites where a red status must carry a reason code.
    pub sites_requiring_red_reason: Vec<String>,
    /// A client clock further ahead than this is suspect.
    pub max_clock_ahead: Duration,
    /// A client clock further behind than this is suspect.
    pub max_clock_behind: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            sites_requiring_red_reason: Vec::new(),
            max_clock_ahead: Duration::minutes(5),
            max_clock_behind: Duration::hours(24),
        }
    }
}

/// Why a command was refused. Each maps to one HTTP status and one NATS error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Rejection {
    #[error("equipment not found")]
    NotFound,
    #[error("equipment already exists")]
    AlreadyExists,
    #[error("equipment is decommissioned")]
    Decommissioned,
    #[error("version mismatch: expected {expected}, current {current}")]
    VersionMismatch { expected: Version, current: Version },
    #[error("a red status at this site requires a reason")]
    ReasonRequired,
    /// Only from owners of an earlier version (an empty update is now a no-op), during a
    /// roll-out: kept so that their answers still decode.
    #[error("the update changes nothing")]
    EmptyUpdate,
    #[error("idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("no past stop begins at version {0}")]
    NoSuchStop(Version),
    #[error("no alert is due (the condition does not hold, or it was alerted already)")]
    AlertNotDue,
    #[error("the machine's site and line are outside the caller's scope")]
    OutOfScope,
}

impl Rejection {
    /// A stable machine-readable code (NATS error replies, problem `code`, metric label).
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::NotFound => "not_found",
            Rejection::AlreadyExists => "already_exists",
            Rejection::Decommissioned => "decommissioned",
            Rejection::VersionMismatch { .. } => "version_mismatch",
            Rejection::ReasonRequired => "reason_required",
            Rejection::EmptyUpdate => "empty_update",
            Rejection::IdempotencyKeyReused => "idempotency_key_reused",
            Rejection::NoSuchStop(_) => "no_such_stop",
            Rejection::AlertNotDue => "alert_not_due",
            Rejection::OutOfScope => "out_of_scope",
        }
    }
}

/// The caller's scope must cover the machine where it is and, for a registration or a
/// move, where it goes. Checked before the idempotency table, so that a key cannot be used
/// to read another area's answers.
fn check_scope(command: &Command, current: Option<&Equipment>) -> Result<(), Rejection> {
    let Some(scope) = &command.scope else {
        return Ok(());
    };
    let here = current.map(|e| (&e.site, &e.line));
    let there = match (&command.action, current) {
        (Action::Register(reg), _) => Some((&reg.site, &reg.line)),
        (Action::UpdateMetadata(patch), Some(e)) => Some((
            patch.site.as_ref().unwrap_or(&e.site),
            patch.line.as_ref().unwrap_or(&e.line),
        )),
        _ => None,
    };
    if [here, there]
        .into_iter()
        .flatten()
        .all(|(site, line)| scope.covers(site, line))
    {
        Ok(())
    } else {
        Err(Rejection::OutOfScope)
    }
}

/// What `decide` concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Append this event.
    Append(Box<Event>),
    /// The command is a retry of one already applied: answer with that result.
    Duplicate { version: Version, seq: u64 },
    /// A durable device message at or below the machine's ingest high-water mark: it was
    /// applied before (a redelivery). Answer with the current state.
    AlreadyApplied,
    /// The command changes nothing (an update that sets no field, like a JSON merge patch
    /// `{}`): answer with the current state, write nothing.
    Unchanged,
}

/// Decides what a command does to a state, without side effects.
pub fn decide(
    state: &EquipmentState,
    command: &Command,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Result<Decision, Rejection> {
    if let Some(mark) = command.ingest
        && mark.epoch == state.ingest_epoch
        && mark.seq <= state.ingest_high
    {
        return Ok(Decision::AlreadyApplied);
    }
    check_scope(command, state.equipment.as_ref())?;
    if let Some(key) = &command.command_id
        && let Some(seen) = state.recent.iter().find(|r| &r.key == key)
    {
        let other_caller = seen.caller != 0 && seen.caller != command.caller_fingerprint();
        if seen.fingerprint != command.fingerprint() || other_caller {
            return Err(Rejection::IdempotencyKeyReused);
        }
        return Ok(Decision::Duplicate {
            version: seen.version,
            seq: seen.seq,
        });
    }

    let current = state.equipment.as_ref();
    if let Some(expected) = command.expected_version {
        let actual = current.map_or(Version(0), |e| e.version);
        if expected != actual {
            return Err(match current {
                None => Rejection::NotFound,
                Some(_) => Rejection::VersionMismatch {
                    expected,
                    current: actual,
                },
            });
        }
    }

    let mut alert = None;
    let (kind, previous_status, next) = match (&command.action, current) {
        (Action::Register(reg), None) => {
            let equipment = Equipment {
                id: command.equipment_id.clone(),
                name: reg.name.clone(),
                description: reg.description.clone(),
                site: reg.site.clone(),
                line: reg.line.clone(),
                tags: reg.tags.clone(),
                status: reg.status,
                reason: None,
                note: None,
                updated_by: command.updated_by.clone(),
                source: command.source,
                status_since: now,
                occurred_at: None,
                clock_suspect: false,
                device_seen_at: None,
                version: Version(1),
                decommissioned: false,
                registered_at: now,
                updated_at: now,
            };
            (EventKind::Registered, None, equipment)
        }
        (Action::Register(_), Some(_)) => return Err(Rejection::AlreadyExists),
        (_, None) => return Err(Rejection::NotFound),
        (_, Some(e)) if e.decommissioned => return Err(Rejection::Decommissioned),
        (Action::UpdateMetadata(patch), Some(e)) => {
            if patch.is_empty() {
                return Ok(Decision::Unchanged);
            }
            let mut next = e.clone();
            if let Some(name) = &patch.name {
                next.name = name.clone();
            }
            if let Some(description) = &patch.description {
                next.description = description.clone();
            }
            if let Some(site) = &patch.site {
                next.site = site.clone();
            }
            if let Some(line) = &patch.line {
                next.line = line.clone();
            }
            if let Some(tags) = &patch.tags {
                next.tags = tags.clone();
            }
            (EventKind::MetadataUpdated, None, touch(next, command, now))
        }
        (Action::Decommission, Some(e)) => {
            let mut next = e.clone();
            next.decommissioned = true;
            (EventKind::Decommissioned, None, touch(next, command, now))
        }
        (Action::CorrectReason(correction), Some(e)) => {
            // Only the past: the current version is the machine's present state.
            if correction.stop_version.0 == 0 || correction.stop_version >= e.version {
                return Err(Rejection::NoSuchStop(correction.stop_version));
            }
            (
                EventKind::ReasonCorrected,
                None,
                touch(e.clone(), command, now),
            )
        }
        (Action::RaiseAlert(kind), Some(e)) => {
            let due_since = match *kind {
                AlertKind::RedTooLong { after_secs } => (e.status == Status::Red
                    && state.alerted.red_since != Some(e.status_since)
                    && now - e.status_since >= Duration::seconds(after_secs as i64))
                .then_some(e.status_since),
                AlertKind::DeviceSilent { after_secs } => e.device_seen_at.filter(|seen| {
                    state.alerted.device_seen_at != Some(*seen)
                        && now - *seen >= Duration::seconds(after_secs as i64)
                }),
            };
            let Some(since) = due_since else {
                return Err(Rejection::AlertNotDue);
            };
            alert = Some(Alert { kind: *kind, since });
            // The machine's state is as it was: only the version moves.
            (EventKind::AlertRaised, None, e.clone())
        }
        (Action::SetStatus(change), Some(e)) => {
            if change.status == Status::Red
                && change.reason.is_none()
                && rules
                    .sites_requiring_red_reason
                    .iter()
                    .any(|s| s == e.site.as_str())
            {
                return Err(Rejection::ReasonRequired);
            }
            let mut next = e.clone();
            if next.status != change.status {
                next.status_since = now;
            }
            next.status = change.status;
            next.reason = change.reason.clone();
            next.note = change.note.clone();
            next.occurred_at = change.occurred_at;
            next.clock_suspect = change.occurred_at.is_some_and(|t| {
                t > now + rules.max_clock_ahead || t < now - rules.max_clock_behind
            });
            if command.source == Source::Device {
                // A durable message was heard when it was stored, not when applied.
                next.device_seen_at = Some(command.ingest.map_or(now, |m| m.stored_at.min(now)));
            }
            (
                EventKind::StatusChanged,
                Some(e.status),
                touch(next, command, now),
            )
        }
    };

    let version = current.map_or(Version(1), |e| e.version.next());
    let mut next = next;
    next.version = version;
    let mut recent = state.recent.clone();
    if let Some(key) = &command.command_id {
        recent.push(RecentCommand {
            key: key.clone(),
            fingerprint: command.fingerprint(),
            version,
            seq: 0,
            caller: command.caller_fingerprint(),
        });
        if recent.len() > RECENT_COMMANDS {
            recent.remove(0);
        }
    }
    let (ingest_epoch, ingest_high) = match command.ingest {
        Some(m) if m.epoch == state.ingest_epoch => (m.epoch, state.ingest_high.max(m.seq)),
        // A new ingest stream: its sequences start over.
        Some(m) => (m.epoch, m.seq),
        None => (state.ingest_epoch, state.ingest_high),
    };
    let mut alerted = state.alerted.clone();
    if let Some(a) = &alert {
        match a.kind {
            AlertKind::RedTooLong { .. } => alerted.red_since = Some(a.since),
            AlertKind::DeviceSilent { .. } => alerted.device_seen_at = Some(a.since),
        }
    }
    Ok(Decision::Append(Box::new(Event {
        kind,
        equipment_id: next.id.clone(),
        version,
        recorded_at: now,
        command_id: command.command_id.clone(),
        previous_status,
        correction: match &command.action {
            Action::CorrectReason(c) => Some(c.clone()),
            _ => None,
        },
        state: next,
        recent_commands: recent,
        ingest_high,
        ingest_epoch,
        alert,
        alerted,
    })))
}

/// Stamps who changed it and when.
fn touch(mut next: Equipment, command: &Command, now: DateTime<Utc>) -> Equipment {
    next.updated_by = command.updated_by.clone();
    next.source = command.source;
    next.updated_at = now;
    next
}

/// Applies an event to a state. `seq` is the event's stream sequence, recorded for the
/// idempotency entry that this event itself introduced.
pub fn apply(state: EquipmentState, event: &Event, seq: u64) -> EquipmentState {
    let mut recent = event.recent_commands.clone();
    for r in recent.iter_mut() {
        if r.seq == 0 && r.version == event.version {
            r.seq = seq;
        }
    }
    drop(state);
    EquipmentState {
        equipment: Some(event.state.clone()),
        recent,
        ingest_high: event.ingest_high,
        ingest_epoch: event.ingest_epoch,
        alerted: event.alerted.clone(),
    }
}
