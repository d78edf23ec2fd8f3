"""An agency's guideline indicators, for its own supervisors: counts only, nothing per case."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ledger.api.deps import CurrentPrincipal, ReadModelsDep
from ledger.contract.vocabulary import COMPONENTS, DECLINE_REASONS

router = APIRouter(tags=["indicators"])
MONTH = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


class _Counts(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Celerity(_Counts):
    identified: int = Field(description="cases the agency opened identified in the months")
    in_time: int = Field(
        description="of them, those whose first health_psychosocial referral was made by 24 h"
        " after the end of the identification day (principle XI)"
    )
    late: int = Field(description="those whose first such referral came after that")
    no_care_yet: int = Field(description="those with no health_psychosocial referral yet")
    share_in_time: float | None = Field(description="in_time / identified; null: none identified")
    median_hours: float | None = Field(
        description="median hours from the end of the identification day to the first such"
        " referral (0 when made on that day), over the cases that have one"
    )


class CelerityMonth(Celerity):
    month: str


class CelerityFigures(Celerity):
    by_month: list[CelerityMonth]


class ComponentRow(_Counts):
    component: Literal[COMPONENTS]  # type: ignore[valid-type]
    made: int
    pending: int = Field(description="not answered yet")
    accepted: int = Field(description="accepted, not completed yet")
    declined: int
    completed: int
    open: int = Field(description="pending or accepted")
    overdue_now: int = Field(description="open and past its due time now")
    median_hours_to_answer: float | None = Field(
        description="median hours from the referral to its first answer (accepted or declined)"
    )


class DeclineRow(_Counts):
    reason: Literal[DECLINE_REASONS]  # type: ignore[valid-type]
    declined: int


class ReferralFigures(_Counts):
    made: int = Field(description="referrals in the months (of the component, if chosen)")
    open: int
    overdue_now: int
    median_hours_to_answer: float | None
    by_component: list[ComponentRow]
    declined_by_reason: list[DeclineRow]


class ConsentMonth(_Counts):
    month: str
    granted: int
    withdrawn: int
    expired: int = Field(description="passed their expires_at in the month, not withdrawn before")


class CaseMonth(_Counts):
    month: str
    opened: int
    closed: int


class Period(_Counts):
    from_: str = Field(alias="from")
    to: str


class AgencyIndicators(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    agency: str
    period: Period
    component: str | None = Field(description="the referral component chosen, or null: all")
    direction: Literal["made", "received"] = Field(
        description="referrals the agency made (default) or received"
    )
    computed_at: str
    celerity: CelerityFigures
    referrals: ReferralFigures
    consents: list[ConsentMonth] = Field(description="consents the agency recorded, by month")
    cases: list[CaseMonth] = Field(description="cases the agency opened or closed, by month")


@router.get("/v1/agencies/{agency_id}/indicators", response_model=AgencyIndicators)
def indicators(
    principal: CurrentPrincipal,
    models: ReadModelsDep,
    agency_id: str,
    from_: Annotated[str | None, Query(alias="from", pattern=MONTH)] = None,
    to: Annotated[str | None, Query(pattern=MONTH)] = None,
    component: Literal[COMPONENTS] | None = None,  # type: ignore[valid-type]
    direction: Literal["made", "received"] = "made",
) -> dict[str, Any]:
    """The agency's guideline indicators over the months `from`..`to` (YYYY-MM, both
    included; default the twelve months to this one), for the agency's own supervisors:
    celerity (principle XI), referrals by component and outcome, consents and cases by
    month. Counts only: nothing identifies a case, and nothing is logged as a read."""
    return models.indicators.figures(principal, agency_id, from_, to, component, direction)
