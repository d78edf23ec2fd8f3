"""add-checkpoint (c2sp.org/tlog-witness): a checkpoint cosigned only if it is consistent with
the latest one this witness cosigned of that log, recorded durably before it is answered.

The request body is an old size line (`old <size>`), up to 63 consistency proof lines (one
base64 hash each), an empty line, then the signed checkpoint. The checks, in the spec's
order; refusals are typed errors (`ledger.errors`) that `server` answers with their status:

1. the body is well formed, and so is the checkpoint (400);
2. its origin is a log this witness knows (404);
3. a signature by one of that log's keys verifies, and none by them fails (403);
4. the old size is at most the checkpoint's size (400);
5. the old size is the size of the latest checkpoint cosigned of that log, 0 if none (409,
   answering that size);
6. a checkpoint of size 0 has the empty tree's root (422);
7. the proof proves the checkpoint consistent with the latest one cosigned: none from size
   0, none and the same root at the same size, else RFC 9162 consistency (422; when the
   checkpoint's signature is valid but it is inconsistent, it is kept as fork evidence);
8. the new checkpoint replaces the latest one, committed and fsynced, only if that is still
   the latest (409 otherwise); then, and only then, its cosignature is answered.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ledger.contract import crypto
from ledger.contract.notes import NoteError, split_note
from ledger.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint
from ledger.log.cosignature import cosign
from ledger.log.evidence import ForkEvidence
from ledger.witness.state import Cosigned, State

log = logging.getLogger("ledger.witness")

MAX_PROOF_LINES = 63
MAX_BODY_BYTES = 65_536  # 63 proof lines and a checkpoint with many signatures fit easily
MAX_SIZE = 2**63 - 1  # the state's integers; no log comes near
_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: tuple[bytes, ...]
    note: str


def parse_request(body: bytes) -> AddCheckpoint:
    """Step 1: the body's old size line, proof lines, empty line and checkpoint note."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    head, blank, note = text.partition("\n\n")
    if not blank or not note:
        raise BadRequest("the body is an old size line, proof lines, an empty line, a checkpoint")
    lines = head.split("\n")
    match = _OLD.fullmatch(lines[0])
    if match is None:
        raise BadRequest("the first line is `old <size>`, in decimal without leading zeroes")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise BadRequest(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            node = crypto.b64decode_strict(line)
        except ValueError:
            raise BadRequest("a consistency proof line is not canonical base64") from None
        if len(node) != merkle.HASH_SIZE:
            raise BadRequest("a consistency proof line is not a SHA-256 hash")
        proof.append(node)
    return AddCheckpoint(int(match.group(1)), tuple(proof), note)


class Witness:
    """Cosigns, with `key` (a cosignature/v1 key), checkpoints of the `logs` it trusts."""

    def __init__(
        self,
        key: crypto.SigningKey,
        logs: Mapping[str, Sequence[crypto.VerifyKey]],
        state: State,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if key.signature_type != crypto.COSIGNATURE_TYPE:
            raise ValueError("a witness key is a cosignature/v1 key (ledger witness keygen)")
        self.key, self.logs, self.state, self.clock = key, dict(logs), state, clock

    def add_checkpoint(self, body: bytes) -> str:
        """The cosignature line of the checkpoint in `body`, once recorded; or a refusal."""
        # 1. Well formed.
        request = parse_request(body)
        try:
            text, lines = split_note(request.note)
            checkpoint = Checkpoint.parse(text)
        except NoteError as exc:
            raise BadRequest(f"the checkpoint is not a signed checkpoint note: {exc}") from None
        # 2. A log this witness knows.
        keys = self.logs.get(checkpoint.origin)
        if keys is None:
            raise NotFound("this witness does not witness that log")
        # 3. Signed by one of its keys; a line of theirs that fails makes the note malformed.
        signed = []
        for line in lines:
            for key in keys:
                if line.by(key):
                    try:
                        crypto.verify(key, text.encode(), line.signature)
                    except crypto.BadSignature:
                        raise Forbidden("a signature by the log's key does not verify") from None
                    signed.append(line.line)
        if not signed:
            raise Forbidden("the checkpoint carries no signature by a key of that log")
        # 4. Old size at most the new size.
        if request.old_size > checkpoint.size or checkpoint.size > MAX_SIZE:
            raise BadRequest("the old size is larger than the checkpoint's, or the size too large")
        # 5. The old size is the latest cosigned checkpoint's.
        held = self.state.latest(checkpoint.origin)
        held_size = 0 if held is None else held.size
        if request.old_size != held_size:
            raise Conflict("the old size is not this witness's", size=held_size)
        # 6-7. Consistent with it.
        self._check_consistency(request, checkpoint, held)
        # 8. Recorded, fsynced, then answered.
        now = int(self.clock())
        cosignature = cosign(text, self.key, now)
        note = text + "\n" + "".join(f"{line}\n" for line in signed) + cosignature
        new = Cosigned(checkpoint.origin, checkpoint.size, checkpoint.root, note, now)
        if not self.state.advance(held, new):
            latest = self.state.latest(checkpoint.origin)
            raise Conflict("another request moved this log on", size=latest.size if latest else 0)
        log.debug("cosigned origin=%s size=%d", checkpoint.origin, checkpoint.size)
        return cosignature

    def _check_consistency(
        self, request: AddCheckpoint, checkpoint: Checkpoint, held: Cosigned | None
    ) -> None:
        if checkpoint.size == 0 and checkpoint.root != merkle.EMPTY_ROOT:
            raise Invalid("a checkpoint of size 0 must have the empty tree's root")
        if held is None or request.old_size == 0:
            if request.proof:
                raise Invalid("no consistency proof is sent from size 0")
            return
        try:
            if checkpoint.size == held.size and checkpoint.root != held.root:
                raise merkle.RootMismatchError(held.root, checkpoint.root)
            merkle.verify_consistency(
                held.size, checkpoint.size, held.root, checkpoint.root, request.proof
            )
        except merkle.ProofShapeError as exc:
            if checkpoint.size == held.size:  # a proof between equal sizes: malformed only
                raise Invalid(f"the consistency proof does not verify: {exc}") from None
            self._refuse_fork(request, checkpoint, held, str(exc))
        except merkle.MerkleError as exc:
            self._refuse_fork(request, checkpoint, held, str(exc))

    def _refuse_fork(
        self, request: AddCheckpoint, checkpoint: Checkpoint, held: Cosigned, why: str
    ) -> None:
        """Keep what the log signed as fork evidence, then refuse it (422)."""
        evidence = ForkEvidence(
            checkpoint.origin,
            self.key.name,
            int(self.clock()),
            held.note,
            request.note,
            request.old_size,
            request.proof,
            f"not consistent with the checkpoint of size {held.size} cosigned: {why}",
        )
        path = self.state.keep_evidence(evidence)
        if checkpoint.size == held.size:  # two roots for one size: a fork on its face
            log.critical(
                "FORK: origin=%s signed two roots for size %d; evidence kept in %s",
                checkpoint.origin,
                held.size,
                path,
            )
        else:  # a fork, or a bad proof: only the log can show a proof that verifies
            log.error(
                "refused: origin=%s size %d is not proved consistent with size %d (a fork or"
                " a bad proof); evidence kept in %s",
                checkpoint.origin,
                checkpoint.size,
                held.size,
                path,
            )
        raise Invalid(
            f"the checkpoint is not consistent with the one of size {held.size} this witness"
            " cosigned; it is kept as evidence"
        )
