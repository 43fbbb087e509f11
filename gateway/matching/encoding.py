"""CLK encoding (partner side): records → keyed Bloom filters, as NumPy ``uint64`` arrays.

Pure (NumPy, PyYAML via the schema, ``cryptography`` for HKDF, the standard library); no server imports, so
:mod:`gateway.client.matching` exposes it to partners.

Encoding of one record, per field of the :class:`~gateway.matching.schema.Schema`:

1. **normalise** the value (``text``: accents dropped, lower case, punctuation → space, whitespace collapsed;
   ``digits``: digits only; ``none``: stripped). ``None``, NaN and empty strings are *missing*: no tokens.
2. **tokenise**: ``ngram`` (grams of length n; padded with one space each side when n ≥ 2, or prefixed with
   their position when ``positional``), ``exact`` (the whole value) or ``numeric`` (``resolution + 1``
   neighbouring buckets of width ``threshold / resolution``, so values within ``threshold`` share tokens).
3. **hash** each token with the field's key: ``d = HMAC-SHA256(key_f, token)``,
   ``h1 = LE64(d[0:8])``, ``h2 = LE64(d[8:16]) | 1``, and set bits ``(h1 + i·h2) mod L`` for
   ``i = 0 .. k_f-1`` (double hashing; h2 odd makes the k positions distinct when L is a power of two).
4. the record's filter is the OR over all fields' bits.

Field keys: ``key_f = HKDF-SHA512(secret, salt="wgs-gateway/clk/v1",
info = schema.id || 0x00 || u32(schema.version) || 0x00 || field name, L=32)``; ``secret`` is the
partnership's CLK secret (≥ 16 random bytes), shared by its participants and never by the gateway.

Blocking keys (P-Sig style): for each of the schema's ``blocking`` signatures whose parts are all present,
``LE64(HMAC-SHA256(key_blocking, u8(signature index) || part_1 || 0x1f || part_2 ...)[0:8])`` (0 is
reserved for "absent"), with ``key_blocking`` derived like a field key with the name ``"\x00blocking"``.
The gateway joins records of two parties on equal keys; it learns which records share a signature (which
the filters' similarity reveals anyway), never the values.

Bit layout: bit p is bit ``p mod 64`` of word ``p // 64``; serialised as the words in little-endian order
(so byte ``p // 8``, bit ``p mod 8``), base64url without padding for transport.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.matching.errors import EncodingError
from gateway.matching.schema import FieldSpec, Normaliser, Schema, SignaturePart, TokenizerKind

__all__ = [
    "BlockKeys",
    "CLKEncoder",
    "EncodedDataset",
    "Filters",
    "dataset_from_wire",
    "dataset_to_wire",
    "filters_from_b64",
    "filters_to_b64",
    "normalise",
    "tokenize",
]

Filters = npt.NDArray[np.uint64]
"""``(n, filter_bits // 64)`` array of ``uint64``: one Bloom filter per row."""

BlockKeys = npt.NDArray[np.uint64]
"""``(n, signatures)`` array of ``uint64`` blocking keys; 0 where a signature's parts are missing."""


@dataclass(frozen=True, slots=True)
class EncodedDataset:
    """What a partner sends for fuzzy matching: its filters and, optionally, its blocking keys."""

    filters: Filters
    block_keys: BlockKeys | None = None

    def __post_init__(self) -> None:
        if self.filters.ndim != 2 or self.filters.dtype != np.uint64:
            raise EncodingError("filters must be a 2-D uint64 array")
        if self.block_keys is not None and (self.block_keys.ndim != 2 or self.block_keys.dtype != np.uint64
                                            or len(self.block_keys) != len(self.filters)):
            raise EncodingError("block keys must be a 2-D uint64 array with one row per filter")

    def __len__(self) -> int:
        return len(self.filters)

_SALT = b"wgs-gateway/clk/v1"
_MIN_SECRET = 16
_CHUNK = 2048
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_NON_DIGIT = re.compile(r"[^0-9]+")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_HEX16 = re.compile(r"[0-9a-f]{16}")


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    text = str(value).strip()
    return text or None


def normalise(normaliser: Normaliser, value: object) -> str | None:
    """The normalised text of a field value, or ``None`` when it is missing."""
    text = _as_text(value)
    if text is None:
        return None
    if normaliser is Normaliser.TEXT:
        decomposed = unicodedata.normalize("NFKD", text)
        stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
        text = _NON_ALNUM.sub(" ", stripped).strip()
    elif normaliser is Normaliser.DIGITS:
        text = _NON_DIGIT.sub("", text)
    return text or None


def tokenize(spec: FieldSpec, text: str) -> list[str]:
    """Tokens of one normalised value (order irrelevant; duplicates removed)."""
    if spec.tokenizer is TokenizerKind.EXACT:
        return [text]
    if spec.tokenizer is TokenizerKind.NUMERIC:
        try:
            number = float(text)
        except ValueError:
            return []
        if not math.isfinite(number):
            return []
        step = spec.threshold / spec.resolution
        base = math.floor(number / step)
        return [str(base + j) for j in range(spec.resolution + 1)]
    n = spec.n
    if spec.positional:
        if len(text) <= n:
            return [f"0 {text}"]
        return [f"{i} {text[i:i + n]}" for i in range(len(text) - n + 1)]
    padded = f" {text} " if n >= 2 else text
    if len(padded) <= n:
        return [padded]
    return list(dict.fromkeys(padded[i:i + n] for i in range(len(padded) - n + 1)))


def _field_key(secret: bytes, schema: Schema, name: str) -> bytes:
    info = (schema.id.encode() + b"\x00" + schema.version.to_bytes(4, "big") + b"\x00" + name.encode())
    return HKDF(algorithm=hashes.SHA512(), length=32, salt=_SALT, info=info).derive(secret)


class CLKEncoder:
    """Encodes records with one schema and one partnership secret. Not thread-safe (it caches tokens)."""

    def __init__(self, schema: Schema, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) < _MIN_SECRET:
            raise EncodingError(f"the CLK secret must be at least {_MIN_SECRET} bytes")
        self._schema = schema
        self._fields = tuple(spec for spec in schema.fields if spec.k > 0)
        self._keys = tuple(_field_key(secret, schema, spec.name) for spec in self._fields)
        self._blocking_key = _field_key(secret, schema, "\x00blocking")
        self._specs = {spec.name: spec for spec in schema.fields}
        self._texts: dict[str, dict[object, str | None]] = {spec.name: {} for spec in schema.fields}
        self._bytes = schema.filter_bits // 8
        # token id -> the token's bits as little-endian filter bytes; per field: raw value -> token ids
        self._masks: list[bytes] = []
        self._token_ids: list[dict[str, int]] = [{} for _ in self._fields]
        self._value_ids: list[dict[object, tuple[int, ...]]] = [{} for _ in self._fields]
        # per blocking signature: raw values of its parts -> key (values repeat a lot: names, dates, places)
        self._key_cache: list[dict[tuple[object, ...], int]] = [{} for _ in schema.signatures]

    @property
    def schema(self) -> Schema:
        return self._schema

    def __repr__(self) -> str:
        return f"CLKEncoder(schema={self._schema.id!r} v{self._schema.version}, secret=<hidden>)"

    def _token_id(self, position: int, token: str) -> int:
        ids = self._token_ids[position]
        token_id = ids.get(token)
        if token_id is None:
            digest = hmac.digest(self._keys[position], token.encode("utf-8"), "sha256")
            h1 = int.from_bytes(digest[0:8], "little")
            h2 = int.from_bytes(digest[8:16], "little") | 1
            bits = self._schema.filter_bits
            mask = 0
            for i in range(self._fields[position].k):
                mask |= 1 << ((h1 + i * h2) % bits)
            token_id = ids[token] = len(self._masks)
            self._masks.append(mask.to_bytes(self._bytes, "little"))
        return token_id

    def _value_tokens(self, position: int, value: object) -> tuple[int, ...]:
        cache = self._value_ids[position]
        try:
            return cache[value]
        except KeyError:
            pass
        except TypeError:
            raise EncodingError(f"field {self._fields[position].name!r} has an unhashable value") from None
        spec = self._fields[position]
        text = normalise(spec.normalise, value)
        ids = () if text is None else tuple(self._token_id(position, token) for token in tokenize(spec, text))
        if len(cache) < 1_000_000:
            cache[value] = ids
        return ids

    def encode(self, records: Iterable[Mapping[str, object]]) -> Filters:
        """Encode records (mappings from field name to value; missing keys are missing values)."""
        chunks: list[Filters] = []
        batch: list[Mapping[str, object]] = []
        for record in records:
            batch.append(record)
            if len(batch) == _CHUNK:
                chunks.append(self._encode_batch(batch))
                batch = []
        if batch or not chunks:
            chunks.append(self._encode_batch(batch))
        if len(chunks) == 1:
            return chunks[0]
        joined: Filters = np.concatenate(chunks)
        return joined

    def _text(self, name: str, value: object) -> str | None:
        cache = self._texts[name]
        try:
            return cache[value]
        except KeyError:
            text = normalise(self._specs[name].normalise, value)
            if len(cache) < 1_000_000:
                cache[value] = text
            return text
        except TypeError:
            raise EncodingError(f"field {name!r} has an unhashable value") from None

    def block_keys(self, records: Iterable[Mapping[str, object]]) -> BlockKeys:
        """P-Sig-style blocking keys, one column per schema signature (0 = a part is missing)."""
        signatures = self._schema.signatures
        fields = [tuple(part.field for part in signature) for signature in signatures]
        caches = self._key_cache
        rows: list[list[int]] = []
        for record in records:
            row = []
            for number, signature in enumerate(signatures):
                raw = tuple(record.get(name) for name in fields[number])
                cache = caches[number]
                try:
                    key = cache[raw]
                except KeyError:
                    key = self._block_key(number, signature, raw)
                    if len(cache) < 1_000_000:
                        cache[raw] = key
                except TypeError:  # an unhashable value: let _text report it
                    key = self._block_key(number, signature, raw)
                row.append(key)
            rows.append(row)
        return np.array(rows, dtype=np.uint64).reshape(len(rows), len(signatures))

    def _block_key(self, number: int, signature: tuple[SignaturePart, ...], raw: tuple[object, ...]) -> int:
        """The keyed hash of one signature's normalised parts, 0 when a part is missing."""
        texts = [self._text(part.field, value) for part, value in zip(signature, raw, strict=True)]
        if any(text is None for text in texts):
            return 0  # a part is missing: no key for this signature
        parts = [text if part.prefix is None else text[:part.prefix]
                 for part, text in zip(signature, texts, strict=True) if text is not None]
        message = bytes([number]) + "\x1f".join(parts).encode("utf-8")
        digest = hmac.digest(self._blocking_key, message, "sha256")
        return int.from_bytes(digest[:8], "little") or 1

    def encode_dataset(self, records: Iterable[Mapping[str, object]]) -> EncodedDataset:
        """Filters and blocking keys of the same records."""
        materialised = list(records)
        keys = self.block_keys(materialised) if self._schema.signatures else None
        return EncodedDataset(self.encode(materialised), keys)

    def encode_one(self, record: Mapping[str, object]) -> Filters:
        """One record's filter, shape ``(words,)``."""
        row: Filters = self.encode([record])[0]
        return row

    def _encode_batch(self, records: Sequence[Mapping[str, object]]) -> Filters:
        words = self._schema.words
        token_ids: list[int] = []
        offsets = np.empty(len(records), dtype=np.intp)
        names = [spec.name for spec in self._fields]
        for row, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise EncodingError(f"record {row} is not a mapping")
            offsets[row] = len(token_ids)
            for position, name in enumerate(names):
                token_ids.extend(self._value_tokens(position, record.get(name)))
        out = np.zeros((len(records), words), dtype=np.uint64)
        if not token_ids:
            return out
        table = np.frombuffer(b"".join(self._masks), dtype="<u8").reshape(-1, words)
        gathered = table[np.asarray(token_ids, dtype=np.intp)]
        ends = np.append(offsets[1:], len(token_ids))
        nonempty = ends > offsets
        out[nonempty] = np.bitwise_or.reduceat(gathered, offsets[nonempty], axis=0)
        return out


def filters_to_b64(filters: Filters) -> list[str]:
    """Transport form: one unpadded base64url string per filter."""
    data = np.ascontiguousarray(filters, dtype="<u8")
    return [base64.urlsafe_b64encode(row.tobytes()).rstrip(b"=").decode("ascii") for row in data]


def filters_from_b64(encoded: Sequence[str], filter_bits: int = 1024) -> Filters:
    """Parse transport strings back into a filter array; strict about length and alphabet."""
    size = filter_bits // 8
    chars = (size * 4 + 2) // 3
    out = np.empty((len(encoded), filter_bits // 64), dtype=np.uint64)
    for row, text in enumerate(encoded):
        if not isinstance(text, str) or len(text) != chars or not _B64URL.fullmatch(text):
            raise EncodingError(f"filter {row} must be {chars} characters of unpadded base64url")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise EncodingError(f"filter {row} is not valid base64url") from None
        if len(raw) != size:
            raise EncodingError(f"filter {row} has the wrong length")
        out[row] = np.frombuffer(raw, dtype="<u8")
    return out


def dataset_to_wire(dataset: EncodedDataset) -> list[dict[str, Any]]:
    """JSON-ready form: ``[{"clk": <base64url filter>, "blocks": [<16 hex digits>, ...]}, ...]``."""
    clks = filters_to_b64(dataset.filters)
    if dataset.block_keys is None:
        return [{"clk": clk, "blocks": []} for clk in clks]
    return [{"clk": clk, "blocks": [f"{int(key):016x}" if key else "" for key in keys]}
            for clk, keys in zip(clks, dataset.block_keys, strict=True)]


def dataset_from_wire(items: Sequence[Mapping[str, Any]], filter_bits: int = 1024) -> EncodedDataset:
    """Parse :func:`dataset_to_wire` output strictly (same number of blocking keys on every record)."""
    if not items:
        return EncodedDataset(np.empty((0, filter_bits // 64), dtype=np.uint64))
    widths = {len(item.get("blocks") or []) if isinstance(item, Mapping) else -1 for item in items}
    if len(widths) != 1 or -1 in widths:
        raise EncodingError("every record needs a 'clk' and the same number of 'blocks'")
    filters = filters_from_b64([item.get("clk") for item in items], filter_bits)  # type: ignore[misc]
    width = widths.pop()
    if width == 0:
        return EncodedDataset(filters)
    keys = np.zeros((len(items), width), dtype=np.uint64)
    for row, item in enumerate(items):
        for column, text in enumerate(item["blocks"]):
            if text == "":
                continue
            if not isinstance(text, str) or not _HEX16.fullmatch(text):
                raise EncodingError(f"record {row}: blocking key {column} must be 16 lower-case hex digits")
            keys[row, column] = int(text, 16)
    return EncodedDataset(filters, keys)


def records_from_columns(columns: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Turn column-oriented data (e.g. ``DataFrame.to_dict("list")``) into record mappings."""
    names = list(columns)
    lengths = {len(columns[name]) for name in names}
    if len(lengths) > 1:
        raise EncodingError("columns have different lengths")
    return [dict(zip(names, values, strict=True)) for values in zip(*(columns[n] for n in names), strict=True)]
