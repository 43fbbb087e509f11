"""The hot paths' shortcuts give exactly the answers of the plain code they stand in for."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from uuid import UUID

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import store
from audit.canonical import (
    _generic_event_text,
    claims_index,
    entry_canonical,
    entry_canonicals,
    envelope_index,
    event_canonical,
    format_timestamp,
)
from audit.errors import VerificationError
from audit.export import ENTRY_LINE, entry_line
from audit.guard import _SCREEN_BSN, _bsn_candidate
from audit.log import prepare
from audit.merkle import CompactRange, flat_index
from audit.verify import _entry_row
from tests.audit_support import make_event

ENTRY_ID = UUID("01937b6e-0000-7000-8000-000000000001")
STAMP = format_timestamp(datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC))

ascii_keys = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=8)
texts = st.text(max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ascii_keys, children, max_size=4),
    max_leaves=12,
)
refs = st.text(alphabet=st.characters(min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=["Cs"]),
               min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 1000), extra=st.dictionaries(ascii_keys, json_values, max_size=4),
       obligations=st.none() | st.dictionaries(ascii_keys, json_values, max_size=3),
       reasons=st.lists(refs, max_size=3), holder=st.none() | refs, user=st.none() | refs,
       drop=st.sets(st.sampled_from(["processing_activity", "data_subject", "requester", "decision",
                                     "parent_span_id", "payload_sha256"])))
def test_direct_event_encoding_equals_the_generic_path_and_rfc8785(
        n: int, extra: dict[str, object], obligations: dict[str, object] | None, reasons: list[str],
        holder: str | None, user: str | None, drop: set[str]) -> None:
    event = make_event(n, extra=extra, obligations=obligations, reasons=tuple(reasons), holder=holder,
                       **{name: None for name in drop})
    if user is not None and event.requester is not None:
        event = event.model_copy(update={"requester": event.requester.model_copy(update={"user": user})})
    direct = event_canonical(event)
    assert direct == _generic_event_text(event).encode("utf-8")
    assert direct == rfc8785.dumps(event.to_document())


def test_prepared_values_follow_the_table_column_order() -> None:
    prepared = prepare(make_event(3))
    assert tuple(prepared.columns) == store.QUERY_COLUMNS
    assert prepared.column_values == tuple(prepared.columns[name] for name in store.QUERY_COLUMNS)
    assert store.ENTRY_COLUMNS[3:11] == store.QUERY_COLUMNS


def test_batch_envelopes_equal_single_ones() -> None:
    events = [event_canonical(make_event(i)) for i in range(5)]
    ids = [UUID(int=ENTRY_ID.int + i) for i in range(5)]
    expected = [entry_canonical(41 + i, entry_id, STAMP, event)
                for i, (entry_id, event) in enumerate(zip(ids, events, strict=True))]
    assert entry_canonicals(41, ids, STAMP, events) == expected


def _envelope_index(canonical: bytes) -> int | None:
    try:
        return envelope_index(canonical)
    except VerificationError:
        return None


def _mutations(base: bytes, rng: random.Random, alphabet: bytes, window: int) -> bytes:
    data = bytearray(base)
    for _ in range(rng.randrange(1, 3)):
        position = max(0, len(data) - rng.randrange(1, window))
        operation = rng.randrange(3)
        if operation == 0 and position < len(data):
            data[position] = rng.choice(alphabet)
        elif operation == 1 and position < len(data):
            del data[position]
        else:
            data.insert(position, rng.choice(alphabet))
    return bytes(data)


def test_the_index_shortcut_accepts_only_what_the_pattern_reads_as_that_index() -> None:
    rng = random.Random(5)
    base = entry_canonical(7, ENTRY_ID, STAMP, event_canonical(make_event(7)))
    assert claims_index(base, 7)
    assert not claims_index(base, 8)
    assert not claims_index(base[:-1], 7)
    for _ in range(20_000):
        mutated = _mutations(base, rng, b'0123456789Z:,."-T}a{ ', 80)
        for index in (7, 8, 70, 0):
            if claims_index(mutated, index):
                assert _envelope_index(mutated) == index, mutated[-80:]
    for short in (b"", b"}", b'","v":1}', b',"index":7,"recorded_at":"' + STAMP.encode() + b'","v":1}'):
        assert claims_index(short, 7) == (_envelope_index(short) == 7)


def _regex_row(line: bytes) -> tuple[int, bytes, bytes] | None:
    match = ENTRY_LINE.match(line)
    if match is None:
        return None
    return int(match.group(2)), match.group(1), bytes.fromhex(match.group(3).decode("ascii"))


def test_export_lines_are_split_exactly_as_the_pattern_splits_them() -> None:
    rng = random.Random(6)
    canonical = entry_canonical(12, ENTRY_ID, STAMP, event_canonical(make_event(12)))
    base = entry_line(12, hashlib.sha256(b"x").digest(), canonical)
    assert _entry_row(base) == _regex_row(base) == (12, canonical, hashlib.sha256(b"x").digest())
    for _ in range(20_000):
        mutated = _mutations(base, rng, b'0123456789abcdefABCDEF,":{}\r\n x', 120)
        assert _entry_row(mutated) == _regex_row(mutated), mutated[-120:]
    for line in (base.rstrip(b"\n"), base.replace(b"\n", b"\r\n"), b'{"entry":,"index":0,"leaf_hash":"' + b"0" * 64
                 + b'","type":"entry"}\n', base.replace(b'"index":12', b'"index":012')):
        assert _entry_row(line) == _regex_row(line)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40) | st.text(alphabet="0123456789 .aZ\":,-é", max_size=40).map(str.encode))
def test_the_bsn_screen_finds_what_the_pattern_finds(data: bytes) -> None:
    assert _bsn_candidate(data) == (_SCREEN_BSN.search(data) is not None)


def test_the_bsn_screen_on_events() -> None:
    for n in range(300):
        canonical = event_canonical(make_event(n, extra={"ref": f"x {n * 7919:09d} y", "n": n}))
        assert _bsn_candidate(canonical) == (_SCREEN_BSN.search(canonical) is not None)


def test_extending_a_compact_range_equals_appending_leaf_by_leaf() -> None:
    leaves = [hashlib.sha256(str(i).encode()).digest() for i in range(777)]
    one = CompactRange()
    expected: list[tuple[int, bytes]] = []
    for leaf in leaves:
        expected.extend((flat_index(node), value) for node, value in one.append(leaf))
    many = CompactRange()
    completed = many.extend(leaves[:100]) + many.extend(leaves[100:101]) + many.extend(leaves[101:])
    assert completed == expected
    assert (many.size, many.hashes, many.root()) == (one.size, one.hashes, one.root())
