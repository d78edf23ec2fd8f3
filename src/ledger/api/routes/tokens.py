from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ledger.api.deps import CurrentPrincipal, Cursor, LedgerDep, Limit
from ledger.contract.roles import Role
from ledger.contract.vocabulary import AGENCY_RE
from ledger.services import paging
from ledger.services.tokens import Tokens

router = APIRouter(tags=["tokens"])


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    agency: Annotated[str, StringConstraints(pattern=AGENCY_RE)] | None = None
    role: Role
    label: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    expires_at: (
        Annotated[
            str,
            StringConstraints(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"),
        ]
        | None
    ) = None


class TokenOut(BaseModel):
    token: str
    id: str


@router.post("/v1/tokens", status_code=201, response_model=TokenOut)
def create_token(body: TokenIn, principal: CurrentPrincipal, ledger: LedgerDep) -> TokenOut:
    """Admin: a token for one person; shown once, stored only as a hash."""
    return TokenOut(
        **ledger.create_token(principal, body.agency, body.role, body.label, body.expires_at)
    )


class TokenListed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="the token's id (what `DELETE /v1/tokens/{id}` takes)")
    role: Role
    agency: str | None = Field(description="the agency it acts for (None: no agency)")
    label: str = Field(description="who or what it is for, as given when it was created")
    created_at: str = Field(description="when it was created (YYYY-MM-DDTHH:MM:SSZ)")
    expires_at: str | None = Field(description="when it stops working (None: never)")
    revoked_at: str | None = Field(description="when it was revoked (None: it was not)")


class TokenList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenListed]
    next: str | None = Field(default=None, description=paging.NEXT_DOC)


@router.get("/v1/tokens", response_model=TokenList, response_model_exclude_unset=True)
def list_tokens(
    principal: CurrentPrincipal,
    ledger: LedgerDep,
    cursor: Cursor = None,
    limit: Limit = paging.DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Admin: a page of every token, revoked and expired ones included, in id order; never
    a token's secret, which only its creation answered."""
    page = paging.page_of("tokens", (str,), cursor, limit)
    items, last = ledger.tokens.listing(principal, page)
    return paging.answer("tokens", items, "tokens", last)


class WhoAmI(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="the token's id (what `DELETE /v1/tokens/{id}` takes)")
    role: Role
    agency: str | None = Field(description="the agency it acts for (None: no agency)")


@router.get("/v1/tokens/self", response_model=WhoAmI)
def whoami(principal: CurrentPrincipal) -> dict[str, str | None]:
    """Any token: its own id, role and agency (a console checks a token this way before
    binding it to a person's account)."""
    return Tokens.whoami(principal)


@router.delete("/v1/tokens/{token_id}", status_code=204)
def revoke_token(token_id: str, principal: CurrentPrincipal, ledger: LedgerDep) -> Response:
    """Admin: revoke any token; a supervisor: a caseworker or supervisor token of its own
    agency. It answers 401 from now on."""
    ledger.revoke_token(principal, token_id)
    return Response(status_code=204)
