"""The gate every /v1 request passes before any route sees it (issue 15).

FastAPI reads and parses a route's JSON body before it solves the route's dependencies, so
a bearer-token dependency alone let anyone without a token make the server read and parse a
body of any size. The gate runs first in the stack (inside `NoLeaks` only) and, for every
HTTP request to /v1/... except `GET /v1/health`, in this order:

1. 401: checks the bearer token before touching the body (`app.state.callers`: the tokens
   of concurrent requests are checked together, one read), and hands the principal to the
   routes in the request's state (`CurrentPrincipal` does not authenticate again);
2. 429: takes one request from the token's rate limit (a large body pays for its size at
   step 5, a batch for its items in its route);
3. 403: on the two event endpoints, refuses tokens whose role never appends (auditor,
   monitor, admin) before their bodies are read (the contract's step 9 check, moved ahead
   of the body for them);
   415: refuses, unread, a POST, PUT or PATCH whose Content-Type is not JSON
   (`application/json`, UTF-8 if a charset is named): a form or a text body, which a
   browser sends to any origin without asking, is never parsed as a request (a request
   that names no Content-Type is read as JSON, as before: the SDK always names it);
4. 413: caps the body by route before and while reading it: a declared Content-Length over
   the cap is refused unread, a streamed body is read only up to the cap;
5. 429: takes what the body weighs from the rate limit (one request per 4 KiB) and
   counts it against the token's budget of bytes in flight (read, not yet answered): a
   declared length before reading, a streamed body as it is read;

then hands the route the body it read (replayed), and marks every /v1 answer that sets no
caching policy of its own `Cache-Control: no-store` (answers carry case data). Its refusals
are the same JSON ErrorBody as every other refusal; a 429 comes after a pause of up to its
Retry-After (`LEDGER_RATE_PAUSE_S`, 1 s). Plain ASGI, as `NoLeaks`:
`BaseHTTPMiddleware` showed in the ingest profile.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger.api.errors import refusal
from ledger.api.ratelimit import InFlight, RateLimiter
from ledger.contract.roles import AGENCY_ROLES
from ledger.errors import Forbidden, LedgerError, TooLarge, UnsupportedMediaType
from ledger.services.tokens import Principal

PUBLIC = frozenset({("GET", "/v1/health")})
# The app.state attribute holding each route's body cap; every other route has the small one.
EVENT_CAPS = {"/v1/events": "max_body_bytes", "/v1/events:batch": "max_batch_bytes"}
OTHER_CAP = "max_other_body_bytes"
NO_STORE = (b"cache-control", b"no-store")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON = "application/json"
CLOSE_ABOVE = 65_536  # a refusal that leaves more of a body unread closes the connection


def bearer_of(scope: Scope) -> str | None:
    """The bearer token as `HTTPBearer` reads it: the first Authorization header, scheme
    `Bearer` in any case, a non-empty credential; None otherwise."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            credentials = credentials.strip()
            return credentials if scheme.lower() == "bearer" and credentials else None
    return None


def declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def principal_of(scope: Scope) -> Principal | None:
    """The principal the gate authenticated for this request, if it did."""
    principal = scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else None


def body_of(scope: Scope) -> tuple[bytes, int] | None:
    """The body the gate read for this request, and what the request has paid of its
    token's rate limit so far; None if the gate did not read it. (Reading the replayed
    body through Starlette would copy it once more: for a 1 MiB body that showed.)"""
    request_state = scope.get("state", {})
    if "body" not in request_state:
        return None
    return request_state["body"], request_state["paid"]


class _Gone(Exception):
    """The client went away while its body was being read: there is no one to answer."""


class Gate:
    """Authenticate, rate-limit, refuse non-appending roles, cap and budget the body, then
    replay it to the app (see the module docstring). Limits are read from `app.state` on
    each request, so tests and operators can change them on a running app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        send = _no_store(send)
        method, path = scope["method"], scope["path"]
        if (method, path) in PUBLIC:
            await self.app(scope, receive, send)
            return
        state: State = scope["app"].state
        declared = declared_length(scope)
        try:
            # 1. The token, before the body.
            principal: Principal = await state.callers.submit(bearer_of(scope))
            # 2. The token's rate limit.
            state.rate_limiter.check(principal.token_id)
            # 3. Roles that never append, before their bodies are read.
            cap_name = EVENT_CAPS.get(path) if method == "POST" else None
            if cap_name is not None and principal.role not in AGENCY_ROLES:
                raise Forbidden(f"a {principal.role} token cannot append events")
            if method in BODY_METHODS:
                _check_json(scope)
            # 4. A declared length over the route's cap, unread.
            cap: int = getattr(state, cap_name or OTHER_CAP)
            if declared is not None and declared > cap:
                raise _too_large(cap)
        except LedgerError as exc:
            await _refuse(exc, scope, receive, send, unread=_body_to_come(scope, declared))
            return
        request_state = scope.setdefault("state", {})
        request_state["principal"] = principal
        limiter: RateLimiter = state.rate_limiter
        token_id = principal.token_id
        held = _Held(state.inflight, token_id)
        try:
            try:
                # 5. What the body weighs, and the bytes in flight: for a declared length
                # both before reading, else as it is read.
                paid, body = 1, None
                if declared is not None:
                    paid = limiter.pay(token_id, limiter.weight(declared), paid)
                    held.up_to(declared)
                body = await _read(receive, cap, held)
                paid = limiter.pay(token_id, limiter.weight(len(body)), paid)
            except LedgerError as exc:
                unread = body is None and (held.size > 0 or _body_to_come(scope, declared))
                await _refuse(exc, scope, receive, send, unread=unread)
                return
            except _Gone:
                return
            request_state["body"], request_state["paid"] = body, paid
            await self.app(scope, _replay(body, receive), send)
        finally:
            held.give_back()


class _Held:
    """What one request holds of its token's in-flight budget, until it is answered."""

    def __init__(self, inflight: InFlight, token_id: str) -> None:
        self.inflight, self.token_id, self.size = inflight, token_id, 0

    def up_to(self, size: int) -> None:
        """Hold `size` bytes in all (429, holding no more, when the budget cannot)."""
        if size > self.size:
            self.inflight.take(self.token_id, size - self.size)
            self.size = size

    def give_back(self) -> None:
        self.inflight.give_back(self.token_id, self.size)
        self.size = 0


async def _read(receive: Receive, cap: int, held: _Held) -> bytes:
    """The body, at most `cap` bytes of it (413 past that: 4., while streaming), each byte
    held against the token's in-flight budget as it arrives (5.)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise _too_large(cap)
        held.up_to(size)
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _body_to_come(scope: Scope, declared: int | None) -> bool:
    """Whether a body larger than the small cap may still be on its way (declared, or
    chunked and of unknown length)."""
    if declared is not None:
        return declared > CLOSE_ABOVE
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


async def _refuse(
    exc: LedgerError, scope: Scope, receive: Receive, send: Send, *, unread: bool
) -> None:
    """The refusal; with `Connection: close` when a large body was left unread, so the
    server stops receiving it (kept open, the connection would take in, and throw away,
    every byte the client goes on sending: a token sending 1 MiB bodies back to back to
    be refused took a third of the event loop that way)."""
    response = refusal(exc)
    if unread:
        response.headers["connection"] = "close"
    if exc.status == 429:
        # A 429 is answered after a pause of up to its Retry-After: a client that ignores
        # Retry-After would otherwise be answered as fast as the server can refuse (a
        # token's refused requests, 1,800 a second, doubled another agency's p99), and
        # one that honours it loses nothing. A pausing request holds nothing but its
        # socket; its unread body stays in the client's buffers.
        pause: float = scope["app"].state.rate_pause_s
        retry_after = exc.extra.get("retry_after", 1)
        await asyncio.sleep(min(pause, retry_after if isinstance(retry_after, int) else 1))
    await response(scope, receive, send)


def _check_json(scope: Scope) -> None:
    """415 unless the declared Content-Type is JSON (none declared: read as JSON)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media, _, params = value.decode("latin-1").partition(";")
            charset = params.strip().lower().removeprefix("charset=").strip('"')
            if media.strip().lower() == JSON and charset in ("", "utf-8"):
                return
            raise UnsupportedMediaType("send the body as JSON, with Content-Type: application/json")


def _too_large(cap: int) -> TooLarge:
    return TooLarge(f"the body is larger than the {cap}-byte limit for this endpoint")


def _replay(body: bytes, receive: Receive) -> Receive:
    """The app's `receive`: the body the gate read, as one message, then the client's own
    (a later `http.disconnect`)."""
    replayed = False

    async def replaying() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replaying


def _no_store(send: Send) -> Send:
    """`Cache-Control: no-store` on an answer that sets no caching policy of its own."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers: list[Any] = list(message.get("headers", ()))
            if not any(name.lower() == b"cache-control" for name, _ in headers):
                message = {**message, "headers": [*headers, NO_STORE]}
        await send(message)

    return sending
