"""Each case's coded figures (`CaseFigures`), and the indicators' running counts: what each
case contributes, added when the case changes and taken away (before the change, or on
erasure), so the counts are always the sum of the live cases' contributions and a query reads
a few counters per month, never every case.

A case's contribution is computed in one place (`contributions`); the tally adds it with a
sign. Counts keyed by agency and month; the values a median needs (hours waited, hours to an
answer) and the referrals still open (overdue is a matter of now) kept by case, so they can be
taken away exactly.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.contract.notices import OPEN_REFERRAL
from ledger.contract.vocabulary import COMPONENTS, DECLINE_REASONS

STATUSES = ("pending", "accepted", "declined", "completed")
DIRECTIONS = ("made", "received")


def month(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


def hours(seconds: float) -> float:
    return round(seconds / 3600, 2)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


@dataclass(slots=True)
class CaseFigures:
    holder: str  # the agency that opened it
    identified_on: str | None  # YYYY-MM-DD (None: its key is gone)
    opened_month: str
    closed_month: str | None = None
    version: int = 0  # the last record applied
    first_care: datetime | None = None  # its first health or psychosocial referral
    care: tuple[bool, float] | None = None  # that referral in time, and the hours waited
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
    made_month: str = ""
    status: str = "pending"
    answered_at: datetime | None = None
    reason: str | None = None  # a decline's reason category


@dataclass(slots=True)
class ConsentFigures:
    agency: str
    granted_month: str
    expires_at: datetime | None
    withdrawn_at: datetime | None = None


@dataclass
class Tally:
    counts: Counter[tuple[str, ...]] = field(default_factory=Counter)
    # (what, agency, month[, direction, component]) → {(case, item): value}
    values: defaultdict[tuple[str, ...], dict[tuple[str, str], Any]] = field(
        default_factory=lambda: defaultdict(dict)
    )

    def add(self, case_id: str, case: CaseFigures, sign: int) -> None:
        """Add (sign 1) or take away (sign -1) a case's contribution."""
        for key, item, value in contributions(case_id, case):
            if item is None:
                self.counts[key] += sign
                if self.counts[key] == 0:
                    del self.counts[key]
            elif sign > 0:
                self.values[key][case_id, item] = value
            else:
                held = self.values.get(key)
                if held is not None:
                    held.pop((case_id, item), None)
                    if not held:
                        del self.values[key]

    def count(self, *key: str) -> int:
        return self.counts.get(key, 0)

    def held(self, *key: str) -> list[Any]:
        return list(self.values.get(key, {}).values())


def contributions(case_id: str, case: CaseFigures) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """(key, item, value): a count of one when item is None, else a value kept by item."""
    holder = case.holder
    yield ("opened", holder, case.opened_month), None, None
    if case.closed_month is not None:
        yield ("closed", holder, case.closed_month), None, None
    if case.identified_on is not None:
        identified = case.identified_on[:7]
        yield ("identified", holder, identified), None, None
        if case.care is not None:
            yield ("care", holder, identified), "first", case.care
    for consent_id, c in case.consents.items():
        yield ("granted", c.agency, c.granted_month), None, None
        if c.withdrawn_at is not None:
            yield ("withdrawn", c.agency, month(c.withdrawn_at)), None, None
        if c.expires_at is not None:
            yield ("expiring", c.agency), consent_id, (c.expires_at, c.withdrawn_at)
    for referral_id, r in case.referrals.items():
        for direction, agency in (("made", r.made_by), ("received", r.to)):
            cell = (agency, r.made_month, direction, r.component or "")
            yield ("referrals", *cell, r.status), None, None
            if r.status == "declined" and r.reason:
                yield ("declined", *cell, r.reason), None, None
            if r.answered_at is not None:
                waited = hours((r.answered_at - r.made_at).total_seconds())
                yield ("answered", *cell), referral_id, waited
            if r.status in OPEN_REFERRAL and r.due_at is not None:
                yield ("open", agency, direction), referral_id, r


def celerity(t: Tally, agency: str, period: list[str]) -> dict[str, Any]:
    """Principle XI, for the cases identified in the period: the share whose first care
    came in time, and the median time to it, overall and by month of identification."""

    def summary(months: list[str]) -> dict[str, Any]:
        identified = sum(t.count("identified", agency, m) for m in months)
        cares = [c for m in months for c in t.held("care", agency, m)]
        in_time = sum(1 for ok, _ in cares if ok)
        return {
            "identified": identified,
            "in_time": in_time,
            "late": len(cares) - in_time,
            "no_care_yet": identified - len(cares),
            "share_in_time": round(in_time / identified, 4) if identified else None,
            "median_hours": median([waited for _, waited in cares]),
        }

    return {**summary(period), "by_month": [{"month": m, **summary([m])} for m in period]}


def referrals(
    t: Tally, agency: str, period: list[str], direction: str, component: str | None,
    now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """By component: made, each status, open, overdue now, median hours to an answer; and
    the decline reasons."""
    chosen = [component] if component else list(COMPONENTS)
    inside = set(period)
    late: Counter[str] = Counter()
    for r in t.held("open", agency, direction):
        if r.made_month in inside and r.component in chosen and r.due_at < now:
            late[r.component] += 1
    rows, waits_all = [], []
    reasons: Counter[str] = Counter()
    for c in chosen:
        cells = [(agency, m, direction, c) for m in period]
        statuses = {s: sum(t.count("referrals", *cell, s) for cell in cells) for s in STATUSES}
        made = sum(statuses.values())
        waits = [w for cell in cells for w in t.held("answered", *cell)]
        waits_all += waits
        for reason in DECLINE_REASONS:
            reasons[reason] += sum(t.count("declined", *cell, reason) for cell in cells)
        if made:
            rows.append(
                {
                    "component": c,
                    "made": made,
                    **statuses,
                    "open": sum(statuses[s] for s in OPEN_REFERRAL),
                    "overdue_now": late[c],
                    "median_hours_to_answer": median(waits),
                }
            )
    return {
        "made": sum(r["made"] for r in rows),
        "open": sum(r["open"] for r in rows),
        "overdue_now": sum(late.values()),
        "median_hours_to_answer": median(waits_all),
        "by_component": rows,
        "declined_by_reason": [
            {"reason": r, "declined": reasons[r]} for r in DECLINE_REASONS if reasons[r]
        ],
    }


def consents(t: Tally, agency: str, period: list[str], now: datetime) -> list[dict[str, Any]]:
    expired: Counter[str] = Counter()
    for expires_at, withdrawn_at in t.held("expiring", agency):
        if expires_at <= now and (withdrawn_at is None or withdrawn_at > expires_at):
            expired[month(expires_at)] += 1
    return [
        {
            "month": m,
            "granted": t.count("granted", agency, m),
            "withdrawn": t.count("withdrawn", agency, m),
            "expired": expired[m],
        }
        for m in period
    ]


def cases(t: Tally, agency: str, period: list[str]) -> list[dict[str, Any]]:
    return [
        {"month": m, "opened": t.count("opened", agency, m), "closed": t.count("closed", agency, m)}
        for m in period
    ]
