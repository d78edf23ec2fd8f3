"""The guideline indicators an agency's supervisors decide from: celerity (principle XI),
referrals by component and outcome, consents and cases by month.

Most of what they count is sealed: the day of identification, a referral's component, due
time and decline reason are `attrs`. They are unsealed here, in the ledger's memory, into an
index of coded values (never age, gender, exploitation, language, ratings or payload) that
follows the log, and is never written anywhere: the database and its backups stay as sealed
as before, an erasure drops the case from the index at once, and a dashboard query reads only
the index, never the log. Each process builds its index once from the stored events (what a
projection rebuild costs), then reads only what the log gained since its last query; the
counts a query reads are kept as the sum of the cases' contributions (services/tally.py).

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
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ledger.concurrency import Background
from ledger.contract.case import Cases
from ledger.contract.notices import HEALTH_COMPONENT, health_deadline, referral_due
from ledger.contract.sealing import unseal_item
from ledger.contract.vocabulary import COMPONENTS, format_timestamp
from ledger.errors import BadRequest, Forbidden
from ledger.services import tally
from ledger.services.keystore import KeyStore
from ledger.services.tally import (
    CaseFigures,
    ConsentFigures,
    ReferralFigures,
    Tally,
    hours,
    month,
)
from ledger.services.tokens import Principal
from ledger.storage.base import Store

log = logging.getLogger("ledger.indicators")
PAGE = 5000  # log entries read at a time
CASES_AT_ONCE = 400  # cases whose new records are read in one query
Direction = Literal["made", "received"]


@dataclass
class Index:
    seen: int = 0  # log entries read
    cases: dict[str, CaseFigures] = field(default_factory=dict)
    tally: Tally = field(default_factory=Tally)  # the sum of the cases' contributions
    # Erased cases, never indexed again (an erased case still takes `notice.acknowledged`).
    erased: set[str] = field(default_factory=set)


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def months(start: str, end: str) -> list[str]:
    """Every month from start to end (YYYY-MM), both included."""
    year, mon = int(start[:4]), int(start[5:])
    out = []
    while f"{year:04d}-{mon:02d}" <= end:
        out.append(f"{year:04d}-{mon:02d}")
        year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return out


class Indicators:
    """The in-memory index and the figures computed from it."""

    def __init__(self, store: Store, cases: Cases, keys: KeyStore, clock: Any) -> None:
        self.store, self.cases, self.keys, self.clock = store, cases, keys, clock
        self._index = Index()
        self._lock = threading.Lock()

    # -- following the log -------------------------------------------------------------

    def catch_up(self, stopping: threading.Event | None = None) -> int:
        """Read what the log gained since the last call (until `stopping` is set, if given);
        returns the entries read."""
        with self._lock:
            index, size, read = self._index, self.store.log_size(), 0
            while index.seen < size and not (stopping and stopping.is_set()):
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
                index.erased |= erased
                self._apply(index, [c for c in changed if c not in index.erased])
                for case_id in erased:  # gone from every figure at once
                    gone = index.cases.pop(case_id, None)
                    if gone is not None:
                        index.tally.add(case_id, gone, -1)
                read += len(rows)
                index.seen = rows[-1][0] + 1
            return read

    def _apply(self, index: Index, case_ids: list[str]) -> None:
        for start in range(0, len(case_ids), CASES_AT_ONCE):
            chunk = case_ids[start : start + CASES_AT_ONCE]
            keys = self.keys.get_many(chunk)
            seen = [(c, index.cases[c].version if c in index.cases else 0) for c in chunk]
            for case_id, records in self.cases.records_after(seen).items():
                before = index.cases.get(case_id)
                if before is not None:
                    index.tally.add(case_id, before, -1)
                try:
                    for record in records:
                        self._record(index, case_id, record, keys.get(case_id))
                finally:  # what was applied counts, even if a record could not be
                    after = index.cases.get(case_id)
                    if after is not None:
                        index.tally.add(case_id, after, 1)

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
                env["agency"], attrs().get("identified_at"), month(at)
            )
        if case is None:
            return  # not opened (never: a case's first record opens it)
        case.version += 1
        if etype == "case.closed":
            case.closed_month = month(at)
        elif etype == "referral.made":
            sealed = attrs()
            due = (
                referral_due(sealed, env["signed_at"], case.identified_on)
                if "due_by" in sealed
                else None
            )
            case.referrals[facts["referral_id"]] = ReferralFigures(
                case_id, env["agency"], facts["to"], sealed.get("component"), at, due, month(at)
            )
            if sealed.get("component") == HEALTH_COMPONENT:
                first_care(case, at)
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
                env["agency"], month(at), moment(expires) if expires else None
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
        with self._lock:
            t = self._index.tally
            return {
                "agency": agency,
                "period": {"from": start, "to": end},
                "component": component,
                "direction": direction,
                "computed_at": format_timestamp(now),
                "celerity": tally.celerity(t, agency, period),
                "referrals": tally.referrals(t, agency, period, direction, component, now),
                "consents": tally.consents(t, agency, period, now),
                "cases": tally.cases(t, agency, period),
            }


def months_back(end: str, n: int) -> str:
    year, mon = int(end[:4]), int(end[5:]) - n
    while mon < 1:
        year, mon = year - 1, mon + 12
    return f"{year:04d}-{mon:02d}"


def first_care(case: CaseFigures, made: datetime) -> None:
    """A health or psychosocial referral made: the case's first care, if it is the first."""
    if case.identified_on is None or (case.first_care is not None and case.first_care <= made):
        return
    deadline = health_deadline(case.identified_on)
    day_end = deadline - timedelta(days=1)
    case.first_care = made
    case.care = (made <= deadline, max(0.0, hours((made - day_end).total_seconds())))


class IndicatorsWarm(Background):
    """Builds a server process's index as it starts and keeps it following the log, so no
    supervisor waits for a build when opening the dashboard (about 16 s at 100,000 cases on
    SQLite, docs/performance.md), in whichever process answers them: a query then reads at
    most `every_s` of new entries."""

    name = "indicators-warm"

    def __init__(self, indicators: Indicators, every_s: float = 5.0) -> None:
        super().__init__()
        self.indicators, self.every_s = indicators, every_s

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.indicators.catch_up(self.stopping)
            except Exception:  # a query builds it then, and says why if it cannot
                log.warning("the indicators' index could not follow the log", exc_info=True)
            self.stopping.wait(self.every_s)
