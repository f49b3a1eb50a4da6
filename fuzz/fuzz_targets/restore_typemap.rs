//! Arbitrary field dictionaries, as JSON bytes and as structured input,
//! through the TypeMap (the default one and arbitrary custom ones, each with
//! normalised and with exact matching): never a panic; every column type is
//! valid; order and info maps are kept; a name typed with other case or
//! surrounding whitespace is normalised and reported as such (never also as
//! a fallback); a blank name is missing; every fallback is reported exactly
//! once, for a field without a valid type. And a field's info keeps its
//! order, with duplicate keys collapsed (last value, first position),
//! through serde_json both ways.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use safestash::dictionary::{FallbackReason, Field, FieldDictionary, FieldInfo, Matching, TypeMap};
use serde_json::Value;

const DEFAULT_VALID: [&str; 4] = ["text", "numeric", "timestamp", "date"];

#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<String>),
    /// A type name as a person might type it: a valid name of the default
    /// map with some letters upper-cased and whitespace around it.
    Typed {
        name: u8,
        upper: u8,
        before: Space,
        after: Space,
    },
}

#[derive(Debug, Arbitrary)]
enum Space {
    None,
    Blank,
    Tab,
    NoBreak,
    Newline,
}

impl Space {
    fn as_str(&self) -> &'static str {
        match self {
            Space::None => "",
            Space::Blank => " ",
            Space::Tab => "\t",
            Space::NoBreak => "\u{a0}",
            Space::Newline => "\n",
        }
    }
}

impl From<&Json> for Value {
    fn from(j: &Json) -> Value {
        match j {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::Str(s) => Value::String(s.clone()),
            Json::List(l) => Value::from(l.clone()),
            Json::Typed { name, upper, before, after } => {
                let name = DEFAULT_VALID[usize::from(*name) % DEFAULT_VALID.len()];
                let typed: String = name
                    .chars()
                    .enumerate()
                    .map(
                        |(i, c)| if upper >> (i % 8) & 1 == 1 { c.to_ascii_uppercase() } else { c },
                    )
                    .collect();
                Value::String(format!("{}{typed}{}", before.as_str(), after.as_str()))
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// Raw bytes tried as a JSON field dictionary.
    json: Vec<u8>,
    /// A structured dictionary: field ids and info attributes (keys may
    /// repeat and come in any order).
    fields: Vec<(String, Vec<(String, Json)>)>,
    /// A custom map: valid types (the fallback is the first), attribute.
    custom: Option<(Vec<String>, String)>,
}

/// What the map must make of a field's attribute: `Ok((type, normalised))`
/// or the fallback's reason. Written from the documented rule, not from the
/// implementation.
fn expected(
    value: Option<&Value>,
    valid: &BTreeSet<String>,
    matching: Matching,
) -> Result<(String, bool), FallbackReason> {
    let t = match value {
        None | Some(Value::Null) => return Err(FallbackReason::Missing),
        Some(Value::String(t)) => t,
        Some(other) => return Err(FallbackReason::NotAString(other.to_string())),
    };
    match matching {
        Matching::Exact if valid.contains(t) => Ok((t.clone(), false)),
        Matching::Exact => Err(FallbackReason::NotValid(t.clone())),
        _ if t.trim().is_empty() => Err(FallbackReason::Missing),
        _ if valid.contains(t) => Ok((t.clone(), false)),
        _ => {
            let fold = |s: &str| s.trim().to_ascii_lowercase();
            let hits: Vec<&String> = valid.iter().filter(|v| fold(v) == fold(t)).collect();
            match hits.as_slice() {
                [one] => Ok(((*one).clone(), true)),
                [] => Err(FallbackReason::NotValid(t.clone())),
                _ => Err(FallbackReason::Ambiguous(t.clone())),
            }
        }
    }
}

fn check(map: &TypeMap, valid: &BTreeSet<String>, fields: &[Field]) {
    let mapped = map.map_fields(fields);
    assert_eq!(mapped.columns.len(), fields.len());
    let mut expected_fallbacks = Vec::new();
    let mut expected_normalised = Vec::new();
    for (field, column) in fields.iter().zip(&mapped.columns) {
        assert_eq!(column.id, field.id, "order and ids are kept");
        assert_eq!(column.info, field.info, "the info map is kept verbatim");
        assert!(map.is_valid(&column.column_type), "{} is not a valid type", column.column_type);
        let value = field.info.get(map.attribute_name());
        let want = expected(value, valid, map.matching_mode());
        let (single, fallback) = map.map_field(field);
        assert_eq!(&single, column, "map_field agrees with map_fields");
        assert_eq!(fallback.map(|f| f.reason), want.clone().err(), "map_field reports the same");
        match want {
            Ok((t, normalised)) => {
                assert_eq!(column.column_type, t);
                if normalised {
                    let from = value.and_then(Value::as_str).unwrap().to_owned();
                    expected_normalised.push((field.id.clone(), from, t));
                }
            }
            Err(reason) => {
                assert_eq!(column.column_type, map.fallback());
                expected_fallbacks.push((field.id.clone(), reason));
            }
        }
    }
    let reported: Vec<(String, FallbackReason)> =
        mapped.fallbacks.iter().map(|f| (f.field.clone(), f.reason.clone())).collect();
    assert_eq!(reported, expected_fallbacks, "every fallback is reported, once, in order");
    assert!(mapped.fallbacks.iter().all(|f| f.used == map.fallback()));
    let normalised: Vec<(String, String, String)> =
        mapped.normalised.iter().map(|n| (n.field.clone(), n.from.clone(), n.to.clone())).collect();
    assert_eq!(normalised, expected_normalised, "every normalisation is reported, once, in order");
    if map.matching_mode() == Matching::Exact {
        assert!(mapped.normalised.is_empty(), "exact matching never normalises");
    }
    for n in &mapped.normalised {
        assert!(map.is_valid(&n.to) && !n.to_string().is_empty());
    }
    for f in &mapped.fallbacks {
        assert!(!f.to_string().is_empty());
    }
    for (source, _) in [("String", 0), ("Blob", 1)] {
        match map.map_source(source) {
            Ok(t) => assert!(map.is_valid(t)),
            Err(fallback) => assert_eq!(fallback.used, map.fallback()),
        }
    }
}

/// The info model: keys in first-occurrence order, the last value of each.
fn model(pairs: &[(String, Value)]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for (k, v) in pairs {
        match out.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out
}

/// Ids and info keys, in order (values may be floats, compared elsewhere).
fn shape(fields: &[Field]) -> Vec<(&str, Vec<&str>)> {
    fields.iter().map(|f| (f.id.as_str(), f.info.keys().collect())).collect()
}

fn check_order(fields: &[Field]) {
    let text = serde_json::to_string(fields).expect("a dictionary serializes");
    let back: FieldDictionary = serde_json::from_str(&text).expect("and reads back");
    assert_eq!(shape(&back), shape(fields), "order survives serde_json");
    for field in fields {
        let keys: BTreeSet<&str> = field.info.keys().collect();
        assert_eq!(keys.len(), field.info.len(), "no key is held twice");
    }
}

fuzz_target!(|input: Input| {
    let default_valid: BTreeSet<String> = DEFAULT_VALID.map(str::to_owned).into();
    let mut maps = vec![
        (TypeMap::default(), default_valid.clone()),
        (TypeMap::default().matching(Matching::Exact), default_valid),
    ];
    if let Some((valid, attribute)) = &input.custom {
        if let Some(fallback) = valid.first() {
            let map =
                TypeMap::new(valid.iter().cloned(), fallback.clone()).expect("fallback is valid");
            let set: BTreeSet<String> = valid.iter().cloned().collect();
            let map = map.attribute(attribute.clone());
            maps.push((map.clone().matching(Matching::Exact), set.clone()));
            maps.push((map, set));
        } else {
            assert!(TypeMap::new(Vec::<String>::new(), "text").is_err());
        }
    }
    let structured: FieldDictionary = input
        .fields
        .iter()
        .map(|(id, info)| {
            let pairs: Vec<(String, Value)> =
                info.iter().map(|(k, v)| (k.clone(), Value::from(v))).collect();
            let collected: FieldInfo = pairs.iter().cloned().collect();
            let entries: Vec<(String, Value)> = collected.clone().into_iter().collect();
            assert_eq!(entries, model(&pairs), "collect: first position, last value");
            Field { id: id.clone(), info: collected }
        })
        .collect();
    check_order(&structured);
    let text = serde_json::to_string(&structured).expect("serializes");
    let back: FieldDictionary = serde_json::from_str(&text).expect("reads back");
    assert_eq!(back, structured, "no floats here: the same values, in the same order");
    let from_json = serde_json::from_slice::<FieldDictionary>(&input.json).ok();
    if let Some(from_json) = &from_json {
        check_order(from_json);
    }
    for (map, valid) in &maps {
        check(map, valid, &structured);
        if let Some(from_json) = &from_json {
            check(map, valid, from_json);
        }
    }
});
