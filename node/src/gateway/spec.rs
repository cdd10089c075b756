//! The OpenAPI document as served at `/openapi.json` and checked in as
//! `openapi/openapi.json`: poem-openapi's, with one rewrite so that generators the project
//! does not choose read it.
//!
//! poem-openapi describes a field whose type is a named schema (an enum, an object) as
//! `{description, nullable, allOf: [{$ref}, {description, nullable}]}`: the second `allOf`
//! member repeats the outer keywords and has no `type`. Some generators (e.g.
//! openapi-python-client) take that member for a schema of its own, fail on it, and drop
//! the whole model and every operation that uses it. The member adds nothing, so it is
//! removed: `{description, nullable, allOf: [{$ref}]}`.

use std::fmt;
use std::sync::OnceLock;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// The document (built once).
pub fn spec_json() -> &'static str {
    static SPEC: OnceLock<String> = OnceLock::new();
    SPEC.get_or_init(|| {
        let raw = super::api_service().spec();
        let mut document: Json = serde_json::from_str(&raw).expect("poem-openapi writes JSON");
        drop_repeated_all_of_members(&mut document);
        serde_json::to_string_pretty(&document).expect("JSON serializes")
    })
}

/// JSON that keeps the order of object keys (serde_json's `Value` sorts them), so that the
/// document reads as poem-openapi wrote it: `openapi`, `info`, …, properties in field order.
enum Json {
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    Scalar(serde_json::Value),
}

fn drop_repeated_all_of_members(json: &mut Json) {
    match json {
        Json::Object(entries) => {
            let repeated = |member: &Json| match member {
                Json::Object(keys) => keys
                    .iter()
                    .all(|(k, v)| entries.iter().any(|(ek, ev)| ek == k && ev == v)),
                _ => false,
            };
            let drop = entries.iter().position(|(key, value)| {
                key == "allOf"
                    && matches!(value, Json::Array(members)
                        if members.len() == 2
                            && is_reference(&members[0])
                            && repeated(&members[1]))
            });
            if let Some(at) = drop
                && let Json::Array(members) = &mut entries[at].1
            {
                members.truncate(1);
            }
            for (_, value) in entries.iter_mut() {
                drop_repeated_all_of_members(value);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(drop_repeated_all_of_members),
        Json::Scalar(_) => {}
    }
}

fn is_reference(json: &Json) -> bool {
    matches!(json, Json::Object(keys) if keys.len() == 1 && keys[0].0 == "$ref")
}

impl PartialEq for Json {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Json::Object(a), Json::Object(b)) => a == b,
            (Json::Array(a), Json::Array(b)) => a == b,
            (Json::Scalar(a), Json::Scalar(b)) => a == b,
            _ => false,
        }
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
            Json::Array(items) => items.serialize(serializer),
            Json::Scalar(value) => value.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Json>()? {
            entries.push(entry);
        }
        Ok(Json::Object(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Scalar(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Scalar(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Scalar(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Scalar(v.into()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Scalar(v.into()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::Scalar(v.into()))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Scalar(serde_json::Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(input: &str) -> String {
        let mut json: Json = serde_json::from_str(input).unwrap();
        drop_repeated_all_of_members(&mut json);
        serde_json::to_string(&json).unwrap()
    }

    #[test]
    fn a_described_reference_keeps_only_the_reference() {
        assert_eq!(
            rewrite(
                r##"{"z":1,"p":{"description":"d","nullable":true,"allOf":[{"$ref":"#/S"},{"description":"d","nullable":true}]}}"##
            ),
            r##"{"z":1,"p":{"description":"d","nullable":true,"allOf":[{"$ref":"#/S"}]}}"##
        );
    }

    #[test]
    fn other_all_of_lists_and_key_order_stay() {
        for input in [
            r##"{"b":{"allOf":[{"$ref":"#/S"},{"minProperties":1}]},"a":[1,2.5,null,"x",false]}"##,
            r##"{"allOf":[{"$ref":"#/S"},{"$ref":"#/T"}]}"##,
        ] {
            assert_eq!(rewrite(input), input);
        }
    }

    #[test]
    fn every_all_of_of_the_document_is_a_single_reference() {
        fn check(value: &serde_json::Value) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(all_of) = map.get("allOf") {
                        let members = all_of.as_array().unwrap();
                        assert!(
                            members.len() == 1 && members[0].get("$ref").is_some(),
                            "{all_of}"
                        );
                    }
                    map.values().for_each(check);
                }
                serde_json::Value::Array(items) => items.iter().for_each(check),
                _ => {}
            }
        }
        check(&serde_json::from_str(spec_json()).unwrap());
    }
}
