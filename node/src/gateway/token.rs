//! `Token`: an id, site, line or reason code in the API (`^[A-Za-z0-9_-]{1,64}$`). The
//! pattern is documented in the spec but checked by hand: poem-openapi's `pattern` validator
//! compiles its regex on every request, which cost more CPU than the rest of a request.
//! Likewise the other strings whose format the spec documents (free text, names, tags,
//! `If-Match`, `Idempotency-Key`, `Last-Event-ID`, cursors): see `documented_string!`.

use std::borrow::Cow;

use eq_actors::domain::{MAX_TOKEN_LEN, check_token};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type,
};
use serde_json::Value;

/// The token pattern, as documented.
pub const TOKEN_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// A string of 1 to 64 letters, digits, `_` or `-` (a NATS subject token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl Token {
    pub fn into_inner(self) -> String {
        self.0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parse(value: &str) -> ParseResult<Self> {
        check_token("value", value)
            .map(|_| Token(value.to_string()))
            .map_err(|_| {
                ParseError::custom(format!(
                    "must match {TOKEN_PATTERN} (letters, digits, '_' and '-', at most {MAX_TOKEN_LEN})"
                ))
            })
    }
}

impl Type for Token {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            pattern: Some(TOKEN_PATTERN.to_string()),
            min_length: Some(1),
            max_length: Some(MAX_TOKEN_LEN),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for Token {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => Self::parse(&s),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ParseFromParameter for Token {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Self::parse(value)
    }
}

impl ToJSON for Token {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// Free text: no control characters other than tab, LF and CR (what
/// `eq_actors::domain::check_text` refuses: `char::is_control`, U+0000–U+001F and
/// U+007F–U+009F).
pub const TEXT_PATTERN: &str = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$";
/// A name: free text with at least one character that is neither white space nor control
/// (`trim()` leaves something: Rust's white space, less the control characters, is
/// U+0020, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F and U+3000).
pub const NAME_PATTERN: &str = concat!(
    r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*",
    r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
    r"[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
);
/// `If-Match`: `*`, or a version as an ETag (`"5"`, `W/"5"`) or bare (`5`).
pub const IF_MATCH_PATTERN: &str = r#"^(\*|(W/)?"[0-9]{1,19}"|[0-9]{1,19})$"#;
/// `Idempotency-Key`: 1 to 128 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,128}$";
/// `Last-Event-ID`: an SSE id this stream sent (empty: none).
pub const LAST_EVENT_ID_PATTERN: &str = "^[0-9]{0,19}$";
/// A history cursor: the last version of the previous page.
pub const VERSION_CURSOR_PATTERN: &str = "^[0-9]{1,18}$";

/// A string whose format the spec documents (a pattern, lengths) but that parses as any
/// string: the handler or the domain checks it and answers with its own problem code
/// (`invalid_if_match`, `invalid_field`, …), and no regex runs per request. Each check
/// must accept exactly what its pattern describes.
macro_rules! documented_string {
    ($(#[$meta:meta])* $name:ident, $pattern:expr, $min:expr, $max:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name(pub String);

        impl $name {
            pub fn into_inner(self) -> String {
                self.0
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                "string".into()
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new(MetaSchema {
                    pattern: Some($pattern.to_string()),
                    min_length: $min,
                    max_length: $max,
                    ..MetaSchema::new("string")
                }))
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }

        impl ParseFromJSON for $name {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                match value.unwrap_or_default() {
                    Value::String(s) => Ok(Self(s)),
                    other => Err(ParseError::expected_type(other)),
                }
            }
        }

        impl ParseFromParameter for $name {
            fn parse_from_parameter(value: &str) -> ParseResult<Self> {
                Ok(Self(value.to_string()))
            }
        }

        impl ToJSON for $name {
            fn to_json(&self) -> Option<Value> {
                Some(Value::String(self.0.clone()))
            }
        }
    };
}

documented_string!(
    /// Free text (a description, a note): checked by `domain::check_text` (422).
    Text,
    TEXT_PATTERN,
    None,
    None
);
documented_string!(
    /// An equipment name: checked by `domain::check_text` and for blankness (422).
    Name,
    NAME_PATTERN,
    None,
    None
);
documented_string!(
    /// A tag: checked by `domain::check_tags` (422).
    Tag,
    TEXT_PATTERN,
    Some(1),
    Some(eq_actors::domain::MAX_TAG_LEN)
);
documented_string!(
    /// An `If-Match` value: checked by `gateway::parse_if_match` (400 `invalid_if_match`).
    IfMatch,
    IF_MATCH_PATTERN,
    None,
    None
);
documented_string!(
    /// An `Idempotency-Key`: checked by `gateway::parse_key` (400 `invalid_idempotency_key`).
    IdempotencyKey,
    IDEMPOTENCY_KEY_PATTERN,
    Some(1),
    Some(eq_actors::domain::MAX_COMMAND_ID_LEN)
);
documented_string!(
    /// A `Last-Event-ID`: checked by the live handler (400 `invalid_last_event_id`).
    LastEventId,
    LAST_EVENT_ID_PATTERN,
    None,
    None
);
documented_string!(
    /// A history cursor: checked by the history handler (400 `invalid_cursor`).
    VersionCursor,
    VERSION_CURSOR_PATTERN,
    None,
    None
);
