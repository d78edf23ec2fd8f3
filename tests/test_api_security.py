"""Tokens, agencies and rate limits: expiry, revocation, removal, 429 — on both backends."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from ledger.api.ratelimit import RateLimiter, TooManyRequests
from ledger.contract.vocabulary import format_timestamp
from tests.conftest import OPENED_ATTRS, World
from tests.test_audit import run_audit


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_expired_token_is_401(world: World) -> None:
    ngo = world.agency("ngo-a")
    later = format_timestamp(world.clock.now.replace(year=world.clock.now.year + 1))
    r = world.http.post(
        "/v1/tokens",
        headers=world.admin_auth,
        json={"agency": "ngo-a", "role": "caseworker", "label": "temp", "expires_at": later},
    )
    assert r.status_code == 201
    token = r.json()["token"]
    case_id = ngo.open_case()
    assert world.http.get(f"/v1/cases/{case_id}", headers=bearer(token)).status_code == 200
    world.clock.now = world.clock.now.replace(year=world.clock.now.year + 2)
    assert world.http.get(f"/v1/cases/{case_id}", headers=bearer(token)).status_code == 401
    past = world.http.post(
        "/v1/tokens",
        headers=world.admin_auth,
        json={"agency": "ngo-a", "role": "caseworker", "label": "x", "expires_at": later},
    )
    assert past.status_code == 422  # already expired


def test_a_revoked_token_is_401(world: World) -> None:
    world.agency("ngo-a")
    world.agency("clinic")
    r = world.http.post(
        "/v1/tokens",
        headers=world.admin_auth,
        json={"agency": "ngo-a", "role": "caseworker", "label": "s"},
    )
    token, token_id = r.json()["token"], r.json()["id"]
    assert world.http.get("/v1/cases", headers=bearer(token)).status_code == 200
    assert world.http.delete(f"/v1/tokens/{token_id}", headers=bearer(token)).status_code == 403
    # A supervisor revokes only its own agency's staff tokens.
    other = world.token("supervisor", "clinic")
    assert world.http.delete(f"/v1/tokens/{token_id}", headers=bearer(other)).status_code == 403
    admin_id = world.http.get("/v1/tokens/self", headers=world.admin_auth).json()["id"]
    own = world.token("supervisor", "ngo-a")
    assert world.http.delete(f"/v1/tokens/{admin_id}", headers=bearer(own)).status_code == 403
    assert world.http.delete(f"/v1/tokens/{token_id}", headers=world.admin_auth).status_code == 204
    assert world.http.get("/v1/cases", headers=bearer(token)).status_code == 401
    assert world.http.delete(f"/v1/tokens/{token_id}", headers=world.admin_auth).status_code == 404


def test_a_removed_agency_can_do_nothing_and_its_history_stays_verifiable(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case()
    clinic_case = clinic.open_case()
    ngo.grant(case_id, ["clinic"])
    r = world.http.delete("/v1/agencies/clinic", headers=world.admin_auth)
    assert r.status_code == 200 and r.json()["revoked_tokens"] >= 1
    assert clinic.read(clinic_case).status_code == 401  # its tokens stopped working
    assert (
        world.http.post(
            "/v1/tokens",
            headers=world.admin_auth,
            json={"agency": "clinic", "role": "caseworker", "label": "x"},
        ).status_code
        == 422
    )
    # a new token could not sign anything either: its keys are revoked in the log
    assert world.http.delete("/v1/agencies/clinic", headers=world.admin_auth).status_code == 404
    report = run_audit(world)
    assert report.ok, [str(f) for f in report.failures]


def test_too_many_requests_get_429_with_retry_after(world: World) -> None:
    world.agency("ngo-a")
    # A slow refill: a 429 is answered after a pause (up to 1 s), which must not refill it.
    world.http.app.state.rate_limiter = RateLimiter(rate=0.1, burst=3)  # type: ignore[attr-defined]
    headers = world.agencies["ngo-a"].auth()
    statuses = [world.http.get("/v1/cases", headers=headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    r = world.http.get("/v1/cases", headers=headers)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    other = bearer(world.token("auditor"))  # limits are per token
    world.http.app.state.rate_limiter = RateLimiter(rate=1, burst=3)  # type: ignore[attr-defined]
    assert world.http.get("/v1/log/checkpoint", headers=other).status_code == 200


def test_the_limiter_refills_over_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import ledger.api.ratelimit

    now = [1000.0]  # the limiter's clock, moved by hand: a loaded machine cannot make it flaky
    monkeypatch.setattr(ledger.api.ratelimit.time, "monotonic", lambda: now[0])
    limiter = RateLimiter(rate=100, burst=1)
    limiter.check("t")
    now[0] += 0.005  # half a token
    with pytest.raises(TooManyRequests):
        limiter.check("t")
    now[0] += 0.006
    limiter.check("t")


def test_a_body_over_the_limit_is_413_after_the_token_is_checked(world: World) -> None:
    """Declared or streamed, a body past the limit is refused without being kept; the token
    is checked first (step 1), so an unauthenticated caller learns nothing else."""
    ngo = world.agency("ngo-a")
    world.http.app.state.max_body_bytes = 1000  # type: ignore[attr-defined]
    size = world.ledger.store.log_size()
    big = b'{"envelope": "' + b"x" * 2000 + b'"}'

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield from (big[i : i + 100] for i in range(0, len(big), 100))

    for content in (big, chunks()):
        r = world.http.post("/v1/events", content=content, headers=ngo.auth())
        assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
        assert "x" * 10 not in r.text
    r = world.http.post("/v1/events", content=big, headers=bearer("lgr_nope"))
    assert r.status_code == 401
    batch = b'{"events": ["' + b"x" * 40_000 + b'"]}'  # a batch has a cap of its own
    world.http.app.state.max_batch_bytes = 30_000  # type: ignore[attr-defined]
    r = world.http.post("/v1/events:batch", content=batch, headers=ngo.auth())
    assert r.status_code == 413
    assert world.ledger.store.log_size() == size


def test_single_submissions_share_the_tokens_rate_limit_which_comes_before_the_body(
    world: World,
) -> None:
    ngo = world.agency("ngo-a")
    world.http.app.state.rate_limiter = RateLimiter(rate=0.01, burst=3)  # type: ignore[attr-defined]
    headers = ngo.auth()
    assert world.http.get("/v1/cases", headers=headers).status_code == 200
    answers = [ngo.submit("case.opened", str(uuid.uuid4()), {"minor": False}, OPENED_ATTRS)
               for _ in range(3)]  # fmt: skip
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert world.ledger.store.find_event(
        json.loads(answers[-1].request.content)["envelope"]["event_id"]
    ) is None  # fmt: skip
    world.http.app.state.max_body_bytes = 1000  # type: ignore[attr-defined]
    r = world.http.post("/v1/events", content=b"x" * 2000, headers=headers)
    assert r.status_code == 429  # the limit is told before the body is even read


def test_no_body_is_read_before_the_token_is_checked(world: World) -> None:
    """An unauthenticated caller costs the server no body reading (found in review: the
    grouped path read up to the body limit first)."""
    pulled = 0

    def body() -> Iterator[bytes]:  # 1 MiB in 1 KiB chunks, no Content-Length
        nonlocal pulled
        for _ in range(1024):
            pulled += 1024
            yield b"x" * 1024

    for headers in (bearer("lgr_nope"), {}):
        pulled = 0
        r = world.http.post("/v1/events", content=body(), headers=headers)
        assert r.status_code == 401
        assert pulled <= 1024, pulled
