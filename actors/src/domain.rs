//! Domain vocabulary: validated newtypes for ids and tokens, statuses, sources, and the limits
//! every edge (HTTP, device subject) checks once, so the rest of the code never re-validates.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest equipment id, site or line token.
pub const MAX_TOKEN_LEN: usize = 64;
/// Longest free-text note on a status change.
pub const MAX_NOTE_LEN: usize = 1000;
/// Longest equipment name.
pub const MAX_NAME_LEN: usize = 200;
/// Longest equipment description.
pub const MAX_DESCRIPTION_LEN: usize = 2000;
/// Longest `updated_by` (person or device id).
pub const MAX_ACTOR_LEN: usize = 128;
/// Longest idempotency key / `command_id`.
pub const MAX_COMMAND_ID_LEN: usize = 128;
/// Most tags on one equipment.
pub const MAX_TAGS: usize = 32;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 64;

/// A field that failed validation at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Checks `^[A-Za-z0-9_-]{1,64}$`: a token that is safe as a NATS subject token (no dots,
/// no wildcards, no whitespace).
pub fn check_token(field: &'static str, value: &str) -> Result<(), InvalidField> {
    if value.is_empty() || value.len() > MAX_TOKEN_LEN {
        return Err(InvalidField::new(
            field,
            format!("must be 1 to {MAX_TOKEN_LEN} characters"),
        ));
    }
    if !value.chars().all(is_token_char) {
        return Err(InvalidField::new(
            field,
            "may only contain letters, digits, '_' and '-'",
        ));
    }
    Ok(())
}

/// Checks a bounded free-text field: length in characters, no control characters except
/// newlines and tabs.
pub fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), InvalidField> {
    if value.chars().count() > max {
        return Err(InvalidField::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(InvalidField::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a name-like field: bounded free text with something in it besides white space.
pub fn check_name(field: &'static str, value: &str, max: usize) -> Result<(), InvalidField> {
    check_text(field, value, max)?;
    if value.trim().is_empty() {
        return Err(InvalidField::new(field, "must not be blank"));
    }
    Ok(())
}

macro_rules! token_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a token.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidField> {
                let value = value.into();
                check_token($field, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidField;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

token_newtype!(
    /// An equipment id: `^[A-Za-z0-9_-]{1,64}$`, usable as a NATS subject token.
    EquipmentId,
    "id"
);
token_newtype!(
    /// A site token (same form as an equipment id).
    Site,
    "site"
);
token_newtype!(
    /// A production line token (same form as an equipment id).
    Line,
    "line"
);
token_newtype!(
    /// A short downtime/status reason code, e.g. `jam` or `no_material`.
    ReasonCode,
    "reason"
);

/// The status of a machine at any moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Running.
    Green,
    /// Idle, degraded or warning.
    Yellow,
    /// Down.
    Red,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Green, Status::Yellow, Status::Red];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Green => "green",
            Status::Yellow => "yellow",
            Status::Red => "red",
        }
    }

    pub fn parse(value: &str) -> Result<Self, InvalidField> {
        match value {
            "green" => Ok(Status::Green),
            "yellow" => Ok(Status::Yellow),
            "red" => Ok(Status::Red),
            _ => Err(InvalidField::new(
                "status",
                "must be one of green, yellow, red",
            )),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The HTTP API (tablets, tools).
    Api,
    /// A device publishing on NATS.
    Device,
    /// The system itself (watchdogs, corrections).
    System,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Device => "device",
            Source::System => "system",
        }
    }
}

/// The optimistic-concurrency token of an equipment: grows by one with every accepted event.
/// Version 0 means "never registered".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    pub fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One of the fixed number of shards the equipment ids are spread over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// FNV-1a, 32 bit: the same hash nats-server's `partition(n, token)` subject mapping uses,
/// so NATS itself can route `eq.device.<id>...` to the right shard.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// FNV-1a, 64 bit: a stable fingerprint (the same across processes and versions).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The one function that maps an equipment to its shard.
pub fn shard_of(id: &EquipmentId, shard_count: u32) -> ShardId {
    ShardId(fnv1a32(id.as_str().as_bytes()) % shard_count.max(1))
}

/// Checks an idempotency key: 1..=128 visible ASCII characters.
pub fn check_command_id(value: &str) -> Result<(), InvalidField> {
    if value.is_empty() || value.len() > MAX_COMMAND_ID_LEN {
        return Err(InvalidField::new(
            "command_id",
            format!("must be 1 to {MAX_COMMAND_ID_LEN} characters"),
        ));
    }
    if !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(InvalidField::new(
            "command_id",
            "must be visible ASCII without spaces",
        ));
    }
    Ok(())
}

/// Checks a tag list: at most 32 tags of 1..=64 characters, no control characters.
pub fn check_tags(tags: &[String]) -> Result<(), InvalidField> {
    if tags.len() > MAX_TAGS {
        return Err(InvalidField::new(
            "tags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    for tag in tags {
        if tag.is_empty() {
            return Err(InvalidField::new("tags", "a tag must not be empty"));
        }
        check_text("tags", tag, MAX_TAG_LEN)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_subject_syntax_and_spaces() {
        for bad in ["", "a.b", "a*", "a>", "a b", "é", &"x".repeat(65)] {
            assert!(EquipmentId::parse(bad).is_err(), "{bad:?} must be refused");
        }
        for good in ["press-1", "A_9", &"x".repeat(64)] {
            assert!(
                EquipmentId::parse(good).is_ok(),
                "{good:?} must be accepted"
            );
        }
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        // Reference values of FNV-1a 32 (as used by nats-server's partition()).
        assert_eq!(fnv1a32(b""), 0x811c9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        let id = EquipmentId::parse("press-1").unwrap();
        let s = shard_of(&id, 64);
        assert!(s.0 < 64);
        assert_eq!(s, shard_of(&id, 64));
    }

    #[test]
    fn text_limits() {
        assert!(check_text("note", &"x".repeat(MAX_NOTE_LEN), MAX_NOTE_LEN).is_ok());
        assert!(check_text("note", &"x".repeat(MAX_NOTE_LEN + 1), MAX_NOTE_LEN).is_err());
        assert!(check_text("note", "bell\u{7}", MAX_NOTE_LEN).is_err());
    }
}
