"""The witness's HTTP face (c2sp.org/tlog-witness), one process:

- `POST /add-checkpoint`: 200 with the cosignature line (text/plain), or the refusal's status
  with one line saying why; 409 answers the size this witness holds, as `text/x.tlog.size`;
- `GET /<hex SHA-256 of an origin>/checkpoint`: the latest checkpoint cosigned of that log,
  with the log's signatures and this witness's cosignature (404 if never);
- `GET /health`: 200 with the witness's verifier key line.

Refusals are mapped to HTTP here only. The work of a request (signature checks, the fsynced
commit) runs in a worker thread, off the event loop; there is no authentication beyond the
log's signature on the checkpoint, as the protocol says.
"""

from __future__ import annotations

import hashlib
import logging

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ledger.errors import Conflict, LedgerError, TooLarge, failure_site
from ledger.witness.protocol import MAX_BODY_BYTES, Witness

log = logging.getLogger("ledger.witness")
TEXT = "text/plain; charset=utf-8"
SIZE = "text/x.tlog.size"


def refusal(exc: LedgerError) -> Response:
    """The one mapping of a refusal to its HTTP answer."""
    if isinstance(exc, Conflict) and "size" in exc.extra:
        # Exactly this content type, without the charset Starlette adds to text/* types.
        body = f"{exc.extra['size']}\n".encode()
        return Response(body, status_code=409, headers={"content-type": SIZE})
    return PlainTextResponse(exc.message + "\n", status_code=exc.status, media_type=TEXT)


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise TooLarge(f"a request body is at most {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise TooLarge(f"a request body is at most {MAX_BODY_BYTES} bytes")
    return bytes(body)


def create_app(witness: Witness) -> Starlette:
    origins = {hashlib.sha256(origin.encode()).hexdigest(): origin for origin in witness.logs}

    async def add_checkpoint(request: Request) -> Response:
        try:
            body = await _body(request)
            answer = await run_in_threadpool(witness.add_checkpoint, body)
        except LedgerError as exc:
            if exc.status != 409:
                log.warning("add-checkpoint refused: %d %s", exc.status, exc.message)
            return refusal(exc)
        except Exception as exc:  # say where, never what: a body is the log's business
            log.error("add-checkpoint failed: %s at %s", type(exc).__name__, failure_site(exc))
            return PlainTextResponse("internal error\n", status_code=500, media_type=TEXT)
        return PlainTextResponse(answer, media_type=TEXT)

    async def checkpoint(request: Request) -> Response:
        origin = origins.get(request.path_params["origin_hash"])
        held = None if origin is None else await run_in_threadpool(witness.state.latest, origin)
        if held is None:
            return PlainTextResponse("no checkpoint cosigned for that log\n", 404, media_type=TEXT)
        return PlainTextResponse(held.note, media_type=TEXT)

    async def health(request: Request) -> Response:
        return PlainTextResponse(witness.key.verify_key.line() + "\n", media_type=TEXT)

    return Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/{origin_hash:str}/checkpoint", checkpoint, methods=["GET"]),
        ]
    )


def serve(witness: Witness, host: str, port: int, log_level: str = "info") -> None:
    """Serve until stopped, in this process (one: the state folder's lock is this process's)."""
    uvicorn.run(create_app(witness), host=host, port=port, log_level=log_level, access_log=False)
