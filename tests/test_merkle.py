"""RFC 9162 Merkle tree: transparency-dev/merkle vectors and exhaustive checks against the RFC."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ledger.log.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    MerkleError,
    MissingNodeError,
    ProofRangeError,
    ProofShapeError,
    RootMismatchError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    nodes_to_store,
    reference_consistency,
    reference_inclusion,
    reference_root,
    root,
    verify_consistency,
    verify_inclusion,
)
from tests.conftest import VECTORS as SHARED_VECTORS

VECTORS = SHARED_VECTORS / "merkle"
MAX_SIZE = 128
# The leaves of the RFC 6962 test tree that transparency-dev/merkle's vectors are built from.
RFC6962_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]


def _vector_files(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(path, id=str(path.relative_to(VECTORS))) for path in files]


def _load(path: Path) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(path.read_text())
    return vector


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _proof(vector: dict[str, Any]) -> list[bytes]:
    return [_b64(h) for h in vector["proof"] or []]


class CountingReader:
    """Wraps a NodeReader and records every batch it is asked for."""

    def __init__(self, inner: MemoryTree) -> None:
        self.inner = inner
        self.batches: list[list[tuple[int, int]]] = []

    def nodes(self, keys: Sequence[tuple[int, int]]) -> Sequence[bytes]:
        self.batches.append(list(keys))
        return self.inner.nodes(keys)


@pytest.fixture(scope="module")
def leaves() -> list[bytes]:
    return [leaf_hash(i.to_bytes(2, "big")) for i in range(MAX_SIZE)]


@pytest.fixture(scope="module")
def tree(leaves: list[bytes]) -> MemoryTree:
    return MemoryTree(leaves)


# --- vectors ----------------------------------------------------------------------------------


def test_vectors_are_present() -> None:
    assert len(_vector_files("inclusion")) > 50
    assert len(_vector_files("consistency")) > 50


@pytest.mark.parametrize("path", _vector_files("inclusion"))
def test_inclusion_vector(path: Path) -> None:
    v = _load(path)
    args = (v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), _proof(v), _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(MerkleError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _vector_files("consistency"))
def test_consistency_vector(path: Path) -> None:
    v = _load(path)
    args = (v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), _proof(v))
    if v["wantErr"]:
        with pytest.raises(MerkleError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


@pytest.mark.parametrize(
    "path",
    [p for p in _vector_files("inclusion") + _vector_files("consistency") if "happy-path" in p.id],
)
def test_happy_path_vectors_are_generated_from_stored_nodes(path: Path) -> None:
    rfc_tree = MemoryTree([leaf_hash(entry) for entry in RFC6962_LEAVES])
    v = _load(path)
    if "leafIdx" in v:
        assert root(v["treeSize"], rfc_tree) == _b64(v["root"])
        assert inclusion_proof(v["leafIdx"], v["treeSize"], rfc_tree) == _proof(v)
    else:
        assert root(v["size2"], rfc_tree) == _b64(v["root2"])
        assert consistency_proof(v["size1"], v["size2"], rfc_tree) == _proof(v)


# --- hashing and roots ------------------------------------------------------------------------


def test_hashes_are_domain_separated() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


def test_roots_agree_with_reference(leaves: list[bytes], tree: MemoryTree) -> None:
    assert root(0, tree) == EMPTY_ROOT == reference_root([])
    for n in range(1, MAX_SIZE + 1):
        assert root(n, tree) == reference_root(leaves[:n]), n
    assert tree.root() == reference_root(leaves)


# --- proofs from stored nodes -----------------------------------------------------------------


def test_inclusion_proofs_match_reference_and_verify(leaves: list[bytes], tree: MemoryTree) -> None:
    for n in range(1, MAX_SIZE + 1):
        head = reference_root(leaves[:n])
        for i in range(n):
            proof = inclusion_proof(i, n, tree)
            assert proof == reference_inclusion(i, leaves[:n]), (i, n)
            verify_inclusion(i, n, leaves[i], proof, head)


def test_consistency_proofs_match_reference_and_verify(
    leaves: list[bytes], tree: MemoryTree
) -> None:
    roots = [root(n, tree) for n in range(MAX_SIZE + 1)]
    for n in range(1, MAX_SIZE + 1):
        for m in range(1, n + 1):
            proof = consistency_proof(m, n, tree)
            assert proof == reference_consistency(m, leaves[:n]), (m, n)
            verify_consistency(m, n, roots[m], roots[n], proof)


def test_proofs_read_nodes_in_one_small_batch(tree: MemoryTree) -> None:
    reader = CountingReader(tree)
    for n in range(1, MAX_SIZE + 1):
        bound = 2 * n.bit_length()
        for i in range(n):
            reader.batches.clear()
            inclusion_proof(i, n, reader)
            assert len(reader.batches) <= 1 and sum(map(len, reader.batches)) <= bound, (i, n)
        for m in range(1, n + 1):
            reader.batches.clear()
            consistency_proof(m, n, reader)
            assert len(reader.batches) <= 1 and sum(map(len, reader.batches)) <= bound, (m, n)
        reader.batches.clear()
        root(n, reader)
        assert len(reader.batches) == 1 and len(reader.batches[0]) == n.bit_count()


def test_proof_preconditions(tree: MemoryTree) -> None:
    for index, size in [(0, 0), (5, 5), (-1, 5)]:
        with pytest.raises(ProofRangeError):
            inclusion_proof(index, size, tree)
    for m, n in [(0, 0), (0, 5), (6, 5), (-1, 5)]:
        with pytest.raises(ProofRangeError):
            consistency_proof(m, n, tree)
    with pytest.raises(ValueError):
        root(-1, tree)
    assert consistency_proof(5, 5, tree) == []


def test_missing_nodes_are_reported(tree: MemoryTree) -> None:
    with pytest.raises(MissingNodeError):
        root(MAX_SIZE + 1, tree)
    with pytest.raises(MissingNodeError):
        inclusion_proof(0, MAX_SIZE + 3, tree)


# --- verification errors ----------------------------------------------------------------------


def test_verification_errors_are_typed(leaves: list[bytes], tree: MemoryTree) -> None:
    proof = inclusion_proof(3, 10, tree)
    good_root = root(10, tree)
    with pytest.raises(RootMismatchError) as caught:
        verify_inclusion(3, 10, leaves[4], proof, good_root)
    assert caught.value.expected == good_root
    assert caught.value.calculated != good_root
    with pytest.raises(ProofShapeError):
        verify_inclusion(3, 10, leaves[3], proof[:-1], good_root)
    with pytest.raises(ProofShapeError):
        verify_inclusion(3, 10, leaves[3], [*proof[:-1], proof[-1][:31]], good_root)
    with pytest.raises(ProofShapeError):
        verify_inclusion(10, 10, leaves[3], proof, good_root)

    proof = consistency_proof(3, 10, tree)
    with pytest.raises(RootMismatchError):
        verify_consistency(3, 10, root(4, tree), good_root, proof)
    with pytest.raises(RootMismatchError):
        verify_consistency(3, 10, root(3, tree), root(9, tree), proof)
    with pytest.raises(ProofShapeError):
        verify_consistency(3, 10, root(3, tree), good_root, [*proof, proof[0]])
    with pytest.raises(ProofShapeError):
        verify_consistency(0, 10, EMPTY_ROOT, good_root, [])


# --- appending --------------------------------------------------------------------------------


def test_stored_nodes_are_exactly_the_complete_subtrees(leaves: list[bytes]) -> None:
    size = 100
    stored = MemoryTree().append(leaves[:size])
    expected = {
        (level, index): reference_root(leaves[index << level : (index + 1) << level])
        for level in range(size.bit_length())
        for index in range(size >> level)
    }
    assert {(level, index): h for level, index, h in stored} == expected


def test_batched_appends_store_the_same_nodes(leaves: list[bytes]) -> None:
    one_by_one = MemoryTree()
    single = [node for h in leaves for node in one_by_one.append([h])]
    rng = random.Random(9162)
    for _ in range(20):
        batched, appended, size = MemoryTree(), [], 0
        while size < MAX_SIZE:
            step = min(rng.randint(0, 17), MAX_SIZE - size)
            appended += batched.append(leaves[size : size + step])
            size += step
        assert sorted(appended) == sorted(single)
        assert batched.root() == one_by_one.root()


def test_append_reads_only_old_nodes_in_one_batch(leaves: list[bytes]) -> None:
    for size_before in range(MAX_SIZE):
        for count in (0, 1, 2, 5, MAX_SIZE - size_before):
            reader = CountingReader(MemoryTree(leaves[:size_before]))
            nodes_to_store(size_before, leaves[size_before : size_before + count], reader)
            assert len(reader.batches) <= 1
            for level, index in (key for batch in reader.batches for key in batch):
                assert (index + 1) << level <= size_before
