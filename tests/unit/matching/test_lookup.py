"""Fuzzy discovery's comparison (``gateway.matching.lookup``): each subject on its own, and the filters no record
encodes like (empty, saturated) are recognised."""

from __future__ import annotations

import numpy as np

from gateway.matching.encoding import CLKEncoder, EncodedDataset
from gateway.matching.lookup import MAX_DENSITY, alike, held_blocker, implausible, matches
from gateway.matching.schema import shipped_schema

SECRET = b"lookup-test-partnership-secret!!"
PERSON = {"given_name": "michaela", "surname": "neumann", "date_of_birth": "19151111", "postcode": "4223",
          "suburb": "winston hills", "address_1": "stanley street", "street_number": "8"}


def _encoder() -> CLKEncoder:
    return CLKEncoder(shipped_schema("person"), SECRET)


def test_each_subject_is_answered_as_it_would_be_alone() -> None:
    """Two versions of one person asked at once: the holder's single record answers for both, as it would for
    each alone — a 1-to-1 answer (the closer one only) told the requester which version scores higher. With two
    records each version gets the one it matches best."""
    encoder = _encoder()
    threshold = shipped_schema("person").threshold
    asked = encoder.encode_dataset([PERSON | {"given_name": "micheala"}, PERSON | {"surname": "neuman"},
                                    {"given_name": "courtney", "surname": "painter", "date_of_birth": "19161214"}])
    held = encoder.encode_dataset([PERSON])
    assert matches(asked, held, threshold) == {0: 0, 1: 0}
    keys = asked.block_keys
    assert keys is not None
    for n in range(len(asked)):  # the same as asked alone, whatever else is asked
        alone = EncodedDataset(asked.filters[n:n + 1], keys[n:n + 1])
        assert matches(alone, held, threshold) == ({0: 0} if n < 2 else {})
    both = encoder.encode_dataset([PERSON | {"surname": "neuman"}, PERSON | {"given_name": "micheala"}])
    assert matches(asked, both, threshold) == {0: 1, 1: 0}


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
    """What fuzzy discovery refuses as "one person asked twice": versions of one person match each other, other
    people do not."""
    encoder = _encoder()
    threshold = shipped_schema("person").threshold
    other = {"given_name": "courtney", "surname": "painter", "date_of_birth": "19161214"}
    versions = encoder.encode([other, PERSON | {"given_name": "micheala"}, PERSON | {"surname": "neuman"}])
    assert alike(versions, threshold) == (1, 2)
    assert alike(versions[:2], threshold) is None
    assert alike(versions[:1], threshold) is None
    assert alike(np.concatenate([versions[:1], versions[:1]]), threshold) == (0, 1)  # the very same filter


def test_a_subject_is_compared_with_a_block_as_it_would_be_alone() -> None:
    """Found by a review: the cap on a blocking key's pairs (P-Sig's frequency filter, ``max_block_pairs``)
    counted the subjects asked with the same key, so a subject compared with a block of 200 held records when
    asked alone was not compared with it at all when asked with 50 others sharing that key (a household, one
    date of birth): 'hit' alone, 'no-hit' in company — its answer depended on the others asked, and the switch
    told the requester how many records the holder keeps under that key."""
    encoder = _encoder()
    threshold = shipped_schema("person").threshold
    key = np.uint64(0x5EED)  # one signature, shared by everyone below: only this block proposes pairs
    held_filters = encoder.encode([PERSON] + [{"given_name": f"held{n}", "surname": f"person{n}"} for n in range(199)])
    held = EncodedDataset(held_filters, np.full((len(held_filters), 1), key, dtype=np.uint64))
    asked_filters = encoder.encode([PERSON | {"given_name": "micheala"}]
                                   + [{"given_name": f"asked{n}", "surname": f"other{n}"} for n in range(50)])
    asked = EncodedDataset(asked_filters, np.full((len(asked_filters), 1), key, dtype=np.uint64))
    alone = EncodedDataset(asked_filters[:1], np.full((1, 1), key, dtype=np.uint64))
    assert matches(alone, held, threshold) == {0: 0}
    assert matches(asked, held, threshold) == {0: 0}
    assert matches(asked, held, threshold, held_blocker(held)) == {0: 0}
