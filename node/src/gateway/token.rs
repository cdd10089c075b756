//! `Token`: an id, site, line or reason code in the API (`^[A-Za-z0-9_-]{1,64}$`). The
//! pattern is documented in the spec but checked by hand: poem-openapi's `pattern` validator
//! compiles its regex on every request, which cost more CPU than the rest of a request.

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
