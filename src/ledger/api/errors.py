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


def install(app: FastAPI) -> None:
    """Map LedgerError subclasses, request validation and stray exceptions to JSON answers."""

    @app.exception_handler(LedgerError)
    async def ledger_error(_: Request, exc: LedgerError) -> JSONResponse:
        headers = {"Retry-After": str(exc.extra.get("retry_after", 1))} if exc.status == 429 else {}
        body = error_body(exc.code, exc.message, **exc.extra)
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Name locations and rules only: never echo the submitted values.
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()))
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
