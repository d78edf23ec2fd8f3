"""Concurrency: the client's retry policy against the real app, many clients (threads and
processes) appending to one case through `ledger serve --workers 2`, and shares racing a
consent withdrawal, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import multiprocessing
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.client import LedgerClient, LedgerHTTPError, RetryPolicy, is_transient
from ledger.contract import crypto
from ledger.storage.base import Commit
from tests.conftest import OPENED_ATTRS, ORIGIN, World
from tests.servers import (
    AgencyCreds,
    Deployment,
    deployment,
    log_entries,
    register_agencies,
    write_audit_inputs,
)

# -- the retry policy, against the real app -------------------------------------------------------


class Faults(httpx.BaseTransport):
    """The real app's transport with network faults in front: `down` requests fail to
    connect, and the answers to `lose` requests are lost after the app processed them."""

    def __init__(self, inner: httpx.BaseTransport, down: int = 0, lose: int = 0) -> None:
        self.inner, self.down, self.lose = inner, down, lose
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        if self.down > 0:
            self.down -= 1
            raise httpx.ConnectError("connection refused", request=request)
        response = self.inner.handle_request(request)
        if self.lose > 0 and request.method == "POST":
            self.lose -= 1
            response.read()
            raise httpx.ReadError("connection reset before the answer", request=request)
        return response


FAST = RetryPolicy(attempts=6, base_s=0.001, cap_s=0.01, budget_s=10)


def sdk(world: World, agency: str, faults: Faults | None = None, **kw: Any) -> LedgerClient:
    """A LedgerClient for an agency of the test world, over the real app's transport."""
    a = world.agency(agency)
    transport = faults or world.http._transport
    token = a.tokens.get("caseworker") or a.auth()["Authorization"].split()[1]
    client = LedgerClient("http://testserver", token, a.key, transport=transport, **kw)
    client._origin = ORIGIN
    return client


def opened(client: LedgerClient, case_id: str) -> dict[str, Any]:
    return client.build("case.opened", case_id, {"minor": False}, OPENED_ATTRS, {"notes": "n"})


def test_a_lost_answer_is_resent_identically_and_gets_the_original_answer(world: World) -> None:
    faults = Faults(world.http._transport, lose=1)
    client = sdk(world, "ngo-a", faults, retry=FAST)
    body = opened(client, str(uuid.uuid4()))
    answer = client.submit_body(body)
    assert answer.status == 200 and client.retried == 1  # recorded by the first try
    recorded = world.ledger.store.find_event(body["envelope"]["event_id"])
    assert recorded is not None and recorded.position == answer.index
    assert world.ledger.store.log_size() == answer.index + 1  # once


def test_a_server_that_is_down_is_retried_with_backoff_until_it_answers(world: World) -> None:
    faults = Faults(world.http._transport, down=3)
    client = sdk(world, "ngo-a", faults, retry=FAST)
    answer = client.submit_body(opened(client, str(uuid.uuid4())))
    assert answer.status == 201 and client.retried == 3 and faults.sent == 4


def test_the_retry_budget_ends_with_the_transport_error(world: World) -> None:
    faults = Faults(world.http._transport, down=100)
    client = sdk(world, "ngo-a", faults, retry=RetryPolicy(attempts=4, base_s=0.001))
    body = opened(client, str(uuid.uuid4()))
    with pytest.raises(httpx.ConnectError):
        client.submit_body(body)
    assert faults.sent == 4
    faults.down = 0
    assert client.submit_body(body).status == 201  # the caller may send it again later


def test_a_write_that_loses_a_race_is_decided_again_by_the_server(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server process commits to the case between our load and our append: the
    server decides the submission again on the new state and records it (201, version 3);
    the client has nothing to resend."""
    from ledger.deploy import open_ledger

    client = sdk(world, "ngo-a", retry=FAST)
    world.agency("ngo-b")  # the consent's recipient: registered
    case_id = str(uuid.uuid4())
    client.submit_body(opened(client, case_id))
    store, real_append = world.ledger.store, world.ledger.store.append
    interloper = client.build("service.delivered", case_id, {"referral_id": None},
                              {"component": "housing"})  # fmt: skip
    other_process = open_ledger(world.settings)
    raced: list[int] = []

    def append_after_a_concurrent_writer(commit: Commit) -> list[int]:
        if commit.stored_events and not raced:
            raced.append(1)
            other = other_process.authenticate(world.agency("ngo-a").tokens["caseworker"])
            assert other_process.submit(other, json.dumps(interloper).encode())[0] == 201
        return real_append(commit)

    monkeypatch.setattr(store, "append", append_after_a_concurrent_writer)
    body = client.build("consent.granted", case_id, {
        "consent_id": str(uuid.uuid4()), "purposes": ["data_sharing"], "recipients": ["ngo-b"],
        "categories": ["identity"], "expires_at": None, "given_by": "survivor",
        "child_assent": None, "assent_exempt": False,
    }, {"language": "es", "interpreter": False, "notice_version": "1"})  # fmt: skip
    try:
        answer = client.submit_body(body)
    finally:
        other_process.store.close()
        other_process.keys.table.close()
    assert raced == [1]
    assert answer.status == 201 and answer.case_version == 3 and client.retried == 0


def test_a_write_conflict_the_server_gives_up_on_is_resent_by_the_client(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conflicts outlast the server's own attempts: 409 `write_conflict`, and the client's
    identical resend is recorded."""
    from ledger.concurrency import WRITE_ATTEMPTS
    from ledger.storage.base import ConflictError

    client = sdk(world, "ngo-a", retry=FAST)
    world.agency("ngo-b")  # the consent's recipient: registered
    case_id = str(uuid.uuid4())
    client.submit_body(opened(client, case_id))
    store, real_append = world.ledger.store, world.ledger.store.append
    conflicts = [WRITE_ATTEMPTS]

    def conflicting_for_a_while(commit: Commit) -> list[int]:
        if commit.stored_events and conflicts[0] > 0:
            conflicts[0] -= 1
            raise ConflictError("a concurrent write")
        return real_append(commit)

    monkeypatch.setattr(store, "append", conflicting_for_a_while)
    answer = client.submit_body(client.build("case.closed", case_id, {}, {"reason": "other"}))
    assert answer.status == 201 and answer.case_version == 2 and client.retried == 1


def test_a_write_conflict_answer_is_409_with_its_own_code(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sdk(world, "ngo-a", retry=RetryPolicy(attempts=1))
    case_id = str(uuid.uuid4())
    client.submit_body(opened(client, case_id))
    from ledger.storage.base import ConflictError

    def conflicts(commit: Commit) -> list[int]:
        raise ConflictError("a concurrent write")

    monkeypatch.setattr(world.ledger.store, "append", conflicts)
    body = client.build("case.closed", case_id, {}, {"reason": "other"})
    with pytest.raises(LedgerHTTPError) as refused:
        client.submit_body(body)
    assert refused.value.status == 409 and refused.value.error == "write_conflict"
    assert is_transient(409, refused.value.body)


def test_an_event_id_in_use_with_other_content_is_final_and_not_resent(world: World) -> None:
    client = sdk(world, "ngo-a", retry=FAST)
    case_id = str(uuid.uuid4())
    first = opened(client, case_id)
    client.submit_body(first)
    other = client.build("case.closed", case_id, {}, {"reason": "other"},
                         event_id=first["envelope"]["event_id"])  # fmt: skip
    with pytest.raises(LedgerHTTPError) as refused:
        client.submit_body(other)
    assert refused.value.status == 409 and refused.value.error == "conflict"
    assert not is_transient(409, refused.value.body) and client.retried == 0


def test_an_identical_resend_after_the_freshness_window_still_gets_the_original(
    world: World,
) -> None:
    """Why the client never re-signs: the same event_id with a new signed_at is other
    content (409); the identical bytes are answered 200 whenever they come."""
    client = sdk(world, "ngo-a", retry=FAST)
    body = opened(client, str(uuid.uuid4()))
    first = client.submit_body(body)
    world.clock.advance(seconds=3600)
    again = client.submit_body(body)
    assert (again.status, again.index, again.leaf_hash) == (200, first.index, first.leaf_hash)


# -- many clients, one case, a real server with two processes --------------------------------------

AGENCIES = ["holder-a", "recipient-b", "other-c"]
PATIENT = RetryPolicy(attempts=200, base_s=0.01, cap_s=0.5, budget_s=120)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Deployment, dict[str, AgencyCreds]]]:
    backend = str(request.param)
    with deployment(backend, tmp_path_factory.mktemp(f"concurrency-{backend}")) as dep:
        dep.start_server()
        yield dep, register_agencies(dep, AGENCIES)


def append_many(
    url: str, token: str, key_line: str, case_id: str, count: int, threads: int
) -> list[tuple[str, int, int, int, int]]:
    """`threads` clients each appending `count` events to one case; (event_id, status, index,
    case_version, resends) per event. Runs in the test process and in child processes."""
    key = crypto.parse_signing_key(key_line)

    def one_client(_: int) -> list[tuple[str, int, int, int, int]]:
        out = []
        with LedgerClient(url, token, key, retry=PATIENT) as client:
            for _ in range(count):
                before = client.retried
                body = client.build("service.delivered", case_id, {"referral_id": None},
                                    {"component": "housing"})  # fmt: skip
                a = client.submit_body(body)
                out.append((a.event_id, a.status, a.index, a.case_version, client.retried - before))
        return out

    with ThreadPoolExecutor(threads) as pool:
        return [row for rows in pool.map(one_client, range(threads)) for row in rows]


def test_many_clients_appending_to_one_case_lose_and_duplicate_nothing(
    served: tuple[Deployment, dict[str, AgencyCreds]],
) -> None:
    dep, agencies = served
    holder = agencies["holder-a"]
    case_id = str(uuid.uuid4())
    with LedgerClient(dep.url, holder.caseworker, holder.key) as client:
        client.submit_body(opened(client, case_id))
    threads, count, procs = 6, 5, 2  # 6 threads here and 6 in each of 2 processes
    args = (dep.url, holder.caseworker, holder.key.line(), case_id, count, threads)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        remote = [pool.apply_async(append_many, args) for _ in range(procs)]
        local = append_many(*args)
        rows = local + [row for r in remote for row in r.get(timeout=300)]
    total = threads * count * (procs + 1)
    assert len(rows) == total and {r[1] for r in rows} == {201}
    assert sorted(r[3] for r in rows) == list(range(2, total + 2))  # versions, no gap or dup
    assert len({r[0] for r in rows}) == total and len({r[2] for r in rows}) == total
    entries = log_entries(dep)
    assert [i for i, _ in entries] == list(range(len(entries)))
    ours = [(i, e["envelope"]) for i, e in entries
            if e["kind"] == "event" and e["envelope"]["case_id"] == case_id]  # fmt: skip
    assert len(ours) == total + 1
    by_index = {r[2]: r for r in rows}
    for version, (i, env) in enumerate(ours, start=1):
        if version > 1:
            assert by_index[i][0] == env["event_id"] and by_index[i][3] == version
    print(f"{dep.backend}: {total} events on one case, {sum(r[4] for r in rows)} resends")


# -- shares racing a withdrawal ----------------------------------------------------------------

Share = tuple[bool, int | None, bool]  # accepted, its log index, sent after the withdrawal


def race_round(
    dep: Deployment, holder: AgencyCreds, client: LedgerClient, delay: float
) -> tuple[list[Share], int, str]:
    """Six clients share under a consent while the holder withdraws it (once a first share is
    in, `delay` later); each client keeps sharing until two of its shares were sent after the
    withdrawal was answered."""
    case_id = str(uuid.uuid4())
    client.submit_body(opened(client, case_id))
    consent_id = str(uuid.uuid4())
    client.submit("consent.granted", case_id, {
        "consent_id": consent_id, "purposes": ["data_sharing"],
        "recipients": ["recipient-b"], "categories": ["identity"], "expires_at": None,
        "given_by": "survivor", "child_assent": None, "assent_exempt": False,
    }, {"language": "es", "interpreter": False, "notice_version": "1"})  # fmt: skip
    withdrawn, shared = threading.Event(), threading.Event()

    def share(_: int) -> list[Share]:
        out: list[Share] = []
        after = 0
        with LedgerClient(dep.url, holder.caseworker, holder.key, retry=PATIENT) as c:
            while after < 2:
                late = withdrawn.is_set()
                facts = {"share_id": str(uuid.uuid4()), "recipient": "recipient-b",
                         "consent_id": consent_id, "purpose": "data_sharing",
                         "categories": ["identity"]}  # fmt: skip
                try:
                    out.append((True, c.submit("data.shared", case_id, facts, {}).index, late))
                    shared.set()
                except LedgerHTTPError as exc:
                    assert exc.status == 403, exc  # the consent gate
                    out.append((False, None, late))
                after += late
        return out

    def withdraw() -> int:
        shared.wait(30)  # while the other clients keep sharing
        time.sleep(delay)
        answer = client.submit("consent.withdrawn", case_id, {"consent_id": consent_id},
                               {"reason": "survivor_request"})  # fmt: skip
        withdrawn.set()
        return answer.index

    with ThreadPoolExecutor(7) as pool:
        futures = [pool.submit(share, n) for n in range(6)]
        w = pool.submit(withdraw).result()
        return [r for f in futures for r in f.result()], w, case_id


def test_shares_racing_a_withdrawal_are_before_it_or_refused(
    served: tuple[Deployment, dict[str, AgencyCreds]],
) -> None:
    dep, agencies = served
    holder = agencies["holder-a"]
    rng = random.Random(20261129)
    accepted_total = refused_total = 0
    with LedgerClient(dep.url, holder.caseworker, holder.key, retry=PATIENT) as client:
        for _round in range(5):
            results, w, case_id = race_round(dep, holder, client, rng.uniform(0.0, 0.1))
            for ok, index, late in results:
                if ok:
                    assert index is not None and index < w, (index, w)
                if late:
                    assert not ok  # sent after the withdrawal was answered: refused
            accepted = sorted(index for ok, index, _ in results if ok and index is not None)
            accepted_total += len(accepted)
            refused_total += len(results) - len(accepted)
            shares = [i for i, e in log_entries(dep) if e["kind"] == "event"
                      and e["envelope"]["case_id"] == case_id
                      and e["envelope"]["type"] == "data.shared"]  # fmt: skip
            assert shares == accepted  # refused shares left no trace
    print(f"{dep.backend}: {accepted_total} shares before withdrawals, {refused_total} refused")
    audit_args = write_audit_inputs(dep, agencies)
    audit = dep.cli(*audit_args)  # the gates re-checked in log order
    size = len(log_entries(dep))
    deadline = time.monotonic() + 60
    while f"verified: {size} entries" not in audit.stdout and time.monotonic() < deadline:
        time.sleep(1)  # until a checkpoint covers the whole log
        audit = dep.cli(*audit_args)
    assert audit.returncode == 0 and f"verified: {size} entries" in audit.stdout, audit.stdout


# -- processes starting at once, or while the worker follows ---------------------------------------


def test_processes_setting_up_the_read_models_at_once_all_start(tmp_path: Path) -> None:
    """`ledger serve --workers 2` and `ledger worker` start together on a new deployment: each
    creates the read models' schema and tables; none may fail on the others' DDL."""

    from ledger.services import releases
    from ledger.storage.postgres import PostgresViewStore
    from projections import all_projections
    from tests.conftest import drop_schemas, require_postgres

    url = require_postgres()
    statements = [*(s for p in all_projections() for s in p.schema), *releases.SCHEMA]
    for _ in range(5):
        schema = f"t_{uuid.uuid4().hex[:12]}"
        barrier = threading.Barrier(3, timeout=60)
        errors: list[str] = []

        def start(barrier: threading.Barrier, errors: list[str], schema: str) -> None:
            barrier.wait()
            try:
                views = PostgresViewStore(url, schema)
                try:
                    views.setup(statements)
                finally:
                    views.close()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=start, args=(barrier, errors, schema)) for _ in "abc"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        drop_schemas(url, schema)
        assert errors == []


def test_a_process_starting_while_the_worker_commits_keeps_the_worker_position(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second API process runs the projections' setup while the worker commits a page: the
    projection must not be set back to 0 (it would apply those entries again)."""
    from ledger.services import releases
    from ledger.storage import open_views
    from projections import all_projections
    from projections.runner import ProjectionRunner

    ngo = world.agency("ngo-a")
    for _ in range(3):
        ngo.open_case()
    worker = world.models.runner
    assert worker.views.position("cases") == 0
    views = open_views(world.settings)  # the starting process's own connections
    starting = ProjectionRunner(
        world.ledger.store, views, all_projections(), schema=releases.SCHEMA
    )
    real_transaction, calls = views.transaction, []

    def worker_commits_first(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # after the DDL, before the tracking rows are made sure of
            worker.catch_up_one(worker.named("cases")[0])
        return real_transaction(*args)

    monkeypatch.setattr(views, "transaction", worker_commits_first)
    try:
        starting.setup()
    finally:
        views.close()
    size = world.ledger.store.log_size()
    assert len(calls) >= 2 and world.models.views.position("cases") == size
    worker.catch_up()
    assert {row["lag"] for row in worker.status()} == {0}
