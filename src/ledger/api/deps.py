"""Named dependencies: the ledger and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger.api.gate import principal_of
from ledger.interop.service import InteropService
from ledger.ledger import Ledger
from ledger.services import paging
from ledger.services.readmodels import ReadModels
from ledger.services.tokens import Principal

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
"""The bearer token as sent, not yet checked."""


async def get_principal(request: Request, bearer: BearerToken) -> Principal:
    """The caller the gate authenticated (`ledger.api.gate`: token checked and rate limit
    taken before any body was read). A route the gate does not cover authenticates here,
    the same way, so no route can run without a checked token."""
    principal = principal_of(request.scope)
    if principal is None:
        principal = await request.app.state.callers.submit(bearer)
        request.app.state.rate_limiter.check(principal.token_id)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


Cursor = Annotated[str | None, Query(description=paging.CURSOR_DOC, pattern=paging.CURSOR_PATTERN)]
"""A list's `cursor` query parameter: the `next` of its previous page."""
Limit = Annotated[int, Query(description=paging.LIMIT_DOC, ge=1, le=paging.MAX_LIMIT)]
"""A list's `limit` query parameter."""
