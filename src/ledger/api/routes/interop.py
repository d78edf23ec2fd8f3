from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from ledger.api.deps import CurrentPrincipal, InteropDep

router = APIRouter(tags=["interoperability"])

_RECEIPT_MEDIA = {
    "text/plain": {"schema": {"type": "string"}},
    "text/html": {"schema": {"type": "string"}},
    "application/pdf": {"schema": {"type": "string", "format": "binary"}},
}


class ReceiptLookup(BaseModel):
    case_id: str
    consent_id: str
    event: Literal["granted", "withdrawn"]


@router.get(
    "/v1/cases/{case_id}/consents/{consent_id}/receipt",
    response_class=Response,
    responses={200: {"content": _RECEIPT_MEDIA, "description": "the receipt"}},
)
def consent_receipt(
    case_id: str,
    consent_id: str,
    principal: CurrentPrincipal,
    service: InteropDep,
    event: Annotated[Literal["granted", "withdrawn"] | None, Query()] = None,
    format: Annotated[Literal["note", "html", "pdf"], Query()] = "note",
) -> Response:
    """The survivor's consent receipt for the consent's grant or withdrawal (default: the
    latest): `note` is the signed record (ISO/IEC TS 27560 structure, a signed note by the
    receipt key); `html` and `pdf` are the printout, safe to carry (a receipt code, no ids,
    neutral wording), in the consent's language."""
    body, media_type = service.receipt(principal, case_id, consent_id, event, format)
    headers = {"Cache-Control": "no-store"}
    if format == "html":  # a static page: no scripts, no requests, nothing but its own style
        headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    if format == "pdf":
        headers["Content-Disposition"] = 'inline; filename="consent-receipt.pdf"'
    return Response(body, media_type=media_type, headers=headers)


@router.get(
    "/v1/cases/{case_id}/consents/{consent_id}/fhir",
    response_class=Response,  # it answers application/fhir+json only, never application/json
    responses={
        200: {
            "content": {"application/fhir+json": {"schema": {"type": "object"}}},
            "description": "the FHIR R4 Consent resource",
        }
    },
)
def fhir_consent(
    case_id: str, consent_id: str, principal: CurrentPrincipal, service: InteropDep
) -> Response:
    """The consent as a FHIR R4 Consent resource; the survivor appears only as an opaque id."""
    return Response(
        json.dumps(service.fhir_consent(principal, case_id, consent_id), ensure_ascii=False),
        media_type="application/fhir+json",
        headers={"Cache-Control": "no-store"},
    )


@router.get("/v1/consent-receipts/{code}", response_model=ReceiptLookup)
def lookup_receipt(code: str, principal: CurrentPrincipal, service: InteropDep) -> Any:
    """Find the case and consent of a printed receipt code among your agency's cases."""
    return service.lookup(principal, code)
