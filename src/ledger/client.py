"""The agency SDK: build, sign and submit events with an agency key file (httpx).

client = LedgerClient("http://127.0.0.1:8000", token, load_signing_key("keys/ngo.key"))
answer = client.submit("case.opened", case_id, facts={"minor": False}, attrs={...})
client.verify_inclusion(answer, log_key)  # the event sent is in the log the log key signs

The client trusts the server for nothing it can check: an answer's leaf is rebuilt from the
event it sent, and every checkpoint it sees must extend the last one it verified (RFC 9162
consistency), so a log that withholds an event, or shows this agency another history than
it shows the auditors, is caught here.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import httpx

from ledger.contract import crypto
from ledger.contract.canonical import jcs
from ledger.contract.entries import ENTRY_ADDED
from ledger.contract.envelope import build_submission
from ledger.contract.vocabulary import parse_timestamp
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, verify_checkpoint
from ledger.private_files import replace_private

if TYPE_CHECKING:
    from ledger.audit import SavedState


class LedgerHTTPError(Exception):
    """The ledger refused a request; `status` and `error` are the server's answer."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        self.error = str(body.get("error", ""))
        super().__init__(f"{status} {self.error}: {body.get('message', '')}")


def bad_answer(message: str) -> LedgerHTTPError:
    """An answer the client refuses to believe, as if a proxy had answered 502."""
    return LedgerHTTPError(502, {"error": "bad_answer", "message": message})


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


# Answers worth sending the identical request again for: a write conflict (409 with the code
# `write_conflict`, never the final 409 of an event_id in use), too many requests, and the
# server or a proxy in front of it being briefly unavailable.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long the client sends an unanswered or transiently refused request again.

    Exponential backoff with full jitter, at most `attempts` tries in all, and never a new try
    later than `budget_s` after the first: a submission is resent byte for byte (same
    event_id, same signature), and the ledger checks `signed_at` freshness (300 s by default)
    on a submission it has not recorded yet, so the budget stays well inside that window.
    """

    attempts: int = 10
    base_s: float = 0.05
    cap_s: float = 2.0
    budget_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy makes at least one attempt")

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before try number `attempt + 1` (`attempt` counts from 0)."""
        ceiling = min(self.cap_s, self.base_s * 2**attempt)
        wait = rng.uniform(0, ceiling)
        return wait if retry_after is None else max(wait, min(retry_after, self.cap_s))


def is_transient(status: int, body: dict[str, Any]) -> bool:
    """Whether an error answer may succeed when the identical request is sent again."""
    return status in TRANSIENT_STATUSES or (status == 409 and body.get("error") == "write_conflict")


def load_signing_key(path: Path) -> crypto.SigningKey:
    """Read a `PRIVATE+KEY+...` signer key file."""
    return crypto.parse_signing_key(path.read_text())


def new_id() -> str:
    return str(uuid.uuid4())


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


class LedgerClient:
    """One agency's (or one person's) connection to the ledger."""

    def __init__(
        self,
        url: str,
        token: str,
        key: crypto.SigningKey | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        state: Path | None = None,
    ) -> None:
        """`state`: a file keeping the last checkpoint this client verified across runs (the
        format of `ledger audit verify --state`, written 0600); without it, the client
        remembers it for its own lifetime only."""
        from ledger.audit import SavedState

        self.key = key
        self.retry = retry or RetryPolicy()
        self.retried = 0  # how many times a request was sent again (all requests together)
        self._rng = random.Random()
        self.http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            transport=transport,
            timeout=timeout,
        )
        self._origin: str | None = None
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

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _json(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = {"error": "not_json", "message": response.text[:200]}
        if response.status_code >= 400:
            raise LedgerHTTPError(response.status_code, body)
        return body

    @property
    def origin(self) -> str:
        """The log origin every event must name (from GET /v1/health)."""
        if self._origin is None:
            self._origin = str(self._json(self._send("GET", "/v1/health"))["log"])
        return self._origin

    def build(
        self,
        type: str,
        case_id: str,
        facts: dict[str, Any],
        attrs: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """A signed submission body for this agency's key."""
        if self.key is None:
            raise ValueError("this client has no signing key")
        return build_submission(
            self.key,
            log=self.origin,
            case_id=case_id,
            type=type,
            facts=facts,
            attrs=attrs,
            payload=payload,
            event_id=event_id or new_id(),
        )

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request under the retry policy: the identical request again after a transport
        error (no answer, so it may or may not have been processed) or a transient refusal.
        Only for requests that are safe to repeat: reads, and event submissions (the ledger
        records an event_id once and answers an identical retry with the original answer).
        Raises the last transport error when the policy is exhausted without any answer."""
        policy, started = self.retry, time.monotonic()
        for attempt in range(policy.attempts):
            last = attempt == policy.attempts - 1
            retry_after: float | None = None
            try:
                response = self.http.request(method, path, **kw)
            except httpx.TransportError:
                if last or time.monotonic() - started >= policy.budget_s:
                    raise
            else:
                if response.status_code < 400 or last:
                    return response
                try:
                    body = response.json()
                except ValueError:
                    body = {}
                if not isinstance(body, dict) or not is_transient(response.status_code, body):
                    return response
                if time.monotonic() - started >= policy.budget_s:
                    return response
                header = response.headers.get("retry-after", "")
                retry_after = float(header) if header.isdigit() else None
            self.retried += 1
            time.sleep(policy.delay(attempt, self._rng, retry_after))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def submit_body(self, body: dict[str, Any]) -> Answer:
        """POST a built body; send it again, byte for byte, on write conflicts, transient
        answers and transport errors (see RetryPolicy). 201: recorded now; 200: an earlier
        try had recorded it, and this is its original answer.

        The answer is checked against what was sent, and refused (502 `bad_answer`) unless
        it names the submitted event and case and its leaf hash is the one this client
        rebuilds from the submitted envelope and signature and the members the ledger added.
        """
        response = self._send("POST", "/v1/events", json=body)
        data = self._json(response)
        envelope = body["envelope"]
        # 1. The answer names the submitted event and case, at a position and a version.
        if not isinstance(data, dict):
            raise bad_answer("the answer is not a JSON object")
        if (
            data.get("event_id") != envelope["event_id"]
            or data.get("case_id") != envelope["case_id"]
        ):
            raise bad_answer("the answer names another event or case than the one submitted")
        index, version = data.get("index"), data.get("case_version")
        if not _at_least(index, 0) or not _at_least(version, 1):
            raise bad_answer("the answer's index or case_version is not a valid position")
        # 2. The entry rebuilt from what was sent and what the ledger says it added.
        added = _entry_added(data)
        entry = jcs(
            {"kind": "event", "envelope": envelope, "signature": body["signature"], **added}
        )
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
            response.status_code,
            envelope["event_id"],
            envelope["case_id"],
            index,
            version,
            leaf,
            entry,
            extra,
        )

    def submit(
        self,
        type: str,
        case_id: str,
        facts: dict[str, Any],
        attrs: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> Answer:
        """Build, sign and submit one event."""
        return self.submit_body(self.build(type, case_id, facts, attrs, payload, event_id=event_id))

    def read_case(self, case_id: str) -> dict[str, Any]:
        return dict(self._json(self._send("GET", f"/v1/cases/{case_id}")))

    # -- the log -----------------------------------------------------------------------------

    def checkpoint(self) -> str:
        response = self._send("GET", "/v1/log/checkpoint")
        if response.status_code >= 400:
            self._json(response)
        return response.text

    def entries(self, start: int, end: int) -> list[bytes]:
        """Entries [start, end) as their canonical bytes, page by page, up to any gap."""
        out: list[bytes] = []
        while start + len(out) < end:
            page = self._json(
                self._send("GET", "/v1/log/entries", params={"start": start + len(out), "end": end})
            )["entries"]
            if not page:
                break
            for item in page:
                if item["index"] != start + len(out):
                    return out  # a gap: the auditor reports the entries that are missing
                out.append(crypto.b64decode_strict(item["leaf"]))
        return out

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        data = self._json(
            self._send("GET", "/v1/log/proof/inclusion", params={"index": index, "size": size})
        )
        return [crypto.b64decode_strict(p) for p in data["proof"]]

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        data = self._json(
            self._send("GET", "/v1/log/proof/consistency", params={"from": first, "to": second})
        )
        return [crypto.b64decode_strict(p) for p in data["proof"]]

    def verified_checkpoint(self, log_key: crypto.VerifyKey) -> Checkpoint:
        """The log's newest checkpoint, signed by `log_key` and proved to extend the last one
        this client verified, which it then replaces (in the state file too, if any).

        Raises a NoteError when the signature or the origin is wrong, LogMisbehaviour when
        the log shrank or forked since the verified checkpoint.
        """
        # One at a time: a checkpoint fetched before another thread's newer one was accepted
        # would look like a log that shrank.
        with self._known_lock:
            # 1. Signed by the trusted log key, for the log that key names.
            checkpoint = verify_checkpoint(self.checkpoint(), log_key, log_key.name)
            self._extend(checkpoint)
        return checkpoint

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
                    [] if new.size == known.size else self.consistency_proof(known.size, new.size)
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
        self, answer: Answer, log_key: crypto.VerifyKey, *, timeout_s: float = 30.0
    ) -> int:
        """Check that the submitted event is in the log under a checkpoint signed by `log_key`.

        The leaf proved is the one this client rebuilt from what it submitted
        (`submit_body`), never one the server answered. The log signs checkpoints on its
        own schedule (every N entries or T seconds), so this polls the newest one, with
        backoff, until one covers the event's index, for up to `timeout_s` seconds; every
        checkpoint seen must extend the last one verified (`verified_checkpoint`).

        Returns the size of the checkpoint the event was verified against. Raises NotCovered
        when no checkpoint covers the event in time, LogMisbehaviour when the log shrank or
        forked, NotIncluded when the inclusion proof does not verify.
        """
        # 1. A verified checkpoint covering the event's index, waiting for the next signed.
        started, delay = time.monotonic(), 0.05
        while True:
            checkpoint = self.verified_checkpoint(log_key)
            if answer.index < checkpoint.size:
                break
            remaining = timeout_s - (time.monotonic() - started)
            if remaining <= 0:
                raise NotCovered(answer.index, checkpoint.size, timeout_s)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)
        # 2. The submitted event's leaf at its index in that tree.
        proof = self.inclusion_proof(answer.index, checkpoint.size)
        try:
            merkle.verify_inclusion(
                answer.index, checkpoint.size, answer.leaf_hash, proof, checkpoint.root
            )
        except merkle.MerkleError as exc:
            raise NotIncluded(answer.index, checkpoint.size) from exc
        return checkpoint.size

    # -- admin -------------------------------------------------------------------------------

    def register_agency(
        self, agency_id: str, name: str, kind: str, verify_key: str
    ) -> dict[str, Any]:
        body = {"id": agency_id, "name": name, "type": kind, "verify_key": verify_key}
        return dict(self._json(self.http.post("/v1/agencies", json=body)))

    def add_key(
        self, agency: str, current: crypto.SigningKey, new: crypto.SigningKey
    ) -> dict[str, Any]:
        """Register `new` for `agency`, signed by its current key and by the new key."""
        from ledger.contract.entries import key_change_message
        from ledger.contract.vocabulary import format_timestamp

        signed_at = format_timestamp(datetime.now(UTC))
        message = key_change_message(self.origin, agency, new.verify_key.line(), signed_at)
        signatures = [
            {
                "key": k.verify_key.key_id,
                "signed_at": signed_at,
                "signature": crypto.b64(crypto.sign(k, message)),
            }
            for k in (current, new)
        ]
        body = {"verify_key": new.verify_key.line(), "signatures": signatures}
        return dict(self._json(self.http.post(f"/v1/agencies/{agency}/keys", json=body)))

    def revoke_key(
        self, agency: str, key_id: str, compromised_since: int | None = None
    ) -> dict[str, Any]:
        body = {"compromised_since": compromised_since}
        return dict(
            self._json(self.http.post(f"/v1/agencies/{agency}/keys/{key_id}/revoke", json=body))
        )

    def create_token(self, role: str, label: str, agency: str | None = None) -> dict[str, Any]:
        body = {"agency": agency, "role": role, "label": label}
        return dict(self._json(self.http.post("/v1/tokens", json=body)))
