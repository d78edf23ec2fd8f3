from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ledger.api.deps import CurrentPrincipal, LedgerDep
from ledger.envelope import AGENCY_RE

router = APIRouter(tags=["agencies"])


class AgencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: Annotated[str, StringConstraints(pattern=AGENCY_RE)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    verify_key: Annotated[str, Field(description="C2SP verifier key line named after the id")]


class AgencyOut(BaseModel):
    id: str
    index: int


@router.post("/v1/agencies", status_code=201, response_model=AgencyOut)
def register_agency(body: AgencyIn, principal: CurrentPrincipal, ledger: LedgerDep) -> AgencyOut:
    """Admin: register an agency and its first signing key (a registry entry in the log)."""
    result = ledger.register_agency(principal, body.id, body.name, body.type, body.verify_key)
    return AgencyOut(**result)
