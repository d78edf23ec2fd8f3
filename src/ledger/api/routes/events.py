from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ledger.api.deps import CurrentPrincipal, LedgerDep
from ledger.envelope import CATEGORIES, EVENT_TYPES, Submission, loads_strict, submission_from
from ledger.errors import BadRequest, LedgerError
from ledger.ledger import Incoming, Ledger, Outcome

router = APIRouter(tags=["events"])
T = TypeVar("T")

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


# A body above this is parsed in the process's large-body lane, one at a time (see `parsed`).
LARGE_BODY_BYTES = 65_536
BATCH_LIMIT = 1000


class Lane:
    """One at a time: the process's large-body parsing. Parsing holds the GIL for most of
    its time (json.loads is one C call), so several large bodies parsed at once take every
    thread's share of it; one at a time, whoever sends them, the event loop and the
    submissions' batches keep theirs. The lock belongs to the event loop that first waits
    on it (a test client may start a new loop per request)."""

    def __init__(self) -> None:
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock


async def parsed(request: Request, parse: Callable[[bytes], T], raw: bytes) -> T:
    """`parse(raw)` off the event loop, in a worker thread, before the submission joins the
    group (a costly body then delays nobody queued behind it); a large body in the lane."""
    if len(raw) <= LARGE_BODY_BYTES:
        return await run_in_threadpool(parse, raw)
    async with request.app.state.large_bodies.lock():
        return await run_in_threadpool(parse, raw)


def parse_batch(raw: bytes) -> list[Submission | LedgerError]:
    """Step 2 of a batch: the body as a whole (a refusal raises: 400 for the whole batch),
    then each item, the submission or its refusal, answered in its turn."""
    body = loads_strict(raw)
    if (
        not isinstance(body, dict)
        or set(body) != {"events"}
        or not isinstance(body["events"], list)
    ):
        raise BadRequest('a batch is {"events": [submission, ...]}')
    if not 1 <= len(body["events"]) <= BATCH_LIMIT:
        raise BadRequest(f"a batch holds 1 to {BATCH_LIMIT} events")
    items: list[Submission | LedgerError] = []
    for item in body["events"]:
        try:
            items.append(submission_from(item))
        except LedgerError as exc:
            items.append(exc)
    return items


def answer_of(outcome: Outcome) -> dict[str, Any]:
    """A batch item's result: its answer, its refusal's, or (a failure, not a refusal,
    logged where it was caught) a bare 500 naming nothing."""
    if isinstance(outcome, LedgerError):
        body = {"error": outcome.code, "message": outcome.message, **outcome.extra}
        return {"status": outcome.status, "body": body}
    if isinstance(outcome, Exception):
        message = "the server failed on this item; send it again (a recorded one answers 200)"
        return {"status": 500, "body": {"error": "internal", "message": message}}
    status, answer = outcome
    return {"status": status, "body": answer}


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
async def submit_event(
    request: Request, principal: CurrentPrincipal
) -> Annotated[Any, JSONResponse]:
    """Append a signed event; refusals follow the contract's order (section 3), with one
    change: a token whose role never appends (auditor, monitor, admin) is refused (403)
    before its body is read, right after the token (401) and its rate limit (429), so for
    it the step 9 role check comes ahead of steps 2 to 8. A body over 1 MiB
    (`LEDGER_MAX_BODY_BYTES`) is 413, unread when its Content-Length says so."""
    # The gate checked the token and the rate limit, refused roles that never append and
    # read the body within its cap. The body is parsed (step 2) in a worker thread before
    # it joins the group: concurrent submissions are taken together, one worker-thread call
    # per batch (`Ledger.submit_many`: one look-up and one transaction), each answered as
    # if alone.
    submission = await parsed(request, Ledger.parse, await request.body())
    if isinstance(submission, LedgerError):
        raise submission
    status, answer = await request.app.state.submissions.submit(Incoming(principal, submission))
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
    POST /v1/events); the answers come back in order. A token whose role never appends
    (auditor, monitor, admin) is refused (403) as a whole, before its body is read. A body
    over 4 MiB (`LEDGER_MAX_BATCH_BYTES`; 1,000 events with 1 KiB payloads take about 2.2
    MB) is 413. A batch costs its item count in the token's rate limit: 429 for the whole
    batch, nothing recorded, when the token cannot pay for it."""
    items = await parsed(request, parse_batch, await request.body())
    # The gate took one request from the token's bucket: the batch pays for its other items.
    request.app.state.rate_limiter.check_rest(principal.token_id, len(items))
    outcomes = await run_in_threadpool(
        ledger.submit_many, [Incoming(principal, item) for item in items]
    )
    return {"results": [answer_of(outcome) for outcome in outcomes]}
