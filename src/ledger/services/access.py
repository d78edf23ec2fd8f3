"""Case access: which cases a caller may see (404 / 410), and the logged unsealed read.

Every read that unseals case data goes through `CaseAccess.read` (one case) or
`CaseAccess.read_many` (several, for lists): the case is loaded and its visibility decided,
the answer built from that state, and an access entry appended only if the case has not
changed since it was loaded. If it has (a withdrawal, a share, an erasure committed in
between), the answer is thrown away and decided again on the new state, so a read never
returns data that a change committed before its access entry had cut, and no access entry is
written for an answer that is not given. After `ATTEMPTS` decisions the caller gets
`WriteConflict` (409 `write_conflict`), which clients retry like any write conflict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Generic, TypeVar

from ledger.contract.canonical import jcs
from ledger.contract.case import Case, Cases
from ledger.contract.gates import CaseState, check_visible, readable_categories
from ledger.contract.roles import AGENCY_ROLES
from ledger.contract.sealing import unseal_item, unseal_items
from ledger.contract.vocabulary import CATEGORIES, format_timestamp, is_uuid4
from ledger.errors import Forbidden, Gone, WriteConflict
from ledger.log.merkle import leaf_hash
from ledger.services.keystore import KeyStore
from ledger.services.logtime import LogTime
from ledger.services.tokens import Principal
from ledger.storage.base import Commit, ConflictError, NewEntry, StaleTime, Store

log = logging.getLogger("ledger")

T = TypeVar("T")
ATTEMPTS = 5  # decisions of one read before it answers write_conflict
AGE_EVENTS = ("case.opened", "age.assessed")  # the events whose attrs make the case profile


@dataclass(frozen=True)
class Unsealed(Generic[T]):
    """What a read built from one case: its answer, and the categories it unsealed (an empty
    list: attrs only), or None when it unsealed nothing (no access entry)."""

    answer: T
    categories: Sequence[str] | None


Build = Callable[[Case, datetime], Unsealed[T]]


def staff_agency(principal: Principal) -> str:
    """The caller's agency, if the caller is its staff (403 for other roles): only agency
    staff read case data."""
    if principal.role not in AGENCY_ROLES or principal.agency is None:
        raise Forbidden(f"a {principal.role} token cannot read case data")
    return principal.agency


class CaseAccess:
    """Visibility and logged reads over the cases, their keys and the log."""

    def __init__(self, cases: Cases, keys: KeyStore, store: Store, time: LogTime) -> None:
        self.cases, self.keys, self.store, self.time = cases, keys, store, time
        self.clock = time.clock

    # -- visibility ------------------------------------------------------------------------------

    def check_visible(self, state: CaseState | None, agency: str | None) -> CaseState:
        """404 for unrelated agencies; 410 with the erasure's time and log position."""
        try:
            return check_visible(state, agency)
        except Gone:
            assert state is not None
            erasure = self.store.erasure(state.case_id)
            raise Gone(
                "the case was erased",
                erased_at=state.erased_at,
                index=None if erasure is None else erasure.position,
            ) from None

    def visible(self, principal: Principal, case_id: str, erased_ok: bool = False) -> Case:
        """The case, if the caller's agency may know of it (404 / 410 otherwise; an erased
        case's cleartext state with `erased_ok`). Whether it may is decided from the (case,
        agency) relation before anything of the case is loaded: a case it is unrelated to
        costs what an unused id costs."""
        agency = principal.agency
        case = None
        if is_uuid4(case_id) and agency is not None and self.store.related([(case_id, agency)]):
            case = self.cases.load(case_id)
        state = None if case is None else case.state
        if not (erased_ok and state is not None and state.erased and agency in state.related):
            self.check_visible(state, agency)
        assert case is not None
        return case

    def holder_only(
        self, principal: Principal, case_id: str, refusal: str, erased_ok: bool = False
    ) -> Case:
        """404/410 as `visible`, then 403 (`refusal`) unless the caller's agency holds it."""
        agency = staff_agency(principal)  # 403 for other roles before anything is looked up
        case = self.visible(principal, case_id, erased_ok)
        if agency != case.state.holder:
            raise Forbidden(refusal)
        return case

    def key(self, case_id: str) -> bytes:
        """The case's data key (410 once it is destroyed)."""
        key = self.keys.get(case_id)
        if key is None:
            raise Gone("the case's key was destroyed")
        return key

    def age_band(self, case: Case) -> str | None:
        """The latest assessed age band (sealed), for the assent exemption."""
        if case.state.age_version == 0:
            return None
        key = self.keys.get(case.state.case_id)
        if key is None:
            return None
        record = self.cases.record_at(case, case.state.age_version)
        return str(unseal_item(key, case.state.case_id, record, "attrs").get("age_band"))

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

    # -- logged reads ----------------------------------------------------------------------------

    def read_case(self, principal: Principal, case_id: str) -> dict[str, Any]:
        """The case as the caller's agency may see it: its profile (attrs) and the payload
        categories it may read, unsealed, and the read logged (`read`)."""
        agency = staff_agency(principal)

        def build(case: Case, now: datetime) -> Unsealed[dict[str, Any]]:
            state = case.state
            allowed = readable_categories(state, agency, now, partial(self.age_band, case))
            key = self.key(case_id)
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

        return self.read(principal, case_id, build)

    def read(self, principal: Principal, case_id: str, build: Build[T]) -> T:
        """Build an answer from a case the caller may see, and log what it unsealed."""
        for _attempt in range(ATTEMPTS):
            case = self.visible(principal, case_id)
            now = self.time.now()
            unsealed = build(case, now)
            if unsealed.categories is None:
                return unsealed.answer
            try:
                self.store.append(self._access(principal, case, unsealed.categories, now))
            except ConflictError as exc:
                self._conflicted(exc)
                continue  # the case changed meanwhile: decide again on its new state
            self._logged(principal, case_id)
            return unsealed.answer
        raise WriteConflict("the case kept changing while it was read; retry")

    def read_many(
        self, principal: Principal, case_ids: Sequence[str], build: Build[T]
    ) -> dict[str, T]:
        """`read` of several cases, their access entries in one transaction: each case's
        answer stands once its entry committed; the cases that changed meanwhile are decided
        again. Cases that are gone (erased, or unknown) are left out."""
        answers: dict[str, T] = {}
        todo = list(case_ids)
        for _attempt in range(ATTEMPTS):
            now = self.time.now()
            built: list[tuple[Case, Unsealed[T]]] = []
            for case_id in todo:
                case = self.cases.load(case_id)
                if case is None or case.state.erased:
                    continue
                built.append((case, build(case, now)))
            logged = [(c, u) for c, u in built if u.categories is not None]
            commits = [self._access(principal, c, u.categories or (), now) for c, u in logged]
            outcomes = self.store.append_group(commits) if commits else []
            todo = []
            for (case, _), outcome in zip(logged, outcomes, strict=True):
                if isinstance(outcome, ConflictError):
                    self._conflicted(outcome)
                    todo.append(case.state.case_id)
                else:
                    self._logged(principal, case.state.case_id)
            answers.update(
                (c.state.case_id, u.answer) for c, u in built if c.state.case_id not in todo
            )
            if not todo:
                return {c: answers[c] for c in case_ids if c in answers}
        raise WriteConflict("the cases kept changing while they were read; retry")

    def _access(
        self, principal: Principal, case: Case, categories: Sequence[str], now: datetime
    ) -> Commit:
        """The access entry of one read, committed only if the case is still as loaded."""
        case_id = case.state.case_id
        entry = jcs(
            {
                "kind": "access",
                "case_id": case_id,
                "agency": principal.agency,
                "actor": principal.token_id,
                "categories": list(categories),
                "recorded_at": format_timestamp(now),
            }
        )
        return Commit(
            entries=[NewEntry("access", entry, leaf_hash(entry), case_id, principal.agency)],
            case_version=(case_id, case.version),
            recorded_at=format_timestamp(now),
        )

    def _conflicted(self, exc: ConflictError) -> None:
        if isinstance(exc, StaleTime):  # another commit, decided later, went first
            self.time.saw(exc.latest)

    @staticmethod
    def _logged(principal: Principal, case_id: str) -> None:
        log.info("case read case=%s agency=%s", case_id, principal.agency)
