"""TypeMap: type overrides mapped back onto valid column types."""

import pytest

import safestash

FIELDS = [
    {"id": "amount", "info": {"label": "Amount", "notes": "EUR", "type_override": " Numeric "}},
    {"id": "code", "info": {"label": "Code", "type_override": "money"}},
    {"id": "placed", "info": {"type_override": "timestamp", "label": "Placed at"}},
    {"id": "bare"},
]


def test_default_map():
    m = safestash.TypeMap().map_fields(FIELDS)
    assert [c.column_type for c in m.columns] == ["numeric", "text", "timestamp", "text"]
    assert [c.id for c in m.columns] == ["amount", "code", "placed", "bare"]
    assert list(m.columns[2].info) == ["type_override", "label"]  # stored order
    assert [f[0] for f in m.fallbacks] == ["code", "bare"]
    assert m.normalised == [("amount", " Numeric ", "numeric")]


def test_exact_and_custom():
    m = safestash.TypeMap(exact=True).map_fields(FIELDS)
    assert m.columns[0].column_type == "text"
    custom = safestash.TypeMap(["text", "int4"], "text").map_fields([{"id": "a", "info": {"type_override": "int4"}}])
    assert custom.columns[0].column_type == "int4"
    with pytest.raises(ValueError):
        safestash.TypeMap(["text"], "numeric")
