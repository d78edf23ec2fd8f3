from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from ledger.api.deps import LedgerDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    log: str


@router.get("/v1/health", response_model=Health)
def health(ledger: LedgerDep) -> Health:
    """Liveness and the log origin events must name (no token needed)."""
    return Health(status="ok", log=ledger.origin)
