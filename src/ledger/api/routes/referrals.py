from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ledger.api.deps import CurrentPrincipal, Cursor, Limit, ReadModelsDep
from ledger.contract.vocabulary import AGENCY_RE, COMPONENTS
from ledger.services import paging

router = APIRouter(tags=["referrals"])

Status = Annotated[
    Literal["pending", "accepted", "declined", "completed"],
    Query(
        description="only referrals in this state now: pending (not answered), accepted (the"
        " recipient took it on), declined (it refused, with a reason), completed (the"
        " service was provided)"
    ),
]
Overdue = Annotated[
    bool | None,
    Query(description="true: only open referrals past their due time; false: only the others"),
]
To = Annotated[
    str | None,
    Query(description="only referrals made to this agency", pattern=AGENCY_RE),
]
ComponentFilter = Annotated[
    Literal[COMPONENTS] | None,  # type: ignore[valid-type]
    Query(description="only referrals for this service component (sealed: unsealed to filter)"),
]


class ReferralItem(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    case_id: str
    referral_id: str
    from_: str = Field(alias="from")
    to: str
    consent_id: str
    categories: list[str]
    status: Literal["pending", "accepted", "declined", "completed"]
    made_at: str
    updated_at: str
    component: str | None = Field(description="null when the caller may not unseal it now")
    urgency: str | None
    due_by: str | None
    overdue: bool


class Referrals(BaseModel):
    model_config = ConfigDict(extra="forbid")

    referrals: list[ReferralItem]
    next: str | None = Field(default=None, description=paging.NEXT_DOC)


@router.get("/v1/referrals", response_model=Referrals, response_model_exclude_unset=True)
def referrals(
    principal: CurrentPrincipal,
    models: ReadModelsDep,
    status: Status | None = None,
    overdue: Overdue = None,
    to: To = None,
    component: ComponentFilter = None,
    cursor: Cursor = None,
    limit: Limit = paging.DEFAULT_LIMIT,
) -> dict[str, Any]:
    """A page of the referrals the caller's agency made or received, oldest first; `due_by`
    and `overdue` are computed now (a health_psychosocial referral is due within 24 h of the
    case's identification). The filters apply after the page's referrals are read, so a
    filtered page may hold fewer than `limit` and still have a `next`."""
    page = paging.page_of("referrals", (str, str, str), cursor, limit)
    return models.referrals(
        principal, status=status, overdue=overdue, to=to, component=component, page=page
    )
