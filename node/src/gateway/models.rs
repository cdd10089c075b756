//! The HTTP API's request and response bodies (what the OpenAPI spec documents), and their
//! conversion to and from the domain types.

use chrono::{DateTime, Utc};
use eq_actors::domain::{
    self, EquipmentId, InvalidField, Line, MAX_DESCRIPTION_LEN, MAX_NAME_LEN, MAX_NOTE_LEN,
    ReasonCode, Site,
};
use eq_actors::equipment::{Equipment, MetadataPatch, Registration, StatusChange};

use poem_openapi::{Enum, Object};

use super::token::{Name, Tag, Text, Token};

/// A machine's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum Status {
    /// Running.
    Green,
    /// Idle, degraded or warning.
    Yellow,
    /// Down.
    Red,
}

impl From<Status> for domain::Status {
    fn from(s: Status) -> Self {
        match s {
            Status::Green => domain::Status::Green,
            Status::Yellow => domain::Status::Yellow,
            Status::Red => domain::Status::Red,
        }
    }
}

impl From<domain::Status> for Status {
    fn from(s: domain::Status) -> Self {
        match s {
            domain::Status::Green => Status::Green,
            domain::Status::Yellow => Status::Yellow,
            domain::Status::Red => Status::Red,
        }
    }
}

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum Source {
    Api,
    Device,
    System,
}

impl From<domain::Source> for Source {
    fn from(s: domain::Source) -> Self {
        match s {
            domain::Source::Api => Source::Api,
            domain::Source::Device => Source::Device,
            domain::Source::System => Source::System,
        }
    }
}

/// One equipment with its current status.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct EquipmentView {
    /// Equipment id (`^[A-Za-z0-9_-]{1,64}$`).
    pub id: String,
    pub name: String,
    pub description: String,
    pub site: String,
    pub line: String,
    pub tags: Vec<String>,
    pub status: Status,
    /// Reason code of the current status, if any.
    #[oai(nullable)]
    pub reason: Option<String>,
    /// Note on the current status, if any.
    #[oai(nullable)]
    pub note: Option<String>,
    /// Who made the last change.
    pub updated_by: String,
    /// Where the last change came from.
    pub source: Source,
    /// When the current status began (server clock).
    pub status_since: DateTime<Utc>,
    /// The client's clock for the last status change.
    #[oai(nullable)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// The client's clock was implausibly far from the server's.
    pub clock_suspect: bool,
    /// Grows by one with every accepted change; the `ETag`.
    pub version: u64,
    /// Decommissioned machines keep their history but refuse changes.
    pub decommissioned: bool,
    pub registered_at: DateTime<Utc>,
    /// When the last change was recorded (server clock).
    pub updated_at: DateTime<Utc>,
}

impl poem_openapi::types::Example for EquipmentView {
    fn example() -> Self {
        let at = DateTime::parse_from_rfc3339("2026-11-30T08:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        EquipmentView {
            id: "brick-press-1".into(),
            name: "Brick press 1".into(),
            description: "Hydraulic brick press".into(),
            site: "brickworks".into(),
            line: "line-1".into(),
            tags: vec!["press".into()],
            status: Status::Red,
            reason: Some("jam".into()),
            note: Some("clay jammed in the mould".into()),
            updated_by: "operator-7".into(),
            source: Source::Api,
            status_since: at,
            occurred_at: Some(at),
            clock_suspect: false,
            version: 12,
            decommissioned: false,
            registered_at: at,
            updated_at: at,
        }
    }
}

impl From<Equipment> for EquipmentView {
    fn from(e: Equipment) -> Self {
        EquipmentView {
            id: e.id.into(),
            name: e.name,
            description: e.description,
            site: e.site.into(),
            line: e.line.into(),
            tags: e.tags,
            status: e.status.into(),
            reason: e.reason.map(Into::into),
            note: e.note,
            updated_by: e.updated_by,
            source: e.source.into(),
            status_since: e.status_since,
            occurred_at: e.occurred_at,
            clock_suspect: e.clock_suspect,
            version: e.version.0,
            decommissioned: e.decommissioned,
            registered_at: e.registered_at,
            updated_at: e.updated_at,
        }
    }
}

/// Registers a new equipment.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct RegisterEquipment {
    /// Equipment id, unique in the factory; also a NATS subject token.
    pub id: Token,
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Name,
    // Optional rather than a `default` in the schema: some generators (openapi-typescript)
    // make a property with a default required in request bodies.
    /// At most 2,000 characters (absent or null: empty).
    #[oai(nullable, validator(max_length = 2000))]
    pub description: Option<Text>,
    pub site: Token,
    pub line: Token,
    /// At most 32 (absent or null: none).
    #[oai(nullable, validator(max_items = 32))]
    pub tags: Option<Vec<Tag>>,
    /// Initial status (default `yellow`: registered, not yet reporting; null: the default).
    #[oai(nullable)]
    pub status: Option<Status>,
}

impl poem_openapi::types::Example for RegisterEquipment {
    fn example() -> Self {
        RegisterEquipment {
            id: Token("brick-press-1".into()),
            name: Name("Brick press 1".into()),
            description: Some(Text("Hydraulic brick press".into())),
            site: Token("brickworks".into()),
            line: Token("line-1".into()),
            tags: Some(vec![Tag("press".into())]),
            status: Some(Status::Yellow),
        }
    }
}

impl RegisterEquipment {
    /// Validates into the domain's id and registration.
    pub fn into_domain(self) -> Result<(EquipmentId, Registration), InvalidField> {
        let id = EquipmentId::parse(self.id.into_inner())?;
        let name = self.name.into_inner();
        domain::check_name("name", &name, MAX_NAME_LEN)?;
        let description = self.description.map(Text::into_inner).unwrap_or_default();
        domain::check_text("description", &description, MAX_DESCRIPTION_LEN)?;
        let tags: Vec<String> = self
            .tags
            .unwrap_or_default()
            .into_iter()
            .map(Tag::into_inner)
            .collect();
        domain::check_tags(&tags)?;
        Ok((
            id,
            Registration {
                name,
                description,
                site: Site::parse(self.site.into_inner())?,
                line: Line::parse(self.line.into_inner())?,
                tags,
                status: self.status.map_or(domain::Status::Yellow, Into::into),
            },
        ))
    }
}

/// Changes an equipment's metadata; absent (or null) fields stay as they are (a body that
/// sets none changes nothing).
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct UpdateEquipment {
    #[oai(nullable, validator(min_length = 1, max_length = 200))]
    pub name: Option<Name>,
    #[oai(nullable, validator(max_length = 2000))]
    pub description: Option<Text>,
    #[oai(nullable)]
    pub site: Option<Token>,
    #[oai(nullable)]
    pub line: Option<Token>,
    #[oai(nullable, validator(max_items = 32))]
    pub tags: Option<Vec<Tag>>,
}

impl poem_openapi::types::Example for UpdateEquipment {
    fn example() -> Self {
        UpdateEquipment {
            name: Some(Name("Brick press 1 (rebuilt)".into())),
            description: None,
            site: None,
            line: Some(Token("line-2".into())),
            tags: None,
        }
    }
}

impl UpdateEquipment {
    pub fn into_domain(self) -> Result<MetadataPatch, InvalidField> {
        let name = self.name.map(Name::into_inner);
        if let Some(name) = &name {
            domain::check_name("name", name, MAX_NAME_LEN)?;
        }
        let description = self.description.map(Text::into_inner);
        if let Some(description) = &description {
            domain::check_text("description", description, MAX_DESCRIPTION_LEN)?;
        }
        let tags: Option<Vec<String>> = self
            .tags
            .map(|tags| tags.into_iter().map(Tag::into_inner).collect());
        if let Some(tags) = &tags {
            domain::check_tags(tags)?;
        }
        Ok(MetadataPatch {
            name,
            description,
            site: self.site.map(|t| Site::parse(t.into_inner())).transpose()?,
            line: self.line.map(|t| Line::parse(t.into_inner())).transpose()?,
            tags,
        })
    }
}

/// Sets an equipment's status.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct SetStatus {
    pub status: Status,
    /// Reason code (`^[A-Za-z0-9_-]{1,64}$`); some sites require one for `red`.
    #[oai(nullable)]
    pub reason: Option<Token>,
    /// Free text, at most 1000 characters.
    #[oai(nullable, validator(max_length = 1000))]
    pub note: Option<Text>,
    /// When it happened by the client's clock (may be wrong; flagged if implausible).
    #[oai(nullable)]
    pub occurred_at: Option<DateTime<Utc>>,
}

impl poem_openapi::types::Example for SetStatus {
    fn example() -> Self {
        SetStatus {
            status: Status::Red,
            reason: Some(Token("jam".into())),
            note: Some(Text("clay jammed in the mould".into())),
            occurred_at: None,
        }
    }
}

impl SetStatus {
    pub fn into_domain(self) -> Result<StatusChange, InvalidField> {
        let note = self.note.map(Text::into_inner);
        if let Some(note) = &note {
            domain::check_text("note", note, MAX_NOTE_LEN)?;
        }
        Ok(StatusChange {
            status: self.status.into(),
            reason: self
                .reason
                .map(|t| ReasonCode::parse(t.into_inner()))
                .transpose()?,
            note,
            occurred_at: self.occurred_at,
        })
    }
}

/// A page of equipment.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct EquipmentPage {
    pub items: Vec<EquipmentView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// One change in an equipment's history.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct HistoryEntry {
    pub version: u64,
    pub kind: EventKind,
    pub status: Status,
    #[oai(nullable)]
    pub previous_status: Option<Status>,
    #[oai(nullable)]
    pub reason: Option<String>,
    #[oai(nullable)]
    pub note: Option<String>,
    pub updated_by: String,
    pub source: Source,
    pub site: String,
    pub line: String,
    #[oai(nullable)]
    pub occurred_at: Option<DateTime<Utc>>,
    pub recorded_at: DateTime<Utc>,
    pub clock_suspect: bool,
    #[oai(nullable)]
    pub command_id: Option<String>,
}

/// A page of history, oldest first.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct HistoryPage {
    pub items: Vec<HistoryEntry>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// Parses a stored status string.
pub fn status_from_str(s: &str) -> Status {
    domain::Status::parse(s).map_or(Status::Yellow, Into::into)
}

/// What kind of event a live message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum EventKind {
    Registered,
    MetadataUpdated,
    StatusChanged,
    Decommissioned,
    /// The reason of a past stop was assigned or corrected (the status is unchanged).
    ReasonCorrected,
    /// A watchdog raised an alert (red too long, device silent); the status is unchanged.
    AlertRaised,
}

impl EventKind {
    /// The kind of a stored event (`equipment_event.kind`, the event log's `kind`).
    pub fn from_stored(kind: &str) -> Self {
        match kind {
            "registered" => EventKind::Registered,
            "metadata_updated" => EventKind::MetadataUpdated,
            "decommissioned" => EventKind::Decommissioned,
            "reason_corrected" => EventKind::ReasonCorrected,
            "alert_raised" => EventKind::AlertRaised,
            _ => EventKind::StatusChanged,
        }
    }
}

impl Source {
    /// The source of a stored event.
    pub fn from_stored(source: &str) -> Self {
        match source {
            "device" => Source::Device,
            "system" => Source::System,
            _ => Source::Api,
        }
    }
}

/// One message of the live stream (`GET /v1/live`). The SSE event type says what it is:
/// `snapshot` (the current state of a machine, sent first), `ready` (the snapshot is
/// complete; only `seq` is set, and the SSE id), `change` (an accepted change; SSE id =
/// `seq`). Keep-alive comments come every 15 s.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct LiveEvent {
    /// Position in the event log (`EQ_EVENTS` stream sequence). Send the last one seen as
    /// `Last-Event-ID` to resume without a gap.
    pub seq: u64,
    /// What happened (null on `ready`).
    #[oai(nullable)]
    pub kind: Option<EventKind>,
    /// The machine's full state after the event (null on `ready`).
    #[oai(nullable)]
    pub equipment: Option<EquipmentView>,
    /// The status before this event, for status changes.
    #[oai(nullable)]
    pub previous_status: Option<Status>,
}

impl LiveEvent {
    /// The `ready` marker at `seq`.
    pub fn ready(seq: u64) -> Self {
        LiveEvent {
            seq,
            kind: None,
            equipment: None,
            previous_status: None,
        }
    }
}
