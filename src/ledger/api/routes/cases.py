from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from ledger.api.deps import CurrentPrincipal, LedgerDep, ReadModelsDep

router = APIRouter(tags=["cases"])


class CaseFacts(BaseModel):
    minor: bool


class CaseView(BaseModel):
    case_id: str
    status: Literal["open", "closed"]
    facts: CaseFacts
    attrs: dict[str, Any]
    payload: dict[str, Any]


class CaseSummary(BaseModel):
    case_id: str
    status: Literal["open", "closed"]
    holder: bool
    minor: bool
    opened_at: str
    updated_at: str
    open_referrals: int
    categories: list[str]


class CaseList(BaseModel):
    cases: list[CaseSummary]


@router.get("/v1/cases", response_model=CaseList)
def list_cases(principal: CurrentPrincipal, models: ReadModelsDep) -> dict[str, Any]:
    """The caller's agency's cases: status, open referrals, the categories it may read."""
    return {"cases": models.case_list(principal)}


@router.get("/v1/cases/{case_id}/consents")
def consents(case_id: str, principal: CurrentPrincipal, models: ReadModelsDep) -> dict[str, Any]:
    """Consent register: scope, language, interpreter, who gave it, assent, expiry,
    withdrawal, whether it counts now, and which agencies may receive which categories."""
    return models.consents(principal, case_id)


@router.get("/v1/cases/{case_id}/disclosures")
def disclosures(case_id: str, principal: CurrentPrincipal, models: ReadModelsDep) -> dict[str, Any]:
    """Every share, referral and unsealed read of the case: to whom, what, when, under which
    consent (the answer to "who has my data?"; for the agencies holding the case)."""
    return models.disclosures(principal, case_id)


@router.get("/v1/cases/{case_id}", response_model=CaseView)
def read_case(case_id: str, principal: CurrentPrincipal, ledger: LedgerDep) -> dict[str, Any]:
    """What the caller's agency may see of a case; every read is logged as an access entry."""
    return ledger.read_case(principal, case_id)


@router.get("/v1/cases/{case_id}/erasure-receipt", response_class=PlainTextResponse)
def erasure_receipt(
    case_id: str, principal: CurrentPrincipal, ledger: LedgerDep
) -> PlainTextResponse:
    """The erasure receipt of an erased case: a signed note by the receipt key."""
    return PlainTextResponse(
        ledger.erasure_receipt(principal, case_id), media_type="text/plain; charset=utf-8"
    )
