from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ledger.api.deps import CurrentPrincipal, Cursor, LedgerDep, Limit
from ledger.services import paging
from ledger.services.outbound import MAX_URL

router = APIRouter(tags=["webhooks"])


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: Annotated[str, StringConstraints(min_length=8, max_length=MAX_URL)] = Field(
        description="https URL on the public internet (no private, loopback or link-local"
        " address; redirects are not followed)"
    )
    replay: bool = Field(
        default=False,
        description="also deliver the agency's notices made before this endpoint, oldest first",
    )


class WebhookState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    url: str
    created_at: str
    delivered_through: int = Field(
        description="the `seq` of the last notice delivered (or dead-lettered) to it"
    )
    pending: int = Field(description="the agency's notices after that one")
    failing_since: str | None = Field(description="when the notice at its head first failed")
    last_error: str | None = Field(description="why the last attempt failed, in words")
    attempts: int = Field(description="attempts at the notice at its head")
    next_attempt_ms: int | None = Field(description="epoch ms of the next attempt, if failing")
    previous_secret_valid: bool = Field(
        description="whether the secret before the last rotation still signs (for a day)"
    )


class WebhookCreated(WebhookState):
    secret: str = Field(
        description="the endpoint's signing secret (`whsec_...`, Standard Webhooks): shown once"
    )


class Webhooks(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhooks: list[WebhookState]


class Rotated(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    secret: str = Field(description="the new secret: shown once")
    previous_valid_until: str = Field(description="the old secret signs beside it until then")


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int
    kind: str
    case_id: str
    position: int
    attempts: int
    error: str | None
    dead_at: str


class DeadLetters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    dead: list[DeadLetter]
    next: str | None = Field(default=None, description=paging.NEXT_DOC)


@router.post("/v1/agencies/{agency_id}/webhooks", status_code=201, response_model=WebhookCreated)
def register(
    agency_id: str, body: WebhookIn, principal: CurrentPrincipal, ledger: LedgerDep
) -> dict[str, Any]:
    """The agency's supervisor: an endpoint the agency's notices are delivered to, signed
    and timestamped per Standard Webhooks with the secret in this answer (shown once)."""
    return ledger.register_webhook(principal, agency_id, body.url, body.replay)


@router.get("/v1/agencies/{agency_id}/webhooks", response_model=Webhooks)
def listed(agency_id: str, principal: CurrentPrincipal, ledger: LedgerDep) -> dict[str, Any]:
    """The agency's supervisor: its endpoints and how their deliveries stand."""
    return ledger.agency_webhooks(principal, agency_id)


@router.post("/v1/agencies/{agency_id}/webhooks/{hook_id}/rotate-secret", response_model=Rotated)
def rotate(
    agency_id: str, hook_id: str, principal: CurrentPrincipal, ledger: LedgerDep
) -> dict[str, Any]:
    """The agency's supervisor: a new secret; deliveries carry a signature by each secret
    for a day, so the receiver can switch without missing a notice."""
    return ledger.rotate_webhook_secret(principal, agency_id, hook_id)


@router.delete("/v1/agencies/{agency_id}/webhooks/{hook_id}", status_code=204)
def remove(
    agency_id: str, hook_id: str, principal: CurrentPrincipal, ledger: LedgerDep
) -> Response:
    """The agency's supervisor: stop delivering to an endpoint."""
    ledger.remove_webhook(principal, agency_id, hook_id)
    return Response(status_code=204)


@router.get(
    "/v1/agencies/{agency_id}/webhooks/{hook_id}/dead-letters",
    response_model=DeadLetters,
    response_model_exclude_unset=True,
)
def dead_letters(
    agency_id: str,
    hook_id: str,
    principal: CurrentPrincipal,
    ledger: LedgerDep,
    cursor: Cursor = None,
    limit: Limit = paging.DEFAULT_LIMIT,
) -> dict[str, Any]:
    """The agency's supervisor: a page of the notices given up on after the retry period
    (three days by default), oldest first. They are still in `GET /v1/notices`."""
    page = paging.page_of("dead-letters", (int,), cursor, limit)
    return ledger.dead_letters(principal, agency_id, hook_id, page)
