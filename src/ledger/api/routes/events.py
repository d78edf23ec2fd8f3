from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ledger.api import metrics
from ledger.api.deps import CurrentPrincipal, LedgerDep
from ledger.api.gate import body_of, principal_of
from ledger.api.ratelimit import RateLimiter
from ledger.contract.envelope import Submission
from ledger.contract.schemas import EVENT_TYPES
from ledger.contract.vocabulary import CATEGORIES
from ledger.errors import LedgerError
from ledger.ledger import Ledger
from ledger.services.submissions import Incoming, answer_of

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


class Filled(BaseModel):
    """The values the ledger reads a null attr as (they are not stored: the sealed attrs
    stay as signed)."""

    due_by: str = Field(
        description="a `referral.made` with `due_by: null`: the due time it stands for,"
        " `signed_at` + 24 h for health_psychosocial, + 48 h urgent, + 7 days routine"
        " (a health referral is held to 24 h after the identification day besides)"
    )


class EventAnswer(BaseModel):
    event_id: str
    case_id: str
    index: int
    case_version: int
    leaf_hash: str
    entry: EntryAdded
    notify: list[str] | None = None
    receipt: str | None = None
    filled: Filled | None = None


# A body above this is parsed in the process's large-body lane (see `LargeBodies`).
LARGE_BODY_BYTES = 65_536


class LargeBodies:
    """The large-body lane: bodies over LARGE_BODY_BYTES are parsed one at a time, in a
    process of their own (one per server process, started when the first one comes).

    Parsing is Python holding the GIL: a 1 MiB body of numbers took 60 to 280 ms here, so
    a token sending such bodies back to back, parsed by this process's threads, held the
    GIL most of the time and every other caller's request waited for it at each step
    (another agency's single events: p99 from 20 ms to 1 to 2.4 s with parsing in the
    submissions group, still 110 to 200 ms in a worker thread one at a time). In another
    process the server only unpickles the result (2 to 18 ms for those bodies, 18 ms for
    1,000 events), and the lane's queue makes one token's bodies wait for each other, not
    for everyone."""

    # One token's share of the lane's time, as a bucket of lane-seconds: it refills at
    # SHARE seconds a second up to BURST, and a parse takes what it took. A token that
    # empties it waits before its next large body starts (its bodies wait for each other;
    # other tokens' do not wait for them). Sequential batches of 1,000 events use about an
    # eighth of the lane and never wait; a token sending costly 1 MiB bodies from several
    # threads gets a fifth of one core. Measured with `ledger bench --only hostile` (another
    # agency's p99 while such a token sends from 4 threads): without a share 1.2 to 3.7
    # times the quiet p99; with a fixed tenth 1.0 to 1.45 (but sequential batches then
    # waited); with this bucket 1.1 to 1.8, and batch ingest as without a share.
    SHARE = 0.2
    BURST = 1.0

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._guard = threading.Lock()
        self._credit: dict[str, tuple[float, float]] = {}  # token -> (lane-seconds, at)

    def _executor(self) -> ProcessPoolExecutor:
        with self._guard:
            if self._pool is None:
                # spawn, not fork: the server has threads and open database connections.
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
            return self._pool

    def _balance(self, token: str, now: float) -> float:
        credit, at = self._credit.get(token, (self.BURST, now))
        return min(self.BURST, credit + (now - at) * self.SHARE)

    async def parse(self, parse: Callable[[bytes], T], raw: bytes, token: str) -> T:
        """`parse(raw)` in the lane's process, within the token's share of the lane's time;
        if that process died (killed, out of memory), once more in a new one (parsing has
        no side effects)."""
        loop = asyncio.get_running_loop()
        owed = -self._balance(token, loop.time())
        if owed > 0:
            await asyncio.sleep(owed / self.SHARE)
        started = loop.time()
        try:
            return await self._run(parse, raw)
        finally:
            now = loop.time()
            self._credit[token] = (self._balance(token, now) - (now - started), now)
            if len(self._credit) > 10_000:  # forget tokens whose bucket is full again
                full = {t for t in self._credit if self._balance(t, now) >= self.BURST}
                for t in full:
                    del self._credit[t]

    async def _run(self, parse: Callable[[bytes], T], raw: bytes) -> T:
        for attempt in (1, 2):
            pool = self._executor()
            try:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(pool, _parse_fully, parse, raw)
            except BrokenProcessPool:
                with self._guard:
                    if self._pool is pool:
                        self._pool = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def warm(self) -> None:
        """Start the lane's process and have it import the parser (about a second, and
        a second of CPU): `ledger serve` waits for it before it answers anything, so
        neither the first large body nor the first requests' latency pay for it."""
        await asyncio.wrap_future(self._executor().submit(_parse_fully, Ledger.parse, b"{}"))

    @property
    def pids(self) -> list[int]:
        """For tests: the lane's process, if it runs."""
        pool = self._pool
        return [] if pool is None else list(getattr(pool, "_processes", None) or {})

    def close(self) -> None:
        with self._guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _parse_fully(parse: Callable[[bytes], T], raw: bytes) -> T:
    """In the lane's process: `parse(raw)`, with each submission's canonical bytes made
    there too (the digest checks and the sealing need them; they cost what parsing does)."""
    result = parse(raw)
    for item in result if isinstance(result, list) else [result]:
        if isinstance(item, Submission):
            with contextlib.suppress(Exception):  # a failure belongs to step 6, in its turn
                item.canonical  # noqa: B018 (a cached property: computed once, kept)
    return result


async def parsed(request: Request, parse: Callable[[bytes], T], raw: bytes) -> T:
    """`parse(raw)` off the event loop before the submission joins the group, so a costly
    body delays nobody queued behind it: a small body in a worker thread, a large one in
    the large-body lane."""
    if len(raw) <= LARGE_BODY_BYTES:
        return await run_in_threadpool(parse, raw)
    large: LargeBodies = request.app.state.large_bodies
    principal = principal_of(request.scope)
    return await large.parse(parse, raw, principal.token_id if principal else "")


async def gated_body(request: Request) -> tuple[bytes, int]:
    """The body as the gate read it, and what the request has paid of the rate limit."""
    gated = body_of(request.scope)
    return gated if gated is not None else (await request.body(), 1)


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
    (`LEDGER_MAX_BODY_BYTES`) is 413, unread when its Content-Length says so; a large one
    weighs one request per 4 KiB in the token's rate limit."""
    # The gate checked the token and the rate limit, refused roles that never append and
    # read the body within its cap. Concurrent submissions are taken together, one
    # worker-thread call per batch (`Ledger.submit_many`: one look-up and one transaction),
    # each answered as if alone. A small body is parsed (step 2) there, in the batch: its
    # cost is bounded (64 KiB, parsed in passes a small multiple of json.loads's), and a
    # thread hop per request to parse it first doubled the server's CPU per event. A large
    # one is parsed before, in the large-body lane, so it delays nobody in the group.
    raw, _ = await gated_body(request)
    body: bytes | Submission | LedgerError = raw
    try:
        if len(raw) > LARGE_BODY_BYTES:
            body = await parsed(request, Ledger.parse, raw)
            if isinstance(body, LedgerError):
                raise body
        status, answer = await request.app.state.submissions.submit(Incoming(principal, body))
    except LedgerError as exc:
        metrics.count_event(exc.status, {"error": exc.code})
        raise
    metrics.count_event(status, answer)
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
                                "description": "1 to 1,000 submissions, each as POST"
                                " /v1/events takes it, decided in this order",
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
    MB) is 413. A batch weighs its item count in the token's rate limit (or its size, one
    request per 4 KiB, when that is more): 429 for the whole batch, nothing recorded,
    when the token cannot pay for it."""
    raw, paid = await gated_body(request)
    items = await parsed(request, Ledger.parse_batch, raw)
    # The gate took what the body weighs from the token's bucket: the batch pays the rest
    # of what its items weigh, or nothing of it is recorded (429).
    limiter: RateLimiter = request.app.state.rate_limiter
    limiter.pay(principal.token_id, limiter.weight(len(raw), len(items)), paid)
    outcomes = await run_in_threadpool(
        ledger.submit_many, [Incoming(principal, item) for item in items]
    )
    results = [answer_of(outcome) for outcome in outcomes]
    for status, body in results:
        metrics.count_event(status, body)
    return {"results": [{"status": status, "body": body} for status, body in results]}
