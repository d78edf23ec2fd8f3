"""Fork evidence is checked with the log's key alone: one size with two roots proves a fork;
two sizes prove one only when no consistency proof joins them (the one sent, or one the log
is asked for); anything not signed by the log key, or consistent, proves nothing."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ledger.contract import crypto
from ledger.contract.notes import sign_note
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint
from ledger.log.evidence import ForkEvidence, NotProven, verify_fork

ORIGIN = "ledger.example/log"
LOG = crypto.generate_signing_key(ORIGIN)
HONEST = [crypto.sha256(b"entry %d" % i) for i in range(10)]
FORKED = HONEST[:4] + [crypto.sha256(b"forged %d" % i) for i in range(6)]


def note(leaves: Sequence[bytes], key: crypto.SigningKey = LOG) -> str:
    return sign_note(Checkpoint(ORIGIN, len(leaves), merkle.reference_root(leaves)).body(), key)


def evidence(
    cosigned: str, refused: str, old_size: int, proof: Sequence[bytes] = ()
) -> ForkEvidence:
    return ForkEvidence(ORIGIN, "witness.example/w1", 1_790_000_000, cosigned, refused,
                        old_size, tuple(proof), "inconsistent")  # fmt: skip


def test_one_size_two_roots_is_a_fork_on_its_face() -> None:
    found = evidence(note(HONEST[:6]), note(FORKED[:6]), 6)
    assert "two checkpoints of size 6 with different roots" in verify_fork(found, LOG.verify_key)


def test_the_evidence_survives_its_file_format() -> None:
    found = evidence(
        note(HONEST[:6]), note(FORKED[:8]), 6, merkle.reference_consistency(6, FORKED[:8])
    )
    assert ForkEvidence.from_json(found.to_json()) == found


def test_the_same_checkpoint_twice_proves_nothing() -> None:
    with pytest.raises(NotProven, match="same tree"):
        verify_fork(evidence(note(HONEST[:6]), note(HONEST[:6]), 6), LOG.verify_key)


def test_checkpoints_not_signed_by_the_log_key_prove_nothing() -> None:
    other = crypto.generate_signing_key(ORIGIN)
    found = evidence(note(HONEST[:6]), note(FORKED[:6], other), 6)
    with pytest.raises(NotProven, match="not signed by the log key"):
        verify_fork(found, LOG.verify_key)


def test_two_sizes_joined_by_the_proof_sent_prove_nothing() -> None:
    proof = merkle.reference_consistency(6, HONEST)
    with pytest.raises(NotProven, match="verifies: there was no fork"):
        verify_fork(evidence(note(HONEST[:6]), note(HONEST), 6, proof), LOG.verify_key)


def test_two_sizes_with_a_bad_proof_are_inconclusive_alone() -> None:
    bogus = merkle.reference_consistency(6, HONEST)  # a proof of the honest tree, not this
    found = evidence(note(HONEST[:6]), note(FORKED), 6, bogus)
    with pytest.raises(NotProven, match="only the log's failure"):
        verify_fork(found, LOG.verify_key)


def test_two_sizes_no_proof_joins_are_a_fork_once_the_log_cannot_show_one() -> None:
    found = evidence(note(HONEST[:6]), note(FORKED), 6)

    def the_log_refuses(m: int, n: int) -> list[bytes]:
        raise RuntimeError("400")

    def the_log_lies(m: int, n: int) -> list[bytes]:
        return merkle.reference_consistency(m, FORKED[:n])  # of its forked view only

    assert "no consistency proof joins" in verify_fork(found, LOG.verify_key, the_log_refuses)
    assert "does not verify" in verify_fork(found, LOG.verify_key, the_log_lies)


def test_two_sizes_the_log_can_join_prove_nothing() -> None:
    found = evidence(note(HONEST[:6]), note(HONEST), 6)  # no proof was kept

    def the_log(m: int, n: int) -> list[bytes]:
        return merkle.reference_consistency(m, HONEST[:n])

    with pytest.raises(NotProven, match="produced a consistency proof"):
        verify_fork(found, LOG.verify_key, the_log)


@pytest.mark.parametrize(
    "text", ["", "{}", '{"format": "ledger-fork-evidence-v1"}', "[1]", '{"format": "x"}']
)
def test_a_malformed_evidence_file_proves_nothing(text: str) -> None:
    with pytest.raises(NotProven, match="malformed"):
        ForkEvidence.from_json(text)
