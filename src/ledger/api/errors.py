"""The one place where domain errors become HTTP answers."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger.errors import LedgerError, failure_site

log = logging.getLogger("ledger.api")


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": code, "message": message, **extra}


def refusal(exc: LedgerError) -> JSONResponse:
    """A refusal's answer: its status, an ErrorBody, and Retry-After on a 429."""
    headers = {"Retry-After": str(exc.extra.get("retry_after", 1))} if exc.status == 429 else {}
    body = error_body(exc.code, exc.message, **exc.extra)
    return JSONResponse(body, status_code=exc.status, headers=headers)


# Where a request value can be, as FastAPI names it first in a location.
_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})
# What pydantic appends to a location when an object's key (not its value) is invalid.
_KEY_MARK = "[key]"


def _named(part: object, declared: frozenset[str]) -> str:
    """A location part as it may be shown: an index, or a name the request models declare;
    anything else (a submitted member name) as `*`."""
    if isinstance(part, int) or part in declared or part == _KEY_MARK:
        return str(part)
    return "*"


def declared_names(app: FastAPI) -> frozenset[str]:
    """Every name the request side of the OpenAPI document declares: parameters, members of
    request bodies (through their references), the keys an object allows by enumeration
    (payload categories), and the location heads. Computed once per app."""
    cached: frozenset[str] | None = getattr(app.state, "declared_names", None)
    if cached is not None:
        return cached
    schema = app.openapi()
    components = schema.get("components", {}).get("schemas", {})
    names: set[str] = set(_SOURCES)
    seen: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref not in seen:
            seen.add(ref)
            walk(components.get(ref.rsplit("/", 1)[-1]))
        names.update(node.get("properties", {}))
        keys = node.get("propertyNames", {})
        if isinstance(keys, dict):
            names.update(str(key) for key in keys.get("enum", ()))
        for key, value in node.items():
            if key not in ("$ref", "enum", "const", "default", "examples", "example"):
                walk(value)

    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", ()):
                names.add(parameter["name"])
                walk(parameter.get("schema"))
            walk(operation.get("requestBody"))
    found = frozenset(names)
    app.state.declared_names = found
    return found


def install(app: FastAPI) -> None:
    """Map LedgerError subclasses, request validation and stray exceptions to JSON answers."""

    @app.exception_handler(LedgerError)
    async def ledger_error(_: Request, exc: LedgerError) -> JSONResponse:
        return refusal(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name locations and rules only: never echo the submitted values, nor submitted
        # member names (an unknown member, or a key of a free-form object, may be a name).
        declared = declared_names(request.app)
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(_named(part, declared) for part in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        return JSONResponse(
            error_body("bad_request", "; ".join(parts) or "invalid request"), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body("http_error", str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    app.add_middleware(NoLeaks)


class NoLeaks:
    """Any stray exception becomes a bare 500 naming nothing; the log gets its type and place
    only (messages may hold data). Plain ASGI: `BaseHTTPMiddleware` costs a task group and
    memory streams per request, which showed in the ingest profile."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            log.error("internal error %s at %s", type(exc).__name__, failure_site(exc))
            if started:  # the answer is under way: all that is left is to drop the connection
                return
            response = JSONResponse(
                error_body("internal", "internal error; the request was not recorded"),
                status_code=500,
            )
            await response(scope, receive, send)
