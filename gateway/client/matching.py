"""Partner side of fuzzy matching: encode records as CLK Bloom filters (and blocking keys) before sending.

Typical use::

    encoder = CLKEncoder(shipped_schema("person"), partnership_clk_secret)
    dataset = encoder.encode_dataset(records)          # records: mappings field name -> value
    payload = dataset_to_wire(dataset)                 # [{"clk": "...", "blocks": ["…", ...]}, ...]

The partnership's CLK secret is shared by its participants and not by the gateway; plaintext records never
leave the partner. Everything here is re-exported from the pure modules of :mod:`gateway.matching`.
"""

from __future__ import annotations

from gateway.matching.encoding import (
    BlockKeys,
    CLKEncoder,
    EncodedDataset,
    Filters,
    clk_key_id,
    dataset_from_wire,
    dataset_to_wire,
    filters_from_b64,
    filters_to_b64,
)
from gateway.matching.errors import EncodingError, MatchingError, SchemaError
from gateway.matching.schema import Schema, load_schema, schema_from_mapping, shipped_schema

__all__ = [
    "BlockKeys",
    "CLKEncoder",
    "EncodedDataset",
    "EncodingError",
    "Filters",
    "MatchingError",
    "Schema",
    "SchemaError",
    "clk_key_id",
    "dataset_from_wire",
    "dataset_to_wire",
    "filters_from_b64",
    "filters_to_b64",
    "load_schema",
    "schema_from_mapping",
    "shipped_schema",
]
