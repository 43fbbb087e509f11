"""Linkage schemas: the shipped ones load; malformed ones are refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.matching.errors import SchemaError
from gateway.matching.schema import (
    Normaliser,
    SignaturePart,
    TokenizerKind,
    load_schema,
    schema_from_mapping,
    shipped_schema,
)


def _minimal(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": "t", "version": 1, "fields": [{"name": "a", "tokenizer": "ngram", "k": 5}]}
    doc.update(overrides)
    return doc


@pytest.mark.parametrize("record_type", ["person", "company"])
def test_shipped_schemas_load(record_type: str) -> None:
    schema = shipped_schema(record_type)
    assert schema.id == record_type
    assert schema.filter_bits == 1024
    assert schema.words == 16
    assert schema.signatures
    assert 0 < schema.threshold < 1


def test_person_schema_contents() -> None:
    schema = shipped_schema("person")
    fields = {spec.name: spec for spec in schema.fields}
    assert fields["given_name"].tokenizer is TokenizerKind.NGRAM
    assert fields["given_name"].n == 2
    assert fields["postcode"].positional
    assert fields["date_of_birth"].normalise is Normaliser.DIGITS
    assert (SignaturePart("soc_sec_id"),) in schema.signatures


def test_json_file_and_prefix_parts(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_minimal(blocking=[["a[:3]"]], threshold=0.9)))
    schema = load_schema(path)
    assert schema.signatures == ((SignaturePart("a", 3),),)
    assert schema.threshold == 0.9


@pytest.mark.parametrize(("document", "reason"), [
    ([], "mapping"),
    (_minimal(version=0), "version"),
    (_minimal(filter_bits=1000), "multiple of 64"),
    (_minimal(hashing="md5"), "hashing"),
    (_minimal(hashing="hmac-sha256-double"), "blake2b-double"),  # retired: its filters no longer compare
    (_minimal(extra=1), "unknown top-level"),
    (_minimal(fields=[]), "fields"),
    (_minimal(fields=[{"name": "a", "tokenizer": "soundex", "k": 1}]), "tokenizer"),
    (_minimal(fields=[{"name": "a", "tokenizer": "ngram", "k": -1}]), "k must be"),
    (_minimal(fields=[{"name": "a", "tokenizer": "ngram", "k": 0}]), "k > 0"),
    (_minimal(fields=[{"name": "a", "tokenizer": "ngram", "k": 1, "n": 0}]), "n must be"),
    (_minimal(fields=[{"name": "a", "tokenizer": "ngram", "k": 1}] * 2), "unique"),
    (_minimal(fields=[{"name": "a b", "tokenizer": "ngram", "k": 1}]), "name"),
    (_minimal(fields=[{"name": "a", "tokenizer": "ngram", "k": 1, "weight": 2}]), "unknown keys"),
    (_minimal(blocking=[["b"]]), "unknown field"),
    (_minimal(blocking=[["a[3]"]]), "parts look like"),
    (_minimal(blocking=[[]]), "1-8 parts"),
    (_minimal(threshold=1.5), "threshold"),
])
def test_invalid_schemas_are_refused(document: Any, reason: str) -> None:
    with pytest.raises(SchemaError, match=reason):
        schema_from_mapping(document)


def test_unknown_shipped_schema_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError):
        shipped_schema("spaceship")
    with pytest.raises(SchemaError):
        load_schema(tmp_path / "missing.yaml")


@pytest.mark.parametrize("threshold", [float("inf"), 1e309])
def test_a_numeric_field_needs_a_finite_threshold(threshold: float) -> None:
    """Found by a review: ``threshold: .inf`` (or a number too large for a float, which YAML reads as inf) was
    accepted, and then every value of the field fell into the same buckets: the field set the same bits in
    every record and made everyone look alike."""
    with pytest.raises(SchemaError, match="finite"):
        schema_from_mapping({"id": "t", "version": 1, "fields": [
            {"name": "age", "tokenizer": "numeric", "k": 5, "threshold": threshold}]})
