"""The client's checks of the log: answers rebuilt from what was sent, checkpoints, inclusion."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

from ledger.audit.policy import Policy
from ledger.audit.quorum import check_quorum
from ledger.client.errors import bad_answer
from ledger.contract import crypto
from ledger.contract.canonical import jcs
from ledger.contract.entries import ENTRY_ADDED
from ledger.contract.vocabulary import parse_timestamp
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, verify_checkpoint
from ledger.private_files import replace_private

if TYPE_CHECKING:
    from ledger.audit import SavedState


class LogMisbehaviour(Exception):
    """A checkpoint contradicts the one this client verified before: the log shrank, or its
    new tree does not extend the old one (a fork: this client is shown another history).

    `check` names what failed; `known_size` is the verified checkpoint's, `new_size` the new
    one's. Keep both checkpoints: signed by the log key, they prove the misbehaviour.
    """

    def __init__(self, check: str, known_size: int, new_size: int, message: str) -> None:
        self.check, self.known_size, self.new_size = check, known_size, new_size
        super().__init__(f"{check}: {message}")


class NotIncluded(Exception):
    """The log's inclusion proof does not put the submitted event at its answered index
    under a checkpoint signed by the log key: the event is not in the log there."""

    def __init__(self, index: int, size: int) -> None:
        self.index, self.size = index, size
        super().__init__(
            f"inclusion: the submitted event is not entry {index} of the signed tree of size {size}"
        )


class NotCovered(TimeoutError):
    """No checkpoint covering the event's index was signed within the time allowed (the log
    signs on its schedule: try again later; a log that never covers it withholds it)."""

    def __init__(self, index: int, size: int, waited_s: float) -> None:
        self.index, self.size, self.waited_s = index, size, waited_s
        super().__init__(
            f"no signed checkpoint covers entry {index} after {waited_s:g} s (the newest has"
            f" {size} entries); verify again later"
        )


class NotWitnessed(TimeoutError):
    """No checkpoint covering the event carried the policy's quorum of witness cosignatures
    within the time allowed; `shortfall` names the witnesses missing from the last one seen.
    Unwitnessed, a checkpoint may be a view shown to this client only: do not rely on it."""

    def __init__(self, index: int, size: int, waited_s: float, shortfall: str) -> None:
        self.index, self.size, self.waited_s, self.shortfall = index, size, waited_s, shortfall
        super().__init__(
            f"no checkpoint covering entry {index} was witnessed within {waited_s:g} s (the"
            f" newest has {size} entries): {shortfall}"
        )


@dataclass(frozen=True)
class Answer:
    """An accepted event's answer, checked against what was sent.

    `leaf_hash` is the leaf this client computed from the event it submitted and the members
    the ledger added (`entry` holds those entry bytes), never the server's word for it.
    """

    status: int
    event_id: str
    case_id: str
    index: int
    case_version: int
    leaf_hash: bytes
    entry: bytes
    extra: dict[str, Any]


def _at_least(value: object, low: int) -> TypeGuard[int]:
    """Whether `value` is a JSON integer (not a boolean) of at least `low`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _entry_added(data: dict[str, Any]) -> dict[str, str]:
    """The answer's `entry` members, each of the type the log entry holds (or bad_answer)."""
    entry = data.get("entry")
    if not isinstance(entry, dict) or sorted(entry) != sorted(ENTRY_ADDED):
        raise bad_answer(f"the answer's entry must have exactly {', '.join(ENTRY_ADDED)}")
    if not all(isinstance(entry[name], str) for name in ENTRY_ADDED):
        raise bad_answer("the answer's entry members must be strings")
    try:
        digest = crypto.b64decode_strict(entry["sealed_digest"])
        parse_timestamp(entry["recorded_at"])
    except ValueError:
        raise bad_answer("the answer's sealed_digest or recorded_at is malformed") from None
    if len(digest) != 32:
        raise bad_answer("the answer's sealed_digest is not a SHA-256 digest")
    return dict(entry)


def checked_answer(body: dict[str, Any], status: int, data: Any) -> Answer:
    """The ledger's answer `data` (with HTTP `status`) to the submission `body`, refused
    (502 `bad_answer`) unless it names the submitted event and case and its leaf hash is the
    one rebuilt from the submitted envelope and signature and the members the ledger added."""
    envelope = body["envelope"]
    # 1. The answer names the submitted event and case, at a position and a version.
    if not isinstance(data, dict):
        raise bad_answer("the answer is not a JSON object")
    if data.get("event_id") != envelope["event_id"] or data.get("case_id") != envelope["case_id"]:
        raise bad_answer("the answer names another event or case than the one submitted")
    index, version = data.get("index"), data.get("case_version")
    if not _at_least(index, 0) or not _at_least(version, 1):
        raise bad_answer("the answer's index or case_version is not a valid position")
    # 2. The entry rebuilt from what was sent and what the ledger says it added.
    added = _entry_added(data)
    entry = jcs({"kind": "event", "envelope": envelope, "signature": body["signature"], **added})
    leaf = merkle.leaf_hash(entry)
    # 3. The server's leaf hash is the hash of that entry, or it recorded something else.
    try:
        answered = crypto.b64decode_strict(str(data.get("leaf_hash")))
    except ValueError:
        raise bad_answer("the answer's leaf_hash is not base64") from None
    if answered != leaf:
        raise bad_answer("the answer's leaf_hash is not the leaf of the submitted event")
    extra = {k: v for k, v in data.items() if k not in Answer.__dataclass_fields__}
    return Answer(
        status,
        envelope["event_id"],
        envelope["case_id"],
        index,
        version,
        leaf,
        entry,
        extra,
    )


class LogReader(Protocol):
    """The log's answers a LogVerifier checks (LedgerClient's requests for them)."""

    def checkpoint(self) -> str: ...

    def consistency_proof(self, first: int, second: int) -> list[bytes]: ...

    def inclusion_proof(self, index: int, size: int) -> list[bytes]: ...


class LogVerifier:
    """What a client verified of the log: the last checkpoint, which every checkpoint it sees
    must extend (RFC 9162 consistency), kept across runs in the `state` file if any; and the
    inclusion of its events under such a checkpoint. The proofs come from `log`."""

    def __init__(self, log: LogReader, state: Path | None = None) -> None:
        """`state`: a file keeping the last checkpoint this client verified across runs (the
        format of `ledger audit verify --state`, written 0600); without it, the client
        remembers it for its own lifetime only."""
        from ledger.audit import SavedState

        self.log = log
        self.state = state
        self._known: SavedState | None = (
            SavedState.from_json(state.read_text())
            if state is not None and state.exists()
            else None
        )
        self._known_lock = threading.Lock()

    @property
    def known_checkpoint(self) -> tuple[int, bytes] | None:
        """Size and root of the last checkpoint this client verified (None: none yet)."""
        known = self._known
        return None if known is None else (known.size, known.root)

    def verified_checkpoint(self, log_key: crypto.VerifyKey) -> Checkpoint:
        """The log's newest checkpoint, signed by `log_key` and proved to extend the last one
        this client verified, which it then replaces (in the state file too, if any).

        Raises a NoteError when the signature or the origin is wrong, LogMisbehaviour when
        the log shrank or forked since the verified checkpoint.
        """
        # One at a time: a checkpoint fetched before another thread's newer one was accepted
        # would look like a log that shrank.
        return self._verified(log_key)[0]

    def _verified(self, log_key: crypto.VerifyKey) -> tuple[Checkpoint, str]:
        """`verified_checkpoint`, and the note as served (with its cosignatures)."""
        with self._known_lock:
            # 1. Signed by the trusted log key, for the log that key names.
            note = self.log.checkpoint()
            checkpoint = verify_checkpoint(note, log_key, log_key.name)
            self._extend(checkpoint)
        return checkpoint, note

    def _extend(self, new: Checkpoint) -> None:
        """Accept `new` as the verified checkpoint if it extends the known one (RFC 9162)."""
        from ledger.audit import SavedState

        known = self._known
        # 2. The same log as the checkpoint verified before (a state file of another log).
        if known is not None and known.origin != new.origin:
            raise ValueError(
                f"the verified checkpoint is of log {known.origin!r}, but the log key is of"
                f" {new.origin!r}: give this log its own state file"
            )
        # 3. An empty tree has the empty root.
        if new.size == 0 and new.root != merkle.EMPTY_ROOT:
            raise LogMisbehaviour(
                "empty root",
                known.size if known else 0,
                0,
                "a checkpoint of size 0 has a root other than the empty tree's",
            )
        if known is not None:
            # 4. Trees only grow.
            if new.size < known.size:
                raise LogMisbehaviour(
                    "checkpoint size",
                    known.size,
                    new.size,
                    f"the log's checkpoint of size {new.size} is smaller than the verified"
                    f" checkpoint of size {known.size}",
                )
            # 5. The new tree extends the old one: a consistency proof from the server, checked
            #    here (equal sizes: the same root; from the empty tree: nothing to prove).
            if known.size > 0:
                proof = (
                    []
                    if new.size == known.size
                    else self.log.consistency_proof(known.size, new.size)
                )
                try:
                    merkle.verify_consistency(known.size, new.size, known.root, new.root, proof)
                except merkle.MerkleError as exc:
                    raise LogMisbehaviour(
                        "consistency",
                        known.size,
                        new.size,
                        f"the log's checkpoint of size {new.size} does not extend the verified"
                        f" checkpoint of size {known.size} ({exc})",
                    ) from exc
            if new.size == known.size:
                return
        self._known = SavedState(new.origin, new.size, new.root)
        if self.state is not None:
            replace_private(self.state, self._known.to_json().encode())

    def verify_inclusion(
        self,
        answer: Answer,
        log_key: crypto.VerifyKey,
        *,
        timeout_s: float = 30.0,
        policy: Policy | None = None,
    ) -> int:
        """Check that the submitted event is in the log under a checkpoint signed by `log_key`
        (and, with a witness `policy`, cosigned by its quorum of witnesses).

        The leaf proved is the one this client rebuilt from what it submitted
        (`submit_body`), never one the server answered. The log signs checkpoints on its
        own schedule (every N entries or T seconds), so this polls the newest one, with
        backoff, until one covers the event's index, for up to `timeout_s` seconds; every
        checkpoint seen must extend the last one verified (`verified_checkpoint`).

        Returns the size of the checkpoint the event was verified against. Raises NotCovered
        when no checkpoint covers the event in time, NotWitnessed when none that covers it
        carries the policy's quorum in time (fail closed: the missing witnesses are named),
        LogMisbehaviour when the log shrank or forked, NotIncluded when the inclusion proof
        does not verify; ValueError when the policy does not name the log's key.
        """
        if policy is not None and not policy.accepts(log_key):
            raise ValueError(f"the witness policy names no log with the key {log_key.key_id}")
        # 1. A verified checkpoint covering the event's index (and witnessed, with a policy),
        #    waiting for the next signed or cosigned.
        started, delay, shortfall = time.monotonic(), 0.05, None
        while True:
            checkpoint, note = self._verified(log_key)
            if answer.index < checkpoint.size:
                if policy is None:
                    break
                witnessed = check_quorum(note, policy, log_key)
                if witnessed.ok:
                    break
                shortfall = witnessed.failures[0].message
            remaining = timeout_s - (time.monotonic() - started)
            if remaining <= 0:
                if shortfall is not None:
                    raise NotWitnessed(answer.index, checkpoint.size, timeout_s, shortfall)
                raise NotCovered(answer.index, checkpoint.size, timeout_s)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)
        # 2. The submitted event's leaf at its index in that tree.
        proof = self.log.inclusion_proof(answer.index, checkpoint.size)
        try:
            merkle.verify_inclusion(
                answer.index, checkpoint.size, answer.leaf_hash, proof, checkpoint.root
            )
        except merkle.MerkleError as exc:
            raise NotIncluded(answer.index, checkpoint.size) from exc
        return checkpoint.size
