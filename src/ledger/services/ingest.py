"""Ingest: a submission parsed (step 2), decided in the contract's refusal order (steps 3 to
9), planned (sealed, with its commit) and committed; several at once as one batch."""

from __future__ import annotations

import hmac
import json
import logging
import random
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ledger.concurrency import WRITE_ATTEMPTS, GroupCommit, KeyedLocks
from ledger.contract import crypto
from ledger.contract.canonical import jcs
from ledger.contract.case import Case, Cases
from ledger.contract.entries import ENTRY_ADDED
from ledger.contract.envelope import (
    Submission,
    validate_content,
    verify_integrity,
)
from ledger.contract.gates import (
    check_consent_gate,
    check_named_agencies,
    check_permission,
    check_references,
    named_agencies,
)
from ledger.contract.intake import check_consent_can_count, check_times
from ledger.contract.notices import check_acknowledgement, default_due
from ledger.contract.roles import AGENCY_ROLES
from ledger.contract.sealing import seal_record
from ledger.contract.vocabulary import format_timestamp, parse_timestamp
from ledger.errors import (
    Conflict,
    Forbidden,
    LedgerError,
    NotFound,
    WriteConflict,
    failure_site,
)
from ledger.log.merkle import leaf_hash
from ledger.services.access import CaseAccess
from ledger.services.erasure import Erasures
from ledger.services.keystore import KeyStore
from ledger.services.logtime import LogTime
from ledger.services.lookups import BatchLookups, Lookups, Planned
from ledger.services.notices import acks_of, outbox_of
from ledger.services.registry import Registry
from ledger.services.submissions import Incoming, Outcome, answer_of, parse, parse_batch
from ledger.services.tokens import Principal
from ledger.storage.base import (
    Commit,
    ConflictError,
    ErasureRow,
    EventRow,
    NewEntry,
    RecordedEvent,
    StaleTime,
    Store,
)

log = logging.getLogger("ledger")


def filled(sub: Submission) -> dict[str, Any]:
    """What the ledger reads a null attr of the event as, for its answer: a referral's
    `due_by` (`notices.default_due`). Worked out from the submission again for each answer,
    never stored (it would tell a sealed attr's value at rest)."""
    attrs = sub.attrs
    if sub.type != "referral.made" or attrs.get("due_by", "") is not None:
        return {}
    signed_at = parse_timestamp(sub.envelope["signed_at"])
    due = default_due(attrs["component"], attrs["urgency"], signed_at)
    return {"filled": {"due_by": format_timestamp(due)}}


class Ingest:
    """Submissions decided in the contract's refusal order and recorded: alone, or several
    arriving together as one batch (one look-up, one transaction)."""

    def __init__(
        self,
        store: Store,
        keys: KeyStore,
        cases: Cases,
        access: CaseAccess,
        registry: Registry,
        erasures: Erasures,
        time: LogTime,
        *,
        origin: str,
        freshness_s: int,
        locks: KeyedLocks,
    ) -> None:
        self.store, self.keys, self.cases, self.access = store, keys, cases, access
        self.registry, self.erasures, self.time = registry, erasures, time
        self.origin, self.freshness_s, self.locks = origin, freshness_s, locks
        # Threads submitting at once share one `submit_many` (the API groups its own callers).
        self.group: GroupCommit[Incoming, tuple[int, dict[str, Any]]] = GroupCommit(
            self.submit_many
        )

    def submit(self, principal: Principal, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Check a submission in the contract's refusal order, then record it.

        Returns (201, answer) for a new event, (200, original answer) for an identical retry;
        a refusal raises. Threads submitting at once share one `submit_many` (`group`).
        """
        return self.group.submit(Incoming(principal, raw))

    def submit_batch(self, principal: Principal, raw: bytes) -> list[tuple[int, dict[str, Any]]]:
        """Up to 1,000 submissions, each accepted or refused on its own, answers in order."""
        items = parse_batch(raw)
        return [answer_of(o) for o in self.submit_many([Incoming(principal, i) for i in items])]

    def submit_many(self, items: Sequence[Incoming]) -> list[Outcome]:
        """Single submissions that arrived together, each answered (or refused) exactly as if
        they had come one after another in this order: parsed (step 2), then a lone one
        decided on its own (its look-ups are its case's), several as one batch (`_run_batch`:
        one look-up and one transaction for all)."""
        # 2. Well-formed JSON with exactly the contract's members.
        subs = [(item.caller, parse(item.body)) for item in items]
        if len(subs) == 1:
            principal, sub = subs[0]
            return [sub if isinstance(sub, LedgerError) else self._submit_or_refuse(principal, sub)]
        return self._run_batch(subs)

    # -- a batch -------------------------------------------------------------------------------

    def _look_up(self, items: Sequence[tuple[Principal, Submission | LedgerError]]) -> BatchLookups:
        return BatchLookups(self.store, self.keys, self.cases, self.registry, self.access, items)

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
        batch = self._look_up(())
        try:
            batch = self._look_up(items)
            for i, (principal, sub) in enumerate(items):
                if isinstance(sub, Submission) and sub.case_id in batch.broken:
                    batch.subs[i] = (principal, sub)
                    batch.deferred.append(i)
                    continue
                try:
                    if isinstance(sub, LedgerError):
                        raise sub
                    if sub.type == "case.erased":  # its key destruction follows its commit
                        self._commit_batch(batch, results)
                        batch = self._look_up(())  # committed: none of it may be again
                        results[i] = self._submit_or_refuse(principal, sub)
                        batch = self._look_up(items[i + 1 :])  # the items after it: afresh
                        continue
                    outcome = self._decide(principal, sub, batch)
                except LedgerError as exc:
                    results[i] = exc
                    if isinstance(sub, Submission) and (leaned := batch.leaned_on(sub)):
                        batch.subs[i] = (principal, sub)
                        batch.leaned[i] = leaned
                    continue
                except Exception as exc:  # not a refusal: this item's failure alone
                    log.error(
                        "a submission failed: %s at %s", type(exc).__name__, failure_site(exc)
                    )
                    results[i] = exc
                    if isinstance(sub, Submission):  # its case's working copy may hold it
                        batch.broken.add(sub.case_id)
                    continue
                if isinstance(outcome, Planned):
                    batch.add(i, principal, outcome)
                elif isinstance(outcome, int):
                    same_as[i] = outcome
                else:
                    results[i] = outcome
            self._commit_batch(batch, results)
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
                if result is None or i in batch.leaned:
                    results[i] = exc
        return [r for r in results if r is not None]

    def _commit_batch(self, batch: BatchLookups, results: list[Outcome | None]) -> None:
        """Commit the planned items; then decide again, alone and in batch order, those whose
        commit lost a race, the refusals that leaned on an item that did not commit, and the
        items deferred behind a failure."""
        if not batch.plans and not batch.deferred:
            return
        # New cases' keys first, in one transaction, before any event sealed with them; a case
        # that has a key already (opened concurrently, or a crash's leftover) is redone alone.
        stored = self.keys.create_many(batch.new_keys) if batch.new_keys else set()
        lost = set(batch.new_keys) - stored
        plans = [(i, p) for i, p in batch.plans if p.sub.case_id not in lost]
        outcomes = self.store.append_group([plan.commit for _, plan in plans]) if plans else []
        again = [i for i, p in batch.plans if p.sub.case_id in lost]
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
        unsettled = {batch.subs[i][1].case_id for i in again} | batch.broken
        for case_id in committed.keys() - unsettled:
            self.cases.remember(committed[case_id])
        failed = set(again)
        again += [i for i, leaned in batch.leaned.items() if leaned & failed]
        batch.leaned.clear()  # settled: every refusal still in `results` stands
        for i in sorted([*again, *batch.deferred]):  # each afresh on what is committed now
            results[i] = self._submit_or_refuse(*batch.subs[i])

    # -- one submission ------------------------------------------------------------------------

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
        looks = Lookups(self.store, self.keys, self.cases, self.registry, self.access)
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self.locks.held(sub.case_id):
                    outcome = self._decide(principal, sub, looks)
                    assert not isinstance(outcome, int)  # only within a batch
                    if isinstance(outcome, Planned):
                        return 201, self._commit(outcome)
                    return outcome
            except WriteConflict:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0, 0.002 * 2**attempt))  # noqa: S311 (jitter)
        raise AssertionError("unreachable")

    def _decide(
        self, principal: Principal, sub: Submission, looks: Lookups
    ) -> tuple[int, dict[str, Any]] | Planned | int:
        """Steps 3 to 9 of the refusal order; a refusal raises. Returns the original answer
        of an identical retry, the planned commit of an accepted event, or (within a batch)
        the index of the earlier identical item."""
        # 3-4. The case must be known to the caller's agency, and not erased.
        case = self._case_for(principal, sub, looks)
        # 5. An identical retry gets the original answer.
        prior = looks.prior(sub.event_id)
        if prior is not None and hmac.compare_digest(prior.fingerprint, sub.fingerprint):
            return 200, {**self._answer(prior), **filled(sub)}
        earlier = looks.earlier(sub.event_id)
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
            verify_key=looks.verify_key(sub.agency, sub.envelope["key"]),
            now=now,
            freshness_s=self.freshness_s,
        )
        # 7. Conflicts.
        if prior is not None or earlier is not None:
            raise Conflict("event_id is already recorded with other content; use a new event_id")
        # 8. Facts, attrs, the ids they name, and the agencies they name.
        validate_content(sub)
        check_times(sub.type, sub.facts, sub.attrs, now)  # (v1.5)
        state = None if case is None else case.state
        check_references(state, sub.type, sub.facts)
        named = named_agencies(sub.type, sub.facts)
        if named:
            check_named_agencies(sub.type, sub.facts, looks.live_agencies(named))
        # 9. Role, agency, append permission and consent gates.
        if principal.role not in AGENCY_ROLES:
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
        check_consent_can_count(state, sub.type, sub.facts)  # (v1.5)
        if case is not None and sub.type == "notice.acknowledged":
            told = self.store.was_told(
                sub.case_id, sub.facts["position"], sub.agency, sub.facts["kind"]
            )
            check_acknowledgement(case.state, sub.facts, sub.agency, told)
        if case is not None:
            check_consent_gate(
                case.state,
                sub.type,
                sub.facts,
                now,
                lambda: looks.age_band(case),
                agency=sub.agency,
            )
        return self._plan(principal, sub, case, now, looks)

    def _case_for(self, principal: Principal, sub: Submission, looks: Lookups) -> Case | None:
        """Steps 3 and 4: the case, None for a `case.opened` with an unused id; 404 unless
        the caller's agency is related to it (decided from the relation before the case is
        loaded), 410 once it is erased."""
        case = looks.planned(sub.case_id)  # planned earlier in the batch
        if case is None:
            if not looks.related(sub.case_id, principal.agency):
                if sub.type == "case.opened" and not looks.exists(sub.case_id):
                    return None  # an unused id: this opens the case
                raise NotFound("no such case for your agency")
            case = looks.load(sub.case_id)
        if case is None:  # related, so it had events: gone since (never without erasure)
            raise NotFound("no such case for your agency")
        if sub.type == "notice.acknowledged" and case.state.erased:
            # The one event an erased case takes: a recipient confirming what it did.
            if principal.agency not in case.state.related:
                raise NotFound("no such case for your agency")
            return case
        self.access.check_visible(case.state, principal.agency)
        return case

    def _plan(
        self,
        principal: Principal,
        sub: Submission,
        case: Case | None,
        now: datetime,
        looks: Lookups,
    ) -> Planned:
        """Seal the accepted event and build its commit (the case's key is created for a new
        case; the caller commits, or destroys that key if the commit is refused)."""
        case_id, event_id = sub.case_id, sub.event_id
        if case is not None and case.state.erased:  # an acknowledgement (nothing personal)
            key = crypto.new_data_key()  # sealed under a key never kept: the case has none
        else:
            key = looks.case_key(case_id, case is None)
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
        outbox = outbox_of(case, sub, key, extra.get("notify", ()), self.cases)
        stored_events, snapshots = self.cases.stored_changes(case)
        commit = Commit(
            stored_events=stored_events,
            snapshots=snapshots,
            entries=[NewEntry("event", entry, leaf_hash(entry), case_id, sub.agency)],
            events=[EventRow(event_id, case_id, case.version, sub.fingerprint, 0, extra)],
            erasures=erasures,
            notices=outbox[0],
            timers=outbox[1],
            acks=acks_of(sub.type, sub.facts, sub.agency),
            # The case must still be at the version this was decided on: in a batch, an
            # earlier item of the case refused at commit refuses this one too, and a case
            # loaded ahead of the store (never) would conflict instead of leaving a gap.
            case_version=(case_id, case.version - 1),
            signing_key=sub.envelope["key"],
            relations=relations,
            recorded_at=recorded_at,
            named_agencies=named_agencies(sub.type, sub.facts),
        )
        return Planned(sub, case, case.version, record, commit, leaf_hash(entry), added, extra)

    def _commit(self, plan: Planned) -> dict[str, Any]:
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

    def _committed(self, plan: Planned, position: int, confirmed: bool = False) -> dict[str, Any]:
        """After the commit: confirm a new case's key (unless `confirmed` already), log, finish
        an erasure; the answer."""
        sub, case_id, version, extra = plan.sub, plan.sub.case_id, plan.version, plan.extra
        if version == 1 and not confirmed:
            self.keys.confirm(case_id)
        log.info("event recorded type=%s case=%s index=%d version=%d",
                 sub.type, case_id, position, version)  # fmt: skip
        if plan.commit.erasures:
            extra = self.erasures.finish(case_id)
        return {
            "event_id": sub.event_id,
            "case_id": case_id,
            "index": position,
            "case_version": version,
            "leaf_hash": crypto.b64(plan.leaf),
            "entry": plan.added,
            **extra,
            **filled(sub),
        }

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
