"""Health (`GET /v1/health`, no token) and the Prometheus metrics (`GET /metrics`, the metrics
token): what an operator's load balancer, container runtime and scraper read."""

from __future__ import annotations

import threading
import time
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ledger.api import metrics
from ledger.contract.vocabulary import parse_timestamp
from ledger.errors import NotFound, Unauthorized
from ledger.ledger import Ledger
from ledger.log.service import CheckpointSigner

router = APIRouter(tags=["health"])

CACHE_S = 1.0  # one process checks at most once a second, however often it is asked
Verdict = Literal["ok", "failing"]
VERDICT = "ok: it works now; failing: it does not (the server's log says why)"


class Checks(BaseModel):
    database: Verdict = Field(description=f"the event store answers a read. {VERDICT}")
    key_store: Verdict = Field(
        description=f"the case key table answers and the key-encryption key unwraps what it"
        f" wraps. {VERDICT}"
    )
    checkpoint_signer: Verdict = Field(
        description="this process signs checkpoints on its schedule: its loop runs, has not"
        " been failing for longer than two intervals, and no entry waits for a checkpoint"
        f" longer than three intervals and 30 s. {VERDICT}"
    )


class Health(BaseModel):
    status: Literal["ok", "failing"] = Field(
        description="ok when every check is ok (answer 200); failing otherwise (answer 503,"
        " the same body)"
    )
    log: str = Field(description="the log origin every event's envelope must name")
    checks: Checks = Field(description="each part of the server, checked now")


class Prober:
    """The checks of one server process, cached for `CACHE_S`."""

    def __init__(self, ledger: Ledger, signer: CheckpointSigner | None) -> None:
        self.ledger, self.signer = ledger, signer
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._last: tuple[float, Checks] | None = None

    def checks(self) -> Checks:
        with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._last[0] >= CACHE_S:
                self._last = (now, self._probe(now))
            return self._last[1]

    def _probe(self, now: float) -> Checks:
        database: Verdict = "failing"
        key_store: Verdict = "failing"
        signer: Verdict = "failing"
        try:
            size = self.ledger.store.log_size()
            latest = self.ledger.store.latest_checkpoint()
            database = "ok"
        except Exception:  # noqa: BLE001 - a verdict, not an answer: the log has the error
            size, latest = 0, None
        try:
            self.ledger.keys.check()
            key_store = "ok"
        except Exception:  # noqa: BLE001, S110
            pass
        if database == "ok" and self._signing(now, size, latest):
            signer = "ok"
        return Checks(database=database, key_store=key_store, checkpoint_signer=signer)

    def _signing(self, now: float, size: int, latest: object) -> bool:
        signer = self.signer
        if signer is None or not signer.running:
            return False
        interval = signer.interval_s
        if signer.failing_since is not None and now - signer.failing_since > 2 * interval + 5:
            return False
        behind = size - int(getattr(latest, "size", 0))
        if behind <= 0 or now - self.started < 2 * interval + 5:
            return True  # nothing waits, or it has not had its first chance yet
        signed_at = getattr(latest, "signed_at", None)
        if signed_at is None:
            return False
        age = (self.ledger.clock() - parse_timestamp(signed_at)).total_seconds()
        return age <= 3 * interval + 30


@router.get("/v1/health", response_model=Health, responses={503: {"model": Health}})
def health(request: Request) -> JSONResponse:
    """Whether this server process works (no token needed): its database, its key store and
    its checkpoint signer, checked at most once a second; and the log origin events must
    name. 503 when a check fails (a load balancer takes the process out; the origin is
    still there)."""
    ledger: Ledger = request.app.state.ledger
    prober: Prober | None = getattr(request.app.state, "prober", None)
    if prober is None:  # served without its lifespan (no signer): checked as it is
        prober = Prober(ledger, None)
    checks = prober.checks()
    ok = all(verdict == "ok" for verdict in checks.model_dump().values())
    body = Health(status="ok" if ok else "failing", log=ledger.origin, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
def scrape(request: Request) -> Response:
    """Prometheus text exposition for the holder of the metrics token (`ledger.api.metrics`);
    404 when no metrics token is set."""
    token: str | None = request.app.state.metrics_token
    if not token:
        raise NotFound("metrics are off: set LEDGER_METRICS_TOKEN to serve them")
    if not metrics.authorized(request.headers.get("authorization"), token):
        raise Unauthorized("GET /metrics needs the metrics token (Authorization: Bearer ...)")
    body, content_type = metrics.exposition(request.app.state.metrics_state)
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
