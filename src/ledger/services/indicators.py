"""The guideline indicators an agency's supervisors decide from: celerity (principle XI),
referrals by component and outcome, consents and cases by month.

Most of what they count is sealed: the day of identification, a referral's component, due
time and decline reason are `attrs`. They are unsealed here, in the ledger's memory, into an
index of coded values (never age, gender, exploitation, language, ratings or payload) that
follows the log, and is never written anywhere: the database and its backups stay as sealed
as before, an erasure drops the case from the index at once, and a dashboard query reads only
the index, never the log. Each process builds its index once from the stored events (what a
projection rebuild costs), then reads only what the log gained since its last query.

Definitions, stated once (the dashboard and the tests use these):
- a case counts for the months it was *identified* in (its `identified_at`, a date) and for the
  agency that opened it;
- its first care is its first `health_psychosocial` referral *made* (whatever its answer);
  in time when made by 24 h after the end of the identification day (`health_deadline`);
  the time to first care is measured from the end of that day, 0 when made on it;
- a referral is the referring agency's (`made`) or the recipient's (`received`), counted in
  the month it was made; its outcome is its status now; its time to answer runs to its first
  answer (accepted or declined); overdue now: still open (pending or accepted, not completed)
  past its due time, a health referral's due time being at most the health deadline;
- a consent is the agency's that recorded it: granted in the month of its grant, withdrawn in
  the month of its withdrawal, expired in the month its `expires_at` passed, unless withdrawn
  before.
"""

from __future__ import annotations

import json
import statistics
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ledger.contract.case import Cases
from ledger.contract.notices import HEALTH_COMPONENT, OPEN_REFERRAL, health_deadline
from ledger.contract.sealing import unseal_item
from ledger.contract.vocabulary import COMPONENTS, DECLINE_REASONS, format_timestamp
from ledger.errors import BadRequest, Forbidden
from ledger.services.keystore import KeyStore
from ledger.services.tokens import Principal
from ledger.storage.base import Store

STATUSES = ("pending", "accepted", "declined", "completed")
PAGE = 5000  # log entries read at a time
CASES_AT_ONCE = 400  # cases whose new records are read in one query
Direction = Literal["made", "received"]


@dataclass(slots=True)
class CaseFigures:
    holder: str  # the agency that opened it
    identified_on: str | None  # YYYY-MM-DD (None: its key is gone)
    opened_at: datetime
    closed_at: datetime | None = None
    version: int = 0  # the last record applied
    referrals: dict[str, ReferralFigures] = field(default_factory=dict)
    consents: dict[str, ConsentFigures] = field(default_factory=dict)


@dataclass(slots=True)
class ReferralFigures:
    case_id: str
    made_by: str
    to: str
    component: str | None
    made_at: datetime
    due_at: datetime | None
    status: str = "pending"
    answered_at: datetime | None = None
    reason: str | None = None  # a decline's reason category


@dataclass(slots=True)
class ConsentFigures:
    agency: str
    granted_at: datetime
    expires_at: datetime | None
    withdrawn_at: datetime | None = None


@dataclass
class Index:
    seen: int = 0  # log entries read
    cases: dict[str, CaseFigures] = field(default_factory=dict)


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def month(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


def months(start: str, end: str) -> list[str]:
    """Every month from start to end (YYYY-MM), both included."""
    year, mon = int(start[:4]), int(start[5:])
    out = []
    while f"{year:04d}-{mon:02d}" <= end:
        out.append(f"{year:04d}-{mon:02d}")
        year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return out


def hours(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 2)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


class Indicators:
    """The in-memory index and the figures computed from it."""

    def __init__(self, store: Store, cases: Cases, keys: KeyStore, clock: Any) -> None:
        self.store, self.cases, self.keys, self.clock = store, cases, keys, clock
        self._index = Index()
        self._lock = threading.Lock()

    # -- following the log -------------------------------------------------------------

    def catch_up(self) -> int:
        """Read what the log gained since the last call; returns the entries read."""
        with self._lock:
            index, size, read = self._index, self.store.log_size(), 0
            while index.seen < size:
                rows = self.store.entries(index.seen, min(index.seen + PAGE, size))
                if not rows:
                    break
                changed: dict[str, None] = {}
                erased: set[str] = set()
                for _, raw in rows:
                    entry = json.loads(raw)
                    if entry.get("kind") != "event":
                        continue
                    case_id = entry["envelope"]["case_id"]
                    if entry["envelope"]["type"] == "case.erased":
                        erased.add(case_id)
                    changed[case_id] = None
                self._apply(index, [c for c in changed if c not in erased])
                for case_id in erased:
                    index.cases.pop(case_id, None)  # gone from every figure at once
                read += len(rows)
                index.seen = rows[-1][0] + 1
            return read

    def _apply(self, index: Index, case_ids: list[str]) -> None:
        for start in range(0, len(case_ids), CASES_AT_ONCE):
            chunk = case_ids[start : start + CASES_AT_ONCE]
            keys = self.keys.get_many(chunk)
            seen = [(c, index.cases[c].version if c in index.cases else 0) for c in chunk]
            for case_id, records in self.cases.records_after(seen).items():
                for record in records:
                    self._record(index, case_id, record, keys.get(case_id))

    def _record(
        self, index: Index, case_id: str, record: dict[str, Any], key: bytes | None
    ) -> None:
        env, at = record["envelope"], moment(record["recorded_at"])
        etype, facts = env["type"], env["facts"]

        def attrs() -> dict[str, Any]:
            return unseal_item(key, case_id, record, "attrs") if key is not None else {}

        case = index.cases.get(case_id)
        if etype == "case.opened":
            case = index.cases[case_id] = CaseFigures(
                env["agency"], attrs().get("identified_at"), at
            )
        if case is None:
            return  # not opened (never: a case's first record opens it)
        case.version += 1
        if etype == "case.closed":
            case.closed_at = at
        elif etype == "referral.made":
            sealed = attrs()
            due = moment(sealed["due_by"]) if "due_by" in sealed else None
            if sealed.get("component") == HEALTH_COMPONENT and case.identified_on and due:
                due = min(due, health_deadline(case.identified_on))
            case.referrals[facts["referral_id"]] = ReferralFigures(
                case_id, env["agency"], facts["to"], sealed.get("component"), at, due
            )
        elif etype in ("referral.accepted", "referral.declined", "referral.completed"):
            referral = case.referrals.get(facts["referral_id"])
            if referral is not None:
                referral.status = etype.removeprefix("referral.")
                if etype != "referral.completed" and referral.answered_at is None:
                    referral.answered_at = at
                if etype == "referral.declined":
                    referral.reason = attrs().get("reason")
        elif etype == "consent.granted":
            expires = facts.get("expires_at")
            case.consents[facts["consent_id"]] = ConsentFigures(
                env["agency"], at, moment(expires) if expires else None
            )
        elif etype == "consent.withdrawn":
            consent = case.consents.get(facts["consent_id"])
            if consent is not None and consent.withdrawn_at is None:
                consent.withdrawn_at = at

    # -- the figures -------------------------------------------------------------------

    def figures(
        self,
        principal: Principal,
        agency: str,
        start: str | None = None,
        end: str | None = None,
        component: str | None = None,
        direction: Direction = "made",
    ) -> dict[str, Any]:
        """The agency's indicators for the months start..end (YYYY-MM, default: the twelve
        months to this one), referrals of one component or all."""
        if principal.role != "supervisor" or principal.agency != agency:
            raise Forbidden("an agency's indicators are for its own supervisors")
        now = self.clock()
        end = end or month(now)
        start = start or months_back(end, 11)
        if start > end:
            raise BadRequest("the period's start is after its end")
        if len(months(start, end)) > 120:
            raise BadRequest("a period is at most 120 months")
        if component is not None and component not in COMPONENTS:
            raise BadRequest("unknown component")
        self.catch_up()
        period = months(start, end)
        inside = set(period)
        with self._lock:
            every = self._index.cases
            own = [(c, f) for c, f in every.items() if f.holder == agency]
            referrals = [
                r
                for case in every.values()
                for r in case.referrals.values()
                if (r.made_by if direction == "made" else r.to) == agency
                and month(r.made_at) in inside
                and (component is None or r.component == component)
            ]
            consents = [c for case in every.values() for c in case.consents.values()
                        if c.agency == agency]  # fmt: skip
            return {
                "agency": agency,
                "period": {"from": start, "to": end},
                "component": component,
                "direction": direction,
                "computed_at": format_timestamp(now),
                "celerity": celerity(own, period),
                "referrals": referral_figures(referrals, now),
                "consents": consent_figures(consents, period, now),
                "cases": case_figures([f for _, f in own], period),
            }


def months_back(end: str, n: int) -> str:
    year, mon = int(end[:4]), int(end[5:]) - n
    while mon < 1:
        year, mon = year - 1, mon + 12
    return f"{year:04d}-{mon:02d}"


def first_care(case: CaseFigures) -> datetime | None:
    """When the case's first health or psychosocial referral was made."""
    made = [r.made_at for r in case.referrals.values() if r.component == HEALTH_COMPONENT]
    return min(made, default=None)


def celerity(cases: list[tuple[str, CaseFigures]], period: list[str]) -> dict[str, Any]:
    """Principle XI, for the cases identified in the period: the share whose first care
    came in time, and the median time to it, overall and by month of identification."""
    by_month: dict[str, list[tuple[bool, float | None]]] = {m: [] for m in period}
    for _, case in cases:
        if case.identified_on is None or case.identified_on[:7] not in by_month:
            continue
        made = first_care(case)
        if made is None:
            by_month[case.identified_on[:7]].append((False, None))
            continue
        deadline = health_deadline(case.identified_on)
        day_end = deadline - timedelta(days=1)
        waited = max(0.0, hours(made - day_end))
        by_month[case.identified_on[:7]].append((made <= deadline, waited))

    def summary(rows: list[tuple[bool, float | None]]) -> dict[str, Any]:
        waits = [w for _, w in rows if w is not None]
        in_time = sum(1 for ok, _ in rows if ok)
        return {
            "identified": len(rows),
            "in_time": in_time,
            "late": sum(1 for ok, w in rows if not ok and w is not None),
            "no_care_yet": sum(1 for _, w in rows if w is None),
            "share_in_time": round(in_time / len(rows), 4) if rows else None,
            "median_hours": median(waits),
        }

    every = [row for rows in by_month.values() for row in rows]
    return {
        **summary(every),
        "by_month": [{"month": m, **summary(rows)} for m, rows in by_month.items()],
    }


def referral_figures(referrals: list[ReferralFigures], now: datetime) -> dict[str, Any]:
    """By component: made, each status, open, overdue now, median hours to an answer; and
    the decline reasons."""
    rows = []
    for component in COMPONENTS:
        chosen = [r for r in referrals if r.component == component]
        if not chosen:
            continue
        statuses = Counter(r.status for r in chosen)
        waits = [hours(r.answered_at - r.made_at) for r in chosen if r.answered_at]
        rows.append(
            {
                "component": component,
                "made": len(chosen),
                **{s: statuses[s] for s in STATUSES},
                "open": sum(statuses[s] for s in OPEN_REFERRAL),
                "overdue_now": sum(1 for r in chosen if overdue(r, now)),
                "median_hours_to_answer": median(waits),
            }
        )
    reasons = Counter(r.reason for r in referrals if r.status == "declined")
    waits = [hours(r.answered_at - r.made_at) for r in referrals if r.answered_at]
    return {
        "made": len(referrals),
        "open": sum(1 for r in referrals if r.status in OPEN_REFERRAL),
        "overdue_now": sum(1 for r in referrals if overdue(r, now)),
        "median_hours_to_answer": median(waits),
        "by_component": rows,
        "declined_by_reason": [
            {"reason": reason, "declined": reasons[reason]}
            for reason in DECLINE_REASONS
            if reasons[reason]
        ],
    }


def overdue(r: ReferralFigures, now: datetime) -> bool:
    return r.status in OPEN_REFERRAL and r.due_at is not None and r.due_at < now


def consent_figures(
    consents: list[ConsentFigures], period: list[str], now: datetime
) -> list[dict[str, Any]]:
    counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for c in consents:
        counts[month(c.granted_at)]["granted"] += 1
        if c.withdrawn_at is not None:
            counts[month(c.withdrawn_at)]["withdrawn"] += 1
        if (
            c.expires_at is not None
            and c.expires_at <= now
            and (c.withdrawn_at is None or c.withdrawn_at > c.expires_at)
        ):
            counts[month(c.expires_at)]["expired"] += 1
    return [
        {"month": m, **{k: counts[m][k] for k in ("granted", "withdrawn", "expired")}}
        for m in period
    ]


def case_figures(cases: list[CaseFigures], period: list[str]) -> list[dict[str, Any]]:
    counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for c in cases:
        counts[month(c.opened_at)]["opened"] += 1
        if c.closed_at is not None:
            counts[month(c.closed_at)]["closed"] += 1
    return [
        {"month": m, "opened": counts[m]["opened"], "closed": counts[m]["closed"]} for m in period
    ]
