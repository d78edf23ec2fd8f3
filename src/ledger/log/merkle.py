"""RFC 9162 section 2.1 Merkle trees: hashing, stored nodes, proofs and their verification.

Pure computation, no I/O. A log stores only the hashes of complete (perfect) subtrees, keyed
`(level, index)`: node (level, index) is the root of leaves [index * 2**level,
(index + 1) * 2**level). A tree whose size is not a power of two has an incomplete right edge
that is never stored; roots and proofs rebuild it from the complete subtrees covering it.

Verification follows transparency-dev/merkle: compute the root a proof implies, then compare
it with the expected one, raising a typed `MerkleError` on any failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeKey = tuple[int, int]  # (level, index)
Range = tuple[int, int]  # leaves [begin, end)


class MerkleError(Exception):
    """Base for every Merkle tree failure."""


class ProofShapeError(MerkleError):
    """A proof or its parameters have the wrong shape: sizes, proof length or hash length."""


class RootMismatchError(MerkleError):
    """The root a proof implies is not the expected root."""

    def __init__(self, expected: bytes, calculated: bytes) -> None:
        super().__init__(f"root mismatch: expected {expected.hex()}, calculated {calculated.hex()}")
        self.expected = expected
        self.calculated = calculated


class ProofRangeError(MerkleError, ValueError):
    """A root or proof was requested for an index or sizes the tree does not have."""


class MissingNodeError(MerkleError, LookupError):
    """A node store does not hold a node that the computation needs."""


class NodeReader(Protocol):
    """Read access to stored complete-subtree hashes."""

    def nodes(self, keys: Sequence[NodeKey]) -> Sequence[bytes]:
        """Return the hashes of `keys` in order; raise MissingNodeError if one is absent."""
        ...


# --- hashing ----------------------------------------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """RFC 9162's k: the largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# --- stored nodes -----------------------------------------------------------------------------


def nodes_to_store(
    size_before: int, new_leaf_hashes: Sequence[bytes], reader: NodeReader
) -> list[tuple[int, int, bytes]]:
    """Every `(level, index, hash)` that appending `new_leaf_hashes` completes, leaves included.

    Parents are computed level by level in memory; the only stored nodes read (in one batch)
    are the old tree's lone right-edge nodes that the new leaves give a right sibling.
    """
    if size_before < 0:
        raise ProofRangeError(f"tree size {size_before} is negative")
    size_after = size_before + len(new_leaf_hashes)
    lone_levels = [
        level
        for level in range(size_after.bit_length())
        if (size_before >> level) & 1 and (size_before >> (level + 1)) < (size_after >> (level + 1))
    ]
    lone_keys = [(level, (size_before >> level) - 1) for level in lone_levels]
    lone = dict(zip(lone_levels, _read(reader, lone_keys), strict=True))

    stored = [(0, size_before + i, h) for i, h in enumerate(new_leaf_hashes)]
    level, first, row = 0, size_before, list(new_leaf_hashes)  # row: level's new nodes from first
    while (size_before >> (level + 1)) < (size_after >> (level + 1)):
        if first & 1:  # the old lone node is the left child of this level's first new parent
            row.insert(0, lone[level])
            first -= 1
        level, first = level + 1, first >> 1
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        stored.extend((level, first + i, h) for i, h in enumerate(row))
    return stored


def _read(reader: NodeReader, keys: Sequence[NodeKey]) -> Sequence[bytes]:
    """One batched read (none for no keys); a short answer means a node is missing."""
    if not keys:
        return []
    hashes = reader.nodes(keys)
    if len(hashes) != len(keys):
        raise MissingNodeError(f"asked for {len(keys)} nodes, got {len(hashes)}")
    return hashes


def _range_keys(begin: int, end: int) -> list[NodeKey]:
    """The complete subtrees covering leaves [begin, end), largest (leftmost) first.

    `begin` must be a multiple of the largest one, as in every range RFC 9162's recursion visits.
    """
    keys = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        keys.append((level, begin >> level))
        begin += 1 << level
    return keys


def _range_hashes(ranges: Sequence[Range], reader: NodeReader) -> list[bytes]:
    """MTH of each range, reading all the complete subtrees they need in one batch."""
    keyed = [_range_keys(begin, end) for begin, end in ranges]
    hashes = iter(_read(reader, [key for keys in keyed for key in keys]))
    out = []
    for keys in keyed:
        subtrees = [next(hashes) for _ in keys]
        mth = subtrees.pop()
        for left in reversed(subtrees):  # MTH nests right: H(s0, H(s1, ... H(sk-1, sk)))
            mth = node_hash(left, mth)
        out.append(mth)
    return out


# --- roots and proofs from stored nodes -------------------------------------------------------


def root(size: int, reader: NodeReader) -> bytes:
    """MTH of the first `size` leaves (RFC 9162 section 2.1.1)."""
    if size < 0:
        raise ProofRangeError(f"tree size {size} is negative")
    if size == 0:
        return EMPTY_ROOT
    return _range_hashes([(0, size)], reader)[0]


def inclusion_proof(index: int, size: int, reader: NodeReader) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 section 2.1.3.1), sibling of the leaf first."""
    if not 0 <= index < size:
        raise ProofRangeError(f"inclusion needs 0 <= index < size, got index={index} size={size}")
    siblings: list[Range] = []
    begin, end = 0, size
    while end - begin > 1:
        mid = begin + _split(end - begin)
        if index < mid:
            siblings.append((mid, end))
            end = mid
        else:
            siblings.append((begin, mid))
            begin = mid
    siblings.reverse()  # found from the root down; PATH lists them from the leaf up
    return _range_hashes(siblings, reader)


def consistency_proof(m: int, n: int, reader: NodeReader) -> list[bytes]:
    """PROOF(m, D[n]) (RFC 9162 section 2.1.4.1); empty when m == n."""
    if not 1 <= m <= n:
        raise ProofRangeError(f"consistency needs 1 <= m <= n, got m={m} n={n}")
    ranges: list[Range] = []
    begin, end, whole = 0, n, True  # whole: SUBPROOF's b, [begin, end) is a subtree of D[m]
    while m != end:
        mid = begin + _split(end - begin)
        if m <= mid:
            ranges.append((mid, end))
            end = mid
        else:
            ranges.append((begin, mid))
            begin, whole = mid, False
    if not whole:
        ranges.append((begin, end))
    ranges.reverse()  # SUBPROOF appends on the way back up
    return _range_hashes(ranges, reader)


# --- verification -----------------------------------------------------------------------------


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root that `proof` implies for `leaf_hash` at `index` in a tree of `size` leaves."""
    # 1. Preconditions: the leaf exists and every hash is a SHA-256 digest.
    if not 0 <= index < size:
        raise ProofShapeError(f"inclusion needs 0 <= index < size, got index={index} size={size}")
    _check_hashes([leaf_hash, *proof])
    # 2. The path splits into `inner` siblings below the node where the leaf's path leaves the
    #    right edge, and `border` left siblings along the right edge above it.
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofShapeError(f"inclusion proof has {len(proof)} hashes, want {inner + border}")
    # 3. Chain the leaf hash up to the root.
    return _chain_border(_chain_inner(leaf_hash, proof[:inner], index), proof[inner:])


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an inclusion proof (RFC 9162 section 2.1.3.2); raise a MerkleError if it fails."""
    calculated = root_from_inclusion_proof(index, size, leaf_hash, proof)
    if calculated != root:
        raise RootMismatchError(root, calculated)


def verify_consistency(m: int, n: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Check a consistency proof (RFC 9162 section 2.1.4.2); raise a MerkleError if it fails."""
    # 1. Preconditions: an empty tree has nothing to prove, and trees only grow.
    if not 1 <= m <= n:
        raise ProofShapeError(f"consistency needs 1 <= m <= n, got m={m} n={n}")
    # 2. Equal sizes: the proof is empty and the roots are the same.
    if m == n:
        if proof:
            raise ProofShapeError("consistency proof between equal sizes must be empty")
        if root1 != root2:
            raise RootMismatchError(root2, root1)
        return
    # 3. The proof is the inclusion proof of leaf m - 1 in D[n] from level `shift` up, where
    #    2**shift is the largest complete subtree ending at m. Its hash (the seed) leads the
    #    proof, unless that subtree is D[m] itself, whose hash is root1.
    _check_hashes(proof)
    inner, border = _decompose(m - 1, n)
    shift = (m & -m).bit_length() - 1
    inner -= shift
    start = 0 if m == 1 << shift else 1
    if len(proof) != start + inner + border:
        raise ProofShapeError(
            f"consistency proof has {len(proof)} hashes, want {start + inner + border}"
        )
    seed, path = (root1 if start == 0 else proof[0]), proof[start:]
    mask = (m - 1) >> shift
    # 4. The old root uses only the left siblings: the right ones were not yet in D[m].
    calculated1 = _chain_border(_chain_inner_left(seed, path[:inner], mask), path[inner:])
    if calculated1 != root1:
        raise RootMismatchError(root1, calculated1)
    # 5. The new root uses every sibling.
    calculated2 = _chain_border(_chain_inner(seed, path[:inner], mask), path[inner:])
    if calculated2 != root2:
        raise RootMismatchError(root2, calculated2)


def _check_hashes(hashes: Sequence[bytes]) -> None:
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise ProofShapeError(f"hash has {len(h)} bytes, want {HASH_SIZE}")


def _decompose(index: int, size: int) -> tuple[int, int]:
    """(inner, border) sizes of the inclusion proof of `index` in a tree of `size` leaves."""
    inner = (index ^ (size - 1)).bit_length()
    return inner, (index >> inner).bit_count()


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """Hash up through siblings on either side, as the bits of `index` say."""
    for level, sibling in enumerate(proof):
        seed = node_hash(sibling, seed) if (index >> level) & 1 else node_hash(seed, sibling)
    return seed


def _chain_inner_left(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """Hash up through the left siblings only, skipping the right ones."""
    for level, sibling in enumerate(proof):
        if (index >> level) & 1:
            seed = node_hash(sibling, seed)
    return seed


def _chain_border(seed: bytes, proof: Sequence[bytes]) -> bytes:
    """Hash up the right edge, where every sibling is on the left."""
    for sibling in proof:
        seed = node_hash(sibling, seed)
    return seed


# --- in-memory store --------------------------------------------------------------------------


class MemoryTree:
    """A NodeReader held in memory, for tests and for auditors recomputing a log's roots."""

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self._nodes: dict[NodeKey, bytes] = {}
        self.size = 0
        self.append(leaf_hashes)

    def append(self, leaf_hashes: Sequence[bytes]) -> list[tuple[int, int, bytes]]:
        """Append leaves; return the nodes this stored."""
        new = nodes_to_store(self.size, leaf_hashes, self)
        self._nodes.update(((level, index), h) for level, index, h in new)
        self.size += len(leaf_hashes)
        return new

    def nodes(self, keys: Sequence[NodeKey]) -> list[bytes]:
        """Return the stored hashes of `keys` in order."""
        try:
            return [self._nodes[key] for key in keys]
        except KeyError as exc:
            raise MissingNodeError(f"no stored node {exc.args[0]}") from None

    def root(self) -> bytes:
        """The root of the whole tree."""
        return root(self.size, self)


# --- reference implementation (for tests) -----------------------------------------------------
# Naive recursions straight from RFC 9162 over the full list of leaf hashes.


def reference_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) (RFC 9162 section 2.1.1)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(reference_root(leaf_hashes[:k]), reference_root(leaf_hashes[k:]))


def reference_inclusion(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) (RFC 9162 section 2.1.3.1)."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ProofRangeError(f"inclusion needs 0 <= index < size, got index={index} size={n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*reference_inclusion(index, leaf_hashes[:k]), reference_root(leaf_hashes[k:])]
    return [*reference_inclusion(index - k, leaf_hashes[k:]), reference_root(leaf_hashes[:k])]


def reference_consistency(m: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) (RFC 9162 section 2.1.4.1)."""
    if not 1 <= m <= len(leaf_hashes):
        raise ProofRangeError(f"consistency needs 1 <= m <= n, got m={m} n={len(leaf_hashes)}")
    return _reference_subproof(m, leaf_hashes, True)


def _reference_subproof(m: int, leaf_hashes: Sequence[bytes], whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) (RFC 9162 section 2.1.4.1)."""
    n = len(leaf_hashes)
    if m == n:
        return [] if whole else [reference_root(leaf_hashes)]
    k = _split(n)
    if m <= k:
        return [*_reference_subproof(m, leaf_hashes[:k], whole), reference_root(leaf_hashes[k:])]
    return [*_reference_subproof(m - k, leaf_hashes[k:], False), reference_root(leaf_hashes[:k])]
