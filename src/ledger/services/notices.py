"""Notices: the outbox rows of an accepted event (recorded in its own transaction), and the
notices an agency reads (`GET /v1/notices`) or a case's holder sees per recipient
(`GET /v1/cases/{id}/notices`). A notice carries no personal data: its kind, the case id,
the event's log position, the id it concerns and what the recipient is asked to do; the
recipient reads anything more with its own token, under the usual gates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ledger.contract.gates import CaseState
from ledger.contract.notices import ACKNOWLEDGED, ASKS, notices_of
from ledger.errors import BadRequest
from ledger.services.access import CaseAccess, staff_agency
from ledger.services.tokens import Principal
from ledger.storage.base import NoticeRow, Store, StoredNotice

PAGE = 100  # notices in one answer at most


def notice_rows(
    state: CaseState, etype: str, facts: Mapping[str, Any], agency: str, notify: Sequence[str]
) -> list[NoticeRow]:
    """The outbox rows of an event (at `Commit.entries[0]`), from the state it leaves."""
    return [
        NoticeRow(n.agency, n.kind, state.case_id, n.subject, 0)
        for n in notices_of(state, etype, facts, agency, notify)
    ]


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
        """Every notice about a case, with its recipient: for the agency holding it."""
        self.access.holder_only(
            principal, case_id, "a case's notices are for the agency holding it"
        )
        told = [
            {**shown(n), "agency": n.agency} for n in self.store.case_notices(case_id)
        ]  # fmt: skip
        return {"case_id": case_id, "notices": told}
