"""What an operator watches (issue 21): `GET /v1/health` checks the database, the key store
and the checkpoint signer (503 when one fails); `GET /metrics` is Prometheus text for the
holder of the metrics token only, its families there after traffic, with nothing of a case
(no marker, no case id, no token) in any label or value; several server processes report
their counts together."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledger.api.routes import health
from tests.conftest import OPENED_ATTRS, World
from tests.servers import deployment, register_agencies

MARKER = "MARKER-metrics-7f3a"
TOKEN = secrets.token_urlsafe(32)
FAMILIES = {
    "ledger_http_requests",
    "ledger_http_request_duration_seconds",
    "ledger_http_refusals",
    "ledger_events",
    "ledger_log_entries",
    "ledger_checkpoint_size",
    "ledger_checkpoint_age_seconds",
    "ledger_log_unsigned_entries",
    "ledger_projection_lag_entries",
    "ledger_projection_failures",
    "ledger_notice_deliveries_pending",
    "ledger_webhooks_failing",
    "ledger_notice_dead_letters",
}


@pytest.fixture(autouse=True)
def no_health_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "CACHE_S", 0.0)


def test_health_says_each_part_is_well(world: World) -> None:
    r = world.http.get("/v1/health")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "log": "ledger.test/log",
        "checks": {"database": "ok", "key_store": "ok", "checkpoint_signer": "ok"},
    }


def test_health_is_503_when_the_key_store_fails(world: World) -> None:
    table: Any = world.ledger.keys.table
    with table._write() as cur:  # the key table is gone (a schema dropped, a file replaced)
        cur.execute(table.sql("DROP TABLE {s}case_keys"))
    r = world.http.get("/v1/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "failing" and body["log"] == "ledger.test/log"
    assert body["checks"] == {"database": "ok", "key_store": "failing", "checkpoint_signer": "ok"}


def test_health_is_503_when_the_database_fails(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable() -> int:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(world.ledger.store, "log_size", unreachable)
    r = world.http.get("/v1/health")
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "failing"
    assert r.json()["checks"]["checkpoint_signer"] == "failing"  # it cannot tell: not ok


def test_health_is_503_when_the_checkpoint_signer_stopped(world: World) -> None:
    prober: health.Prober = world.http.app.state.prober  # type: ignore[attr-defined]
    assert prober.signer is not None
    prober.signer.stop()
    r = world.http.get("/v1/health")
    assert r.status_code == 503 and r.json()["checks"]["checkpoint_signer"] == "failing"


def test_health_sees_a_signer_that_falls_behind(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its loop runs but signing fails (say, the log key cannot be read): once an entry has
    waited three intervals and 30 s for a checkpoint, the signer is not well."""
    prober: health.Prober = world.http.app.state.prober  # type: ignore[attr-defined]
    assert prober.signer is not None
    world.ledger.log.sign_checkpoint()

    def cannot_sign() -> None:
        raise OSError("the log key cannot be read")

    monkeypatch.setattr(world.ledger.log, "sign_checkpoint", cannot_sign)
    world.agency("ngo-a")  # an entry no checkpoint covers
    prober.started -= 3600  # long past its first chance
    assert world.http.get("/v1/health").status_code == 200  # waiting, not for long yet
    world.clock.advance(seconds=3 * prober.signer.interval_s + 31)
    r = world.http.get("/v1/health")
    assert r.status_code == 503 and r.json()["checks"]["checkpoint_signer"] == "failing"
    assert r.json()["checks"]["database"] == "ok"


def scrape(world: World, token: str | None = TOKEN) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return world.http.get("/metrics", headers=headers)


def traffic(world: World) -> str:
    """Requests of every kind, a marker in a case's payload and attrs-free refusals."""
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case(payload={"identity": {"name": MARKER}, "notes": MARKER})
    consent = ngo.grant(case_id, ["clinic"])
    assert ngo.share(case_id, "clinic", consent).status_code == 201
    assert clinic.read(case_id).status_code == 200
    assert ngo.read(case_id).status_code == 200
    refused = ngo.submit("case.opened", case_id, {"minor": False}, OPENED_ATTRS, {"notes": MARKER})
    assert refused.status_code == 409  # the case id in use
    assert world.http.get(f"/v1/cases/{uuid.uuid4()}", headers=clinic.auth()).status_code == 404
    assert world.http.get(f"/v1/nothing/{case_id}", headers=ngo.auth()).status_code == 404
    batch = {"events": [ngo.body("service.delivered", case_id, {"referral_id": None},
                                 {"component": "housing"})]}  # fmt: skip
    assert world.http.post("/v1/events:batch", json=batch, headers=ngo.auth()).status_code == 200
    text = ngo.auth() | {"Content-Type": "text/plain"}
    assert world.http.post("/v1/events", content=MARKER, headers=text).status_code == 415
    return case_id


def test_metrics_need_the_metrics_token(world: World) -> None:
    assert scrape(world).status_code == 404  # no token set: not served at all
    world.http.app.state.metrics_token = TOKEN  # type: ignore[attr-defined]
    ngo = world.agency("ngo-a")
    ledger_tokens = [
        ngo.tokens.get(r) or world.token(r, "ngo-a") for r in ("caseworker", "supervisor")
    ]
    ledger_tokens += [world.token(role) for role in ("auditor", "monitor")] + [world.admin]
    for token in (None, "wrong", TOKEN + "x", TOKEN[:-1], TOKEN.upper(), *ledger_tokens):
        r = scrape(world, token)
        assert r.status_code == 401, token
        assert r.json()["error"] == "unauthorized"
    assert scrape(world).status_code == 200
    schema = world.http.get("/openapi.json").json()
    assert "/metrics" not in schema["paths"]  # not an API route: no ledger token is good for it


def counted(text: str, family: str, **labels: str) -> float:
    """The sum of a counter's samples with these labels."""
    for found in text_string_to_metric_families(text):
        if found.name == family:
            return float(
                sum(
                    s.value
                    for s in found.samples
                    if s.name.endswith("_total")
                    and all(s.labels.get(k) == v for k, v in labels.items())
                )
            )
    return 0.0


def test_metrics_after_traffic_have_every_family_and_nothing_of_a_case(world: World) -> None:
    world.http.app.state.metrics_token = TOKEN  # type: ignore[attr-defined]
    before = scrape(world).text  # the counters are the process's: compare with before
    case_id = traffic(world)
    r = scrape(world)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.headers["cache-control"] == "no-store"
    text = r.text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) >= FAMILIES, FAMILIES - set(families)
    for secret in (MARKER, case_id, world.admin, *world.agencies["ngo-a"].tokens.values()):
        assert secret not in text
    routes = {
        s.labels["route"] for s in families["ledger_http_requests"].samples if "route" in s.labels
    }
    assert {"/v1/events", "/v1/cases/{case_id}", "/v1/events:batch", "unmatched"} <= routes
    assert all(r.startswith("/") or r == "unmatched" for r in routes)

    def grew(family: str, **labels: str) -> float:
        return counted(text, family, **labels) - counted(before, family, **labels)

    assert grew("ledger_events", outcome="recorded") == 4  # open, grant, share, batch item
    assert grew("ledger_events", outcome="refused", reason="conflict") == 1
    assert grew("ledger_http_refusals", route="/v1/cases/{case_id}", reason="not_found") == 1
    assert grew("ledger_http_refusals", route="/v1/events", reason="unsupported_media_type") == 1
    assert grew("ledger_http_refusals", route="unmatched", reason="http_error") == 1
    assert grew("ledger_http_requests", route="/v1/cases/{case_id}", status="200") == 2
    lag = {s.labels["projection"] for s in families["ledger_projection_lag_entries"].samples}
    assert {"cases", "consents", "referrals"} <= lag
    (size,) = families["ledger_log_entries"].samples
    assert size.value == world.ledger.store.log_size()


def test_metrics_of_several_server_processes_add_up(tmp_path: Path) -> None:
    """`ledger serve --workers 2`: whichever process answers the scrape counts every
    process's requests (prometheus-client's multiprocess mode)."""
    with deployment("sqlite", tmp_path, workers=2, LEDGER_METRICS_TOKEN=TOKEN) as dep:
        dep.start_server()
        creds = register_agencies(dep, ["ngo-a"])
        headers = {"Authorization": f"Bearer {creds['ngo-a'].caseworker}"}
        metrics = {"Authorization": f"Bearer {TOKEN}"}
        before = count(httpx.get(f"{dep.url}/metrics", headers=metrics).text, "/v1/agencies")
        sent = 40
        for _ in range(sent):  # a new connection each: the kernel spreads them
            assert httpx.get(f"{dep.url}/v1/agencies", headers=headers).status_code == 200
        seen = set()
        for _ in range(10):
            r = httpx.get(f"{dep.url}/metrics", headers=metrics)
            assert r.status_code == 200, r.text
            seen.add(count(r.text, "/v1/agencies") - before)
        assert seen == {float(sent)}, seen  # the same sum, whoever answered


def count(text: str, route: str) -> float:
    return counted(text, "ledger_http_requests", route=route)
