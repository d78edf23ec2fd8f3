from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ledger.api.deps import CurrentPrincipal, ReadModelsDep
from ledger.contract.vocabulary import COMPONENTS

router = APIRouter(tags=["referrals"])


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


@router.get("/v1/referrals", response_model=Referrals)
def referrals(
    principal: CurrentPrincipal,
    models: ReadModelsDep,
    status: Literal["pending", "accepted", "declined", "completed"] | None = None,
    overdue: bool | None = None,
    to: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")] = None,
    component: Literal[COMPONENTS] | None = None,  # type: ignore[valid-type]
) -> dict[str, Any]:
    """Referrals the caller's agency made or received; `due_by` and `overdue` are computed
    now (a health_psychosocial referral is due within 24 h of the case's identification)."""
    return models.referrals(principal, status=status, overdue=overdue, to=to, component=component)
