//! `TypeMap` and `FieldDictionary` through the public API: valid overrides
//! pass through, everything else falls back to a safe type and is reported
//! (never silently); custom maps; source-type mapping; and, as a property,
//! field order and whole info maps are kept.

use proptest::prelude::*;
use safestash::sim::SimFs;
use safestash::{
    Error, StashKey, Store,
    dictionary::{Fallback, FallbackReason, Field, FieldDictionary, FieldInfo, Matching, TypeMap},
};
use serde_json::{Map, Value, json};

const DEFAULT_VALID: [&str; 4] = ["text", "numeric", "timestamp", "date"];

// ---------------------------------------------------------------------------
// type_override on the default map
// ---------------------------------------------------------------------------

#[test]
fn valid_overrides_pass_through_unchanged_without_fallback() {
    let map = TypeMap::default();
    for t in DEFAULT_VALID {
        let field = Field::new("c").with("type_override", t).with("label", "C");
        let (column, fallback) = map.map_field(&field);
        assert_eq!(column.column_type, t);
        assert_eq!(fallback, None, "{t}");
        assert_eq!(column.id, "c");
        assert_eq!(column.info, field.info);
    }
    let fields: Vec<Field> =
        DEFAULT_VALID.iter().map(|t| Field::new(*t).with("type_override", *t)).collect();
    let mapped = map.map_fields(&fields);
    assert!(mapped.fallbacks.is_empty(), "{:?}", mapped.fallbacks);
    let types: Vec<&str> = mapped.columns.iter().map(|c| c.column_type.as_str()).collect();
    assert_eq!(types, DEFAULT_VALID);
}

#[test]
fn a_valid_type_under_another_attribute_is_ignored() {
    // `type` is not `type_override`: the field has no override.
    let (column, fallback) = TypeMap::default().map_field(&Field::new("d").with("type", "date"));
    assert_eq!(column.column_type, "text");
    assert_eq!(fallback.unwrap().reason, FallbackReason::Missing);
}

#[test]
fn missing_or_null_override_falls_back_to_text_and_is_reported_missing() {
    let map = TypeMap::default();
    let fields = [
        Field::new("none").with("label", "No override"),
        Field::new("null").with("type_override", Value::Null),
    ];
    let mapped = map.map_fields(&fields);
    assert_eq!(mapped.columns.len(), 2);
    assert!(mapped.columns.iter().all(|c| c.column_type == "text"));
    let want: Vec<(&str, FallbackReason, &str)> =
        vec![("none", FallbackReason::Missing, "text"), ("null", FallbackReason::Missing, "text")];
    let got: Vec<(&str, FallbackReason, &str)> = mapped
        .fallbacks
        .iter()
        .map(|f| (f.field.as_str(), f.reason.clone(), f.used.as_str()))
        .collect();
    assert_eq!(got, want);
    // The null is kept verbatim in the info map: nothing is rewritten.
    assert_eq!(mapped.columns[1].info["type_override"], Value::Null);
}

#[test]
fn unknown_override_falls_back_and_is_reported_not_valid() {
    let map = TypeMap::default();
    // Not valid even after normalising case and surrounding whitespace.
    let bad = ["money", "timestamptz", "numeric(10,2)", "num eric", "dates", "\u{200b}text", "tex"];
    for bad in bad {
        let (column, fallback) = map.map_field(&Field::new("x").with("type_override", bad));
        assert_eq!(column.column_type, "text", "{bad:?}");
        let fallback = fallback.unwrap_or_else(|| panic!("{bad:?} applied silently"));
        assert_eq!(fallback.field, "x");
        assert_eq!(fallback.reason, FallbackReason::NotValid(bad.to_owned()));
        assert_eq!(fallback.used, "text");
        assert!(fallback.to_string().contains(&format!("{bad:?}")), "{fallback}");
        // The bad value stays in the info map for the operator to see.
        assert_eq!(column.info["type_override"], bad);
    }
}

#[test]
fn non_string_override_falls_back_and_is_reported_not_a_string() {
    let map = TypeMap::default();
    let cases = [json!(5), json!(1.5), json!(true), json!({"type": "numeric"}), json!(["numeric"])];
    for value in cases {
        let (column, fallback) =
            map.map_field(&Field::new("x").with("type_override", value.clone()));
        assert_eq!(column.column_type, "text", "{value}");
        let fallback = fallback.unwrap_or_else(|| panic!("{value} applied silently"));
        assert_eq!(fallback.reason, FallbackReason::NotAString(value.to_string()));
        assert_eq!(fallback.used, "text");
        assert_eq!(column.info["type_override"], value);
    }
}

#[test]
fn fallback_display_names_field_reason_and_type() {
    let mapped =
        TypeMap::default().map_fields(&[Field::new("code").with("type_override", "money")]);
    assert_eq!(
        mapped.fallbacks[0].to_string(),
        "field `code`: type \"money\" is not a valid target type; using `text`"
    );
}

// ---------------------------------------------------------------------------
// custom maps
// ---------------------------------------------------------------------------

#[test]
fn custom_map_reads_its_attribute_validates_against_its_set_and_uses_its_fallback() {
    let map = TypeMap::new(["int4", "varchar", "jsonb"], "varchar").unwrap().attribute("pg_type");
    assert_eq!(map.attribute_name(), "pg_type");
    assert_eq!(map.fallback(), "varchar");
    assert!(map.is_valid("jsonb"));
    assert!(!map.is_valid("text"), "the default set must not leak into a custom map");

    let fields = [
        Field::new("n").with("pg_type", "int4"),
        Field::new("j").with("pg_type", "jsonb").with("type_override", "numeric"),
        // Valid in the default map, not in this one.
        Field::new("t").with("pg_type", "text"),
        // Only the default attribute: missing for this map.
        Field::new("o").with("type_override", "int4"),
        Field::new("i").with("pg_type", 4),
    ];
    let mapped = map.map_fields(&fields);
    let types: Vec<&str> = mapped.columns.iter().map(|c| c.column_type.as_str()).collect();
    assert_eq!(types, ["int4", "jsonb", "varchar", "varchar", "varchar"]);
    let reasons: Vec<(&str, FallbackReason)> =
        mapped.fallbacks.iter().map(|f| (f.field.as_str(), f.reason.clone())).collect();
    assert_eq!(
        reasons,
        [
            ("t", FallbackReason::NotValid("text".to_owned())),
            ("o", FallbackReason::Missing),
            ("i", FallbackReason::NotAString("4".to_owned())),
        ]
    );
    assert!(mapped.fallbacks.iter().all(|f| f.used == "varchar"));
}

#[test]
fn new_rejects_a_fallback_outside_the_valid_set() {
    for (valid, fallback) in
        [(vec!["int4", "varchar"], "text"), (vec![], "text"), (vec!["Text"], "text")]
    {
        match TypeMap::new(valid.clone(), fallback) {
            Err(Error::InvalidOption { field, value, .. }) => {
                assert_eq!(field, "fallback");
                assert_eq!(value, fallback);
            }
            other => panic!("{valid:?} / {fallback}: expected InvalidOption, got {other:?}"),
        }
    }
    assert!(TypeMap::new(["int4", "varchar"], "varchar").is_ok());
}

#[test]
fn source_rejects_a_target_outside_the_valid_set() {
    match TypeMap::default().source("Decimal", "money") {
        Err(Error::InvalidOption { value, .. }) => assert_eq!(value, "money"),
        other => panic!("expected InvalidOption, got {other:?}"),
    }
    let custom = TypeMap::new(["int4", "varchar"], "varchar").unwrap();
    assert!(matches!(
        custom.clone().source("Integer", "numeric"),
        Err(Error::InvalidOption { .. })
    ));
    let custom = custom.source("Integer", "int4").unwrap();
    assert_eq!(custom.map_source("Integer"), Ok("int4"));
}

// ---------------------------------------------------------------------------
// source types
// ---------------------------------------------------------------------------

#[test]
fn default_source_mapping() {
    let map = TypeMap::default();
    let want = [
        ("String", "text"),
        ("Integer", "numeric"),
        ("Float", "numeric"),
        ("DateTime", "timestamp"),
        ("Date", "date"),
        ("NULL", "text"),
    ];
    for (source, target) in want {
        assert_eq!(map.map_source(source), Ok(target), "{source}");
    }
}

#[test]
fn unknown_source_is_a_reported_fallback() {
    let map = TypeMap::default();
    for unknown in ["Blob", "string", "INTEGER", "", "Decimal"] {
        let fb: Fallback = map.map_source(unknown).unwrap_err();
        assert_eq!(fb.field, unknown);
        assert_eq!(fb.reason, FallbackReason::UnknownSource(unknown.to_owned()));
        assert_eq!(fb.used, "text");
    }
    // A custom map has no sources, and falls back to its own type.
    let custom = TypeMap::new(["int4", "varchar"], "varchar").unwrap();
    assert_eq!(custom.map_source("String").unwrap_err().used, "varchar");
}

#[test]
fn source_adds_and_replaces_mappings() {
    let map = TypeMap::default().source("Decimal", "numeric").unwrap();
    assert_eq!(map.map_source("Decimal"), Ok("numeric"));
    let map = map.source("Integer", "text").unwrap();
    assert_eq!(map.map_source("Integer"), Ok("text"), "a later mapping replaces an earlier one");
    assert_eq!(map.map_source("Float"), Ok("numeric"), "others are untouched");
}

// ---------------------------------------------------------------------------
// FieldDictionary through a stash
// ---------------------------------------------------------------------------

fn unicode_dictionary() -> FieldDictionary {
    vec![
        Field::new("amount")
            .with("label", "Amount in €")
            .with("notes", "gross, \"incl.\" VAT\nsecond line\ttab")
            .with("type_override", "numeric")
            .with(
                "format",
                json!({"decimals": 2, "separators": [",", "."], "nested": {"deep": [1, [2, [3]]]}}),
            ),
        Field::new("名前")
            .with("label", "名前 (name) — 🎉")
            .with("rtl", "עברית ومرحبا")
            .with("combining", "e\u{301}te\u{301}")
            .with("control", "nul\u{0}bell\u{7}")
            .with("type_override", "Text"),
        Field::new("placed")
            .with("type_override", Value::Null)
            .with("numbers", json!([0, -1, i64::MIN, u64::MAX, 0.1, 1.5, -2.5e-8, 1e300]))
            .with("flags", json!({"pii": false, "indexed": true, "empty": {}, "list": []})),
        Field::new(""),
        Field::new("ünïcødé-ключ").with("ключ", "значение").with("type_override", 3),
    ]
}

#[test]
fn field_dictionary_round_trips_through_a_stash_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = StashKey::new("orders.dictionary").unwrap();
    let dictionary = unicode_dictionary();

    store.save(&key, &dictionary).unwrap();
    let loaded = store.load::<FieldDictionary>(&key).unwrap().expect("just saved");
    assert_eq!(loaded.value(), &dictionary);
    // And it maps back onto exactly the same columns and fallbacks.
    let map = TypeMap::default();
    assert_eq!(map.map_fields(loaded.value()), map.map_fields(&dictionary));
    let columns = map.map_fields(loaded.value()).columns;
    let types: Vec<&str> = columns.iter().map(|c| c.column_type.as_str()).collect();
    assert_eq!(types, ["numeric", "text", "text", "text", "text"]);
}

// ---------------------------------------------------------------------------
// properties
// ---------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Type names a field may carry: valid in one map or the other, near misses,
/// and anything at all.
fn type_value() -> impl Strategy<Value = Option<Value>> {
    let named = prop::sample::select(vec![
        "text",
        "numeric",
        "timestamp",
        "date",
        "int4",
        "varchar",
        "jsonb",
        "money",
        "Numeric",
        "",
        " text",
        "DATE",
        "Int4",
    ]);
    prop_oneof![
        3 => Just(None),
        6 => named.prop_map(|s| Some(Value::from(s))),
        2 => "\\PC{0,8}".prop_map(|s| Some(Value::String(s))),
        2 => json_value().prop_map(Some),
    ]
}

fn field() -> impl Strategy<Value = Field> {
    (
        "\\PC{0,10}",
        prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..5),
        type_value(),
        type_value(),
    )
        .prop_map(|(id, extra, type_override, pg_type)| {
            let mut info: FieldInfo = extra.into_iter().collect();
            for (attr, v) in [("type_override", type_override), ("pg_type", pg_type)] {
                match v {
                    Some(v) => info.insert(attr.to_owned(), v),
                    None => info.remove(attr),
                };
            }
            Field { id, info }
        })
}

/// The oracle: the valid type the map must use for this attribute value
/// and whether that was a normalisation, or the fallback's reason. Both
/// valid sets in these tests are lower-case ASCII without spaces, so
/// normalising is: trim, then lower-case ASCII.
fn expected(
    v: Option<&Value>,
    valid: &[&'static str],
    matching: Matching,
) -> Result<(&'static str, bool), FallbackReason> {
    match v {
        None | Some(Value::Null) => Err(FallbackReason::Missing),
        Some(Value::String(s)) => {
            if let Some(t) = valid.iter().find(|t| **t == s) {
                return Ok((t, false));
            }
            match matching {
                Matching::Exact => Err(FallbackReason::NotValid(s.clone())),
                _ if s.trim().is_empty() => Err(FallbackReason::Missing),
                _ => valid
                    .iter()
                    .find(|t| **t == s.trim().to_ascii_lowercase())
                    .map(|t| (*t, true))
                    .ok_or_else(|| FallbackReason::NotValid(s.clone())),
            }
        }
        Some(other) => Err(FallbackReason::NotAString(other.to_string())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn map_fields_keeps_order_and_info_and_reports_every_fallback(
        fields in prop::collection::vec(field(), 0..12),
        custom in any::<bool>(),
        exact in any::<bool>(),
    ) {
        let matching = if exact { Matching::Exact } else { Matching::Normalise };
        let (map, attr, valid, fallback): (TypeMap, &str, &[&'static str], &str) = if custom {
            let map = TypeMap::new(["int4", "varchar", "jsonb"], "varchar").unwrap().attribute("pg_type");
            (map, "pg_type", &["int4", "varchar", "jsonb"], "varchar")
        } else {
            (TypeMap::default(), "type_override", &DEFAULT_VALID, "text")
        };
        let map = map.matching(matching);
        let mapped = map.map_fields(&fields);

        prop_assert_eq!(mapped.columns.len(), fields.len());
        let mut expected_fallbacks = Vec::new();
        let mut expected_normalised = Vec::new();
        for (column, field) in mapped.columns.iter().zip(&fields) {
            prop_assert_eq!(&column.id, &field.id);
            prop_assert_eq!(&column.info, &field.info, "info map not kept verbatim");
            prop_assert!(valid.contains(&column.column_type.as_str()), "{} is not valid", column.column_type);
            prop_assert!(map.is_valid(&column.column_type));
            match expected(field.info.get(attr), valid, matching) {
                Ok((t, normalised)) => {
                    prop_assert_eq!(column.column_type.as_str(), t);
                    if normalised {
                        expected_normalised.push((field.id.clone(), field.get(attr).unwrap().to_owned(), t));
                    }
                }
                Err(reason) => {
                    prop_assert_eq!(column.column_type.as_str(), fallback);
                    expected_fallbacks.push((field.id.clone(), reason));
                }
            }
        }
        prop_assert_eq!(mapped.fallbacks.len(), expected_fallbacks.len());
        for (fb, (id, reason)) in mapped.fallbacks.iter().zip(&expected_fallbacks) {
            prop_assert_eq!(&fb.field, id, "a fallback must name its field, in field order");
            prop_assert_eq!(&fb.reason, reason);
            prop_assert_eq!(fb.used.as_str(), fallback);
        }
        let normalised: Vec<(String, String, &str)> =
            mapped.normalised.iter().map(|n| (n.field.clone(), n.from.clone(), n.to.as_str())).collect();
        prop_assert_eq!(normalised, expected_normalised, "every normalisation is reported, once, in order");
        // map_field agrees with map_fields.
        for (field, column) in fields.iter().zip(&mapped.columns) {
            prop_assert_eq!(&map.map_field(field).0, column);
        }
    }
}

fn field_without_floats() -> impl Strategy<Value = Field> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    // A list of pairs, not a map: any key order, and repeated keys (which
    // collect as last value at the first position).
    ("\\PC{0,10}", prop::collection::vec(("\\PC{0,8}", value), 0..5))
        .prop_map(|(id, info)| Field { id, info: info.into_iter().collect() })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_field_dictionary_round_trips_through_a_stash(
        dictionary in prop::collection::vec(field_without_floats(), 0..8),
    ) {
        let store = Store::with_fs("/s", SimFs::new()).unwrap();
        let key = StashKey::new("dictionary").unwrap();
        store.save(&key, &dictionary).unwrap();
        let loaded = store.load::<FieldDictionary>(&key).unwrap().expect("just saved");
        prop_assert_eq!(loaded.value(), &dictionary);
    }
}

// ---------------------------------------------------------------------------
// issue 12.6: type overrides typed by a person
// ---------------------------------------------------------------------------

#[test]
fn case_and_surrounding_whitespace_of_a_valid_override_are_normalised_not_a_fallback() {
    let map = TypeMap::default();
    let cases = [
        (" Numeric ", "numeric"),
        ("NUMERIC", "numeric"),
        ("Text", "text"),
        ("\tdate\n", "date"),
        ("TimeStamp ", "timestamp"),
        ("\u{a0}numeric", "numeric"),
    ];
    for (given, want) in cases {
        let field = Field::new("x").with("type_override", given);
        let (column, fallback) = map.map_field(&field);
        assert_eq!(column.column_type, want, "{given:?}");
        assert_eq!(fallback, None, "{given:?} names a valid type: not a fallback");
        assert_eq!(column.info["type_override"], given, "the info map keeps what was typed");
    }
}

#[test]
fn an_empty_or_blank_override_counts_as_missing() {
    let map = TypeMap::default();
    for blank in ["", " ", "\t\n", "\u{a0}"] {
        let (column, fallback) = map.map_field(&Field::new("x").with("type_override", blank));
        assert_eq!(column.column_type, "text", "{blank:?}");
        let fallback = fallback.unwrap_or_else(|| panic!("{blank:?} applied silently"));
        assert_eq!(fallback.reason, FallbackReason::Missing, "{blank:?}");
        assert_eq!(fallback.to_string(), "field `x`: no type given; using `text`");
    }
}

#[test]
fn normalisations_are_reported_separately_in_field_order_and_never_as_fallbacks() {
    let fields = [
        Field::new("a").with("type_override", " Numeric "),
        Field::new("b").with("type_override", "numeric"),
        Field::new("c").with("type_override", "money"),
        Field::new("d").with("type_override", "DATE"),
        Field::new("e").with("type_override", ""),
    ];
    let mapped = TypeMap::default().map_fields(&fields);
    let types: Vec<&str> = mapped.columns.iter().map(|c| c.column_type.as_str()).collect();
    assert_eq!(types, ["numeric", "numeric", "text", "date", "text"]);
    let normalised: Vec<(&str, &str, &str)> = mapped
        .normalised
        .iter()
        .map(|n| (n.field.as_str(), n.from.as_str(), n.to.as_str()))
        .collect();
    assert_eq!(normalised, [("a", " Numeric ", "numeric"), ("d", "DATE", "date")]);
    assert_eq!(mapped.normalised[0].to_string(), "field `a`: type \" Numeric \" read as `numeric`");
    let fallbacks: Vec<(&str, FallbackReason)> =
        mapped.fallbacks.iter().map(|f| (f.field.as_str(), f.reason.clone())).collect();
    assert_eq!(
        fallbacks,
        [("c", FallbackReason::NotValid("money".into())), ("e", FallbackReason::Missing)]
    );
    // An exact, valid name is neither.
    let exact = TypeMap::default().map_fields(&fields[1..2]);
    assert!(exact.normalised.is_empty() && exact.fallbacks.is_empty());
}

#[test]
fn exact_matching_is_available_and_keeps_the_old_byte_for_byte_rule() {
    let map = TypeMap::default().matching(Matching::Exact);
    assert_eq!(map.matching_mode(), Matching::Exact);
    assert_eq!(TypeMap::default().matching_mode(), Matching::Normalise, "the default");
    for given in ["Numeric", "", " ", "TEXT", " text", "date "] {
        let mapped = map.map_fields(&[Field::new("x").with("type_override", given)]);
        assert_eq!(mapped.columns[0].column_type, "text", "{given:?}");
        assert_eq!(mapped.fallbacks[0].reason, FallbackReason::NotValid(given.to_owned()));
        assert!(mapped.normalised.is_empty());
    }
    for t in DEFAULT_VALID {
        let (column, fallback) = map.map_field(&Field::new("x").with("type_override", t));
        assert_eq!((column.column_type.as_str(), fallback), (t, None));
    }
    // Missing and null stay missing.
    assert_eq!(map.map_field(&Field::new("x")).1.unwrap().reason, FallbackReason::Missing);
}

#[test]
fn a_custom_map_normalises_onto_its_own_spelling_and_refuses_to_guess_between_two() {
    let map = TypeMap::new(["Int4", "VarChar"], "VarChar").unwrap().attribute("pg_type");
    let mapped = map.map_fields(&[
        Field::new("a").with("pg_type", " int4"),
        Field::new("b").with("pg_type", "Int4"),
        Field::new("c").with("pg_type", "numeric"),
    ]);
    let types: Vec<&str> = mapped.columns.iter().map(|c| c.column_type.as_str()).collect();
    assert_eq!(types, ["Int4", "Int4", "VarChar"]);
    assert_eq!(mapped.normalised.len(), 1);
    assert_eq!(mapped.normalised[0].to, "Int4");

    // Two valid types that differ only by case: an exact name is taken, any
    // other spelling is ambiguous and falls back, reported.
    let map = TypeMap::new(["Int", "int", "text"], "text").unwrap();
    let mapped = map.map_fields(&[
        Field::new("a").with("type_override", "int"),
        Field::new("b").with("type_override", "Int"),
        Field::new("c").with("type_override", "INT"),
    ]);
    let types: Vec<&str> = mapped.columns.iter().map(|c| c.column_type.as_str()).collect();
    assert_eq!(types, ["int", "Int", "text"]);
    assert_eq!(mapped.fallbacks[0].reason, FallbackReason::Ambiguous("INT".into()));
    assert_eq!(
        mapped.fallbacks[0].to_string(),
        "field `c`: type \"INT\" matches several valid types but for case; using `text`"
    );
}

#[test]
fn only_ascii_case_is_folded() {
    // U+212A KELVIN SIGN lower-cases to `k` in Unicode; no look-alike is
    // folded onto a valid type.
    let map = TypeMap::new(["key", "text"], "text").unwrap();
    let (column, fallback) = map.map_field(&Field::new("x").with("type_override", "\u{212a}ey"));
    assert_eq!(column.column_type, "text");
    assert_eq!(fallback.unwrap().reason, FallbackReason::NotValid("\u{212a}ey".into()));
}

// ---------------------------------------------------------------------------
// issue 12.7: field info order
// ---------------------------------------------------------------------------

const UNSORTED: [&str; 6] = ["type_override", "label", "zeta", "notes", "alpha", "Mixed"];

fn unsorted_field() -> Field {
    UNSORTED.iter().enumerate().fold(Field::new("amount"), |f, (i, k)| f.with(k, i))
}

fn info_keys(field: &Field) -> Vec<&str> {
    field.info.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn field_info_keeps_insertion_order() {
    assert_eq!(info_keys(&unsorted_field()), UNSORTED);
}

#[test]
fn field_info_order_survives_serde_json_both_ways() {
    let field = unsorted_field();
    let text = serde_json::to_string(&field).unwrap();
    let positions: Vec<usize> =
        UNSORTED.iter().map(|k| text.find(&format!("\"{k}\":")).unwrap()).collect();
    assert!(positions.is_sorted(), "written out of order: {text}");

    let read: Field = serde_json::from_str(&text).unwrap();
    assert_eq!(info_keys(&read), UNSORTED);
    assert_eq!(read, field);

    let read: Field =
        serde_json::from_str(r#"{"id": "c", "info": {"z": 1, "b": [2], "a": {"y": 1}}}"#).unwrap();
    assert_eq!(info_keys(&read), ["z", "b", "a"]);
    // The same bytes back out, in the same order.
    assert_eq!(
        serde_json::to_string(&read).unwrap(),
        r#"{"id":"c","info":{"z":1,"b":[2],"a":{"y":1}}}"#
    );
}

#[test]
fn field_info_order_survives_a_store_save_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = StashKey::new("orders.dictionary").unwrap();
    let dictionary: FieldDictionary = vec![
        unsorted_field(),
        Field::new("b").with("z", 1).with("y", 2).with("x", 3),
        Field::new("a"),
    ];
    store.save(&key, &dictionary).unwrap();
    let loaded = store.load::<FieldDictionary>(&key).unwrap().expect("just saved");
    assert_eq!(info_keys(&loaded.value()[0]), UNSORTED);
    assert_eq!(info_keys(&loaded.value()[1]), ["z", "y", "x"]);
    assert_eq!(loaded.value(), &dictionary);
    // And the mapped columns keep it too.
    let mapped = TypeMap::default().map_fields(loaded.value());
    let column_keys: Vec<&str> = mapped.columns[0].info.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(column_keys, UNSORTED);
}

#[test]
fn duplicate_info_keys_last_value_wins_at_the_first_position() {
    let read: Field =
        serde_json::from_str(r#"{"id": "c", "info": {"b": 1, "a": 2, "b": 3}}"#).unwrap();
    assert_eq!(info_keys(&read), ["b", "a"]);
    assert_eq!(read.info["b"], 3);
    assert_eq!(serde_json::to_string(&read).unwrap(), r#"{"id":"c","info":{"b":3,"a":2}}"#);
    // `with` on an existing key replaces the value in place, too.
    let f = Field::new("c").with("b", 1).with("a", 2).with("b", 3);
    assert_eq!((info_keys(&f), &f.info["b"]), (vec!["b", "a"], &Value::from(3)));
}

#[test]
fn field_info_edits_keep_order_and_convert_to_and_from_serde_json_maps() {
    let mut info: FieldInfo = [("c", 1), ("a", 2), ("b", 3)].into_iter().collect();
    assert_eq!(info.insert("a", 20), Some(Value::from(2)));
    assert_eq!(info.insert("d", 4), None);
    assert_eq!(info.remove("c"), Some(Value::from(1)));
    assert_eq!(info.keys().collect::<Vec<_>>(), ["a", "b", "d"]);
    assert_eq!(info.len(), 3);
    // Equality is order-sensitive: verbatim means in the same order too.
    let reordered: FieldInfo = [("b", 3), ("a", 20), ("d", 4)].into_iter().collect();
    assert_ne!(info, reordered);
    // To and from serde_json's map (which may sort): same entries.
    let map: Map<String, Value> = info.clone().into();
    assert_eq!(FieldInfo::from(map.clone()).len(), 3);
    assert_eq!(Value::from(info.clone()), Value::Object(map));
    // A stash written before FieldInfo (sorted keys) loads as written.
    let old: Field =
        serde_json::from_str(r#"{"id":"x","info":{"a":1,"label":"L","type_override":"date"}}"#)
            .unwrap();
    assert_eq!(old.info.keys().collect::<Vec<_>>(), ["a", "label", "type_override"]);
    let no_info: Field = serde_json::from_str(r#"{"id":"x"}"#).unwrap();
    assert!(no_info.info.is_empty());
    // Anything but an object is refused.
    assert!(serde_json::from_str::<Field>(r#"{"id":"x","info":[["a",1]]}"#).is_err());
}
