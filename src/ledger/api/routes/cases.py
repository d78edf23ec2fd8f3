from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
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
