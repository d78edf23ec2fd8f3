"""The application: `submit`, `read_case`, agencies and tokens, in the contract's refusal order.

Data flows one way: api -> ledger -> (envelope, gates, case, crypto, keystore) -> storage.
Nothing here knows about HTTP; refusals are typed errors from `ledger.errors`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from ledger.audit import key_change_message
from ledger.concurrency import Background, GroupCommit, KeyedLocks
from ledger.contract import crypto
from ledger.contract.case import Case, Cases
from ledger.contract.envelope import (
    AGENCY_RE,
    CATEGORIES,
    Submission,
    format_timestamp,
    is_agency_id,
    is_uuid4,
    jcs,
    loads_strict,
    parse_submission,
    parse_timestamp,
    submission_from,
    validate_content,
    verify_integrity,
)
from ledger.contract.gates import (
    APPEND_ROLES,
    check_consent_gate,
    check_named_agencies,
    check_permission,
    check_references,
    named_agencies,
    readable_categories,
)
from ledger.contract.receipts import ErasureReceipt
from ledger.contract.sealing import seal_record, unseal_item, unseal_items
from ledger.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    LedgerError,
    NotFound,
    Unauthorized,
    VerificationError,
    WriteConflict,
    failure_site,
)
from ledger.log.merkle import leaf_hash
from ledger.log.service import LogService
from ledger.services.access import CaseAccess, Unsealed
from ledger.services.keystore import KeyStore
from ledger.services.logtime import LogTime, utc_now
from ledger.storage.base import (
    AgencyRow,
    Commit,
    ConflictError,
    ErasureRow,
    EventRow,
    KeyRow,
    NewEntry,
    RecordedEvent,
    Revocation,
    StaleTime,
    Store,
    Token,
)

log = logging.getLogger("ledger")

ROLES = ("caseworker", "supervisor", "auditor", "monitor", "admin")
AGENCY_ROLES = frozenset({"caseworker", "supervisor"})
BATCH_LIMIT = 1000  # submissions in one POST /v1/events:batch
WRITE_ATTEMPTS = 8  # a write that lost a race is decided again up to this many times
AGE_EVENTS = ("case.opened", "age.assessed")  # the events whose attrs make the case profile
# The members of an event's log entry beside its envelope and signature: the answer carries
# them, so the agency can rebuild the entry and its leaf hash from what it submitted.
ENTRY_ADDED = ("sealed_digest", "actor", "role", "recorded_at")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's opaque id, its role and its agency (if any)."""

    token_id: str
    role: str
    agency: str | None


def hash_token(token: str) -> bytes:
    return hashlib.sha256(b"ledger-token-v1\n" + token.encode()).digest()


Outcome = tuple[int, dict[str, Any]] | LedgerError | Exception
"""An item's answer in a group: (status, answer), its refusal, or (not a refusal) its failure."""


@dataclass(frozen=True)
class Incoming:
    """One single submission for `Ledger.submit_many`: its authenticated caller and its body,
    as bytes or already parsed (`Ledger.parse`: the API parses before it joins the group)."""

    caller: Principal
    body: bytes | Submission | LedgerError = field(repr=False)


@dataclass(repr=False)
class _Planned:
    """An accepted submission, sealed, with the commit that records it. Its repr names ids
    only: the submission holds plaintext."""

    def __repr__(self) -> str:
        return f"_Planned(event={self.sub.event_id}, case={self.sub.case_id} v{self.version})"

    sub: Submission
    case: Case  # the batch's working copy: later items of the case move it on
    version: int  # the case version this event makes
    record: dict[str, Any]
    commit: Commit
    leaf: bytes
    added: dict[str, Any]  # what the log entry holds beside the envelope and signature
    extra: dict[str, Any]


@dataclass(repr=False)
class _Pending:
    """What a batch has decided but not committed yet; the items after it see it. Its repr
    gives counts only: it holds plaintext submissions and raw case keys.

    It also holds what the batch looked up once for all its items (which cases exist, which
    event ids are recorded, agency keys, case keys). A concurrent writer can make that stale:
    every such fact behind an accepted item is checked again at commit under the log lock (the
    case's version, the event id, the signing key), and an item that fails there is decided
    again on its own; a refusal is the answer as of the batch's look-up."""

    related: set[tuple[str, str]] = field(default_factory=set)  # (case, agency) at look-up
    existing: set[str] = field(default_factory=set)  # of those cases (and of case.opened
    # items' cases), the ones that had events at look-up
    loaded: dict[str, Case | None] = field(default_factory=dict)  # those cases, loaded then
    priors: dict[str, RecordedEvent] = field(default_factory=dict)  # recorded at look-up
    verify_keys: dict[tuple[str, str], crypto.VerifyKey | None] = field(default_factory=dict)
    agencies: dict[str, bool] = field(default_factory=dict)  # named agencies: live or not
    data_keys: dict[str, bytes] = field(default_factory=dict)  # case keys read or made
    new_keys: dict[str, bytes] = field(default_factory=dict)  # new cases': stored at commit
    plans: list[tuple[int, _Planned]] = field(default_factory=list)
    subs: dict[int, tuple[Principal, Submission]] = field(default_factory=dict)
    cases: dict[str, Case] = field(default_factory=dict)
    events: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # fingerprint, item
    records: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    case_items: dict[str, list[int]] = field(default_factory=dict)  # planned items by case
    # Refusals decided on planned items' state, by the items they leaned on: decided again
    # after the commit if one of those did not commit.
    leaned: dict[int, set[int]] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)  # cases an item failed on (not a refusal)
    deferred: list[int] = field(default_factory=list)  # their later items: decided alone

    def __repr__(self) -> str:
        return (
            f"_Pending(plans={len(self.plans)}, cases={len(self.cases)},"
            f" keys={len(self.data_keys) + len(self.new_keys)})"
        )

    def add(self, item: int, principal: Principal, plan: _Planned) -> None:
        self.plans.append((item, plan))
        self.subs[item] = (principal, plan.sub)
        self.cases[plan.sub.case_id] = plan.case
        self.events[plan.sub.event_id] = (plan.sub.fingerprint, item)
        self.records[(plan.sub.case_id, plan.version)] = plan.record
        self.case_items.setdefault(plan.sub.case_id, []).append(item)

    def leaned_on(self, sub: Submission) -> set[int]:
        """The planned items a decision on `sub` saw: its case's, and its event id's."""
        items = set(self.case_items.get(sub.case_id, ()))
        if sub.event_id in self.events:
            items.add(self.events[sub.event_id][1])
        return items


def _refusal(exc: LedgerError) -> tuple[int, dict[str, Any]]:
    return exc.status, {"error": exc.code, "message": exc.message, **exc.extra}


def _parsed(parse: Callable[[Any], Submission], value: Any) -> Submission | LedgerError:
    """Step 2 on one item of a group: the submission, or its refusal, answered in its turn."""
    try:
        return parse(value)
    except LedgerError as exc:
        return exc


def answer_of(outcome: Outcome) -> tuple[int, dict[str, Any]]:
    """A batch item's answer: its refusal's, or (a failure, not a refusal) a bare 500 that
    names nothing."""
    if isinstance(outcome, LedgerError):
        return _refusal(outcome)
    if isinstance(outcome, Exception):  # logged where it was caught
        message = "the server failed on this item; send it again (a recorded one answers 200)"
        return 500, {"error": "internal", "message": message}
    return outcome


class Ledger:
    """Append signed, sealed, consent-gated events; read what the caller may see."""

    def __init__(
        self,
        store: Store,
        keys: KeyStore,
        log_key: crypto.SigningKey,
        receipt_key: crypto.SigningKey | None = None,
        *,
        freshness_s: int = 300,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.keys = keys
        self.cases = Cases(store.recorder, store.snapshots, store.events_after)
        self._case_locks = KeyedLocks()
        # Threads submitting at once share one `submit_many` (the API groups its own callers).
        self._grouped: GroupCommit[Incoming, tuple[int, dict[str, Any]]] = GroupCommit(
            self.submit_many
        )
        self.freshness_s = freshness_s
        self.clock = clock
        origin = store.get_meta("origin")
        if origin is None:
            raise RuntimeError("the ledger is not initialised: run `ledger init`")
        self.origin = origin
        self.log = LogService(store, log_key, origin, lambda: self.clock())
        self.time = LogTime(lambda: self.clock())  # the time entries are recorded at
        self.access = CaseAccess(self.cases, keys, store, self.time)
        self.receipt_key = receipt_key

    # -- authentication ----------------------------------------------------------------------

    def authenticate(self, bearer: str | None) -> Principal:
        """Step 1: a known, unexpired, unrevoked token, or Unauthorized."""
        (principal,) = self.authenticate_many([bearer])
        if isinstance(principal, LedgerError):
            raise principal
        return principal

    def authenticate_many(self, bearers: Sequence[str | None]) -> list[Principal | LedgerError]:
        """`authenticate` of several bearer tokens with one read (the API checks the tokens
        of concurrent requests together): a principal or the refusal, in order."""
        hashes = {bearer: hash_token(bearer) for bearer in bearers if bearer}
        tokens = self.store.tokens_by_hash(list(hashes.values())) if hashes else {}
        now = format_timestamp(self.clock())
        principals: list[Principal | LedgerError] = []
        for bearer in bearers:
            token = tokens.get(hashes[bearer]) if bearer else None
            if not bearer:
                principals.append(Unauthorized("send a token: Authorization: Bearer <token>"))
            elif token is None or token.revoked:
                principals.append(Unauthorized("the token is not valid"))
            elif token.expires_at is not None and token.expires_at <= now:
                principals.append(Unauthorized("the token has expired"))
            else:
                principals.append(Principal(token.id, token.role, token.agency))
        return principals

    def issue_token(
        self, role: str, agency: str | None, label: str, expires_at: str | None = None
    ) -> tuple[str, str]:
        """Create a token and store only its hash; returns (token, id)."""
        secret = "lgr_" + secrets.token_urlsafe(32)
        token_id = "tok_" + secrets.token_hex(8)
        stored = self.store.add_token(
            Token(token_id, role, agency, label, expires_at, False),
            hash_token(secret),
            format_timestamp(self.clock()),
        )
        if not stored:  # removed meanwhile (the check and the insert are one statement)
            raise Invalid("agency is not a registered agency")
        return secret, token_id

    # -- agencies and tokens -------------------------------------------------------------------

    def register_agency(
        self, principal: Principal, agency_id: str, name: str, kind: str, verify_key: str
    ) -> dict[str, Any]:
        """Admin: register an agency with its first key (a registry entry in the log)."""
        if principal.role != "admin":
            raise Forbidden("only an admin token may register agencies")
        if not is_agency_id(agency_id):
            raise BadRequest(f"id must match {AGENCY_RE}")
        key = self._agency_key_line(agency_id, verify_key)
        if self.store.agency(agency_id) is not None:
            raise Conflict("an agency with this id is already registered")
        position = self._append_registry(
            principal,
            "agency.registered",
            agency_id,
            key.line(),
            [],
            "an agency or key with this id is already registered",
            agencies=[AgencyRow(agency_id, name, kind)],
            keys=[KeyRow(key.key_id, agency_id, key.line(), 0)],
        )
        log.info("agency registered agency=%s index=%d", agency_id, position)
        return {"id": agency_id, "index": position}

    def create_token(
        self,
        principal: Principal,
        agency: str | None,
        role: str,
        label: str,
        expires_at: str | None = None,
    ) -> dict[str, str]:
        """Admin: one token per person, with a role, (for agency staff) an agency, and
        optionally an expiry time."""
        if principal.role != "admin":
            raise Forbidden("only an admin token may create tokens")
        if role not in ROLES:
            raise BadRequest(f"role must be one of: {', '.join(ROLES)}")
        if role in AGENCY_ROLES and agency is None:
            raise BadRequest(f"a {role} token needs an agency")
        if agency is not None:
            found = self.store.agency(agency)
            if found is None or found.removed_at is not None:
                raise Invalid("agency is not a registered agency")
        if expires_at is not None:
            try:
                if parse_timestamp(expires_at) <= self.clock():
                    raise Invalid("expires_at must be in the future")
            except ValueError as exc:
                raise BadRequest("expires_at must be YYYY-MM-DDTHH:MM:SSZ") from exc
        secret, token_id = self.issue_token(role, agency, label, expires_at)
        log.info("token created id=%s role=%s agency=%s", token_id, role, agency)
        return {"token": secret, "id": token_id}

    def revoke_token(self, principal: Principal, token_id: str) -> None:
        """Admin: revoke a token (it answers 401 from now on)."""
        if principal.role != "admin":
            raise Forbidden("only an admin token may revoke tokens")
        if not self.store.revoke_tokens(token_id=token_id, at=format_timestamp(self.clock())):
            raise NotFound("no such active token")
        log.info("token revoked id=%s", token_id)

    def remove_agency(self, principal: Principal, agency_id: str) -> dict[str, Any]:
        """Admin: remove an agency. Its keys are revoked in the log (so its history stays
        verifiable and nothing new can be signed) and its tokens stop working."""
        if principal.role != "admin":
            raise Forbidden("only an admin token may remove agencies")
        found = self.store.agency(agency_id)
        if found is None or found.removed_at is not None:
            raise NotFound("no such agency")
        positions = [
            self.revoke_key(principal, agency_id, key.key_id, None)["index"]
            for key in self.store.agency_keys(agency_id)
            if key.revoked_at is None
        ]
        # Keys first (a commit naming the agency is refused once none is live), then the
        # removal and its tokens in one transaction (no token is created after it).
        revoked = self.store.remove_agency(agency_id, format_timestamp(self.clock()))
        log.info("agency removed agency=%s keys=%d tokens=%d", agency_id, len(positions), revoked)
        return {"id": agency_id, "revoked_keys": positions, "revoked_tokens": revoked}

    @staticmethod
    def _agency_key_line(agency_id: str, line: str) -> crypto.VerifyKey:
        """A C2SP verifier key line named after the agency (422 otherwise)."""
        try:
            key = crypto.parse_verify_key(line)
        except crypto.BadKeyLine as exc:
            raise Invalid(f"verify_key: {exc}") from exc
        if key.name != agency_id:
            raise Invalid("verify_key's name must equal the agency id")
        return key

    def _append_registry(
        self,
        principal: Principal,
        action: str,
        agency_id: str,
        key_line: str,
        signatures: list[dict[str, str]],
        refused: str,
        *,
        agencies: Sequence[AgencyRow] = (),
        keys: Sequence[KeyRow] = (),
        revocations: Sequence[Revocation] = (),
        **extra: Any,
    ) -> int:
        """Append a registry entry (docs/contract.md, the log) with its rows; its position. A
        commit that met a later time in the log is made again at that time; any other
        conflict is `Conflict(refused)`."""
        for _attempt in range(WRITE_ATTEMPTS):
            recorded_at = format_timestamp(self.time.now())
            entry = jcs({
                "kind": "registry", "action": action, "agency": agency_id, "key": key_line,
                "signatures": signatures, "actor": principal.token_id,
                "recorded_at": recorded_at, **extra,
            })  # fmt: skip
            commit = Commit(
                entries=[NewEntry("registry", entry, leaf_hash(entry), None, agency_id)],
                agencies=agencies,
                keys=keys,
                revocations=revocations,
                recorded_at=recorded_at,
            )
            try:
                (position,) = self.store.append(commit)
                return position
            except StaleTime as exc:
                self.time.saw(exc.latest)
            except ConflictError as exc:
                raise Conflict(refused) from exc
        raise WriteConflict("the log kept moving past this change; retry")

    def _may_manage_keys(self, principal: Principal, agency_id: str) -> None:
        if principal.role == "admin" or (
            principal.role == "supervisor" and principal.agency == agency_id
        ):
            if self.store.agency(agency_id) is None:
                raise NotFound("no such agency")
            return
        raise Forbidden("keys are managed by an admin or by a supervisor of the agency")

    def add_key(
        self,
        principal: Principal,
        agency_id: str,
        verify_key: str,
        signatures: list[dict[str, str]],
    ) -> dict[str, Any]:
        """Register a new agency key, signed by a current key of the agency and by itself."""
        self._may_manage_keys(principal, agency_id)
        key = self._agency_key_line(agency_id, verify_key)
        if self.store.agency_key(key.key_id) is not None:
            raise Conflict("this key is already registered")
        current = {
            k.key_id: crypto.parse_verify_key(k.line)
            for k in self.store.agency_keys(agency_id)
            if k.revoked_at is None
        }
        now = self.clock()
        signers = set()
        for sig in signatures:
            signer = key if sig["key"] == key.key_id else current.get(sig["key"])
            if signer is None:
                raise Invalid("signatures name a key that is not a current key of the agency")
            try:
                skew = abs((parse_timestamp(sig["signed_at"]) - now).total_seconds())
                raw = crypto.b64decode_strict(sig["signature"])
            except ValueError as exc:
                raise Invalid("signatures need signed_at timestamps and base64 signatures") from exc
            if skew > self.freshness_s:
                raise VerificationError("a key-change signature is not fresh; sign again")
            message = key_change_message(self.origin, agency_id, key.line(), sig["signed_at"])
            try:
                crypto.verify(signer, message, raw)
            except crypto.BadSignature as exc:
                raise VerificationError("a key-change signature does not verify") from exc
            signers.add("new" if signer == key else "current")
        if signers != {"new", "current"}:
            raise VerificationError("a new key needs signatures by a current key and by itself")
        position = self._append_registry(
            principal,
            "key.added",
            agency_id,
            key.line(),
            signatures,
            "this key is already registered",
            keys=[KeyRow(key.key_id, agency_id, key.line(), 0)],
        )
        log.info("key added agency=%s key=%s index=%d", agency_id, key.key_id, position)
        return {"id": agency_id, "key": key.key_id, "index": position}

    def revoke_key(
        self, principal: Principal, agency_id: str, key_id: str, compromised_since: int | None
    ) -> dict[str, Any]:
        """Revoke an agency key; events signed with it are refused from now on."""
        self._may_manage_keys(principal, agency_id)
        record = self.store.agency_key(key_id)
        if record is None or record.agency != agency_id:
            raise NotFound("no such key for this agency")
        if record.revoked_at is not None:
            raise Conflict("the key is already revoked")
        if compromised_since is not None and not 0 <= compromised_since <= self.store.log_size():
            raise BadRequest("compromised_since must be a log position or null")
        position = self._append_registry(
            principal,
            "key.revoked",
            agency_id,
            record.line,
            [],
            "the key is already revoked",
            revocations=[Revocation(key_id, 0)],
            compromised_since=compromised_since,
        )
        log.info("key revoked agency=%s key=%s index=%d", agency_id, key_id, position)
        return {"id": agency_id, "key": key_id, "index": position}

    # -- events --------------------------------------------------------------------------------

    def _verify_key_for(
        self, sub: Submission, pending: _Pending | None = None
    ) -> crypto.VerifyKey | None:
        key_id = sub.envelope["key"]
        if pending is not None and (sub.agency, key_id) in pending.verify_keys:
            return pending.verify_keys[(sub.agency, key_id)]
        record = self.store.agency_key(key_id)
        found = None
        if record is not None and record.agency == sub.agency and record.revoked_at is None:
            found = crypto.parse_verify_key(record.line)
        if pending is not None:
            pending.verify_keys[(sub.agency, key_id)] = found
        return found

    def _answer(self, event: RecordedEvent) -> dict[str, Any]:
        """The original answer of a recorded event (an identical retry's), with the members
        the ledger added to its log entry, read back from the entry itself."""
        ((_, raw),) = self.store.entries(event.position, event.position + 1)
        entry = json.loads(raw)
        return {
            "event_id": event.event_id,
            "case_id": event.case_id,
            "index": event.position,
            "case_version": event.case_version,
            "leaf_hash": crypto.b64(event.leaf_hash),
            "entry": {name: entry[name] for name in ENTRY_ADDED},
            **event.extra,
        }

    def submit(self, principal: Principal, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Check a submission in the contract's refusal order, then record it.

        Returns (201, answer) for a new event, (200, original answer) for an identical retry;
        a refusal raises. Threads submitting at once share one `submit_many` (`_grouped`).
        """
        return self._grouped.submit(Incoming(principal, raw))

    def submit_batch(self, principal: Principal, raw: bytes) -> list[tuple[int, dict[str, Any]]]:
        """Up to 1,000 submissions, each accepted or refused on its own, answers in order."""
        items = self.parse_batch(raw)
        return [answer_of(o) for o in self.submit_many([Incoming(principal, i) for i in items])]

    @staticmethod
    def parse_batch(raw: bytes) -> list[Submission | LedgerError]:
        """Step 2 of a batch: the body as a whole (a refusal raises: 400 for the whole
        batch), then each item, the submission or its refusal, answered in its turn."""
        body = loads_strict(raw)
        if (
            not isinstance(body, dict)
            or set(body) != {"events"}
            or not isinstance(body["events"], list)
        ):
            raise BadRequest('a batch is {"events": [submission, ...]}')
        if not 1 <= len(body["events"]) <= BATCH_LIMIT:
            raise BadRequest(f"a batch holds 1 to {BATCH_LIMIT} events")
        return [_parsed(submission_from, item) for item in body["events"]]

    @staticmethod
    def parse(body: bytes | Submission | LedgerError) -> Submission | LedgerError:
        """Step 2 of the refusal order on one body: the submission, or its refusal (a body
        already parsed passes through)."""
        if isinstance(body, bytes):
            return _parsed(parse_submission, body)
        return body

    def submit_many(self, items: Sequence[Incoming]) -> list[Outcome]:
        """Single submissions that arrived together, each answered (or refused) exactly as if
        they had come one after another in this order: parsed (step 2), then a lone one
        decided on its own (its look-ups are its case's), several as one batch (`_run_batch`:
        one look-up and one transaction for all)."""
        # 2. Well-formed JSON with exactly the contract's members.
        subs = [(item.caller, self.parse(item.body)) for item in items]
        if len(subs) == 1:
            principal, sub = subs[0]
            return [sub if isinstance(sub, LedgerError) else self._submit_or_refuse(principal, sub)]
        return self._run_batch(subs)

    def _run_batch(
        self, items: Sequence[tuple[Principal, Submission | LedgerError]]
    ) -> list[Outcome]:
        """Decide the items in order, each on the state the items before it left, and commit
        the accepted ones in one transaction (one group, `Store.append_group`). An item whose
        commit lost a race with another writer (and the items of its case after it, whose
        expected case version then no longer holds) is decided and recorded again on its own.
        Each item's answer, or its refusal (the LedgerError), in order."""
        results: list[Outcome | None] = [None] * len(items)
        same_as: dict[int, int] = {}  # an identical resubmission within the batch -> original
        pending = _Pending()
        try:
            pending = self._look_up(items)
            for i, (principal, sub) in enumerate(items):
                if isinstance(sub, Submission) and sub.case_id in pending.broken:
                    pending.subs[i] = (principal, sub)
                    pending.deferred.append(i)
                    continue
                try:
                    if isinstance(sub, LedgerError):
                        raise sub
                    if sub.type == "case.erased":  # its key destruction follows its commit
                        self._commit_pending(pending, results)
                        pending = _Pending()  # committed: none of it may be committed again
                        results[i] = self._submit_or_refuse(principal, sub)
                        pending = self._look_up(items[i + 1 :])  # the items after it: afresh
                        continue
                    outcome = self._decide(principal, sub, pending)
                except LedgerError as exc:
                    results[i] = exc
                    if isinstance(sub, Submission) and (leaned := pending.leaned_on(sub)):
                        pending.subs[i] = (principal, sub)
                        pending.leaned[i] = leaned
                    continue
                except Exception as exc:  # not a refusal: this item's failure alone
                    log.error(
                        "a submission failed: %s at %s", type(exc).__name__, failure_site(exc)
                    )
                    results[i] = exc
                    if isinstance(sub, Submission):  # its case's working copy may hold it
                        pending.broken.add(sub.case_id)
                    continue
                if isinstance(outcome, _Planned):
                    pending.add(i, principal, outcome)
                elif isinstance(outcome, int):
                    same_as[i] = outcome
                else:
                    results[i] = outcome
            self._commit_pending(pending, results)
            for i, original in same_as.items():
                done = results[original]
                if isinstance(done, tuple) and done[0] in (200, 201):
                    results[i] = (200, done[1])
                else:
                    principal, sub = items[i]
                    assert isinstance(sub, Submission)  # it was decided: it parsed
                    results[i] = self._submit_or_refuse(principal, sub)
        except Exception as exc:
            # Not one item's. Nothing recorded yet: the batch failed as a whole (500). Else
            # whoever has no final answer yet gets it; the recorded items' answers stand.
            if not any(isinstance(r, tuple) and r[0] == 201 for r in results):
                raise
            log.error("a batch failed: %s at %s", type(exc).__name__, failure_site(exc))
            for i, result in enumerate(results):
                if result is None or i in pending.leaned:
                    results[i] = exc
        return [r for r in results if r is not None]

    def _look_up(self, items: Sequence[tuple[Principal, Submission | LedgerError]]) -> _Pending:
        """A batch's look-ups for all its (remaining) items at once. Only the cases its
        callers are related to are loaded, and only their keys read: a case an agency is
        unrelated to costs it what an unused id costs (step 3 answers both alike, in time
        too); `case.opened` items also ask whether their case exists."""
        valid = [(p, s) for p, s in items if isinstance(s, Submission)]
        pairs = sorted({(s.case_id, p.agency) for p, s in valid if p.agency is not None})
        related = self.store.related(pairs) if pairs else set()
        opening = {s.case_id for _, s in valid if s.type == "case.opened"}
        visible = {case_id for case_id, _ in related}
        versions = self.store.case_versions(sorted(visible | opening))
        named = sorted({n for _, s in valid for n in named_agencies(s.type, s.facts)})
        live = self.store.live_agencies(named) if named else set()
        to_load = {c: v for c, v in versions.items() if c in visible}
        return _Pending(
            existing=set(versions),
            related=related,
            agencies={n: n in live for n in named},
            priors=self.store.find_events(sorted({s.event_id for _, s in valid})),
            loaded=self.cases.load_many(to_load),
            data_keys=self.keys.get_many(sorted(to_load)),
        )

    def _commit_pending(self, pending: _Pending, results: list[Outcome | None]) -> None:
        """Commit the planned items; then decide again, alone and in batch order, those whose
        commit lost a race, the refusals that leaned on an item that did not commit, and the
        items deferred behind a failure."""
        if not pending.plans and not pending.deferred:
            return
        # New cases' keys first, in one transaction, before any event sealed with them; a case
        # that has a key already (opened concurrently, or a crash's leftover) is redone alone.
        stored = self.keys.create_many(pending.new_keys) if pending.new_keys else set()
        lost = set(pending.new_keys) - stored
        plans = [(i, p) for i, p in pending.plans if p.sub.case_id not in lost]
        outcomes = self.store.append_group([plan.commit for _, plan in plans]) if plans else []
        again = [i for i, p in pending.plans if p.sub.case_id in lost]
        self.keys.confirm_many(
            [
                p.sub.case_id
                for (_, p), outcome in zip(plans, outcomes, strict=True)
                if p.version == 1 and not isinstance(outcome, ConflictError)
            ]
        )
        committed: dict[str, Case] = {}
        for (i, plan), outcome in zip(plans, outcomes, strict=True):
            if isinstance(outcome, ConflictError):
                self._conflicted(outcome)
                again.append(i)  # a new case's key stays unconfirmed: the redo takes it over
            else:
                results[i] = (201, self._committed(plan, outcome[0], confirmed=True))
                committed[plan.sub.case_id] = plan.case
        # A case whose every planned event committed is cached where the batch left it.
        unsettled = {pending.subs[i][1].case_id for i in again} | pending.broken
        for case_id in committed.keys() - unsettled:
            self.cases.remember(committed[case_id])
        failed = set(again)
        again += [i for i, leaned in pending.leaned.items() if leaned & failed]
        pending.leaned.clear()  # settled: every refusal still in `results` stands
        for i in sorted([*again, *pending.deferred]):  # each afresh on what is committed now
            results[i] = self._submit_or_refuse(*pending.subs[i])

    def _conflicted(self, exc: ConflictError) -> None:
        """What a refused commit teaches: the log's latest time (`StaleTime`); a named agency
        gone (`AgencyGone`) is found again when the redo looks agencies up."""
        if isinstance(exc, StaleTime):
            self.time.saw(exc.latest)

    def _submit_or_refuse(self, principal: Principal, sub: Submission) -> Outcome:
        try:
            return self._submit(principal, sub)
        except LedgerError as exc:
            return exc

    def _submit(self, principal: Principal, sub: Submission) -> tuple[int, dict[str, Any]]:
        """Decide and record; a write that lost a race is decided again on the new state.

        Every check re-runs on each attempt, so the answer is the one the log order gives: an
        identical submission that won the race makes this a retry (200), a withdrawal that
        committed first makes a share a refusal (403), a revoked key a 422.
        """
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self._case_locks.held(sub.case_id):
                    outcome = self._decide(principal, sub, None)
                    assert not isinstance(outcome, int)  # only within a batch
                    if isinstance(outcome, _Planned):
                        return 201, self._commit(outcome)
                    return outcome
            except WriteConflict:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0, 0.002 * 2**attempt))  # noqa: S311 (jitter)
        raise AssertionError("unreachable")

    def _decide(
        self, principal: Principal, sub: Submission, pending: _Pending | None
    ) -> tuple[int, dict[str, Any]] | _Planned | int:
        """Steps 3 to 9 of the refusal order; a refusal raises. Returns the original answer
        of an identical retry, the planned commit of an accepted event, or (within a batch)
        the index of the earlier identical item.

        `pending` holds what earlier items of a batch decided but did not commit yet."""
        # 3-4. The case must be known to the caller's agency, and not erased.
        case = self._case_for(principal, sub, pending)
        # 5. An identical retry gets the original answer.
        if pending is not None:
            prior = pending.priors.get(sub.event_id)
        else:
            prior = self.store.find_event(sub.event_id)
        if prior is not None and hmac.compare_digest(prior.fingerprint, sub.fingerprint):
            return 200, self._answer(prior)
        earlier = None if pending is None else pending.events.get(sub.event_id)
        if earlier is not None and hmac.compare_digest(earlier[0], sub.fingerprint):
            return earlier[1]
        # (3.) A case.opened for a case id in use, by a related agency.
        if case is not None and sub.type == "case.opened":
            raise Conflict("the case is already open; use a new case_id for a new case")
        # 6. Origin, key, freshness, encodings, signature, digests.
        now = self.time.now()
        verify_integrity(
            sub,
            origin=self.origin,
            verify_key=self._verify_key_for(sub, pending),
            now=now,
            freshness_s=self.freshness_s,
        )
        # 7. Conflicts.
        if prior is not None or earlier is not None:
            raise Conflict("event_id is already recorded with other content; use a new event_id")
        # 8. Facts, attrs, the ids they name, and the agencies they name.
        validate_content(sub)
        state = None if case is None else case.state
        check_references(state, sub.type, sub.facts)
        named = named_agencies(sub.type, sub.facts)
        if named:
            check_named_agencies(sub.type, sub.facts, self._live_agencies(named, pending))
        # 9. Role, agency, append permission and consent gates.
        if principal.role not in APPEND_ROLES:
            raise Forbidden(f"a {principal.role} token cannot append events")
        if principal.agency != sub.agency:
            raise Forbidden("envelope.agency must be your token's agency")
        check_permission(
            state,
            sub.type,
            sub.facts,
            agency=sub.agency,
            role=principal.role,
            actor=principal.token_id,
        )
        if case is not None:
            check_consent_gate(
                case.state,
                sub.type,
                sub.facts,
                now,
                lambda: self._age_band(case, pending),
                agency=sub.agency,
            )
        return self._plan(principal, sub, case, now, pending)

    def _case_for(
        self, principal: Principal, sub: Submission, pending: _Pending | None
    ) -> Case | None:
        """Steps 3 and 4: the case, None for a `case.opened` with an unused id; 404 unless
        the caller's agency is related to it (decided from the relation before the case is
        loaded), 410 once it is erased."""
        if pending is not None and sub.case_id in pending.cases:
            case: Case | None = pending.cases[sub.case_id]  # planned earlier in the batch
        else:
            pair = (sub.case_id, principal.agency or "")
            if pending is not None:
                related = pair in pending.related
            else:
                related = principal.agency is not None and bool(self.store.related([pair]))
            if not related:
                if sub.type == "case.opened" and not self._exists(sub.case_id, pending):
                    return None  # an unused id: this opens the case
                raise NotFound("no such case for your agency")
            if pending is not None and sub.case_id in pending.loaded:
                # Taken, not shared: should this item be refused after it changed the case,
                # the next item of the case loads it afresh.
                case = pending.loaded.pop(sub.case_id)
            else:
                case = self.cases.load(sub.case_id)
        if case is None:  # related, so it had events: gone since (never without erasure)
            raise NotFound("no such case for your agency")
        self.access.check_visible(case.state, principal.agency)
        return case

    def _exists(self, case_id: str, pending: _Pending | None) -> bool:
        if pending is not None:
            return case_id in pending.existing
        return bool(self.store.case_versions([case_id]))

    def _live_agencies(self, names: Sequence[str], pending: _Pending | None) -> set[str]:
        """Those of the agencies that are registered, not removed, with a live key (within a
        batch, as looked up for all its items; the commit checks them again)."""
        if pending is None:
            return self.store.live_agencies(names)
        unknown = [n for n in names if n not in pending.agencies]
        if unknown:
            live = self.store.live_agencies(unknown)
            pending.agencies.update((n, n in live) for n in unknown)
        return {n for n in names if pending.agencies[n]}

    def _case_key(self, case_id: str, new: bool, pending: _Pending | None) -> bytes:
        """The key to seal with: a new case's is created (stored now, or by a batch before
        its commit), an existing case's read (once per batch)."""
        key: bytes | None
        if pending is None:
            key = self.keys.create(case_id) if new else self.keys.get(case_id)
        elif case_id in pending.data_keys:
            key = pending.data_keys[case_id]
        elif new:
            key = pending.new_keys[case_id] = crypto.new_data_key()
        else:
            key = self.keys.get(case_id)
        if key is None:
            raise Gone("the case's key was destroyed")
        if pending is not None:
            pending.data_keys[case_id] = key
        return key

    def _plan(
        self,
        principal: Principal,
        sub: Submission,
        case: Case | None,
        now: datetime,
        pending: _Pending | None,
    ) -> _Planned:
        """Seal the accepted event and build its commit (the case's key is created for a new
        case; the caller commits, or destroys that key if the commit is refused)."""
        case_id, event_id = sub.case_id, sub.event_id
        key = self._case_key(case_id, case is None, pending)
        sealed = seal_record(key, case_id, event_id, sub.canonical, sub.body["salt"])
        recorded_at = format_timestamp(now)
        record = {
            "envelope": sub.envelope,
            "signature": sub.body["signature"],
            "sealed": crypto.b64(sealed),
            "fingerprint": sub.fingerprint.hex(),
            "actor": principal.token_id,
            "role": principal.role,
            "recorded_at": recorded_at,
        }
        related_before = set() if case is None else set(case.state.related)
        if case is None:
            case = Case(record)
        else:
            case.append(record)
        relations = [(case_id, a) for a in sorted(case.state.related - related_before)]
        added = {
            "sealed_digest": crypto.b64(crypto.sha256(sealed)),
            "actor": principal.token_id,
            "role": principal.role,
            "recorded_at": recorded_at,
        }
        entry = jcs(
            {"kind": "event", "envelope": sub.envelope, "signature": sub.body["signature"], **added}
        )
        extra: dict[str, Any] = {}
        erasures = []
        if sub.type == "case.erased":
            # Everyone who received or read data about the case, to be told of the erasure.
            readers = self.store.case_readers(case_id)
            extra["notify"] = sorted((case.state.named | readers) - {sub.agency})
            erasures.append(ErasureRow(case_id, event_id, 0, recorded_at))
        stored_events, snapshots = self.cases.stored_changes(case)
        commit = Commit(
            stored_events=stored_events,
            snapshots=snapshots,
            entries=[NewEntry("event", entry, leaf_hash(entry), case_id, sub.agency)],
            events=[EventRow(event_id, case_id, case.version, sub.fingerprint, 0, extra)],
            erasures=erasures,
            # The case must still be at the version this was decided on: in a batch, an
            # earlier item of the case refused at commit refuses this one too, and a case
            # loaded ahead of the store (never) would conflict instead of leaving a gap.
            case_version=(case_id, case.version - 1),
            signing_key=sub.envelope["key"],
            relations=relations,
            recorded_at=recorded_at,
            named_agencies=named_agencies(sub.type, sub.facts),
        )
        return _Planned(sub, case, case.version, record, commit, leaf_hash(entry), added, extra)

    def _commit(self, plan: _Planned) -> dict[str, Any]:
        try:
            (position,) = self.store.append(plan.commit)
        except ConflictError as exc:
            # A new case's key stays, unconfirmed: a concurrent `case.opened` of the same case
            # may share it and have committed with it (KeyStore.create); `recover()` deletes
            # it once it is old and no case was committed with it.
            self._conflicted(exc)
            raise WriteConflict("concurrent submissions to this case; retry") from exc
        self.cases.remember(plan.case)
        return self._committed(plan, position)

    def _committed(self, plan: _Planned, position: int, confirmed: bool = False) -> dict[str, Any]:
        """After the commit: confirm a new case's key (unless `confirmed` already), log, finish
        an erasure; the answer."""
        sub, case_id, version, extra = plan.sub, plan.sub.case_id, plan.version, plan.extra
        if version == 1 and not confirmed:
            self.keys.confirm(case_id)
        log.info(
            "event recorded type=%s case=%s index=%d version=%d",
            sub.type,
            case_id,
            position,
            version,
        )
        if plan.commit.erasures:
            extra = self.finish_erasure(case_id)
        return {
            "event_id": sub.event_id,
            "case_id": case_id,
            "index": position,
            "case_version": version,
            "leaf_hash": crypto.b64(plan.leaf),
            "entry": plan.added,
            **extra,
        }

    # -- erasure -------------------------------------------------------------------------------

    def finish_erasure(self, case_id: str) -> dict[str, Any]:
        """After the `case.erased` commit: destroy the key, then sign the receipt (idempotent).

        Returns the answer's extra members. A failure here leaves the case erased (nothing
        unseals it) and is finished by `recover()`, which the server runs every minute.
        """
        erasure = self.store.erasure(case_id)
        assert erasure is not None
        recorded = self.store.find_event(erasure.event_id)
        extra: dict[str, Any] = dict(recorded.extra) if recorded else {}
        try:
            if not erasure.key_destroyed:
                self.keys.destroy(case_id)
                self.store.drop_receipt_codes(case_id)  # they lead nowhere any more
                self.store.mark_key_destroyed(case_id)
                log.info("case key destroyed case=%s", case_id)
            if erasure.receipt is None and self.receipt_key is not None:
                checkpoint = self.log.sign_checkpoint()
                receipt = ErasureReceipt(
                    self.origin,
                    case_id,
                    erasure.position,
                    erasure.erased_at,
                    checkpoint.size,
                    checkpoint.root,
                ).sign(self.receipt_key)
                # The first receipt stored is the receipt (a concurrent recover() may race).
                answer = {**extra, "receipt": receipt}
                extra["receipt"] = self.store.set_receipt(case_id, receipt, answer)
        except Exception as exc:
            log.error(
                "erasure of case=%s not finished (%s); recover() finishes it",
                case_id,
                type(exc).__name__,
            )
        return extra

    def recover(self, orphan_age_s: int = 900, erasure_age_s: int = 0) -> int:
        """Finish what a crash or a failure interrupted: erasures whose key or receipt is
        pending (committed at least `erasure_age_s` ago: a younger one may still be finishing
        in its own request), and keys of new cases whose `case.opened` never committed.
        Returns how many were pending. Run at start-up and then periodically (`Recoverer`)."""
        erased_before = format_timestamp(self.clock() - timedelta(seconds=erasure_age_s))
        pending = [
            e
            for e in self.store.unfinished_erasures()
            if erasure_age_s == 0 or e.erased_at < erased_before
        ]
        for erasure in pending:
            self.finish_erasure(erasure.case_id)
        cutoff = format_timestamp(self.clock() - timedelta(seconds=orphan_age_s))
        orphans = 0
        for case_id, wrapped in self.keys.table.unconfirmed(cutoff):
            if self.cases.load(case_id) is None:
                # Compare-and-set: a key taken over since by a new `case.opened` stays.
                orphans += self.keys.discard_unconfirmed(case_id, wrapped)
            else:
                self.keys.confirm(case_id)
        return len(pending) + orphans

    def erasure_receipt(self, principal: Principal, case_id: str) -> str:
        """The signed erasure receipt, for staff of related agencies, auditors and admins."""
        # A monitor token reads statistics only, whatever agency it was issued with.
        staff_of_related = (
            principal.role in APPEND_ROLES
            and principal.agency is not None
            and is_uuid4(case_id)
            and bool(self.store.related([(case_id, principal.agency)]))
        )
        if principal.role not in ("auditor", "admin") and not staff_of_related:
            raise NotFound("no such case for your agency")
        erasure = self.store.erasure(case_id) if is_uuid4(case_id) else None
        if erasure is None:
            if not staff_of_related and (not is_uuid4(case_id) or self.cases.load(case_id) is None):
                raise NotFound("no such case for your agency")
            raise NotFound("the case is not erased")
        if erasure.receipt is None:
            self.finish_erasure(case_id)
            erasure = self.store.erasure(case_id)
        if erasure is None or erasure.receipt is None:
            raise Conflict("the receipt is not signed yet; retry shortly")
        return erasure.receipt

    # -- reads ---------------------------------------------------------------------------------

    def live_case(self, case_id: str) -> tuple[Case, bytes, list[dict[str, Any]]] | None:
        """A case that is neither erased nor shredded, with its key and records: for the
        server's own aggregate uses (statistics releases, exports). None otherwise."""
        case = self.cases.load(case_id)
        if case is None or case.state.erased:
            return None
        key = self.keys.get(case_id)
        if key is None:
            return None
        return case, key, self.cases.records(case)

    def _age_band(self, case: Case, pending: _Pending | None) -> str | None:
        """The latest assessed age band (sealed), for the assent exemption; within a batch
        from its own keys and records first (a new case's key is not stored yet)."""
        if pending is None or case.state.age_version == 0:
            return self.access.age_band(case)
        case_id = case.state.case_id
        key = pending.data_keys.get(case_id) or self.keys.get(case_id)
        if key is None:
            return None
        at = (case_id, case.state.age_version)
        record = pending.records.get(at) or self.cases.record_at(case, case.state.age_version)
        return str(unseal_item(key, case_id, record, "attrs").get("age_band"))

    def read_case(self, principal: Principal, case_id: str) -> dict[str, Any]:
        """Unseal what the caller's agency may see, and log the read as an access entry
        (`CaseAccess.read`: never past a change committed before the entry)."""
        if principal.role not in APPEND_ROLES:
            raise Forbidden(f"a {principal.role} token cannot read case data")
        agency = principal.agency
        assert agency is not None

        def build(case: Case, now: datetime) -> Unsealed[dict[str, Any]]:
            state = case.state
            allowed = readable_categories(state, agency, now, partial(self.access.age_band, case))
            key = self.access.key(case_id)
            attrs: dict[str, Any] = {}
            payload: dict[str, Any] = {}
            categories = CATEGORIES if allowed is None else sorted(allowed)
            for record in self.cases.records(case):
                etype = record["envelope"]["type"]
                wanted = [*categories, "attrs"] if etype in AGE_EVENTS else categories
                opened = unseal_items(key, case_id, record, wanted)
                if etype == "case.opened":
                    attrs.update(opened["attrs"])
                elif etype == "age.assessed":
                    attrs["age_band"] = opened["attrs"]["age_band"]
                for category in categories:
                    if opened[category] is not None:
                        payload[category] = opened[category]
            payload = {c: payload[c] for c in CATEGORIES if c in payload}
            answer = {
                "case_id": case_id,
                "status": "closed" if state.closed else "open",
                "facts": {"minor": state.minor},
                "attrs": attrs,
                "payload": payload,
            }
            return Unsealed(answer, list(payload))

        return self.access.read(principal, case_id, build)


class Recoverer(Background):
    """Runs `Ledger.recover()` every `interval_s` seconds in a daemon thread, so an erasure
    whose key destruction failed (the key store briefly unreachable, say) is finished while the
    server runs, not at its next start, and orphaned keys of failed new cases do not pile up."""

    name = "recoverer"

    def __init__(self, ledger: Ledger, interval_s: float = 60.0, erasure_age_s: int = 60) -> None:
        super().__init__()
        self.ledger, self.interval_s, self.erasure_age_s = ledger, interval_s, erasure_age_s

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                finished = self.ledger.recover(erasure_age_s=self.erasure_age_s)
                if finished:
                    log.info("recovered %d interrupted erasure(s) or orphaned key(s)", finished)
            except Exception as exc:  # try again next round; say what failed, not the data
                log.error("recoverer: %s", type(exc).__name__)
