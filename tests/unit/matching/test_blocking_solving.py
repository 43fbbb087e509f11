"""Blocking proposes what it should; the greedy solver is 1-to-1 and best-first; linkage returns groups only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.matching.blocking import BitSampleLSH, SignatureBlocker
from gateway.matching.encoding import CLKEncoder, EncodedDataset
from gateway.matching.errors import EncodingError
from gateway.matching.linkage import LinkageResult, LinkageStats, link
from gateway.matching.lookup import held_blocker
from gateway.matching.schema import shipped_schema
from gateway.matching.solving import ScoredPairs, greedy_solve

SECRET = b"0123456789abcdef0123456789abcdef"


def _filters(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bits = rng.random((n, 1024)) < 0.4
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64)


def test_signature_blocker_joins_on_shared_keys() -> None:
    left = EncodedDataset(_filters(1, 4), np.array([[1, 0], [2, 5], [0, 0], [3, 3]], dtype=np.uint64))
    right = EncodedDataset(_filters(2, 3), np.array([[2, 0], [0, 5], [1, 3]], dtype=np.uint64))
    pairs = SignatureBlocker().candidate_pairs(left, right)
    assert list(zip(pairs.left_index.tolist(), pairs.right_index.tolist(), strict=True)) == [
        (0, 2), (1, 0), (1, 1), (3, 2)]
    capped = SignatureBlocker(max_block_pairs=0).candidate_pairs(left, right)
    assert len(capped) == 0
    with pytest.raises(EncodingError):
        SignatureBlocker().candidate_pairs(left, EncodedDataset(_filters(2, 3)))


def test_bit_sample_lsh_finds_identical_filters_and_skips_empty_ones() -> None:
    left = _filters(3, 200)
    right = left[::-1].copy()
    right[0] = 0
    pairs = BitSampleLSH(bands=10, bits_per_band=24).candidate_pairs(EncodedDataset(left), EncodedDataset(right))
    found = set(zip(pairs.left_index.tolist(), pairs.right_index.tolist(), strict=True))
    assert {(i, 199 - i) for i in range(199)} <= found
    assert all(j != 0 for _, j in found)
    assert len(found) < 200 * 200 // 100
    with pytest.raises(ValueError, match="bits_per_band"):
        BitSampleLSH(bits_per_band=60)


def test_greedy_solver_is_best_first_and_one_to_one() -> None:
    pairs = ScoredPairs.between(0, 1, np.array([0, 0, 1, 2]), np.array([0, 1, 0, 2]),
                                np.array([0.9, 0.95, 0.8, 0.7]))
    assert greedy_solve(pairs) == [((0, 0), (1, 1)), ((0, 1), (1, 0)), ((0, 2), (1, 2))]


@settings(max_examples=40, deadline=None)
@given(edges=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(0, 3), st.integers(0, 6),
                                st.floats(0.5, 1.0)), max_size=40))
def test_greedy_groups_hold_one_record_per_dataset_and_each_record_once(
        edges: list[tuple[int, int, int, int, float]]) -> None:
    arrays = [np.array([e[i] for e in edges], dtype=np.intp) for i in range(4)]
    scores = np.array([e[4] for e in edges], dtype=np.float64)
    groups = greedy_solve(ScoredPairs(arrays[0], arrays[1], arrays[2], arrays[3], scores))
    seen: set[tuple[int, int]] = set()
    edge_set = {((a, b), (c, d)) for a, b, c, d, _ in edges} | {((c, d), (a, b)) for a, b, c, d, _ in edges}
    for group in groups:
        assert len(group) >= 2
        datasets = [ds for ds, _ in group]
        assert len(datasets) == len(set(datasets))
        assert not seen & set(group)
        seen |= set(group)
        for x in group:  # every pair inside a group was a candidate pair
            for y in group:
                assert x == y or (x, y) in edge_set


def test_three_party_linkage_groups() -> None:
    encoder = CLKEncoder(shipped_schema("person"), SECRET)
    person = {"given_name": "anna", "surname": "de vries", "date_of_birth": "19800101", "suburb": "utrecht",
              "postcode": "3511", "soc_sec_id": "1234567"}
    other = {"given_name": "pieter", "surname": "bakker", "date_of_birth": "19751231", "suburb": "zwolle",
             "postcode": "8011", "soc_sec_id": "7654321"}
    a = encoder.encode_dataset([other, person])
    b = encoder.encode_dataset([{**person, "given_name": "ana"}])
    c = encoder.encode_dataset([{**person, "suburb": "utrect"}, {**other, "surname": "backer"}])
    result = link([a, b, c], threshold=0.7)
    assert result.groups == (((0, 0), (2, 1)), ((0, 1), (1, 0), (2, 0)))
    dense = link([a.filters, b.filters, c.filters], threshold=0.7, blocker=None)
    assert dense.groups == result.groups
    lsh = link([a, b, c], threshold=0.7, blocker=BitSampleLSH(bands=60, bits_per_band=8))
    assert lsh.groups == result.groups


def test_results_carry_no_scores() -> None:
    assert {f.name for f in dataclasses.fields(LinkageResult)} == {"groups", "stats"}
    assert not any("score" in f.name for f in dataclasses.fields(LinkageStats))


def test_linkage_input_checks() -> None:
    with pytest.raises(EncodingError):
        link([_filters(1, 2)], threshold=0.8)
    with pytest.raises(EncodingError):
        link([_filters(1, 2), np.zeros((2, 8), dtype=np.uint64)], threshold=0.8)
    with pytest.raises(ValueError, match="threshold"):
        link([_filters(1, 2), _filters(2, 2)], threshold=1.5)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 40), st.integers(1, 60), st.integers(2, 30), st.integers(0, 50))
def test_a_kept_key_index_proposes_exactly_what_sorting_again_does(seed: int, n_left: int, n_right: int,
                                                                   distinct: int, cap: int) -> None:
    """Fuzzy discovery keeps a holder's blocking keys sorted (``lookup.held_blocker``); the candidates must be
    the ones the blocker finds when it sorts them itself, also when some keys are empty and blocks are capped."""
    rng = np.random.default_rng(seed)
    left = EncodedDataset(_filters(seed, n_left), rng.integers(0, distinct, (n_left, 3)).astype(np.uint64))
    right = EncodedDataset(_filters(seed + 1, n_right), rng.integers(0, distinct, (n_right, 3)).astype(np.uint64))
    plain = SignatureBlocker(max_block_pairs=cap).candidate_pairs(left, right)
    kept = dataclasses.replace(held_blocker(right), max_block_pairs=cap).candidate_pairs(left, right)
    assert kept.left_index.tolist() == plain.left_index.tolist()
    assert kept.right_index.tolist() == plain.right_index.tolist()


def test_a_kept_key_index_is_used_only_for_the_keys_it_was_built_from() -> None:
    """Given another right dataset (another holder's, or a subset), the blocker sorts that one's keys: an index
    of other keys would propose pairs of records that share nothing."""
    left = EncodedDataset(_filters(1, 2), np.array([[1, 2], [3, 4]], dtype=np.uint64))
    right = EncodedDataset(_filters(2, 2), np.array([[1, 0], [9, 9]], dtype=np.uint64))
    other = EncodedDataset(_filters(3, 2), np.array([[9, 9], [4, 0]], dtype=np.uint64))
    blocker = held_blocker(right)
    assert blocker.right_index is not None
    found = blocker.candidate_pairs(left, other)
    assert list(zip(found.left_index.tolist(), found.right_index.tolist(), strict=True)) == [(1, 1)]
    assert held_blocker(EncodedDataset(_filters(4, 2))).right_index is None  # no keys: nothing to keep
