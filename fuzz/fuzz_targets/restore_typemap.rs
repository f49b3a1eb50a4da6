//! Arbitrary field dictionaries, as JSON bytes and as structured input,
//! through the TypeMap (the default one and arbitrary custom ones): never a
//! panic; every column type is valid; order and info maps are kept; every
//! fallback is reported exactly once, for a field without a valid type.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use safestash::{Field, FieldDictionary, TypeMap};
use serde_json::{Map, Value};

#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<String>),
}

impl From<&Json> for Value {
    fn from(j: &Json) -> Value {
        match j {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::Str(s) => Value::String(s.clone()),
            Json::List(l) => Value::from(l.clone()),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// Raw bytes tried as a JSON field dictionary.
    json: Vec<u8>,
    /// A structured dictionary: field ids and info attributes.
    fields: Vec<(String, Vec<(String, Json)>)>,
    /// A custom map: valid types (the fallback is the first), attribute.
    custom: Option<(Vec<String>, String)>,
}

fn check(map: &TypeMap, fields: &[Field]) {
    let mapped = map.map_fields(fields);
    assert_eq!(mapped.columns.len(), fields.len());
    let mut expected_fallbacks = Vec::new();
    for (field, column) in fields.iter().zip(&mapped.columns) {
        assert_eq!(column.id, field.id, "order and ids are kept");
        assert_eq!(column.info, field.info, "the info map is kept verbatim");
        assert!(map.is_valid(&column.column_type), "{} is not a valid type", column.column_type);
        match field.info.get(map.attribute_name()) {
            Some(Value::String(t)) if map.is_valid(t) => assert_eq!(&column.column_type, t),
            _ => {
                assert_eq!(column.column_type, map.fallback());
                expected_fallbacks.push(field.id.clone());
            }
        }
    }
    let reported: Vec<String> = mapped.fallbacks.iter().map(|f| f.field.clone()).collect();
    assert_eq!(reported, expected_fallbacks, "every fallback is reported, once, in order");
    for (source, _) in [("String", 0), ("Blob", 1)] {
        match map.map_source(source) {
            Ok(t) => assert!(map.is_valid(t)),
            Err(fallback) => assert_eq!(fallback.used, map.fallback()),
        }
    }
}

fuzz_target!(|input: Input| {
    let mut maps = vec![TypeMap::default()];
    if let Some((valid, attribute)) = &input.custom {
        if let Some(fallback) = valid.first() {
            let map = TypeMap::new(valid.iter().cloned(), fallback.clone()).expect("fallback is valid");
            maps.push(map.attribute(attribute.clone()));
        } else {
            assert!(TypeMap::new(Vec::<String>::new(), "text").is_err());
        }
    }
    let structured: FieldDictionary = input
        .fields
        .iter()
        .map(|(id, info)| Field {
            id: id.clone(),
            info: info.iter().map(|(k, v)| (k.clone(), Value::from(v))).collect::<Map<_, _>>(),
        })
        .collect();
    for map in &maps {
        check(map, &structured);
        if let Ok(from_json) = serde_json::from_slice::<FieldDictionary>(&input.json) {
            check(map, &from_json);
        }
    }
});
