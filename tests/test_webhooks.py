"""Notices delivered to agencies' webhooks, on both backends, to a real receiver process that
checks every signature with `standardwebhooks`: each rule delivered once; a receiver down for
a while gets everything afterwards, in order; a dead endpoint does not hold up another
agency's; and the outbound rules (https, public addresses, no redirects) at registration
and at delivery."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ledger.contract import crypto
from ledger.contract.receipts import verify_receipt
from ledger.contract.vocabulary import format_timestamp
from ledger.deploy import KeyPaths
from ledger.services.delivery import FLUSH, Deliverer, Retries
from ledger.services.outbound import OutboundPolicy, Refused
from ledger.settings import Settings
from tests.conftest import World, open_world
from tests.servers import Proc, free_port
from tests.test_erasure import erase
from tests.test_readmodels import refer

MARKER = "MARKER-webhooks"
PUBLIC = "https://93.184.216.34/hooks"  # a public address: registration never connects


@pytest.fixture
def hooked(settings: Settings) -> Iterator[World]:
    """A world whose ledger may register plain-http loopback endpoints (development mode)."""
    with open_world(settings.model_copy(update={"webhook_allow_http_loopback": True})) as w:
        yield w


@dataclass
class Receiver:
    """`tests/receiver.py` as its own process, on its own port."""

    root: Path
    port: int
    proc: Proc

    @classmethod
    def start(cls, root: Path, redirect_to: str = "http://127.0.0.1:9/") -> Receiver:
        root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [
            sys.executable, "-m", "tests.receiver", "--port", str(port),
            "--secrets", str(root / "secrets"), "--out", str(root / "out.jsonl"),
            "--mode", str(root / "mode"), "--redirect-to", redirect_to,
        ]  # fmt: skip
        receiver = cls(root, port, Proc(argv, dict(os.environ), root / "receiver.log"))
        receiver.run()
        return receiver

    def run(self) -> None:
        self.proc.start()
        wait_for(lambda: self._listening(), 20, "the receiver to listen")

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def trust(self, *secrets: str) -> None:
        with (self.root / "secrets").open("a") as f:
            f.write("".join(s + "\n" for s in secrets))

    def mode(self, mode: str) -> None:
        (self.root / "mode").write_text(mode)

    def lines(self) -> list[dict[str, Any]]:
        out = self.root / "out.jsonl"
        if not out.exists():
            return []
        return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]

    def accepted(self) -> list[dict[str, Any]]:
        """The deliveries it answered 2xx, each with its parsed body."""
        return [
            {**line, "payload": json.loads(line["body"])}
            for line in self.lines()
            if line["mode"] in ("ok", "slow")
        ]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver.start(tmp_path / "receiver")
    yield r
    r.proc.stop()


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def delivering(
    world: World, policy: OutboundPolicy | None = None, **retries: float
) -> Iterator[Deliverer]:
    """The delivery loop of the API process, started on the world's ledger."""
    deliverer = Deliverer(
        world.ledger.store,
        world.ledger.webhook_secrets,
        policy or OutboundPolicy(allow_http_loopback=True, read_timeout_s=5),
        world.ledger.origin,
        retries=Retries(**({"base_s": 0.2, "max_s": 1.0, "lease_s": 10.0} | retries)),
        poll_s=0.05,
    )
    deliverer.start()
    try:
        yield deliverer
    finally:
        deliverer.stop()


def register(world: World, agency: str, url: str, **body: Any) -> Any:
    return world.http.post(
        f"/v1/agencies/{agency}/webhooks",
        json={"url": url, **body},
        headers=world.agencies[agency].auth("supervisor"),
    )


def hook(world: World, agency: str, url: str) -> dict[str, Any]:
    r = register(world, agency, url)
    assert r.status_code == 201, r.text
    return dict(r.json())


def stored(world: World, agency: str) -> list[int]:
    return [n.seq for n in world.ledger.store.notices(agency, 0, 100)]


# -- the outbound rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "resolves_to", "why"),
    [
        ("https://hooks.example/x", ["127.0.0.1"], "private, loopback"),
        ("https://hooks.example/x", ["10.20.30.40"], "private, loopback"),
        ("https://hooks.example/x", ["169.254.169.254"], "link-local"),
        ("https://hooks.example/x", ["::1"], "loopback"),
        ("https://hooks.example/x", ["::ffff:10.0.0.1"], "private"),
        ("https://hooks.example/x", ["93.184.216.34", "192.168.1.1"], "private"),
        ("https://hooks.example/x", ["100.64.0.1"], "private"),  # carrier-grade NAT
        ("https://hooks.example/x", ["224.0.0.1"], "private"),  # multicast
        ("http://hooks.example/x", ["93.184.216.34"], "must be https"),
        ("ftp://hooks.example/x", ["93.184.216.34"], "must be https"),
        ("https://user:pw@hooks.example/x", ["93.184.216.34"], "user name"),
        ("https:///x", ["93.184.216.34"], "no host"),
        ("https://hooks.example/x", [], "does not resolve"),
    ],
)
def test_the_outbound_rules_refuse_what_a_webhook_may_not_reach(
    url: str, resolves_to: list[str], why: str
) -> None:
    policy = OutboundPolicy(resolve=lambda host, port: resolves_to)
    with pytest.raises(Refused, match=why.split(",")[0]):
        policy.check(url)


def test_the_outbound_rules_let_through_public_addresses_and_only_the_networks_allowed() -> None:
    public = OutboundPolicy(resolve=lambda h, p: ["93.184.216.34"])
    target = public.check("https://hooks.example:8443/in?x=1")
    assert (target.address, target.port, target.host_header) == (
        "93.184.216.34",
        8443,
        "hooks.example:8443",
    )
    assert target.pinned_url == "https://93.184.216.34:8443/in?x=1"  # the address checked
    vpn = OutboundPolicy(allowed_networks=("10.8.0.0/16",), resolve=lambda h, p: ["10.8.1.2"])
    assert vpn.check("https://hooks.example/").address == "10.8.1.2"
    with pytest.raises(Refused):
        OutboundPolicy(allowed_networks=("10.8.0.0/16",), resolve=lambda h, p: ["10.9.0.1"]).check(
            "https://hooks.example/"
        )
    dev = OutboundPolicy(allow_http_loopback=True)
    assert dev.check("http://127.0.0.1:9000/h").address == "127.0.0.1"
    with pytest.raises(Refused, match="loopback"):  # http in development: to loopback only
        OutboundPolicy(allow_http_loopback=True, resolve=lambda h, p: ["93.184.216.34"]).check(
            "http://hooks.example/"
        )


# -- registration ---------------------------------------------------------------------------


def test_an_agencys_own_supervisor_registers_rotates_and_removes_its_endpoints(
    world: World,
) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    url = "/v1/agencies/ngo-a/webhooks"
    body = {"url": PUBLIC}
    for auth in (ngo.auth("caseworker"), clinic.auth("supervisor"), world.admin_auth):
        r = world.http.post(url, json=body, headers=auth)
        assert r.status_code == 403, r.text
        assert world.http.get(url, headers=auth).status_code == 403
    assert world.http.post(url, json=body).status_code == 401
    created = hook(world, "ngo-a", PUBLIC)
    assert created["secret"].startswith("whsec_") and created["pending"] == 0
    listed = world.http.get(url, headers=ngo.auth("supervisor")).json()["webhooks"]
    assert [h["id"] for h in listed] == [created["id"]]
    assert "secret" not in listed[0]  # shown once, at registration
    rotated = world.http.post(
        f"{url}/{created['id']}/rotate-secret", headers=ngo.auth("supervisor")
    ).json()
    assert rotated["secret"] != created["secret"]
    listed = world.http.get(url, headers=ngo.auth("supervisor")).json()["webhooks"]
    assert listed[0]["previous_secret_valid"] is True
    other = world.http.post(
        f"/v1/agencies/clinic/webhooks/{created['id']}/rotate-secret",
        headers=clinic.auth("supervisor"),
    )
    assert other.status_code == 404  # clinic's supervisor, ngo-a's endpoint
    gone = world.http.delete(f"{url}/{created['id']}", headers=ngo.auth("supervisor"))
    assert gone.status_code == 204
    assert world.http.get(url, headers=ngo.auth("supervisor")).json()["webhooks"] == []
    again = world.http.delete(f"{url}/{created['id']}", headers=ngo.auth("supervisor"))
    assert again.status_code == 404
    # The secret is stored sealed: not in the table in any form.
    with world.ledger.store._read() as cur:  # type: ignore[attr-defined]
        cur.execute(world.ledger.store.sql("SELECT secret, old_secret FROM {s}webhooks"))  # type: ignore[attr-defined]
        (row,) = cur.fetchall()
    raw = crypto.b64decode_strict(created["secret"].removeprefix("whsec_"))
    assert raw not in bytes(row["secret"]) and raw not in bytes(row["old_secret"])


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/h",
        "https://localhost:8443/h",
        "https://10.1.2.3/h",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/h",
        "http://93.184.216.34/h",
        "not a url",
    ],
)
def test_registration_refuses_a_url_a_webhook_may_not_reach(world: World, url: str) -> None:
    world.agency("ngo-a")
    r = register(world, "ngo-a", url)
    assert r.status_code == 422, r.text
    assert url not in r.text or url == "not a url"  # the reason, not an echo
    assert world.ledger.store.webhooks("ngo-a") == []  # nothing left behind


# -- delivery -------------------------------------------------------------------------------


def test_each_rule_is_delivered_once_signed_and_with_nothing_personal(
    hooked: World, receiver: Receiver
) -> None:
    world = hooked
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    world.agency("legal")
    hooks = {a: hook(world, a, receiver.url(a)) for a in ("ngo-a", "clinic", "legal")}
    receiver.trust(*(h["secret"] for h in hooks.values()))
    case_id = ngo.open_case(payload={"identity": {"name": MARKER}})
    consent = ngo.grant(case_id, ["clinic", "legal"])
    referral = refer(world, case_id, consent, "clinic", "health_psychosocial")
    assert ngo.share(case_id, "legal", consent).status_code == 201
    clinic.ok("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    clinic.ok("referral.completed", case_id, {"referral_id": referral}, {"reason": None})
    # Time-based: a consent that expires and a referral left unanswered past its due time.
    expiring = ngo.grant(
        case_id, ["legal"], expires_at=format_timestamp(world.clock.now + timedelta(days=1))
    )
    assert ngo.share(case_id, "legal", expiring).status_code == 201
    late = refer(world, case_id, consent, "clinic", "housing",
                 due_by=format_timestamp(world.clock.now + timedelta(hours=2)))  # fmt: skip
    assert world.ledger.timers.fire_due() == 0  # not due yet
    world.clock.advance(days=2)
    assert world.ledger.timers.fire_due() == 3  # legal of the expiry; both of the referral
    assert world.ledger.timers.fire_due() == 0  # each once
    ngo.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "survivor_request"})
    assert erase(world, case_id).status_code == 201
    expected = {a: stored(world, a) for a in hooks}
    assert [n.kind for n in world.ledger.store.notices("clinic", 0, 100)] == [
        "referral.made", "referral.made", "referral.overdue", "consent.withdrawn", "case.erased",
    ]  # fmt: skip
    with delivering(world):
        wait_for(lambda: len(receiver.accepted()) == sum(map(len, expected.values())), 30,
                 "every notice delivered")  # fmt: skip
        # A rebuild of the read models makes and sends nothing again.
        world.models.runner.rebuild(None, lambda n: None)
        assert world.ledger.timers.fire_due() == 0
        time.sleep(0.5)
    lines = receiver.accepted()
    assert all(line["verified"] for line in receiver.lines())  # standardwebhooks, receiving side
    assert all(line["host"] == f"127.0.0.1:{receiver.port}" for line in lines)
    for agency, seqs in expected.items():
        got = [line for line in lines if line["path"] == f"/{agency}"]
        mine = [line["payload"]["data"]["seq"] for line in got]
        assert sorted(mine) == mine == seqs  # once each, in log order
        assert {line["id"] for line in got} == {f"ntc_{s}" for s in seqs}
    kinds = {line["payload"]["type"] for line in lines}
    assert kinds == {
        "referral.made", "referral.accepted", "referral.completed", "data.shared",
        "consent.expired", "referral.overdue", "consent.withdrawn", "case.erased",
    }  # fmt: skip
    assert not [line for line in receiver.lines() if MARKER in line["body"]]
    for line in lines:
        body = line["payload"]
        assert set(body) == {"type", "timestamp", "data"}
        data_keys = {"seq", "kind", "case_id", "position", "subject", "ask", "acknowledge",
                     "created_at", "origin"}  # fmt: skip
        assert set(body["data"]) - {"receipt"} == data_keys
        assert body["data"]["case_id"] == case_id
    (erased,) = [line for line in lines if line["payload"]["type"] == "case.erased"][:1]
    receipt_key = crypto.parse_verify_key(KeyPaths(world.settings.keys).receipt_vkey.read_text())
    assert verify_receipt(erased["payload"]["data"]["receipt"], receipt_key).case_id == case_id
    state = world.http.get(
        "/v1/agencies/clinic/webhooks", headers=clinic.auth("supervisor")
    ).json()["webhooks"][0]
    assert state["pending"] == 0 and state["delivered_through"] == expected["clinic"][-1]
    assert late  # (the overdue referral's id is the subject of its notices)


def test_a_receiver_down_for_a_while_gets_everything_after_in_order(
    hooked: World, receiver: Receiver
) -> None:
    world = hooked
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    created = hook(world, "clinic", receiver.url("clinic"))
    receiver.trust(created["secret"])
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    receiver.mode("fail")  # answers 503 ...
    with delivering(world):
        for _ in range(6):
            refer(world, case_id, consent, "clinic", "housing")
        wait_for(lambda: len(receiver.lines()) >= 3, 20, "retries of the first notice")
        state = world.ledger.store.webhooks("clinic")[0]
        assert state.failing_since is not None and "503" in (state.last_error or "")
        receiver.proc.kill()  # ... then is down altogether
        for _ in range(4):
            refer(world, case_id, consent, "clinic", "housing")
        time.sleep(1.5)
        receiver.mode("ok")
        receiver.run()
        seqs = stored(world, "clinic")
        wait_for(lambda: len(receiver.accepted()) >= len(seqs), 30, "the backlog delivered")
    accepted = [line["payload"]["data"]["seq"] for line in receiver.accepted()]
    assert accepted == seqs  # all of them, once, in log order
    failed = [line for line in receiver.lines() if line["mode"] == "fail"]
    assert {line["id"] for line in failed} == {f"ntc_{seqs[0]}"}  # only the head was retried
    state = world.ledger.store.webhooks("clinic")[0]
    assert state.failing_since is None and state.cursor == seqs[-1]


def test_a_notice_retried_past_the_period_is_dead_lettered_and_shown(
    hooked: World, receiver: Receiver
) -> None:
    world = hooked
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    created = hook(world, "clinic", receiver.url("clinic"))
    receiver.mode("fail")
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    first = refer(world, case_id, consent, "clinic", "housing")
    with delivering(world, period_s=1.0):
        wait_for(lambda: world.ledger.store.dead_letters(created["id"]), 20, "a dead letter")
        receiver.mode("ok")
        second = refer(world, case_id, consent, "clinic", "housing")
        wait_for(lambda: receiver.accepted(), 20, "the next notice delivered")
    r = world.http.get(
        f"/v1/agencies/clinic/webhooks/{created['id']}/dead-letters",
        headers=world.agencies["clinic"].auth("supervisor"),
    )
    (dead,) = r.json()["dead"]
    assert dead["kind"] == "referral.made" and dead["attempts"] >= 1 and "503" in dead["error"]
    assert [line["payload"]["data"]["subject"] for line in receiver.accepted()] == [second]
    inbox = world.http.get("/v1/notices", headers=world.agencies["clinic"].auth()).json()
    assert [n["subject"] for n in inbox["notices"]] == [first, second]  # still in the inbox


def test_a_dead_endpoint_of_one_agency_does_not_delay_anothers(
    hooked: World, tmp_path: Path
) -> None:
    world = hooked
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    world.agency("legal")
    dead, healthy = Receiver.start(tmp_path / "dead"), Receiver.start(tmp_path / "healthy")
    try:
        dead.mode("hang")  # holds every request open until the read timeout (4 s)
        hook(world, "clinic", dead.url("clinic"))
        healthy.trust(hook(world, "legal", healthy.url("legal"))["secret"])
        case_id = ngo.open_case()
        consent = ngo.grant(case_id, ["clinic", "legal"])
        sent: dict[str, float] = {}
        policy = OutboundPolicy(allow_http_loopback=True, read_timeout_s=4)
        with delivering(world, policy):
            for _ in range(8):
                refer(world, case_id, consent, "clinic", "housing")  # the dead endpoint's
                share = ngo.share(case_id, "legal", consent)  # the healthy one's
                assert share.status_code == 201
                sent[share.json()["index"]] = time.time()
                time.sleep(0.2)
            wait_for(lambda: len(healthy.accepted()) == 8, 30, "the healthy endpoint's notices")
            assert len(dead.lines()) == 1  # one request at a time: the head, still hanging
        positions = {n.position: n.seq for n in world.ledger.store.notices("legal", 0, 100)}
        by_seq = {
            line["payload"]["data"]["seq"]: line["received_at"] for line in healthy.accepted()
        }
        waits = [by_seq[positions[p]] - t for p, t in sent.items()]
        # Every one of B's notices arrived before A's endpoint could have given up on even
        # its first request (the 4 s read timeout): B never waited behind A.
        assert max(waits) < 3.0, waits
        state = world.ledger.store.webhooks("clinic")[0]
        assert state.cursor == 0 and state.last_error == "timed out" and state.attempts == 1
    finally:
        dead.proc.kill()
        healthy.proc.stop()


def test_a_redirect_is_not_followed_and_dns_that_changes_is_checked_again(
    hooked: World, tmp_path: Path
) -> None:
    world = hooked
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    target = Receiver.start(tmp_path / "target")
    bouncer = Receiver.start(tmp_path / "bouncer", redirect_to=target.url("clinic"))
    try:
        bouncer.mode("redirect")
        redirecting = hook(world, "clinic", bouncer.url("clinic"))
        case_id = ngo.open_case()
        consent = ngo.grant(case_id, ["clinic"])
        refer(world, case_id, consent, "clinic", "housing")
        with delivering(world):
            wait_for(lambda: world.ledger.store.webhook(redirecting["id"]).last_error, 20,  # type: ignore[union-attr]
                     "the redirecting endpoint tried")  # fmt: skip
        error = world.ledger.store.webhook(redirecting["id"]).last_error  # type: ignore[union-attr]
        assert error == "answered 307: redirects are not followed"
        assert target.lines() == []  # the redirect was not followed
        # A name that resolves to a public address when it is registered, then to loopback.
        names = {"hooks.clinic.example": ["93.184.216.34"]}
        policy = OutboundPolicy(resolve=lambda host, port: names[host])
        world.ledger.webhooks.policy = policy
        rebinding = hook(world, "clinic", f"https://hooks.clinic.example:{target.port}/in")
        names["hooks.clinic.example"] = ["127.0.0.1"]
        refer(world, case_id, consent, "clinic", "housing")
        with delivering(world, policy):
            wait_for(lambda: world.ledger.store.webhook(rebinding["id"]).last_error, 20,  # type: ignore[union-attr]
                     "the rebinding endpoint refused")  # fmt: skip
        error = world.ledger.store.webhook(rebinding["id"]).last_error  # type: ignore[union-attr]
        assert error is not None and error.startswith("refused: ") and "loopback" in error
        assert target.lines() == []  # the new address was never called
    finally:
        target.proc.stop()
        bouncer.proc.stop()


def test_the_worker_killed_with_sigkill_during_deliveries_loses_nothing(
    hooked: World, receiver: Receiver
) -> None:
    world = hooked
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    receiver.trust(hook(world, "clinic", receiver.url("clinic"))["secret"])
    receiver.mode("slow")  # 50 ms an answer: the kills land mid-delivery
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    for _ in range(40):
        refer(world, case_id, consent, "clinic", "housing")
    seqs = stored(world, "clinic")
    s = world.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
        "LEDGER_HOME": str(s.home), "LEDGER_KEYS": str(s.keys), "LEDGER_PG_SCHEMA": s.pg_schema,
        "LEDGER_LOG_LEVEL": "warning", "LEDGER_WEBHOOK_ALLOW_HTTP_LOOPBACK": "true",
        "LEDGER_WEBHOOK_LEASE_S": "1.5", "LEDGER_WEBHOOK_POLL_S": "0.05",
        "LEDGER_WEBHOOK_RETRY_BASE_S": "0.2", "LEDGER_WEBHOOK_RETRY_MAX_S": "1",
    }  # fmt: skip
    if s.database_url:
        env["LEDGER_DATABASE_URL"] = s.database_url
    worker = Proc([sys.executable, "-m", "ledger.cli", "worker"], env, receiver.root / "worker.log")
    ids = lambda: {line["id"] for line in receiver.accepted()}  # noqa: E731
    try:
        for until in (8, 20):
            worker.start()
            wait_for(lambda n=until: len(ids()) >= n, 60, f"{until} deliveries")
            worker.kill()
        worker.start()
        wait_for(lambda: len(ids()) == len(seqs), 60, "every delivery after the restarts")
    finally:
        worker.kill()
    lines = receiver.accepted()
    firsts: list[int] = []
    for line in lines:
        seq = line["payload"]["data"]["seq"]
        if seq not in firsts:
            firsts.append(seq)
    assert firsts == seqs  # nothing lost, in log order
    assert all(line["verified"] for line in lines)
    # A kill loses at most the outcomes not yet recorded together (one flush): those notices
    # are sent again, under the same webhook-id, which the receiver drops.
    assert len(lines) - len(seqs) <= worker.kills * FLUSH
    repeats = Counter(line["id"] for line in lines)
    assert max(repeats.values()) <= 1 + worker.kills
