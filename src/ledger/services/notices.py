"""Notices: the outbox rows of an accepted event (recorded in its own transaction), and the
notices an agency reads (`GET /v1/notices`) or a case's holder sees per recipient
(`GET /v1/cases/{id}/notices`). A notice carries no personal data: its kind, the case id,
the event's log position, the id it concerns and what the recipient is asked to do; the
recipient reads anything more with its own token, under the usual gates."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ledger.concurrency import Background
from ledger.contract.case import Case, Cases
from ledger.contract.envelope import Submission
from ledger.contract.gates import CaseState
from ledger.contract.notices import (
    ACKNOWLEDGED,
    ASKS,
    HEALTH_COMPONENT,
    notices_of,
    referral_due,
    told_when_due,
)
from ledger.contract.sealing import unseal_item
from ledger.contract.vocabulary import format_timestamp, parse_timestamp
from ledger.errors import BadRequest
from ledger.services.access import CaseAccess, staff_agency
from ledger.services.tokens import Principal
from ledger.storage.base import Store
from ledger.storage.outbox import AckRow, NoticeRow, StoredNotice, TimerRow

log = logging.getLogger("ledger.notices")

PAGE = 100  # notices in one answer at most


def notice_rows(
    state: CaseState, etype: str, facts: Mapping[str, Any], agency: str, notify: Sequence[str]
) -> list[NoticeRow]:
    """The outbox rows of an event (at `Commit.entries[0]`), from the state it leaves."""
    return [
        NoticeRow(n.agency, n.kind, state.case_id, n.subject, 0)
        for n in notices_of(state, etype, facts, agency, notify)
    ]


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def outbox_of(
    case: Case, sub: Submission, key: bytes, notify: Sequence[str], cases: Cases
) -> tuple[list[NoticeRow], list[TimerRow]]:
    """An accepted event's notices now, and the timers for those its time will make: a
    consent's expiry, a referral's due time (for health referrals, at the latest 24 h after
    the identification day, as the referral board computes it)."""
    notices = notice_rows(case.state, sub.type, sub.facts, sub.agency, notify)
    timers: list[TimerRow] = []
    if sub.type == "consent.granted" and sub.facts["expires_at"] is not None:
        due = parse_timestamp(sub.facts["expires_at"])
        timers.append(
            TimerRow(
                "consent.expired", case.state.case_id, sub.facts["consent_id"], 0, epoch_ms(due)
            )
        )
    elif sub.type == "referral.made":
        identified_at = None
        if sub.attrs.get("component") == HEALTH_COMPONENT:
            try:
                first = cases.record_at(case, 1)
            except ValueError:  # opened in the same batch, not stored yet: its due_by only
                first = None
            if first is not None:
                opened = unseal_item(key, case.state.case_id, first, "attrs")
                identified_at = opened["identified_at"]
        due = referral_due(sub.attrs, sub.envelope["signed_at"], identified_at)
        timers.append(
            TimerRow(
                "referral.overdue", case.state.case_id, sub.facts["referral_id"], 0, epoch_ms(due)
            )
        )
    return notices, timers


def acks_of(etype: str, facts: Mapping[str, Any], agency: str) -> list[AckRow]:
    """The notice a `notice.acknowledged` answers, to index with it."""
    if etype != "notice.acknowledged":
        return []
    return [AckRow(facts["position"], agency, facts["kind"], facts["action"])]


def shown(notice: StoredNotice) -> dict[str, Any]:
    return {
        "seq": notice.seq,
        "kind": notice.kind,
        "case_id": notice.case_id,
        "position": notice.position,
        "subject": notice.subject,
        "ask": ASKS[notice.kind],
        "acknowledge": notice.kind in ACKNOWLEDGED,
        "created_at": notice.created_at,
        "acknowledged": notice.acknowledged,
    }


class Notices:
    """What the ledger told, and whom."""

    def __init__(self, store: Store, access: CaseAccess) -> None:
        self.store, self.access = store, access

    def for_agency(self, principal: Principal, after: int = 0, limit: int = PAGE) -> dict[str, Any]:
        """The caller's agency's own notices after `after` (a `seq`), oldest first; `next`
        is the cursor for the following page (the last `seq` here, or `after` if none)."""
        agency = staff_agency(principal)
        if after < 0 or not 1 <= limit <= PAGE:
            raise BadRequest(f"after must be 0 or more and limit between 1 and {PAGE}")
        found = self.store.notices(agency, after, limit)
        return {"notices": [shown(n) for n in found], "next": found[-1].seq if found else after}

    def of_case(self, principal: Principal, case_id: str) -> dict[str, Any]:
        """Every notice about a case, with its recipient and whether it was delivered to an
        endpoint of the recipient and (withdrawals, erasures) acknowledged in the log: for
        the agency holding it, also once it is erased (nothing in it is personal)."""
        self.access.holder_only(
            principal, case_id, "a case's notices are for the agency holding it", erased_ok=True
        )
        delivered: dict[int, str] = {}
        for d in self.store.case_deliveries(case_id):
            if d.outcome == "delivered":
                delivered.setdefault(d.notice.seq, d.at)
        told = [
            {
                **shown(n),
                "agency": n.agency,
                "delivered_at": delivered.get(n.seq),
                "acknowledged_at": n.acknowledged_at,
            }
            for n in self.store.case_notices(case_id)
        ]
        return {"case_id": case_id, "notices": told, "recipients": recipients_of(told)}


def recipients_of(told: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipient: how many notices told it, how many reached an endpoint of its, and of
    those it must acknowledge, how many it has and which are awaited (by log position)."""
    out: dict[str, dict[str, Any]] = {}
    for n in told:
        r = out.setdefault(
            n["agency"],
            {"agency": n["agency"], "told": 0, "delivered": 0, "acknowledged": 0, "awaiting": []},
        )
        r["told"] += 1
        r["delivered"] += n["delivered_at"] is not None
        if n["acknowledge"]:
            if n["acknowledged"] is None:
                r["awaiting"].append(n["position"])
            else:
                r["acknowledged"] += 1
    return sorted(out.values(), key=lambda r: r["agency"])


class Timers:
    """Makes the time-based notices when their time comes: each timer once (a timer fired
    is dropped in the transaction that records its notices; two processes firing one timer
    record its notices once, by the notices' unique key)."""

    def __init__(self, store: Store, cases: Cases, now: Callable[[], datetime]) -> None:
        self.store, self.cases, self.now = store, cases, now

    def fire_due(self) -> int:
        """Fire every timer due now; the number of notices made."""
        made = 0
        while True:
            now = self.now()
            due = self.store.due_timers(epoch_ms(now))
            for timer in due:
                case = self.cases.load(timer.case_id)
                told = [] if case is None else told_when_due(case.state, timer.kind, timer.subject)
                rows = [NoticeRow(n.agency, n.kind, timer.case_id, n.subject, 0) for n in told]
                made += self.store.fire_timer(timer, rows, format_timestamp(now))
            if len(due) < 100:
                return made


class TimerLoop(Background):
    """`Timers.fire_due` every `interval_s` seconds, in the API process (embedded) or in
    `ledger worker`."""

    name = "notice-timers"

    def __init__(self, timers: Timers, interval_s: float = 5.0) -> None:
        super().__init__()
        self.timers, self.interval_s = timers, interval_s

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                made = self.timers.fire_due()
                if made:
                    log.info("time-based notices made: %d", made)
            except Exception:
                log.exception("time-based notices failed; retrying")
            self.stopping.wait(self.interval_s)
