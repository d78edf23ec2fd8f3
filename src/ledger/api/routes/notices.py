from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ledger.api.deps import CurrentPrincipal, LedgerDep
from ledger.contract.notices import KINDS
from ledger.services.notices import PAGE

router = APIRouter(tags=["notices"])


class Notice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int = Field(description="its place among the ledger's notices: the paging cursor")
    kind: str = Field(description="the event it is about: " + ", ".join(KINDS))
    case_id: str
    position: int = Field(description="the log position of the event it is about")
    subject: str | None = Field(description="the referral, consent or share it concerns")
    ask: str = Field(description="what the recipient is asked to do, in words")
    acknowledge: bool = Field(
        description="whether the recipient is asked to acknowledge it (withdrawals, erasures)"
    )
    created_at: str
    acknowledged: str | None = Field(
        description="what the agency told answered in its `notice.acknowledged`: deleted,"
        " had_none or kept_legal_obligation; null: not (yet) acknowledged"
    )


class AgencyNotices(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notices: list[Notice]
    next: int = Field(description="`after` for the next page (unchanged when none is left)")


class ToldNotice(Notice):
    agency: str = Field(description="the agency that was told")
    delivered_at: str | None = Field(
        description="when it reached one of the agency's webhook endpoints (null: not yet,"
        " or the agency has none and reads `GET /v1/notices`)"
    )
    acknowledged_at: str | None


class Recipient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agency: str
    told: int = Field(description="notices about this case that told it")
    delivered: int = Field(description="of those, delivered to one of its endpoints")
    acknowledged: int = Field(description="withdrawal and erasure notices it acknowledged")
    awaiting: list[int] = Field(
        description="log positions of the withdrawals and erasures it has not acknowledged"
    )


class CaseNotices(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_id: str
    notices: list[ToldNotice]
    recipients: list[Recipient]


@router.get("/v1/notices", response_model=AgencyNotices)
def agency_notices(
    principal: CurrentPrincipal,
    ledger: LedgerDep,
    after: Annotated[int, Query(description="the last `seq` already read (0: from the start)")] = 0,
    limit: Annotated[int, Query(description=f"at most this many (1 to {PAGE})")] = PAGE,
) -> dict[str, Any]:
    """Agency staff: the notices for the caller's own agency, oldest first (referrals made
    to it or answered, data shared with it, withdrawals and erasures it must act on). No
    personal data: read the case with your own token, under the usual gates."""
    return ledger.agency_notices(principal, after, limit)


@router.get("/v1/cases/{case_id}/notices", response_model=CaseNotices)
def case_notices(case_id: str, principal: CurrentPrincipal, ledger: LedgerDep) -> dict[str, Any]:
    """The agency holding the case: every notice about it, whom it told, whether it was
    delivered and acknowledged; also after the case is erased (no personal data)."""
    return ledger.case_notices(principal, case_id)
