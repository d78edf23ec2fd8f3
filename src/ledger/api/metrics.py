"""Prometheus metrics (`GET /metrics`, text exposition format), for the operator's scraper.

What is counted in each server process (counters and histograms):

- `ledger_http_requests_total{method, route, status}` and
  `ledger_http_request_duration_seconds{method, route, status}`: every request, by route
  *template* (`/v1/cases/{case_id}`, never the path itself: no case id reaches a label;
  a path no route matches is `unmatched`);
- `ledger_http_refusals_total{route, status, reason}`: every 4xx and 5xx answer by its
  error code (`forbidden`, `rate_limited`, ...: the codes of `ledger.errors`, never a
  message);
- `ledger_events_total{outcome, reason}`: each event submitted, alone or in a batch:
  `recorded`, `retried` (an identical retry) or `refused` with its error code.

What is read from the database at each scrape (the same whichever process answers):
`ledger_log_entries`, `ledger_checkpoint_size`, `ledger_checkpoint_age_seconds`,
`ledger_log_unsigned_entries`, `ledger_projection_lag_entries{projection}` and
`ledger_projection_failures{projection}`, `ledger_notice_deliveries_pending`,
`ledger_webhooks_failing`, `ledger_notice_dead_letters`. Labels hold route templates,
methods, statuses, error codes and projection names only: no personal data, no case id, no
agency.

Several server processes (`ledger serve --workers N`): the supervisor gives them one
directory (`PROMETHEUS_MULTIPROC_DIR`, prometheus-client's multiprocess mode), so whichever
process answers a scrape sums every process's counters and histograms, those of processes
that have exited included. One process alone keeps them in memory.

The endpoint needs the metrics token (`LEDGER_METRICS_TOKEN`, a secret that can do nothing
else, for the scraper's configuration: `Authorization: Bearer <token>`); it answers 404 when
no token is set. It is outside /v1: no ledger token is good for it, and none is needed.
"""

from __future__ import annotations

import hmac
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger.contract.vocabulary import parse_timestamp
from ledger.ledger import Ledger
from ledger.services.readmodels import ReadModels

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_CODE = re.compile(r'"error"\s*:\s*"([a-z_]{1,40})"')
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SNIFF = 4096  # bytes of an error answer read for its code

disable_created_metrics()  # no `_created` series: nothing to watch in them
# One set per process; in multiprocess mode each writes its own files in the directory.
REQUESTS = Counter("ledger_http_requests", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "ledger_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer",
    ["method", "route", "status"],
    buckets=_BUCKETS,
)
REFUSALS = Counter(
    "ledger_http_refusals", "4xx and 5xx answers by error code", ["route", "status", "reason"]
)
EVENTS = Counter(
    "ledger_events", "Events submitted (alone or in a batch), by outcome", ["outcome", "reason"]
)


def count_event(status: int, body: Any) -> None:
    """One submitted event's outcome: 201 recorded, 200 an identical retry, else refused."""
    if status == 201:
        EVENTS.labels("recorded", "").inc()
    elif status == 200:
        EVENTS.labels("retried", "").inc()
    else:
        code = body.get("error") if isinstance(body, dict) else None
        EVENTS.labels("refused", reason_label(code)).inc()


def reason_label(code: object) -> str:
    """An error code as a label: one of the fixed codes, never anything submitted."""
    return code if isinstance(code, str) and re.fullmatch(r"[a-z_]{1,40}", code) else "other"


def route_of(scope: Scope) -> str:
    """The template of the route that answers the request (`unmatched` if none does): the
    one the router chose, or, for a request the gate refused before routing, the first
    template whose pattern matches the path."""
    route = scope.get("route")
    if route is not None and isinstance(getattr(route, "path", None), str):
        return str(route.path)
    app: Any = scope["app"]  # the Starlette app the request came to
    patterns: list[tuple[re.Pattern[str], str]] | None = getattr(app.state, "route_patterns", None)
    if patterns is None:
        patterns = [(compile_path(t)[0], t) for t in templates(app)]
        app.state.route_patterns = patterns
    path = scope.get("path", "")
    return next((template for pattern, template in patterns if pattern.match(path)), "unmatched")


def templates(app: Any) -> list[str]:
    """Every route template of the app: the API's (its OpenAPI document), then the others."""
    found = list(app.openapi().get("paths", {}))
    found += [r.path for r in app.router.routes if isinstance(getattr(r, "path", None), str)]
    return list(dict.fromkeys(found))


class Measured:
    """Pure ASGI, outermost: counts and times every HTTP request, and reads the error code
    of a refusal from the start of its JSON body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sniffed = bytearray()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif (
                message["type"] == "http.response.body" and status >= 400 and len(sniffed) < _SNIFF
            ):
                sniffed.extend(message.get("body", b"")[: _SNIFF - len(sniffed)])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route, method = route_of(scope), scope["method"]
            labels = (method, route, str(status))
            REQUESTS.labels(*labels).inc()
            LATENCY.labels(*labels).observe(time.perf_counter() - started)
            if status >= 400:
                found = _CODE.search(sniffed.decode("utf-8", "replace"))
                code = found.group(1) if found else "none"
                REFUSALS.labels(route, str(status), reason_label(code)).inc()


class LedgerState(Collector):
    """The gauges read from the database at each scrape."""

    def __init__(
        self, ledger: Ledger, readmodels: ReadModels, clock: Callable[[], datetime]
    ) -> None:
        self.ledger, self.readmodels, self.clock = ledger, readmodels, clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        store = self.ledger.store
        size = store.log_size()
        yield GaugeMetricFamily("ledger_log_entries", "Entries in the log", value=size)
        latest = store.latest_checkpoint()
        signed = 0 if latest is None else latest.size
        yield GaugeMetricFamily(
            "ledger_checkpoint_size", "Entries the newest signed checkpoint covers", value=signed
        )
        yield GaugeMetricFamily(
            "ledger_log_unsigned_entries",
            "Entries no signed checkpoint covers yet",
            value=size - signed,
        )
        if latest is not None:
            age = (self.clock() - parse_timestamp(latest.signed_at)).total_seconds()
            yield GaugeMetricFamily(
                "ledger_checkpoint_age_seconds",
                "Seconds since the newest checkpoint was signed",
                value=max(0.0, age),
            )
        lag = GaugeMetricFamily(
            "ledger_projection_lag_entries",
            "Log entries a read model has not applied yet",
            labels=["projection"],
        )
        failures = GaugeMetricFamily(
            "ledger_projection_failures",
            "Failures of a read model's follower in this process since it started",
            labels=["projection"],
        )
        for row in self.readmodels.runner.status():
            lag.add_metric([str(row["name"])], float(str(row["lag"])))
            failures.add_metric([str(row["name"])], float(str(row["failures"])))
        yield lag
        yield failures
        pending, failing, dead = store.delivery_backlog()
        yield GaugeMetricFamily(
            "ledger_notice_deliveries_pending",
            "Notices not yet delivered to a live webhook endpoint (once per endpoint)",
            value=pending,
        )
        yield GaugeMetricFamily(
            "ledger_webhooks_failing", "Webhook endpoints whose last attempt failed", value=failing
        )
        yield GaugeMetricFamily(
            "ledger_notice_dead_letters",
            "Notices given up on at an endpoint after the retry period",
            value=dead,
        )


def exposition(state: LedgerState) -> tuple[bytes, str]:
    """The text exposition of this process's (or, in multiprocess mode, every process's)
    counters and histograms, and of the database's gauges."""
    registry = CollectorRegistry()
    directory = os.environ.get(MULTIPROCESS_DIR)
    if directory:
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        for metric in (REQUESTS, LATENCY, REFUSALS, EVENTS):
            registry.register(metric)
    registry.register(state)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the metrics token (constant time)."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )
