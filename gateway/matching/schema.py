"""Linkage schemas: how a record type is turned into a CLK (clkhash-schema style, our own format).

Every participant of a partnership must encode with the same schema and the same partnership secret, or their
filters will not compare. A schema is a YAML (or JSON) document; the shipped ones are in ``schemas/``::

    id: person                  # record type; part of every field key's derivation
    version: 1                  # bump on any change: filters of different versions never compare
    filter_bits: 1024           # multiple of 64
    hashing: blake2b-double     # the only scheme: keyed BLAKE2b(field key, token) -> double hashing
    threshold: 0.72             # recommended Dice threshold for linkage with these weights
    fields:
      - name: given_name        # key in the record mapping
        normalise: text         # text | digits | none
        tokenizer: ngram        # ngram | exact | numeric
        n: 2                    # ngram: gram length
        positional: false       # ngram: prefix each gram with its position (dates, postcodes)
        k: 15                   # hash functions per token: the field's weight in the filter
      - name: year_of_birth
        tokenizer: numeric
        threshold: 2            # numeric: values within this distance share tokens
        resolution: 2           # numeric: tokens per threshold step (tokens per value = resolution + 1)
        k: 10
    blocking:                   # P-Sig-style signatures: records sharing any signature become candidates
      - [soc_sec_id]            # a part is a field's normalised value ...
      - [given_name, surname]
      - ["given_name[:1]", "surname[:1]", "date_of_birth[:4]"]   # ... or its first n characters

Weights are expressed, as in clkhash's ``bitsPerToken``, by the number of hash functions k: a field with a
larger k sets more bits per token and so counts more in the Dice similarity. ``k: 0`` ignores a field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gateway.matching.errors import SchemaError

__all__ = ["FieldSpec", "Normaliser", "Schema", "SignaturePart", "TokenizerKind", "load_schema",
           "schema_from_mapping", "shipped_schema"]

_SUPPORTED_HASHING = "blake2b-double"
_MAX_K = 256
_MAX_FIELDS = 64
_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[:([0-9]+)\])?")


class TokenizerKind(StrEnum):
    NGRAM = "ngram"
    EXACT = "exact"
    NUMERIC = "numeric"


class Normaliser(StrEnum):
    TEXT = "text"      # NFKD, accents dropped, lower case, punctuation to spaces, whitespace collapsed
    DIGITS = "digits"  # digits only (dates "1915-11-11" -> "19151111", postcodes, phone numbers)
    NONE = "none"      # stripped only


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one field is normalised, tokenised and weighted."""

    name: str
    tokenizer: TokenizerKind
    k: int
    normalise: Normaliser = Normaliser.TEXT
    n: int = 2
    positional: bool = False
    threshold: float = 1.0
    resolution: int = 1


@dataclass(frozen=True, slots=True)
class SignaturePart:
    """One part of a blocking signature: a field's normalised value, or its first ``prefix`` characters."""

    field: str
    prefix: int | None = None


@dataclass(frozen=True, slots=True)
class Schema:
    """A validated linkage schema."""

    id: str
    version: int
    filter_bits: int
    fields: tuple[FieldSpec, ...]
    signatures: tuple[tuple[SignaturePart, ...], ...] = ()
    threshold: float = 0.8

    @property
    def words(self) -> int:
        """Number of ``uint64`` words per filter."""
        return self.filter_bits // 64

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.fields)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SchemaError(message)


def _int(raw: Mapping[str, Any], key: str, default: int | None, where: str) -> int:
    value = raw.get(key, default)
    _require(isinstance(value, int) and not isinstance(value, bool), f"{where}: '{key}' must be an integer")
    assert isinstance(value, int)
    return value


def _field(raw: Any, position: int) -> FieldSpec:
    where = f"field {position}"
    _require(isinstance(raw, dict), f"{where}: must be a mapping")
    allowed = {"name", "tokenizer", "k", "normalise", "n", "positional", "threshold", "resolution", "description"}
    unknown = sorted(set(raw) - allowed)
    _require(not unknown, f"{where}: unknown keys {unknown}")
    name = raw.get("name")
    _require(isinstance(name, str) and name.isidentifier(), f"{where}: 'name' must be an identifier-like string")
    where = f"field {name!r}"
    try:
        tokenizer = TokenizerKind(raw.get("tokenizer"))
        normalise = Normaliser(raw.get("normalise", "text"))
    except ValueError:
        raise SchemaError(f"{where}: unknown tokenizer or normaliser") from None
    k = _int(raw, "k", None, where)
    _require(0 <= k <= _MAX_K, f"{where}: k must be between 0 and {_MAX_K}")
    n = _int(raw, "n", 2, where)
    _require(1 <= n <= 8, f"{where}: n must be between 1 and 8")
    positional = raw.get("positional", False)
    _require(isinstance(positional, bool), f"{where}: 'positional' must be true or false")
    threshold = raw.get("threshold", 1.0)
    # Finite too: an infinite step puts every value in the same buckets, so the field would set the same bits
    # in every record and make everyone look alike (YAML reads `.inf`, and 1e309, as infinity).
    _require(isinstance(threshold, int | float) and not isinstance(threshold, bool) and 0 < threshold < math.inf,
             f"{where}: 'threshold' must be a positive, finite number")
    resolution = _int(raw, "resolution", 1, where)
    _require(1 <= resolution <= 64, f"{where}: 'resolution' must be between 1 and 64")
    return FieldSpec(name=name, tokenizer=tokenizer, k=k, normalise=normalise, n=n, positional=positional,
                     threshold=float(threshold), resolution=resolution)


def schema_from_mapping(raw: Any) -> Schema:
    """Validate a parsed schema document."""
    _require(isinstance(raw, dict), "a schema must be a mapping")
    allowed = {"id", "version", "filter_bits", "hashing", "threshold", "fields", "blocking", "description"}
    unknown = sorted(set(raw) - allowed)
    _require(not unknown, f"unknown top-level keys {unknown}")
    schema_id = raw.get("id")
    _require(isinstance(schema_id, str) and schema_id.isidentifier(), "'id' must be an identifier-like string")
    version = _int(raw, "version", None, "schema")
    _require(version >= 1, "'version' must be positive")
    bits = _int(raw, "filter_bits", 1024, "schema")
    _require(64 <= bits <= 8192 and bits % 64 == 0, "'filter_bits' must be a multiple of 64 between 64 and 8192")
    _require(raw.get("hashing", _SUPPORTED_HASHING) == _SUPPORTED_HASHING,
             f"'hashing' must be {_SUPPORTED_HASHING!r}")
    fields_raw = raw.get("fields")
    _require(isinstance(fields_raw, list) and 0 < len(fields_raw) <= _MAX_FIELDS,
             f"'fields' must be a list of 1 to {_MAX_FIELDS} fields")
    fields = tuple(_field(item, position) for position, item in enumerate(fields_raw))
    names = [spec.name for spec in fields]
    _require(len(set(names)) == len(names), "field names must be unique")
    _require(any(spec.k > 0 for spec in fields), "at least one field needs k > 0")
    signatures = _signatures(raw.get("blocking", []), set(names))
    threshold = raw.get("threshold", 0.8)
    _require(isinstance(threshold, int | float) and not isinstance(threshold, bool) and 0 < threshold <= 1,
             "'threshold' must be a number in (0, 1]")
    return Schema(id=schema_id, version=version, filter_bits=bits, fields=fields, signatures=signatures,
                  threshold=float(threshold))


def _signatures(raw: Any, names: set[str]) -> tuple[tuple[SignaturePart, ...], ...]:
    _require(isinstance(raw, list) and len(raw) <= _MAX_FIELDS, "'blocking' must be a list of signatures")
    out = []
    for position, signature in enumerate(raw):
        where = f"blocking signature {position}"
        _require(isinstance(signature, list) and 0 < len(signature) <= 8, f"{where}: must be a list of 1-8 parts")
        parts = []
        for part in signature:
            match = _PART.fullmatch(part) if isinstance(part, str) else None
            _require(match is not None, f"{where}: parts look like 'field' or 'field[:n]'")
            assert match is not None
            _require(match.group(1) in names, f"{where}: unknown field {match.group(1)!r}")
            prefix = int(match.group(2)) if match.group(2) else None
            _require(prefix is None or 1 <= prefix <= 64, f"{where}: prefix length must be 1-64")
            parts.append(SignaturePart(match.group(1), prefix))
        out.append(tuple(parts))
    return tuple(out)


def load_schema(path: Path | str) -> Schema:
    """Read a schema from a ``.yaml``/``.yml``/``.json`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise SchemaError(f"cannot read schema file {path.name}") from exc
    return schema_from_mapping(raw)


def shipped_schema(record_type: str) -> Schema:
    """One of the schemas shipped in ``gateway/matching/schemas/`` (``"person"``, ``"company"``)."""
    _require(record_type.isidentifier(), "record type must be an identifier-like name")
    resource = resources.files("gateway.matching") / "schemas" / f"{record_type}.yaml"
    if not resource.is_file():
        raise SchemaError(f"no shipped schema for record type {record_type!r}")
    try:
        return schema_from_mapping(yaml.safe_load(resource.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise SchemaError(f"shipped schema {record_type!r} is not valid YAML") from exc
