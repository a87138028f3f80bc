//! The check behind the `format_json` fuzz target, shared with `tests/json.rs` (which
//! replays the corpus through it on stable): every line is one JSON object without
//! duplicate keys, and the message and string fields read back as they went in.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserializer as _, Error as _, MapAccess, Visitor};

/// Panics unless every line of `case` is valid and round-trips.
pub fn check(case: &quelog::fuzzing::JsonCase) {
    for line in &case.other_lines {
        one_object_line(line);
    }
    for (line, message_key) in case.lines.iter().zip(&case.message_keys) {
        let pairs = one_object_line(line);
        let text = String::from_utf8_lossy(line);
        let message = pairs.iter().find(|(key, _)| key == message_key);
        assert_eq!(
            message.and_then(|(_, m)| m.as_str()),
            Some(case.message.as_str()),
            "{text}"
        );
        // The fields are written in order: each expected one is found after the one
        // before it (earliest match first, which finds an assignment if one exists).
        let mut from = 0;
        for (name, value) in &case.strings {
            let prefixed = format!("fields.{name}");
            let numbered = format!("fields.{name}#");
            let found = pairs.iter().skip(from).position(|(key, v)| {
                v.as_str() == Some(value.as_str())
                    && (key == name || *key == prefixed || key.starts_with(&numbered))
            });
            let Some(at) = found else {
                panic!("field {name:?} = {value:?} not found in order in {text}");
            };
            from += at + 1;
        }
    }
}

/// Panics unless `line` is exactly one JSON object and a newline, with unique keys at
/// the top level; returns its keys and values in order.
pub fn one_object_line(line: &[u8]) -> Vec<(String, serde_json::Value)> {
    let text = String::from_utf8_lossy(line);
    assert!(std::str::from_utf8(line).is_ok(), "not UTF-8: {text}");
    assert_eq!(line.last(), Some(&b'\n'), "{text}");
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "{text}");
    let mut parser = serde_json::Deserializer::from_slice(line);
    let pairs = match (&mut parser).deserialize_map(UniqueKeys) {
        Ok(pairs) => pairs,
        Err(e) => panic!("{e}: {text}"),
    };
    parser.end().unwrap_or_else(|e| panic!("{e}: {text}"));
    pairs
}

/// A JSON object whose keys are all different, as its pairs in order.
struct UniqueKeys;

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = Vec<(String, serde_json::Value)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        let mut pairs = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(A::Error::custom(format!("duplicate key {key:?}")));
            }
            pairs.push((key, map.next_value()?));
        }
        Ok(pairs)
    }
}
