"""RFC 9162 Merkle tree hashing, inclusion and consistency proofs (SHA-256, 0-based indices).

RFC 9162 (Certificate Transparency 2.0) §2.1 defines the Merkle Tree Hash over a list of entries::

    MTH({})       = SHA-256()
    MTH({d(0)})   = SHA-256(0x00 || d(0))                          leaf hash
    MTH(D[n])     = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))    k = largest power of two < n

The distinct 0x00/0x01 prefixes keep a leaf from ever being passed off as an inner node (second
preimage). This is the same tree as RFC 6962's, so proofs verify with any RFC 6962 or C2SP tlog client.

The module is pure: it never touches storage. Proof *generation* is split in two so that a database
can serve proofs in O(log n) reads:

* :func:`inclusion_ranges` / :func:`consistency_ranges` say which leaf ranges ``[start, end)`` the proof
  consists of, following the recursive definitions (§2.1.3.1, §2.1.4.1);
* :func:`subtree_nodes` splits such a range into complete ("perfect") subtrees, named ``(level, index)``,
  which a store can cache once written — a complete subtree never changes in an append-only tree —
  and :func:`fold_range` combines their hashes again.

Verification follows §2.1.3.2 and §2.1.4.2 literally and raises the package's one
:class:`~audit.errors.VerificationError` instead of returning a boolean that a caller could ignore.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from audit.errors import VerificationError

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH of the empty tree: SHA-256 of the empty string."""

_MAX_PROOF_LENGTH = 64
"""A proof for any tree below 2**63 leaves has at most 63 (consistency: 64) hashes; longer is an attack."""

Node = tuple[int, int]
"""A complete subtree: ``(level, index)`` covers leaves ``[index·2**level, (index+1)·2**level)``."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one leaf."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def leaf_hashes_of_texts(texts: Iterable[str]) -> list[bytes]:
    """``leaf_hash(text.encode("utf-8"))`` for each text, in one loop: the append path's entries are text."""
    sha256, prefix = hashlib.sha256, _LEAF_PREFIX
    return [sha256(prefix + text.encode("utf-8")).digest() for text in texts]


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an inner node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162's split: the largest power of two strictly smaller than n (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes.

    Computed level by level, carrying an unpaired last node up unchanged; that yields the same tree as
    the recursive largest-power-of-two split and is much faster in Python.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


class CompactRange:
    """The complete subtrees that cover leaves ``[0, size)``: at most one per level, largest first.

    Enough to append leaves and compute the root without the rest of the tree, so a writer only needs
    these O(log n) hashes (the "right frontier") and a verifier can stream millions of leaves in
    constant memory.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError(f"a compact range of size {size} has {size.bit_count()} nodes, got {len(hashes)}")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        """The hashes of :func:`compact_range_nodes` (``size``), in the same order."""
        return list(self._hashes)

    def append(self, leaf: bytes) -> list[tuple[Node, bytes]]:
        """Add one leaf hash; return the complete subtrees (level ≥ 1) that this leaf completes."""
        completed: list[tuple[Node, bytes]] = []
        current = leaf
        size_after = self._size + 1
        level = 0
        # Every trailing one bit of the old size is a subtree waiting for a right sibling of equal size.
        while (self._size >> level) & 1:
            current = node_hash(self._hashes.pop(), current)
            level += 1
            completed.append(((level, (size_after >> level) - 1), current))
        self._hashes.append(current)
        self._size = size_after
        return completed

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[int, bytes]]:
        """Add many leaf hashes; return the complete subtrees (level ≥ 1) they complete, keyed by
        :func:`flat_index`, in completion order. Same result as :meth:`append` per leaf, in one tight loop.
        """
        completed: list[tuple[int, bytes]] = []
        hashes, size, sha256 = self._hashes, self._size, hashlib.sha256
        for leaf in leaves:
            current = leaf
            # The subtree completed at level L ends at leaf ``size``: flat index 2·(size + 1) - 2**L - 1.
            flat_end, width, waiting = 2 * size + 1, 1, size
            while waiting & 1:
                current = sha256(_NODE_PREFIX + hashes.pop() + current).digest()
                width <<= 1
                completed.append((flat_end - width, current))
                waiting >>= 1
            hashes.append(current)
            size += 1
        self._size = size
        return completed

    def root(self) -> bytes:
        """MTH of the leaves so far: fold the subtrees right to left."""
        if not self._hashes:
            return EMPTY_ROOT
        result = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            result = node_hash(left, result)
        return result

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._hashes)


def compact_range_nodes(size: int) -> list[Node]:
    """The complete subtrees covering ``[0, size)``, largest (leftmost) first: one per set bit of size."""
    nodes: list[Node] = []
    start = 0
    for level in reversed(range(size.bit_length())):
        if (size >> level) & 1:
            nodes.append((level, start >> level))
            start += 1 << level
    return nodes


def flat_index(node: Node) -> int:
    """A complete subtree as one integer: its root's in-order position in an unbounded binary tree.

    ``index·2**(level+1) + 2**level - 1``: leaves are the even numbers, and a node's level is the number of
    trailing one bits. One integer key lets a store fetch any set of nodes with a single ``IN`` lookup.
    """
    level, index = node
    return (index << (level + 1)) + (1 << level) - 1


def node_at_flat_index(flat: int) -> Node:
    """Inverse of :func:`flat_index`."""
    level = (~flat & (flat + 1)).bit_length() - 1  # the lowest zero bit marks the level
    return level, flat >> (level + 1)


def subtree_nodes(start: int, end: int) -> list[Node]:
    """Split ``[start, end)`` into complete subtrees, largest first.

    Only defined for ranges that are nodes of some RFC 9162 tree (all ranges that proofs use are): their
    start is aligned to a power of two at least as large as the range, so the pieces shrink strictly
    and :func:`fold_range` can rebuild the range's MTH from them.
    """
    if not 0 <= start < end:
        raise ValueError(f"empty or negative range [{start}, {end})")
    nodes: list[Node] = []
    position = start
    for level in reversed(range((end - start).bit_length())):
        if ((end - start) >> level) & 1:
            if position % (1 << level):
                raise ValueError(f"[{start}, {end}) is not a node of an RFC 9162 tree")
            nodes.append((level, position >> level))
            position += 1 << level
    return nodes


def fold_range(start: int, end: int, lookup: Callable[[Node], bytes] | Mapping[Node, bytes]) -> bytes:
    """MTH of the range ``[start, end)`` from the hashes of its :func:`subtree_nodes`."""
    get = lookup.__getitem__ if isinstance(lookup, Mapping) else lookup
    pieces = [get(node) for node in subtree_nodes(start, end)]
    result = pieces[-1]
    for left in reversed(pieces[:-1]):
        result = node_hash(left, result)
    return result


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose MTHs form the inclusion proof of leaf ``index`` in a tree of ``size`` (§2.1.3.1).

    PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])   if m < k
                  = PATH(m-k, D[k:n]) : MTH(D[0:k]) otherwise
    The first range is the leaf's sibling, the last the root's other child.
    """
    if not 0 <= index < size:
        raise ValueError(f"index {index} is not in a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    low, high = 0, size
    while high - low > 1:
        k = _largest_power_of_two_below(high - low)
        if index < low + k:
            ranges.append((low + k, high))
            high = low + k
        else:
            ranges.append((low, low + k))
            low = low + k
    ranges.reverse()  # collected root-down; the proof lists them leaf-up
    return ranges


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The ranges whose MTHs form the consistency proof from size ``first`` to ``second`` (§2.1.4.1).

    SUBPROOF(m, D[n], b) = {} if m = n and b; {MTH(D[n])} if m = n and not b;
                         = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])      if m ≤ k
                         = SUBPROOF(m-k, D[k:n], false) : MTH(D[0:k]) otherwise
    The proof between equal sizes, or from the empty tree, is empty.
    """
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to {second}")
    if first in (0, second):
        return []
    ranges: list[tuple[int, int]] = []
    low, high, m, complete = 0, second, first, True
    while m != high - low:
        k = _largest_power_of_two_below(high - low)
        if m <= k:
            ranges.append((low + k, high))
            high = low + k
        else:
            ranges.append((low, low + k))
            low, m, complete = low + k, m - k, False
    if not complete:
        ranges.append((low, high))
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Inclusion proof for ``index`` in the tree over a complete list of leaf hashes (tests, export tools)."""
    return [root_of(leaf_hashes[start:end]) for start, end in inclusion_ranges(index, len(leaf_hashes))]


def consistency_proof(first: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Consistency proof from the first ``first`` leaves to all of ``leaf_hashes``."""
    return [root_of(leaf_hashes[start:end]) for start, end in consistency_ranges(first, len(leaf_hashes))]


def _check_hashes(name: str, hashes: Sequence[bytes]) -> None:
    if len(hashes) > _MAX_PROOF_LENGTH:
        raise VerificationError(f"{name} has {len(hashes)} hashes; no valid proof is that long")
    if any(len(h) != HASH_SIZE for h in hashes):
        raise VerificationError(f"{name} contains a value that is not a {HASH_SIZE}-byte hash")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for ``leaf`` at ``index`` in a tree of ``size`` (§2.1.3.2, steps 1 to 5).

    Raises :class:`VerificationError` if the proof cannot belong to that index and size at all.
    """
    # 1. The index must lie inside the tree, and everything must be hash-sized.
    if not 0 <= index < size:
        raise VerificationError(f"leaf index {index} is outside a tree of size {size}")
    _check_hashes("inclusion proof", [leaf, *proof])
    # 2. fn walks the leaf's path upwards, sn the path of the last leaf; r accumulates the root.
    fn, sn, result = index, size - 1, leaf
    for sibling in proof:
        # 3a. A proof longer than the path is invalid.
        if sn == 0:
            raise VerificationError("inclusion proof is longer than the path to the root")
        # 3b. A right child (or the last node of its level) takes the sibling on its left ...
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            # ... and on the right edge it skips the levels where it had no sibling.
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    # 4. The proof must reach the root exactly.
    if sn != 0:
        raise VerificationError("inclusion proof is shorter than the path to the root")
    return result


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf`` is at ``index`` in the tree of ``size`` leaves whose MTH is ``root``."""
    # 5. The recomputed root must equal the trusted one.
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise VerificationError(f"inclusion proof for index {index} does not lead to the root of size {size}")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """Check that the tree of ``second`` leaves (``second_root``) extends the tree of ``first`` leaves.

    RFC 9162 §2.1.4.2, plus the trivial cases it leaves out: equal sizes need equal roots and an empty
    proof; the empty tree is a prefix of every tree.
    """
    # 1. Sizes must be ordered and everything hash-sized.
    if not 0 <= first <= second:
        raise VerificationError(f"no consistency between size {first} and smaller size {second}")
    _check_hashes("consistency proof", [first_root, second_root, *proof])
    # 2. Trivial cases: nothing to prove, so the proof must be empty.
    if first == 0 or first == second:
        if proof:
            raise VerificationError("consistency proof must be empty between equal sizes or from size 0")
        if first == 0 and first_root != EMPTY_ROOT:
            raise VerificationError("the root of the empty tree is not SHA-256 of the empty string")
        if first == second and first_root != second_root:
            raise VerificationError(f"two different roots for tree size {first}")
        return
    # 3. Otherwise a proof is needed; if the old tree is complete its root is the implicit first node.
    if not proof:
        raise VerificationError("consistency proof is empty")
    path = [first_root, *proof] if first & (first - 1) == 0 else list(proof)
    # 4. fn walks the old tree's last leaf upwards, sn the new tree's; skip levels where fn is a right child.
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr rebuilds the old root, sr the new root, from the same starting node.
    old_root = new_root = path[0]
    for node in path[1:]:
        # 6a. A proof longer than the path is invalid.
        if sn == 0:
            raise VerificationError("consistency proof is longer than the path to the root")
        # 6b. Left siblings go into both roots; right siblings only into the new one.
        if fn & 1 or fn == sn:
            old_root = node_hash(node, old_root)
            new_root = node_hash(node, new_root)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            new_root = node_hash(new_root, node)
        fn >>= 1
        sn >>= 1
    # 7. Both roots must match and the path must end exactly at the root.
    if sn != 0:
        raise VerificationError("consistency proof is shorter than the path to the root")
    if old_root != first_root:
        raise VerificationError(f"consistency proof does not reproduce the root of size {first}")
    if new_root != second_root:
        raise VerificationError(f"consistency proof does not reproduce the root of size {second}")
