"""Queries over the read models, with the access rules of section 3 and 5.

The projections hold cleartext facts only; whatever a query shows from `attrs` is unsealed
here, at request time, from the case's own events, and logged as an access entry.
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from datetime import datetime
from functools import partial
from typing import Any

from ledger.contract.case import Case
from ledger.contract.gates import (
    DISCLOSING_PURPOSES,
    consent_counts,
    readable_categories,
    referral_counts,
)
from ledger.contract.notices import OPEN_REFERRAL, health_deadline, referral_due, told_of
from ledger.contract.sealing import unseal_item
from ledger.contract.vocabulary import CATEGORIES, format_timestamp, parse_timestamp
from ledger.errors import BadRequest, Forbidden, Invalid, NotFound
from ledger.services import paging, releases
from ledger.services.access import CaseAccess, Unsealed, staff_agency
from ledger.services.indicators import Indicators
from ledger.services.paging import Page
from ledger.services.tokens import Principal
from ledger.storage.base import ViewStore
from projections.cases import cases_of, cases_opened_from
from projections.consents import consents_naming, consents_of
from projections.disclosures import disclosures_of, shares_to
from projections.erasures import erasure_requests_of
from projections.referrals import referrals_of
from projections.runner import ProjectionRunner

RECEIVED = ("accepted", "completed")  # a referral whose categories reached its recipient
_PERIOD = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
FIRST = Page(None, paging.DEFAULT_LIMIT)  # a list's first page


class ReadModels:
    def __init__(
        self, access: CaseAccess, views: ViewStore, runner: ProjectionRunner, *, inline: bool
    ) -> None:
        self.access, self.views, self.runner = access, views, runner
        self.inline = inline  # catch up on each query (embedded setup: read your writes)
        self.releases = releases.ReleaseStore(views)
        self.indicators = Indicators(access.store, access.cases, access.keys, access.clock)
        # The earliest month of identification of any case opened before a log position:
        # one month for the whole ledger (never per case), in this process only.
        self._identified: tuple[int, str | None] = (0, None)
        self._identified_lock = threading.Lock()

    def _fresh(self) -> None:
        if self.inline:
            self.runner.catch_up()

    # -- cases -----------------------------------------------------------------------------

    def case_list(
        self, principal: Principal, page: Page = FIRST, case_id: str | None = None
    ) -> dict[str, Any]:
        """A page of the caller's cases, newest first: status, open referrals, the categories
        it may read (`case_id`: that case only, if it is one of them)."""
        agency = staff_agency(principal)
        self._fresh()
        before = None if page.after is None else int(page.after[0])
        rows = cases_of(self.views, agency, before=before, limit=page.limit + 1, case_id=case_id)
        more = len(rows) > page.limit
        rows = rows[: page.limit]
        ids = [r["case_id"] for r in rows]
        readable = self._readable(agency, {r["case_id"]: bool(r["minor"]) for r in rows})
        open_referrals: dict[str, int] = defaultdict(int)
        for referral in referrals_of(self.views, agency, case_ids=ids):
            if referral["status"] in OPEN_REFERRAL:
                open_referrals[referral["case_id"]] += 1
        items = [
            {
                "case_id": r["case_id"],
                "status": r["status"],
                "holder": bool(r["holder"]),
                "minor": bool(r["minor"]),
                "opened_at": r["opened_at"],
                "updated_at": r["updated_at"],
                "open_referrals": open_referrals[r["case_id"]],
                "categories": list(CATEGORIES)
                if r["holder"]
                else [c for c in CATEGORIES if c in readable[r["case_id"]]],
            }
            for r in rows
        ]
        last = (int(rows[-1]["position"]),) if more else None
        return paging.answer("cases", items, "cases", last)

    def _readable(self, agency: str, minor: dict[str, bool]) -> dict[str, set[str]]:
        """Per case, the categories the agency (not the holder) may read now, from the read
        models: what its shares and accepted referrals sent it, under consents that name it,
        disclose, and count now (`gates.disclosed_categories`, without unsealing anything).
        In a minor's case only a guardian's consent with assent counts here; an assent
        exemption depends on the sealed age band, which the list does not unseal."""
        now = format_timestamp(self.access.clock())
        counting: dict[tuple[str, str], set[str]] = {}
        for consent in consents_naming(self.views, agency):
            if consent["case_id"] not in minor:
                continue  # not a case of this page
            if consent["expires_at"] is not None and consent["expires_at"] <= now:
                continue
            if not DISCLOSING_PURPOSES & set(json.loads(consent["purposes"])):
                continue
            if minor.get(consent["case_id"]) and not (
                consent["given_by"] != "survivor" and consent["child_assent"]
            ):
                continue
            counting[consent["case_id"], consent["consent_id"]] = set(
                json.loads(consent["categories"])
            )
        sent = [
            *shares_to(self.views, agency),
            *(
                r
                for r in referrals_of(self.views, agency, case_ids=list(minor))
                if r["status"] in RECEIVED
            ),
        ]
        readable: dict[str, set[str]] = defaultdict(set)
        for row in sent:
            if row.get("to_agency", agency) != agency:
                continue  # a referral the agency made, not one it received
            allowed = counting.get((row["case_id"], row["consent_id"]))
            if allowed is not None:
                readable[row["case_id"]] |= allowed & set(row["categories"])
        return readable

    # -- consents --------------------------------------------------------------------------

    def consents(
        self, principal: Principal, case_id: str, *, details: bool = True
    ) -> dict[str, Any]:
        """Consent register of a case; non-holders see the consents that name them.
        `details`: unseal each consent's language, interpreter and notice version (a logged
        read); without them nothing is unsealed, and nothing is logged."""
        agency = staff_agency(principal)
        self._fresh()

        def build(case: Case, now: datetime) -> Unsealed[dict[str, Any]]:
            state = case.state
            age_band = partial(self.access.age_band, case)
            readable_categories(state, agency, now, age_band)  # 403 for a related agency
            key = self.access.keys.get(case_id)
            records = {r["envelope"]["event_id"]: r for r in self.access.cases.records(case)}
            holder = agency == state.holder
            out = []
            for row in consents_of(self.views, case_id):
                if not holder and agency not in row["recipients"]:
                    continue
                consent = state.consents.get(row["consent_id"])
                if consent is None:  # the read model is ahead of the loaded case
                    continue
                record = records[row["event_id"]]
                attrs = unseal_item(key, case_id, record, "attrs") if key and details else {}
                out.append(
                    {
                        "consent_id": row["consent_id"],
                        "granted_by": row["granted_by"],
                        "granted_at": row["granted_at"],
                        "purposes": row["purposes"],
                        "recipients": row["recipients"],
                        "categories": row["categories"],
                        "expires_at": row["expires_at"],
                        "given_by": row["given_by"],
                        "child_assent": row["child_assent"],
                        "assent_exempt": row["assent_exempt"],
                        "withdrawn_at": row["withdrawn_at"] if consent.withdrawn else None,
                        "language": attrs.get("language"),
                        "interpreter": attrs.get("interpreter"),
                        "notice_version": attrs.get("notice_version"),
                        "active": consent.active(now),
                        "counts": consent_counts(state, consent, now, age_band),
                    }
                )
            may_receive: dict[str, set[str]] = defaultdict(set)
            for consent in state.consents.values():
                if consent_counts(state, consent, now, age_band):
                    for recipient in consent.recipients:
                        if holder or recipient == agency:
                            may_receive[recipient] |= consent.categories
            answer = {
                "case_id": case_id,
                "consents": out,
                "may_receive": {
                    a: [c for c in CATEGORIES if c in cats]
                    for a, cats in sorted(may_receive.items())
                },
            }
            # The consents' attrs: an access entry without categories; none if not unsealed.
            return Unsealed(answer, [] if details else None)

        return self.access.read(principal, case_id, build)

    # -- disclosures -----------------------------------------------------------------------

    def disclosures(self, principal: Principal, case_id: str, page: Page = FIRST) -> dict[str, Any]:
        """A page of the shares, referrals and unsealed reads of a case, in log order
        (holders only)."""
        self.access.holder_only(
            principal, case_id, "the disclosure register is for the agency holding the case"
        )
        self._fresh()
        after = None if page.after is None else int(page.after[0])
        rows = disclosures_of(self.views, case_id, after=after, limit=page.limit + 1)
        last = (int(rows[page.limit - 1]["position"]),) if len(rows) > page.limit else None
        return {
            "case_id": case_id,
            **paging.answer("disclosures", rows[: page.limit], "disclosures", last),
        }

    # -- erasure requests --------------------------------------------------------------------

    def erasure_requests(self, principal: Principal, page: Page = FIRST) -> dict[str, Any]:
        """A page of a supervisor's agency's erasure requests that wait for a second
        supervisor, oldest first, each with who requested it (their token's id) and the
        agencies the erasure would tell now (`notify`, as `case.erased` will answer).
        Nothing is unsealed (the request's reason is sealed) and nothing is logged."""
        agency = staff_agency(principal)
        if principal.role != "supervisor":
            raise Forbidden("only a supervisor sees the erasure requests")
        self._fresh()

        def fetch(after: paging.Key | None, limit: int) -> list[dict[str, Any]]:
            start = None if after is None else int(after[0])
            return erasure_requests_of(self.views, agency, after=start, limit=limit)

        def build(rows: list[dict[str, Any]]) -> list[tuple[paging.Key, dict[str, Any] | None]]:
            return [((int(row["position"]),), self._pending(agency, row)) for row in rows]

        items, last = paging.filled(fetch, build, page)
        return paging.answer("erasure-requests", items, "requests", last)

    def _pending(self, agency: str, row: dict[str, Any]) -> dict[str, Any] | None:
        """An erasure request as listed, if it still waits for a second supervisor."""
        case = self.access.cases.load(row["case_id"])
        state = None if case is None else case.state
        if state is None or state.erased or state.holder != agency:
            return None  # the read model behind the case (erased since): not pending
        if row["event_id"] not in state.erasure_requests:
            return None
        readers = self.access.store.case_readers(state.case_id)
        notify = told_of(state, "case.erased", {}, agency, readers)
        return {
            "case_id": state.case_id,
            "request_event_id": row["event_id"],
            "requested_by": row["actor"],
            "requested_at": row["requested_at"],
            "notify": sorted(notify),
        }

    # -- referrals -------------------------------------------------------------------------

    def referrals(
        self,
        principal: Principal,
        *,
        status: str | None = None,
        overdue: bool | None = None,
        to: str | None = None,
        component: str | None = None,
        page: Page = FIRST,
    ) -> dict[str, Any]:
        """A page of the referrals the caller made or received, oldest first, with due times
        computed now; the filters apply to each referral as its case is read now."""
        agency = staff_agency(principal)
        self._fresh()

        def fetch(after: paging.Key | None, limit: int) -> list[dict[str, Any]]:
            start = None if after is None else (str(after[0]), str(after[1]), str(after[2]))
            return referrals_of(self.views, agency, after=start, limit=limit, to=to)

        def build(rows: list[dict[str, Any]]) -> list[tuple[paging.Key, dict[str, Any] | None]]:
            found = self._referral_items(principal, agency, rows)
            out: list[tuple[paging.Key, dict[str, Any] | None]] = []
            for row in rows:
                item = found.get((row["case_id"], row["referral_id"]))
                if item is not None and (
                    (status is not None and item["status"] != status)
                    or (component is not None and item["component"] != component)
                    or (overdue is not None and item["overdue"] != overdue)
                ):
                    item = None
                out.append(((row["made_at"], row["case_id"], row["referral_id"]), item))
            return out

        items, last = paging.filled(fetch, build, page)
        return paging.answer("referrals", items, "referrals", last)

    def _referral_items(
        self, principal: Principal, agency: str, rows: list[dict[str, Any]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """The referrals of `rows` as listed, by (case, referral), each case read once now."""
        by_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_case[row["case_id"]].append(row)

        def build(case: Case, now: datetime) -> Unsealed[list[dict[str, Any]]]:
            case_id, state = case.state.case_id, case.state
            age_band = partial(self.access.age_band, case)
            case_rows = [r for r in by_case[case_id] if r["referral_id"] in state.referrals]
            # The referrer (the holder) sees its referrals' attrs; a recipient those of the
            # referrals to it whose consent counts now, accepted or not (it needs them to
            # answer); the others' stay sealed (null).
            visible = [
                row
                for row in case_rows
                if agency == state.holder
                or (
                    row["to_agency"] == agency
                    and referral_counts(state, state.referrals[row["referral_id"]], now, age_band)
                )
            ]
            sealed: dict[str, dict[str, Any]] = {}
            key = self.access.keys.get(case_id) if visible else None
            if key is not None:
                all_records = self.access.cases.records(case)
                records = {r["envelope"]["event_id"]: r for r in all_records}
                opened = unseal_item(key, case_id, all_records[0], "attrs")
                for row in visible:
                    record = records[row["event_id"]]
                    attrs = unseal_item(key, case_id, record, "attrs")
                    signed_at = record["envelope"]["signed_at"]
                    identified_at = opened["identified_at"]
                    due = referral_due(attrs, signed_at, identified_at, health_deadline)
                    sealed[row["referral_id"]] = {**attrs, "due_by": format_timestamp(due)}
            items = []
            for row in case_rows:
                attrs = sealed.get(row["referral_id"], {})
                due_by = attrs.get("due_by")
                status_now = state.referrals[row["referral_id"]].status
                late = (
                    status_now in OPEN_REFERRAL
                    and due_by is not None
                    and parse_timestamp(due_by) < now
                )
                items.append(
                    {
                        "case_id": case_id,
                        "referral_id": row["referral_id"],
                        "from": row["from_agency"],
                        "to": row["to_agency"],
                        "consent_id": row["consent_id"],
                        "categories": row["categories"],
                        "status": status_now,
                        "made_at": row["made_at"],
                        "updated_at": row["updated_at"],
                        "component": attrs.get("component"),
                        "urgency": attrs.get("urgency"),
                        "due_by": due_by,
                        "overdue": late,
                    }
                )
            return Unsealed(items, [] if sealed else None)

        found: dict[tuple[str, str], dict[str, Any]] = {}
        for items in self.access.read_many(principal, list(by_case), build).values():
            for item in items:  # as each case was read now
                found[item["case_id"], item["referral_id"]] = item
        return found

    # -- statistics ------------------------------------------------------------------------

    @staticmethod
    def _monitor(principal: Principal) -> None:
        if principal.role != "monitor":
            raise Forbidden("statistics releases are for monitor tokens")

    def _check_period(self, period: str) -> None:
        if not isinstance(period, str) or not _PERIOD.fullmatch(period):
            raise BadRequest("period must be YYYY-MM")
        if period >= self.access.clock().strftime("%Y-%m"):
            raise Invalid("a release covers a month that has ended")

    def release_list(self, principal: Principal, page: Page = FIRST) -> dict[str, Any]:
        """A page of the frozen releases (period, when frozen), the newest first (monitor):
        one a month, read whole."""
        self._monitor(principal)
        shown, last = paging.in_memory(
            "releases", self.releases.listed(), lambda r: (r["period"],), page, descending=True
        )
        return paging.answer("releases", shown, "releases", last)

    def release(self, principal: Principal, period: str) -> dict[str, Any]:
        self._monitor(principal)
        found = self.releases.get(period)
        if found is None:
            raise NotFound("no release for this period; POST /v1/stats/releases makes one")
        return found

    def create_release(self, principal: Principal, period: str) -> tuple[bool, dict[str, Any]]:
        """Freeze the period's release (once); returns (created, release)."""
        self._monitor(principal)
        self._check_period(period)
        existing = self.releases.get(period)
        if existing is not None:
            return False, existing
        self._fresh()
        first = self._first_identification()
        if first is None or period < first:
            # Each release unseals every case and stays for good: none for the months before
            # any case was identified (a monitor could otherwise freeze thousands).
            raise Invalid("a release covers a month from the first identification of a case on")
        figures = []
        with self.views.read() as cur:
            cur.execute(self.views.sql("SELECT case_id FROM {s}view_cases ORDER BY case_id"))
            case_ids = [r["case_id"] for r in cur.fetchall()]
        for case_id in case_ids:
            figure = self._figures(case_id, period)
            if figure is not None:
                figures.append(figure)
        body = releases.release_body(period, figures)
        return True, self.releases.freeze(body, format_timestamp(self.access.clock()))

    def _first_identification(self) -> str | None:
        """The earliest month (YYYY-MM) any live case was identified in; only the cases opened
        since the last call are unsealed for it (their `case.opened` attrs)."""
        with self._identified_lock:
            seen, earliest = self._identified
            for case_id, position in cases_opened_from(self.views, seen):
                case = self.access.cases.load(case_id)
                key = self.access.keys.get(case_id) if case and not case.state.erased else None
                if case is not None and key is not None:
                    opened = self.access.cases.record_at(case, 1)
                    month = unseal_item(key, case_id, opened, "attrs")["identified_at"][:7]
                    earliest = month if earliest is None else min(earliest, month)
                seen = max(seen, position + 1)
            self._identified = (seen, earliest)
            return earliest

    def _figures(self, case_id: str, period: str) -> releases.CaseFigures | None:
        """One case's contribution, unsealed now and never stored."""
        found = self.access.live_case(case_id)
        if found is None:
            return None
        case, key, all_records = found
        opened = unseal_item(key, case_id, all_records[0], "attrs")
        if not opened["identified_at"].startswith(period):
            return None
        band = opened["age_band"]
        if case.state.age_version > 1:
            record = all_records[case.state.age_version - 1]
            band = unseal_item(key, case_id, record, "attrs")["age_band"]
        referrals = set()
        for record in all_records:
            env = record["envelope"]
            if env["type"] == "referral.made":
                component = unseal_item(key, case_id, record, "attrs")["component"]
                status = case.state.referrals[env["facts"]["referral_id"]].status
                referrals.add((component, status))
        return releases.CaseFigures(
            band, opened["gender"], frozenset(opened["exploitation"]), frozenset(referrals)
        )
