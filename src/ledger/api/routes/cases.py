from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from ledger.api.deps import CurrentPrincipal, Cursor, LedgerDep, Limit, ReadModelsDep
from ledger.services import paging

UUID4 = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"

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
    next: str | None = Field(default=None, description=paging.NEXT_DOC)


class Answer(BaseModel):
    """An answer whose every member is declared (an undeclared one is a server error)."""

    model_config = ConfigDict(extra="forbid")


class ConsentItem(Answer):
    consent_id: str
    granted_by: str
    granted_at: str
    purposes: list[str]
    recipients: list[str]
    categories: list[str]
    expires_at: str | None
    given_by: str
    child_assent: bool | None
    assent_exempt: bool
    withdrawn_at: str | None
    language: str | None
    interpreter: bool | None
    notice_version: str | None
    active: bool
    counts: bool


class ConsentRegister(Answer):
    case_id: str
    consents: list[ConsentItem]
    may_receive: dict[str, list[str]]


class Disclosure(Answer):
    position: int
    kind: Literal["read", "share", "referral"]
    agency: str
    by_agency: str | None
    categories: list[str]
    consent_id: str | None
    purpose: str | None
    at: str


class DisclosureRegister(Answer):
    case_id: str
    disclosures: list[Disclosure]
    next: str | None = Field(default=None, description=paging.NEXT_DOC)


class ErasureRequest(Answer):
    case_id: str
    request_event_id: str
    requested_by: str
    requested_at: str
    notify: list[str]


class ErasureRequests(Answer):
    requests: list[ErasureRequest]
    next: str | None = Field(default=None, description=paging.NEXT_DOC)


@router.get("/v1/cases", response_model=CaseList, response_model_exclude_unset=True)
def list_cases(
    principal: CurrentPrincipal,
    models: ReadModelsDep,
    cursor: Cursor = None,
    limit: Limit = paging.DEFAULT_LIMIT,
    case_id: Annotated[
        str | None,
        Query(description="only this case, if it is one of the agency's", pattern=UUID4),
    ] = None,
) -> dict[str, Any]:
    """A page of the caller's agency's cases, newest first: status, open referrals, the
    categories it may read. Nothing is unsealed."""
    page = paging.page_of("cases", (int,), cursor, limit)
    return models.case_list(principal, page, case_id)


@router.get("/v1/cases/{case_id}/consents", response_model=ConsentRegister)
def consents(
    case_id: str,
    principal: CurrentPrincipal,
    models: ReadModelsDep,
    details: Annotated[
        bool,
        Query(
            description="true: unseal each consent's language, interpreter and notice version"
            " (a read logged as an access entry); false: those are null and nothing is logged"
        ),
    ] = True,
) -> dict[str, Any]:
    """Consent register: scope, language, interpreter, who gave it, assent, expiry,
    withdrawal, whether it counts now, and which agencies may receive which categories."""
    return models.consents(principal, case_id, details=details)


@router.get(
    "/v1/cases/{case_id}/disclosures",
    response_model=DisclosureRegister,
    response_model_exclude_unset=True,
)
def disclosures(
    case_id: str,
    principal: CurrentPrincipal,
    models: ReadModelsDep,
    cursor: Cursor = None,
    limit: Limit = paging.DEFAULT_LIMIT,
) -> dict[str, Any]:
    """A page of the shares, referrals and unsealed reads of the case, in log order: to
    whom, what, when, under which consent (the answer to "who has my data?"; for the agency
    holding the case)."""
    page = paging.page_of("disclosures", (int,), cursor, limit)
    return models.disclosures(principal, case_id, page)


@router.get(
    "/v1/erasure-requests", response_model=ErasureRequests, response_model_exclude_unset=True
)
def erasure_requests(
    principal: CurrentPrincipal,
    models: ReadModelsDep,
    cursor: Cursor = None,
    limit: Limit = paging.DEFAULT_LIMIT,
) -> dict[str, Any]:
    """A supervisor: a page of the erasure requests of the agency's cases waiting for a
    second supervisor (`case.erased` naming `request_event_id`, by a token other than
    `requested_by`), oldest first, each with the agencies the erasure would tell
    (`notify`)."""
    page = paging.page_of("erasure-requests", (int,), cursor, limit)
    return models.erasure_requests(principal, page)


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
