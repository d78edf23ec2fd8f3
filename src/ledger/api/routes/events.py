from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ledger.api.deps import BearerToken, CurrentPrincipal, LedgerDep, admit
from ledger.envelope import CATEGORIES, EVENT_TYPES
from ledger.errors import TooLarge
from ledger.ledger import Incoming

router = APIRouter(tags=["events"])

Category = Literal[CATEGORIES]  # type: ignore[valid-type]


class EnvelopeDoc(BaseModel):
    """The signed envelope (cleartext). Facts per type: see the x-event-types extension."""

    v: Literal[1]
    log: str = Field(description="The log origin from GET /v1/health")
    event_id: str = Field(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
    )
    case_id: str = Field(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
    )
    type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    agency: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    key: str = Field(description="<agency id>+<8 hex>: the registered key that signed")
    signed_at: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
    facts: dict[str, Any]
    attrs_digest: str
    payload_digests: dict[Category, str]  # type: ignore[valid-type]


class SubmissionDoc(BaseModel):
    """POST /v1/events body (ARCHITECTURE.md section 3)."""

    envelope: EnvelopeDoc
    attrs: dict[str, Any]
    payload: dict[Category, Any]  # type: ignore[valid-type]
    salt: str = Field(description="base64 of 32 random bytes")
    signature: str = Field(description="base64 Ed25519 over b'ledger-event-v1\\n' + JCS(envelope)")


class EntryAdded(BaseModel):
    """What the ledger put in the event's log entry beside the envelope and signature: with
    them the agency rebuilds the entry's bytes, and its leaf hash, from what it submitted."""

    sealed_digest: str = Field(description="b64 SHA-256 of the stored ciphertext")
    actor: str = Field(description="the opaque id of the token used")
    role: str
    recorded_at: str


class EventAnswer(BaseModel):
    event_id: str
    case_id: str
    index: int
    case_version: int
    leaf_hash: str
    entry: EntryAdded
    notify: list[str] | None = None
    receipt: str | None = None


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes (413) without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is larger than the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is larger than the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/v1/events",
    status_code=201,
    response_model=EventAnswer,
    response_model_exclude_none=True,
    responses={200: {"model": EventAnswer, "description": "identical retry: the original answer"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/SubmissionDoc"}}
            },
        }
    },
)
async def submit_event(request: Request, bearer: BearerToken) -> Annotated[Any, JSONResponse]:
    """Append a signed event; refusals follow the contract's order (section 3)."""
    # Concurrent requests are taken together, one worker-thread call per batch: first their
    # tokens (one read; step 1, before any body is read), then their submissions
    # (`Ledger.submit_many`: one look-up and one transaction), each answered as if alone.
    principal = await request.app.state.callers.submit(bearer)
    admit(request, principal)
    raw = await read_limited(request, request.app.state.max_body_bytes)
    status, answer = await request.app.state.submissions.submit(Incoming(principal, raw))
    return JSONResponse(answer, status_code=status)


class BatchResult(BaseModel):
    status: int
    body: dict[str, Any]


class BatchAnswer(BaseModel):
    results: list[BatchResult]


@router.post(
    "/v1/events:batch",
    response_model=BatchAnswer,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["events"],
                        "additionalProperties": False,
                        "properties": {
                            "events": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 1000,
                                "items": {"$ref": "#/components/schemas/SubmissionDoc"},
                            }
                        },
                    }
                }
            },
        }
    },
)
async def submit_batch(
    request: Request, principal: CurrentPrincipal, ledger: LedgerDep
) -> dict[str, Any]:
    """Up to 1,000 events, each accepted or refused on its own (same rules and answers as
    POST /v1/events); the answers come back in order."""
    raw = await read_limited(request, request.app.state.max_body_bytes * 32)
    results = await run_in_threadpool(ledger.submit_batch, principal, raw)
    return {"results": [{"status": status, "body": body} for status, body in results]}
