from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from ledger.api.deps import CurrentPrincipal, LedgerDep

router = APIRouter(tags=["cases"])


class CaseFacts(BaseModel):
    minor: bool


class CaseView(BaseModel):
    case_id: str
    status: Literal["open", "closed"]
    facts: CaseFacts
    attrs: dict[str, Any]
    payload: dict[str, Any]


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
