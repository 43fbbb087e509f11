"""Fuzzy discovery's comparison (``gateway.matching.lookup``): one-to-one per holder, and the filters no record
encodes like (empty, saturated) are recognised."""

from __future__ import annotations

import numpy as np

from gateway.matching.encoding import CLKEncoder, EncodedDataset
from gateway.matching.lookup import MAX_DENSITY, alike, implausible, matches
from gateway.matching.schema import shipped_schema

SECRET = b"lookup-test-partnership-secret!!"
PERSON = {"given_name": "michaela", "surname": "neumann", "date_of_birth": "19151111", "postcode": "4223",
          "suburb": "winston hills", "address_1": "stanley street", "street_number": "8"}


def _encoder() -> CLKEncoder:
    return CLKEncoder(shipped_schema("person"), SECRET)


def test_one_held_record_matches_at_most_one_subject() -> None:
    """Two versions of one person asked at once: the holder's single record answers for one of them (the
    closer), not both — and with two records both answer, which is why fuzzy discovery refuses versions of one
    person in one request (:func:`alike`, below): else "hit, hit" would count the holder's records."""
    encoder = _encoder()
    asked = encoder.encode_dataset([PERSON | {"given_name": "micheala"}, PERSON | {"surname": "neuman"},
                                    {"given_name": "courtney", "surname": "painter", "date_of_birth": "19161214"}])
    held = encoder.encode_dataset([PERSON])
    found = matches(asked, held, shipped_schema("person").threshold)
    assert len(found) == 1
    assert set(found) <= {0, 1}
    assert list(found.values()) == [0]
    both = encoder.encode_dataset([PERSON, PERSON | {"surname": "neumann-smit"}])  # two records: both answer
    assert sorted(matches(asked, both, shipped_schema("person").threshold)) == [0, 1]


def test_no_blocking_keys_on_one_side_compares_everything() -> None:
    encoder = _encoder()
    asked = encoder.encode_dataset([PERSON | {"given_name": "micheala"}])
    held = EncodedDataset(encoder.encode([PERSON]))  # enrolled without blocking keys
    assert matches(asked, held, shipped_schema("person").threshold) == {0: 0}
    assert matches(asked, EncodedDataset(held.filters[:0]), 0.72) == {}


def test_empty_and_saturated_filters_are_implausible_and_records_are_not() -> None:
    filters = _encoder().encode([PERSON, PERSON | {"given_name": "anna"}])
    assert implausible(filters) is None
    words = filters.shape[1]
    saturated = np.full((1, words), np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    empty = np.zeros((1, words), dtype=np.uint64)
    assert implausible(np.vstack([filters, saturated])) == 2
    assert implausible(np.vstack([empty, filters])) == 0
    just_over = np.zeros((1, words * 64), dtype=bool)
    just_over[0, : int(MAX_DENSITY * words * 64) + 1] = True
    packed = np.packbits(just_over, bitorder="little").view("<u8").astype(np.uint64).reshape(1, words)
    assert implausible(packed) == 0


def test_two_versions_of_one_person_are_alike_and_distinct_people_are_not() -> None:
    """What fuzzy discovery refuses as "one person asked twice" (else the 1-to-1 answer above would tell whether
    a holder keeps two records of the person): versions of one person match each other, other people do not."""
    encoder = _encoder()
    threshold = shipped_schema("person").threshold
    other = {"given_name": "courtney", "surname": "painter", "date_of_birth": "19161214"}
    versions = encoder.encode([other, PERSON | {"given_name": "micheala"}, PERSON | {"surname": "neuman"}])
    assert alike(versions, threshold) == (1, 2)
    assert alike(versions[:2], threshold) is None
    assert alike(versions[:1], threshold) is None
    assert alike(np.concatenate([versions[:1], versions[:1]]), threshold) == (0, 1)  # the very same filter
