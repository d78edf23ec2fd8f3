"""Fork evidence: two checkpoints signed by one log key that cannot both be true.

A witness that refuses a checkpoint as inconsistent with the one it cosigned keeps both
signed notes (`ledger witness serve` writes them to its `evidence/` folder), so that anyone
holding the log's verifier key can check the misbehaviour without trusting the witness:

- the same size with two roots is proof on its face;
- two sizes are inconsistent when no RFC 9162 consistency proof joins them. The proof the
  log sent the witness is in the file; if it verifies, there was no fork. Otherwise only the
  log can clear itself, by producing a proof that does verify (an honest log always can):
  `verify_fork` asks it through `consistency`, when given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.contract import crypto
from ledger.contract.notes import NoteError
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, verify_checkpoint

FORMAT = "ledger-fork-evidence-v1"


class NotProven(Exception):
    """The evidence does not prove that the log misbehaved; says why."""


@dataclass(frozen=True)
class ForkEvidence:
    """What a witness saw: the checkpoint it had cosigned, the one it refused, the old size
    and consistency proof the refused one came with, when (POSIX seconds) and why."""

    origin: str
    witness: str  # the name of the witness key that kept it
    seen_at: int
    cosigned: str
    refused: str
    old_size: int
    proof: tuple[bytes, ...]
    reason: str

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "origin": self.origin,
            "witness": self.witness,
            "seen_at": self.seen_at,
            "cosigned": self.cosigned,
            "refused": self.refused,
            "old_size": self.old_size,
            "proof": [crypto.b64(p) for p in self.proof],
            "reason": self.reason,
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ForkEvidence:
        try:
            data: dict[str, Any] = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            return cls(
                str(data["origin"]),
                str(data["witness"]),
                int(data["seen_at"]),
                str(data["cosigned"]),
                str(data["refused"]),
                int(data["old_size"]),
                tuple(crypto.b64decode_strict(p) for p in data["proof"]),
                str(data["reason"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NotProven(f"the evidence file is malformed: {exc}") from exc


def verify_fork(
    evidence: ForkEvidence,
    log_key: crypto.VerifyKey,
    consistency: Callable[[int, int], Sequence[bytes]] | None = None,
) -> str:
    """Check that `log_key` signed two inconsistent checkpoints; say what they prove, or
    raise NotProven. `consistency(m, n)` asks the log itself for a proof from m to n."""
    # 1. Both checkpoints are signed by the log key, for the log it names.
    try:
        first = verify_checkpoint(evidence.cosigned, log_key, log_key.name)
        second = verify_checkpoint(evidence.refused, log_key, log_key.name)
    except NoteError as exc:
        raise NotProven(
            f"a checkpoint in the evidence is not signed by the log key: {exc}"
        ) from exc
    if first.size > second.size:
        first, second = second, first
    # 2. One size, two roots: the log signed two trees of the same entries count.
    if first.size == second.size:
        if first.root == second.root:
            raise NotProven("both checkpoints are of the same tree")
        return (
            f"the log key signed two checkpoints of size {first.size} with different roots"
            f" ({crypto.b64(first.root)} and {crypto.b64(second.root)}): a fork"
        )
    # 3. Two sizes: consistent if the proof sent, or one the log produces now, verifies.
    if first.size == 0:
        if first.root != merkle.EMPTY_ROOT:
            return "the log key signed an empty tree whose root is not the empty root"
        raise NotProven("the empty tree is consistent with every tree")
    if evidence.old_size == first.size and _joins(first, second, evidence.proof):
        raise NotProven("the consistency proof the log sent verifies: there was no fork")
    if consistency is None:
        raise NotProven(
            f"sizes {first.size} and {second.size}: the proof sent does not join them, but only"
            " the log's failure to produce one proves a fork (verify online, with --url)"
        )
    try:
        proof = consistency(first.size, second.size)
    except Exception as exc:  # the log refused or failed: it has no proof to show
        return _forked(first, second, f"the log answered no proof ({type(exc).__name__})")
    if _joins(first, second, proof):
        raise NotProven("the log produced a consistency proof that verifies: there was no fork")
    return _forked(first, second, "the proof the log produced does not verify")


def _joins(first: Checkpoint, second: Checkpoint, proof: Sequence[bytes]) -> bool:
    try:
        merkle.verify_consistency(first.size, second.size, first.root, second.root, proof)
    except merkle.MerkleError:
        return False
    return True


def _forked(first: Checkpoint, second: Checkpoint, why: str) -> str:
    return (
        f"the log key signed checkpoints of sizes {first.size} and {second.size} that no"
        f" consistency proof joins ({why}): a fork"
    )
