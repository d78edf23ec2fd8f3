"""The gate in front of every /v1 route (`ledger.api.gate`, issue 15 items 5, 6, 7, 12, 13),
through the real app on both backends, and against a served `ledger serve` for memory.

Requests are driven as raw ASGI messages in the test client's event loop, so a test knows
exactly how many body bytes the app pulled from `receive` and can hold a body half sent."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.api.ratelimit import RateLimiter
from ledger.contract import crypto
from tests.conftest import BACKENDS, OPENED_ATTRS, World
from tests.servers import deployment

MiB = 1024 * 1024
BIG = 30 * MiB
CHUNK = 64 * 1024
MARKER = "Marker Juanita Perez"  # a member name that names a person
# Every operation that takes a body, with its path filled in: a 30 MB body without a token
# must cost none of them a read.
BODY_ENDPOINTS = {
    ("POST", "/v1/events"),
    ("POST", "/v1/events:batch"),
    ("POST", "/v1/tokens"),
    ("POST", "/v1/agencies"),
    ("POST", "/v1/agencies/{agency_id}/keys"),
    ("POST", "/v1/agencies/{agency_id}/keys/{key_id}/revoke"),
    ("POST", "/v1/stats/releases"),
    ("POST", "/v1/stats/htcds"),
    ("POST", "/v1/agencies/{agency_id}/webhooks"),
}
NEVER_APPEND = ("auditor", "monitor", "admin")
EVENT_ENDPOINTS = ("/v1/events", "/v1/events:batch")


def fill(path: str) -> str:
    return path.replace("{agency_id}", "ngo-a").replace("{key_id}", "ngo-a+00000000")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    delivered: int  # body bytes the app pulled from `receive`

    def json(self) -> Any:
        return json.loads(self.body)


def filler(size: int, head: bytes = b"") -> Iterator[bytes]:
    """`size` bytes (starting with `head`) in CHUNK pieces, made as they are pulled."""
    yield head
    left = size - len(head)
    while left > 0:
        yield b"x" * min(CHUNK, left)
        left -= CHUNK


async def asgi_call(
    world: World,
    method: str,
    path: str,
    *,
    token: str | None = None,
    chunks: Iterator[bytes] = iter(()),
    declared: int | None = None,
    hold: asyncio.Event | None = None,
) -> Answer:
    """One request to the real app as ASGI messages: the body from `chunks` (no
    Content-Length unless `declared`), paused before its first byte until `hold` is set."""
    headers = [(b"content-type", b"application/json")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }  # fmt: skip
    delivered = 0
    finished = False
    done = asyncio.Event()
    start: dict[str, Any] = {}
    body = bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal delivered, finished
        if hold is not None:
            await hold.wait()
        if not finished:
            chunk = next(chunks, None)
            if chunk is not None:
                delivered += len(chunk)
                return {"type": "http.request", "body": chunk, "more_body": True}
            finished = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await world.http.app(scope, receive, send)
    headers_out = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
    return Answer(start["status"], headers_out, bytes(body), delivered)


def call(world: World, method: str, path: str, **kw: Any) -> Answer:
    """`asgi_call` in the test client's event loop (where the app's lifespan runs)."""

    async def run() -> Answer:
        return await asgi_call(world, method, path, **kw)

    portal = world.http.portal
    assert portal is not None
    return portal.call(run)


def test_the_body_endpoints_are_the_ones_the_openapi_document_declares(world: World) -> None:
    schema = world.http.get("/openapi.json").json()
    declared = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    assert declared == BODY_ENDPOINTS


# --- 1. no body is read without a valid token ------------------------------------------------


@pytest.mark.regression("a 30 MB body without a token was read and parsed (66 -> 831 MB RSS)")
@pytest.mark.parametrize("method,path", sorted(BODY_ENDPOINTS))
def test_a_30_mb_body_without_a_token_is_401_unread(world: World, method: str, path: str) -> None:
    for token in (None, "lgr_never_issued"):
        streamed = call(world, method, fill(path), token=token, chunks=filler(BIG))
        declared = call(world, method, fill(path), token=token, chunks=filler(BIG), declared=BIG)
        for answer in (streamed, declared):
            assert answer.status == 401, answer.body
            assert answer.json()["error"] == "unauthorized"
            assert answer.delivered == 0


@pytest.mark.regression("malformed JSON without a token answered 400, not 401")
@pytest.mark.parametrize("method,path", sorted(BODY_ENDPOINTS))
def test_malformed_json_without_a_token_is_401(world: World, method: str, path: str) -> None:
    json_body = {"Content-Type": "application/json"}
    for headers in (json_body, json_body | {"Authorization": "Bearer lgr_never_issued"}):
        r = world.http.request(method, fill(path), content=b"{not json", headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "unauthorized"


def test_the_health_check_and_the_documents_need_no_token(world: World) -> None:
    assert world.http.get("/v1/health").status_code == 200
    assert world.http.get("/openapi.json").status_code == 200
    assert world.http.get("/docs").status_code == 200
    assert world.http.get("/v1/cases").status_code == 401
    assert world.http.get("/v1/no-such-thing").status_code == 401  # the token comes first


# --- 2./3. roles that never append are refused before their bodies ---------------------------


@pytest.mark.regression("a monitor token made the batch endpoint parse 32 MiB before refusing")
@pytest.mark.parametrize("path", EVENT_ENDPOINTS)
def test_a_role_that_never_appends_is_403_before_its_30_mb_body_is_read(
    world: World, path: str
) -> None:
    for role in NEVER_APPEND:
        token = world.token(role)
        for declared in (None, BIG):  # 403 before 413: the role comes first
            answer = call(world, "POST", path, token=token, chunks=filler(BIG), declared=declared)
            assert answer.status == 403, (role, answer.body)
            assert answer.json() == {
                "error": "forbidden",
                "message": f"a {role} token cannot append events",
            }
            assert answer.delivered == 0


def test_a_role_that_never_appends_is_403_even_for_a_malformed_body(world: World) -> None:
    """The contract's step 9 role check comes before step 2 for these roles (issue 15)."""
    monitor = {"Authorization": f"Bearer {world.token('monitor')}"}
    for path in EVENT_ENDPOINTS:
        r = world.http.post(path, content=b"{not json", headers=monitor)
        assert r.status_code == 403, r.text


def test_the_rate_limit_comes_before_the_role_and_the_size(world: World) -> None:
    monitor = world.token("monitor")
    world.http.app.state.rate_limiter = RateLimiter(rate=0.001, burst=1)  # type: ignore[attr-defined]
    assert call(world, "GET", "/v1/log/key", token=monitor).status == 200
    answer = call(world, "POST", "/v1/events", token=monitor, chunks=filler(BIG), declared=BIG)
    assert answer.status == 429 and int(answer.headers["retry-after"]) >= 1
    assert answer.json()["error"] == "rate_limited" and answer.delivered == 0


# --- 4. body caps ----------------------------------------------------------------------------


def caps(world: World) -> dict[str, int]:
    state = world.http.app.state  # type: ignore[attr-defined]
    return {
        "/v1/events": state.max_body_bytes,
        "/v1/events:batch": state.max_batch_bytes,
        "/v1/tokens": state.max_other_body_bytes,
    }


def test_the_caps_are_one_mib_four_mib_and_64_kib(world: World) -> None:
    assert caps(world) == {
        "/v1/events": 1_048_576,
        "/v1/events:batch": 4_194_304,
        "/v1/tokens": 65_536,
    }


def test_the_batch_cap_holds_1000_real_events_with_headroom() -> None:
    """1,000 events as the bench builds them (1 KiB payloads): about 2.2 MB; the cap leaves
    more than 1.8 times that."""
    from ledger.bench.workload import case_bodies

    key = crypto.generate_signing_key("bench-ngo")
    bodies = [b for _ in range(200) for b in case_bodies(key, 5)]
    raw = b'{"events": [' + b", ".join(bodies) + b"]}"
    assert len(bodies) == 1000
    assert 2_000_000 < len(raw) < 4_194_304 / 1.8


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events:batch", "/v1/tokens"])
def test_a_body_over_its_routes_cap_is_413_declared_unread_and_streamed_up_to_the_cap(
    world: World, path: str
) -> None:
    ngo = world.agency("ngo-a")
    ngo.auth()
    token = world.admin if path == "/v1/tokens" else ngo.tokens["caseworker"]
    cap = caps(world)[path]
    size = world.ledger.store.log_size()
    declared = call(world, "POST", path, token=token, chunks=filler(cap + 1), declared=cap + 1)
    assert declared.status == 413 and declared.delivered == 0
    assert declared.json()["error"] == "too_large" and str(cap) in declared.json()["message"]
    streamed = call(world, "POST", path, token=token, chunks=filler(BIG))
    assert streamed.status == 413 and streamed.json()["error"] == "too_large"
    assert cap < streamed.delivered <= cap + CHUNK  # read up to the cap, no further
    assert world.ledger.store.log_size() == size
    assert world.http.app.state.inflight.held(world.ledger.authenticate(token).token_id) == 0  # type: ignore[attr-defined]


def test_a_body_exactly_at_its_cap_is_read(world: World) -> None:
    cap = caps(world)["/v1/tokens"]
    body = json.dumps({"role": "monitor", "label": "m"}).encode()
    padded = body + b" " * (cap - len(body))  # JSON allows trailing whitespace
    headers = world.admin_auth | {"Content-Type": "application/json"}
    r = world.http.post("/v1/tokens", content=padded, headers=headers)
    assert r.status_code == 201, r.text
    r = world.http.post("/v1/tokens", content=padded + b" ", headers=headers)
    assert r.status_code == 413


# --- the batch pays for its items ------------------------------------------------------------


@pytest.mark.regression("a 1,000-item batch cost one request of the token's rate limit")
def test_a_batch_costs_its_item_count_and_one_it_cannot_pay_records_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger.api import ratelimit

    monkeypatch.setattr(ratelimit, "UNIT_BYTES", 1 << 30)  # the item count alone, here
    ngo = world.agency("ngo-a")
    headers = ngo.auth()
    world.http.app.state.rate_limiter = RateLimiter(rate=0.0001, burst=1003)  # type: ignore[attr-defined]
    r = world.http.post("/v1/events:batch", json={"events": [{}] * 1000}, headers=headers)
    assert r.status_code == 200 and len(r.json()["results"]) == 1000  # 1,000 of 1,003 spent
    opened = [
        ngo.body("case.opened", str(uuid.uuid4()), {"minor": False}, OPENED_ATTRS) for _ in range(4)
    ]
    size = world.ledger.store.log_size()
    r = world.http.post("/v1/events:batch", json={"events": opened}, headers=headers)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1  # 1 + 3 of 3
    assert world.ledger.store.log_size() == size  # nothing recorded
    assert all(world.ledger.store.find_event(b["envelope"]["event_id"]) is None for b in opened)
    r = world.http.post("/v1/events:batch", json={"events": opened[:2]}, headers=headers)
    assert r.status_code == 200, r.text  # the gate's 1 of 2 left, then 1 more
    assert [item["status"] for item in r.json()["results"]] == [201, 201]
    assert world.http.get("/v1/cases", headers=headers).status_code == 429  # nothing left
    other = world.token("caseworker", "ngo-a")  # the bucket is the token's
    assert (
        world.http.get("/v1/cases", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    )


def test_a_full_bucket_pays_for_a_batch_larger_than_its_burst(world: World) -> None:
    ngo = world.agency("ngo-a")
    world.http.app.state.rate_limiter = RateLimiter(rate=0.0001, burst=10)  # type: ignore[attr-defined]
    r = world.http.post("/v1/events:batch", json={"events": [{}] * 50}, headers=ngo.auth())
    assert r.status_code == 200
    assert world.http.get("/v1/cases", headers=ngo.auth()).status_code == 429


def test_a_large_body_weighs_its_size_and_one_it_cannot_pay_is_429_unread(world: World) -> None:
    """One request per UNIT_BYTES (4 KiB) of body: a token's bytes per second are bounded
    too."""
    from ledger.api.ratelimit import UNIT_BYTES

    ngo = world.agency("ngo-a")
    ngo.auth()
    token = ngo.tokens["caseworker"]
    weight = MiB // UNIT_BYTES  # what one MiB weighs
    limiter = RateLimiter(rate=0.0001, burst=weight * 3 // 2)
    world.http.app.state.rate_limiter = limiter  # type: ignore[attr-defined]
    first = call(world, "POST", "/v1/events", token=token, chunks=filler(MiB), declared=MiB)
    assert first.status == 400 and first.delivered == MiB  # read and parsed: half a MiB left
    second = call(world, "POST", "/v1/events", token=token, chunks=filler(MiB), declared=MiB)
    assert second.status == 429 and second.delivered == 0  # a whole MiB more: refused unread
    assert second.json()["error"] == "rate_limited" and int(second.headers["retry-after"]) >= 1
    assert second.headers["connection"] == "close"  # the server stops receiving the rest
    streamed = call(world, "POST", "/v1/events", token=token, chunks=filler(MiB))
    assert streamed.status == 429 and streamed.delivered == MiB  # its size known once read
    assert "connection" not in streamed.headers  # nothing of it is left to come
    assert world.http.get("/v1/cases", headers=ngo.auth()).status_code == 200  # some left


def test_a_refusal_that_leaves_a_large_body_unread_closes_the_connection(world: World) -> None:
    ngo = world.agency("ngo-a")
    ngo.auth()
    token = ngo.tokens["caseworker"]
    small = call(world, "POST", "/v1/events", chunks=filler(100), declared=100)
    assert small.status == 401 and "connection" not in small.headers  # keep-alive
    for declared in (BIG, None):
        unread = call(world, "POST", "/v1/events", chunks=filler(BIG), declared=declared)
        assert unread.status == 401 and unread.headers["connection"] == "close"
        monitor = call(world, "POST", "/v1/events:batch", token=world.token("monitor"),
                       chunks=filler(BIG), declared=declared)  # fmt: skip
        assert monitor.status == 403 and monitor.headers["connection"] == "close"
    over = call(world, "POST", "/v1/events", token=token, chunks=filler(BIG))
    assert over.status == 413 and over.headers["connection"] == "close"
    world.http.app.state.rate_limiter = RateLimiter(rate=0.0001, burst=1)  # type: ignore[attr-defined]
    assert call(world, "GET", "/v1/cases", token=token).status == 200
    limited = call(world, "POST", "/v1/events", token=token, chunks=filler(MiB), declared=MiB)
    assert limited.status == 429 and limited.headers["connection"] == "close"


def test_a_429_is_answered_after_a_pause_of_up_to_its_retry_after(world: World) -> None:
    """A client that ignores Retry-After is not answered as fast as the server can refuse."""
    ngo = world.agency("ngo-a")
    headers = ngo.auth()
    state = world.http.app.state  # type: ignore[attr-defined]
    state.rate_limiter = RateLimiter(rate=0.01, burst=1)
    state.rate_pause_s = 0.3
    assert world.http.get("/v1/cases", headers=headers).status_code == 200
    started = time.monotonic()
    r = world.http.get("/v1/cases", headers=headers)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) == 100
    assert 0.3 <= time.monotonic() - started < 5  # the pause, not the whole Retry-After
    state.rate_pause_s = 0.0
    started = time.monotonic()
    assert world.http.get("/v1/cases", headers=headers).status_code == 429
    assert time.monotonic() - started < 0.3


# --- 5. bytes in flight per token ------------------------------------------------------------


def test_a_tokens_bytes_in_flight_are_bounded_and_given_back_when_answered(
    world: World,
) -> None:
    state = world.http.app.state  # type: ignore[attr-defined]
    state.inflight.budget = 10_000
    admin, other = world.admin, world.token("admin")
    admin_id = world.ledger.authenticate(admin).token_id

    async def scenario() -> list[Answer]:
        hold = asyncio.Event()
        first = asyncio.create_task(
            asgi_call(world, "POST", "/v1/tokens", token=admin, chunks=filler(6000),
                      declared=6000, hold=hold)
        )  # fmt: skip
        while state.inflight.held(admin_id) < 6000:  # taken whole, before reading
            await asyncio.sleep(0.005)
        declared = await asgi_call(
            world, "POST", "/v1/tokens", token=admin, chunks=filler(6000), declared=6000
        )
        streamed = await asgi_call(world, "POST", "/v1/tokens", token=admin, chunks=filler(9000))
        elsewhere = await asgi_call(
            world, "POST", "/v1/tokens", token=other, chunks=filler(6000), declared=6000
        )
        hold.set()
        return [declared, streamed, elsewhere, await first]

    portal = world.http.portal
    assert portal is not None
    declared, streamed, elsewhere, first = portal.call(scenario)
    assert declared.status == 429 and declared.delivered == 0
    assert int(declared.headers["retry-after"]) >= 1 and declared.json()["error"] == "rate_limited"
    assert streamed.status == 429 and streamed.delivered <= 4000 + CHUNK
    assert elsewhere.status == 400  # another token's budget is its own (the body is not JSON)
    assert first.status == 400 and first.delivered == 6000
    assert state.inflight.held(admin_id) == 0
    again = call(world, "POST", "/v1/tokens", token=admin, chunks=filler(6000), declared=6000)
    assert again.status == 400


def test_the_benchs_32_clients_on_one_token_stay_under_the_budget(world: World) -> None:
    """32 concurrent 2.5 KB events on one token hold 80 KB: far below the default budget,
    which also holds a whole batch."""
    budget = world.http.app.state.inflight.budget  # type: ignore[attr-defined]
    assert budget == 8 * MiB and budget >= 32 * 2_500 * 100
    assert budget >= 2 * caps(world)["/v1/events:batch"]


# --- 6. nothing is cached --------------------------------------------------------------------


@pytest.mark.regression("answers with case data carried no Cache-Control: no-store")
def test_every_v1_answer_says_no_store(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case(payload={"identity": {"name": "N"}})
    auditor = {"Authorization": f"Bearer {world.token('auditor')}"}
    answers = [
        world.http.get("/v1/health"),
        world.http.get(f"/v1/cases/{case_id}", headers=ngo.auth()),
        world.http.get("/v1/cases", headers=ngo.auth()),
        world.http.get(f"/v1/cases/{uuid.uuid4()}", headers=ngo.auth()),  # 404
        world.http.get(f"/v1/cases/{case_id}"),  # 401
        world.http.post("/v1/events", content=b"{", headers=ngo.auth()),  # 400
        world.http.post("/v1/events", content=b"x" * (2 * MiB), headers=ngo.auth()),  # 413
        world.http.get("/v1/log/checkpoint", headers=auditor),  # text/plain
        ngo.submit("case.closed", case_id, {}, {"reason": "other"}),  # 201
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 404, 401, 400, 413, 200, 201]
    assert all(a.headers.get("cache-control") == "no-store" for a in answers)
    assert "cache-control" not in world.http.get("/openapi.json").headers


# --- item 12: validation errors name locations by the schema only ----------------------------


@pytest.mark.regression("validation errors echoed submitted member names")
def test_validation_errors_never_echo_a_submitted_member_name(world: World) -> None:
    ngo = world.agency("ngo-a")
    period = "2026-01"
    new_key = crypto.generate_signing_key("ngo-a")
    key_body = ngo.key_change(new_key)
    key_body["signatures"][0][MARKER] = 1
    monitor = {"Authorization": f"Bearer {world.token('monitor')}"}
    answers = [
        world.http.post(
            "/v1/tokens", headers=world.admin_auth,
            json={"role": "monitor", "label": "m", MARKER: "x"},
        ),
        world.http.post(
            "/v1/agencies", headers=world.admin_auth,
            json={"id": "b", "name": "B", "type": "ngo", "verify_key": "k", MARKER: 1},
        ),
        world.http.post("/v1/agencies/ngo-a/keys", headers=world.admin_auth, json=key_body),
        world.http.post(
            "/v1/agencies/ngo-a/keys/ngo-a+00000000/revoke", headers=world.admin_auth,
            json={MARKER: None},
        ),
        world.http.post("/v1/stats/releases", headers=monitor, json={"period": period, MARKER: 1}),
        world.http.post("/v1/tokens", headers=world.admin_auth, json={MARKER: {MARKER: [1]}}),
    ]  # fmt: skip
    for r in answers:
        assert r.status_code in (400, 422), r.text
        assert MARKER not in r.text and "Juanita" not in r.text, r.text
    assert "signatures.0.*" in answers[2].json()["message"]  # indexes and declared names stay
    assert "body.role" in answers[-1].json()["message"]
    # An event's unknown payload category is refused by name of the rule, never the key.
    body = ngo.body("case.opened", str(uuid.uuid4()), {"minor": False}, OPENED_ATTRS)
    body["payload"] = {MARKER: "x"}
    r = ngo.post(body)
    assert r.status_code == 400 and MARKER not in r.text


# --- a served process: memory ----------------------------------------------------------------


def group_rss_kib(pgid: int) -> int:
    """VmRSS of every process in the process group (the server and its workers), in KiB."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            status = (entry / "status").read_text()
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def post_big(url: str, path: str, token: str | None, declared: bool) -> int | str:
    """30 MB to `path`, with its Content-Length or chunked, sent as a careful client does:
    it stops sending once an answer has come. The answer's status, or "reset" when the
    server closed the connection before the answer could be read."""
    host, port = url.removeprefix("http://").split(":")
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    if declared:
        head += f"Content-Length: {BIG}\r\n\r\n"
        piece, pieces, tail = b"x" * CHUNK, BIG // CHUNK, b""
    else:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        piece, pieces, tail = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n", BIG // CHUNK, b"0\r\n\r\n"
    try:
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(head.encode())
            sock.setblocking(False)
            for data in [*([piece] * pieces), tail]:
                view = memoryview(data)
                while view:
                    readable, writable, _ = select.select([sock], [sock], [], 60)
                    if readable:
                        break
                    view = view[sock.send(view) :]
                else:
                    continue
                break
            sock.setblocking(True)
            answer = b""
            while b"\r\n" not in answer:
                more = sock.recv(4096)
                if not more:
                    return "reset"
                answer += more
            return int(answer.split()[1])
    except (ConnectionResetError, BrokenPipeError):
        return "reset"


@pytest.mark.regression("30 MB bodies without a token or from a monitor took the server to GBs")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_served_process_stays_within_twice_its_idle_memory_under_30_mb_bodies(
    backend: str, tmp_path: Path
) -> None:
    with deployment(backend, tmp_path / "dep", workers=2) as dep:
        dep.start_server()
        admin = {"Authorization": f"Bearer {dep.admin_token}"}
        monitor = httpx.post(
            dep.url + "/v1/tokens", headers=admin, json={"role": "monitor", "label": "m"}
        ).json()["token"]
        for _ in range(20):  # warm both processes: first requests import and allocate
            httpx.get(dep.url + "/v1/cases", headers=admin)
            httpx.post(dep.url + "/v1/events:batch", headers=admin, content=b"{}")
        assert dep.server.proc is not None
        pgid = dep.server.proc.pid
        time.sleep(0.5)
        idle = group_rss_kib(pgid)
        assert idle > 0
        peak = idle
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, group_rss_kib(pgid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        paths = sorted(fill(p) for _, p in BODY_ENDPOINTS)
        jobs = [(paths[i % len(paths)], None, i % 2 == 0) for i in range(10)] + [
            (EVENT_ENDPOINTS[i % 2], monitor, i % 2 == 0) for i in range(10)
        ]
        results: list[int | str] = [0] * len(jobs)

        def run(i: int) -> None:
            path, token, declared = jobs[i]
            results[i] = post_big(dep.url, path, token, declared)

        try:
            for group in (range(10), range(10, 20)):  # 10 at once without a token, then 10 monitors
                threads = [threading.Thread(target=run, args=(i,)) for i in group]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(300)
            time.sleep(0.5)
            after = group_rss_kib(pgid)
        finally:
            stop.set()
            sampler.join()
        print(f"\nserver RSS ({backend}): idle {idle} KiB, peak {peak} KiB, after {after} KiB;"
              f" answers {results}")  # fmt: skip
        assert max(peak, after) <= 2 * idle, (idle, peak, after)
        # Each was refused: a careful client reads the answer; the server may close a
        # connection whose client is still sending before it can (never all of them).
        assert all(r in (401, "reset") for r in results[:10]), results
        assert all(r in (403, "reset") for r in results[10:]), results
        assert results.count("reset") <= 10, results


# --- where parsing runs: large bodies in a process of their own ------------------------------


def test_a_large_body_is_parsed_in_the_lane_process_and_a_small_one_is_not(world: World) -> None:
    ngo = world.agency("ngo-a")
    lane = world.http.app.state.large_bodies  # type: ignore[attr-defined]
    assert ngo.open_case() and lane.pids == []  # small bodies: a worker thread
    body = ngo.body("case.opened", str(uuid.uuid4()), {"minor": False}, OPENED_ATTRS,
                    {"notes": "n" * 100_000})  # fmt: skip
    r = ngo.post(body)
    assert r.status_code == 201, r.text
    (pid,) = lane.pids
    assert pid != os.getpid()
    malformed = world.http.post("/v1/events", content=b"[" * 70_000, headers=ngo.auth())
    assert malformed.status_code == 400 and malformed.json()["error"] == "bad_request"
    assert lane.pids == [pid]  # one process, one body at a time


def test_a_batch_parsed_in_the_lane_is_decided_as_in_the_server(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = str(uuid.uuid4())
    events = [ngo.body("case.opened", case_id, {"minor": False}, OPENED_ATTRS)] + [
        ngo.body("service.delivered", case_id, {"referral_id": None}, {"component": "housing"},
                 {"notes": f"visit {i} " + "z" * 2_000})
        for i in range(40)
    ]  # fmt: skip
    events[5]["payload"]["notes"] = "tampered"  # its digest no longer matches
    raw = json.dumps({"events": events}).encode()
    assert len(raw) > 65_536
    r = world.http.post("/v1/events:batch", content=raw, headers=ngo.auth())
    assert r.status_code == 200, r.text
    statuses = [item["status"] for item in r.json()["results"]]
    assert statuses == [201] * 5 + [422] + [201] * 35
    assert world.http.app.state.large_bodies.pids  # type: ignore[attr-defined]
    assert ngo.read(case_id).json()["payload"]["notes"].startswith("visit 39 ")


def test_a_dead_lane_process_is_replaced(world: World) -> None:
    import signal

    ngo = world.agency("ngo-a")
    lane = world.http.app.state.large_bodies  # type: ignore[attr-defined]
    big = b"[" * 70_000
    assert world.http.post("/v1/events", content=big, headers=ngo.auth()).status_code == 400
    (pid,) = lane.pids
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert world.http.post("/v1/events", content=big, headers=ngo.auth()).status_code == 400
    assert lane.pids and lane.pids != [pid]


def _slow_parse(raw: bytes) -> int:  # a module-level function: the lane pickles it
    import time as _time

    _time.sleep(0.05)
    return len(raw)


@pytest.mark.regression("one token's large bodies could take the whole lane, back to back")
def test_one_token_gets_at_most_its_share_of_the_lane_and_others_do_not_wait_for_it() -> None:
    """A token that has spent its bucket of lane-seconds waits until it refills: its bodies
    wait for each other; another token's body starts at once."""
    import asyncio

    from ledger.api.routes.events import LargeBodies

    lane = LargeBodies()
    lane.SHARE, lane.BURST = 0.1, 0.0  # no burst: every parse is paid for at once

    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        await lane.parse(_slow_parse, b"x", "tok_warm")  # the lane's process is started
        await lane.parse(_slow_parse, b"x", "tok_hostile")
        start = loop.time()
        await lane.parse(_slow_parse, b"x", "tok_other")
        other = loop.time() - start
        start = loop.time()
        await lane.parse(_slow_parse, b"x", "tok_hostile")
        again = loop.time() - start
        return other, again

    try:
        other, again = asyncio.run(scenario())
    finally:
        lane.close()
    refill = 0.05 / lane.SHARE  # the seconds its spent 50 ms take to come back
    assert other < refill / 2  # not held up by the hostile token's share
    assert again >= refill * 0.6  # waited for its bucket (less what refilled meanwhile)
