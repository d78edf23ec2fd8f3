"""Named dependencies: the ledger and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger.interop.service import InteropService
from ledger.ledger import Ledger, Principal
from ledger.readmodels import ReadModels

_bearer = HTTPBearer(auto_error=False, description="A token from POST /v1/tokens")


async def get_ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


LedgerDep = Annotated[Ledger, Depends(get_ledger)]


async def get_readmodels(request: Request) -> ReadModels:
    models: ReadModels = request.app.state.readmodels
    return models


ReadModelsDep = Annotated[ReadModels, Depends(get_readmodels)]


async def get_interop(ledger: LedgerDep, models: ReadModelsDep) -> InteropService:
    return InteropService(ledger, models)


InteropDep = Annotated[InteropService, Depends(get_interop)]


async def get_bearer(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return None if credentials is None else credentials.credentials


BearerToken = Annotated[str | None, Depends(get_bearer)]
"""The bearer token as sent, not yet checked (POST /v1/events checks it in its group)."""


def get_principal(request: Request, ledger: LedgerDep, bearer: BearerToken) -> Principal:
    principal = ledger.authenticate(bearer)
    admit(request, principal)
    return principal


def admit(request: Request, principal: Principal) -> None:
    """The per-token rate limit (429)."""
    request.app.state.rate_limiter.check(principal.token_id)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
