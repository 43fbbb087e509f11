"""RFC 9162 Merkle tree: published test vectors, an independent naive implementation, and properties.

The naive functions below transcribe the RFC's recursive definitions (MTH, PATH, SUBPROOF) as directly
as possible, with list slicing and no shared code with ``audit.merkle``; the module's faster iterative
code must agree with them for every small tree.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.errors import VerificationError
from audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    compact_range_nodes,
    consistency_proof,
    consistency_ranges,
    flat_index,
    fold_range,
    inclusion_proof,
    leaf_hash,
    node_at_flat_index,
    node_hash,
    root_from_inclusion_proof,
    root_of,
    subtree_nodes,
    verify_consistency,
    verify_inclusion,
)

# -- the independent reference ------------------------------------------------------------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def naive_mth(entries: list[bytes]) -> bytes:
    n = len(entries)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + entries[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _sha(b"\x01" + naive_mth(entries[:k]) + naive_mth(entries[k:]))


def naive_path(m: int, entries: list[bytes]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, entries[:k]), naive_mth(entries[k:])]
    return [*naive_path(m - k, entries[k:]), naive_mth(entries[:k])]


def naive_subproof(m: int, entries: list[bytes], complete: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if complete else [naive_mth(entries)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, entries[:k], complete), naive_mth(entries[k:])]
    return [*naive_subproof(m - k, entries[k:], False), naive_mth(entries[:k])]


# -- published vectors (RFC 6962 reference implementation, certificate-transparency) -----------------

CT_INPUTS = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
             bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_LEAVES = [leaf_hash(data) for data in CT_INPUTS]


def _hex(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_of([]) == EMPTY_ROOT == CompactRange().root()


@pytest.mark.parametrize("size", range(9))
def test_roots_match_published_vectors(size: int) -> None:
    assert root_of(CT_LEAVES[:size]).hex() == CT_ROOTS[size]


def test_leaf_and_node_hashes_use_the_domain_prefixes() -> None:
    assert leaf_hash(b"abc") == _sha(b"\x00abc")
    assert node_hash(b"L" * 32, b"R" * 32) == _sha(b"\x01" + b"L" * 32 + b"R" * 32)


@pytest.mark.parametrize(("index", "expected"), [
    (0, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
         "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
         "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
         "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
         "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
])
def test_inclusion_proofs_match_published_vectors(index: int, expected: list[str]) -> None:
    proof = inclusion_proof(index, CT_LEAVES)
    assert _hex(proof) == expected
    verify_inclusion(index, 8, CT_LEAVES[index], proof, bytes.fromhex(CT_ROOTS[8]))


@pytest.mark.parametrize(("first", "second", "expected"), [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
])
def test_consistency_proofs_match_published_vectors(first: int, second: int, expected: list[str]) -> None:
    proof = consistency_proof(first, CT_LEAVES[:second])
    assert _hex(proof) == expected
    verify_consistency(first, second, bytes.fromhex(CT_ROOTS[first]), bytes.fromhex(CT_ROOTS[second]), proof)


# -- agreement with the naive reference for every small tree ------------------------------------------

ENTRIES = [f"entry {i}".encode() for i in range(70)]
LEAVES = [leaf_hash(e) for e in ENTRIES]


def _subtree(node: tuple[int, int]) -> bytes:
    level, index = node
    return naive_mth(ENTRIES[index << level:(index + 1) << level])


def test_roots_and_compact_range_agree_with_naive_mth_for_sizes_0_to_70() -> None:
    compact = CompactRange()
    for size in range(71):
        expected = naive_mth(ENTRIES[:size])
        assert root_of(LEAVES[:size]) == expected
        assert compact.root() == expected
        assert CompactRange(size, [_subtree(node) for node in compact_range_nodes(size)]).root() == expected
        if size < 70:
            compact.append(LEAVES[size])


def test_compact_range_reports_every_completed_subtree() -> None:
    compact = CompactRange()
    completed: dict[tuple[int, int], bytes] = {}
    for leaf in LEAVES[:64]:
        completed.update(compact.append(leaf))
    assert len(completed) == 63  # 32 + 16 + 8 + 4 + 2 + 1 inner nodes of a complete tree of 64
    for node, value in completed.items():
        assert value == _subtree(node)


def test_proofs_agree_with_naive_path_and_subproof() -> None:
    for size in range(1, 40):
        for index in range(size):
            assert inclusion_proof(index, LEAVES[:size]) == naive_path(index, ENTRIES[:size])
        for first in range(1, size + 1):
            assert consistency_proof(first, LEAVES[:size]) == naive_subproof(first, ENTRIES[:size], True)


def test_every_proof_range_is_rebuilt_from_cached_subtrees() -> None:
    for size in range(1, 70):
        for first in range(size + 1):
            for start, end in consistency_ranges(first, size):
                assert fold_range(start, end, _subtree) == naive_mth(ENTRIES[start:end])
                assert sum(1 << level for level, _ in subtree_nodes(start, end)) == end - start


def test_flat_index_is_a_bijection_with_the_level_in_the_trailing_ones() -> None:
    seen = set()
    for level in range(12):
        for index in range(300):
            flat = flat_index((level, index))
            assert node_at_flat_index(flat) == (level, index)
            assert bin(flat + 1).endswith("1" + "0" * level) or flat + 1 == 1 << level
            seen.add(flat)
    assert len(seen) == 12 * 300
    assert [flat_index((0, i)) for i in range(4)] == [0, 2, 4, 6]
    assert flat_index((1, 0)) == 1
    assert flat_index((2, 0)) == 3
    assert flat_index((1, 1)) == 5


def test_subtree_nodes_refuses_ranges_that_are_not_tree_nodes() -> None:
    with pytest.raises(ValueError, match="not a node"):
        subtree_nodes(1, 4)
    with pytest.raises(ValueError, match="empty"):
        subtree_nodes(3, 3)


# -- properties: every proof verifies, every mutation fails -----------------------------------------

POOL = [leaf_hash(i.to_bytes(4, "big")) for i in range(600)]


def _flip(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    return bytes(data)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), size=st.integers(min_value=1, max_value=600))
def test_inclusion_proofs_verify_and_mutations_fail(data: st.DataObject, size: int) -> None:
    leaves = POOL[:size]
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    root = root_of(leaves)
    proof = inclusion_proof(index, leaves)
    verify_inclusion(index, size, leaves[index], proof, root)

    with pytest.raises(VerificationError):
        verify_inclusion(index, size, _flip(leaves[index], data.draw(st.integers(0, 255))), proof, root)
    with pytest.raises(VerificationError):
        verify_inclusion(index, size, leaves[index], proof, _flip(root, data.draw(st.integers(0, 255))))
    if proof:
        position = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        mutated = list(proof)
        mutated[position] = _flip(mutated[position], data.draw(st.integers(0, 255)))
        with pytest.raises(VerificationError):
            verify_inclusion(index, size, leaves[index], mutated, root)
        with pytest.raises(VerificationError):
            verify_inclusion(index, size, leaves[index], proof[:-1], root)
    with pytest.raises(VerificationError):
        verify_inclusion(index, size, leaves[index], [*proof, root], root)
    other = data.draw(st.integers(min_value=0, max_value=size - 1).filter(lambda i: i != index)) if size > 1 else None
    if other is not None:
        with pytest.raises(VerificationError):
            verify_inclusion(other, size, leaves[index], proof, root)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), second=st.integers(min_value=1, max_value=600))
def test_consistency_proofs_verify_and_mutations_fail(data: st.DataObject, second: int) -> None:
    first = data.draw(st.integers(min_value=0, max_value=second))
    first_root, second_root = root_of(POOL[:first]), root_of(POOL[:second])
    proof = consistency_proof(first, POOL[:second])
    verify_consistency(first, second, first_root, second_root, proof)

    if 0 < first < second:
        with pytest.raises(VerificationError):
            verify_consistency(first, second, _flip(first_root, data.draw(st.integers(0, 255))), second_root, proof)
        with pytest.raises(VerificationError):
            verify_consistency(first, second, first_root, _flip(second_root, data.draw(st.integers(0, 255))), proof)
        position = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        mutated = list(proof)
        mutated[position] = _flip(mutated[position], data.draw(st.integers(0, 255)))
        with pytest.raises(VerificationError):
            verify_consistency(first, second, first_root, second_root, mutated)
        with pytest.raises(VerificationError):
            verify_consistency(first, second, first_root, second_root, proof[:-1])
        with pytest.raises(VerificationError):
            verify_consistency(first, second, first_root, second_root, [*proof, second_root])
        # A root of a different (forked) history fails.
        forked = root_of([*POOL[: second - 1], leaf_hash(b"forged")])
        with pytest.raises(VerificationError):
            verify_consistency(first, second, first_root, forked, proof)


def test_verification_refuses_malformed_input() -> None:
    root = root_of(LEAVES[:5])
    with pytest.raises(VerificationError, match="outside"):
        verify_inclusion(5, 5, LEAVES[0], [], root)
    with pytest.raises(VerificationError, match="32-byte"):
        verify_inclusion(0, 5, LEAVES[0], [b"short"], root)
    with pytest.raises(VerificationError, match="no valid proof is that long"):
        root_from_inclusion_proof(0, 5, LEAVES[0], [LEAVES[0]] * 65)
    with pytest.raises(VerificationError, match="smaller"):
        verify_consistency(3, 2, root, root, [])
    with pytest.raises(VerificationError, match="empty"):
        verify_consistency(2, 5, root_of(LEAVES[:2]), root, [])
    with pytest.raises(VerificationError, match="must be empty"):
        verify_consistency(5, 5, root, root, [root])
    with pytest.raises(VerificationError, match="different roots"):
        verify_consistency(5, 5, root, EMPTY_ROOT, [])
    with pytest.raises(VerificationError, match="empty tree"):
        verify_consistency(0, 5, root, root, [])
    verify_consistency(0, 5, EMPTY_ROOT, root, [])
