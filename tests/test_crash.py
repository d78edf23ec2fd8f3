"""Crash safety against the real server: concurrent writers, `ledger serve --workers 2` and
`ledger worker` killed with SIGKILL at random points and restarted, on SQLite and PostgreSQL.

Writers resend every unacknowledged submission byte for byte (same event_id, same signature)
until it is answered, so afterwards every event is acknowledged exactly once. Then: every
acknowledged event is in the log exactly once at the index it was answered with, nothing else
is, the log has no gap, `ledger audit verify` passes, and the read models, once caught up,
applied every entry exactly once and equal a rebuild (`ledger projections rebuild`).

`make test` runs a bounded version; `make soak` a longer one (LEDGER_SOAK_KILLS,
LEDGER_SOAK_SECONDS, LEDGER_SOAK_WRITERS, LEDGER_SOAK_SEED; the seed is printed, and named in
every failure, to replay the kill points).
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.client import LedgerClient, LedgerHTTPError, RetryPolicy, is_transient
from ledger.storage import open_store, open_views
from ledger.storage.base import ViewStore
from projections import all_projections
from tests.conftest import OPENED_ATTRS
from tests.servers import (
    AgencyCreds,
    Deployment,
    deployment,
    log_entries,
    register_agencies,
    write_audit_inputs,
)

KILLS = int(os.environ.get("LEDGER_SOAK_KILLS", "3"))
SECONDS = float(os.environ.get("LEDGER_SOAK_SECONDS", "5"))
WRITERS = int(os.environ.get("LEDGER_SOAK_WRITERS", "4"))
SEED = int(os.environ.get("LEDGER_SOAK_SEED") or secrets.randbelow(2**31))
ACK_DEADLINE_S = 120.0  # an event not acknowledged this long after its first try fails the run
AGENCIES = ["ngo-a", "shelter-b", "clinic-c", "legal-d"]
CATEGORIES = ["identity", "health", "notes"]


# -- the writers ---------------------------------------------------------------------------------


@dataclass
class Ack:
    event_id: str
    case_id: str
    type: str
    status: int  # 201, 200 (an earlier try had recorded it), or 410 for a retried case.erased
    index: int
    case_version: int | None


@dataclass
class CaseModel:
    id: str
    holder: str
    minor: bool
    consents: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {to, open}
    referrals: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # id -> {to, status, consent}


class Writer(threading.Thread):
    """One agency system: a realistic mix over its own cases, each event resent until
    answered. Any refusal other than a transient one fails the run."""

    def __init__(
        self, n: int, url: str, agencies: dict[str, AgencyCreds], seed: int, stop: threading.Event
    ) -> None:
        super().__init__(name=f"writer-{n}", daemon=True)
        self.rng = random.Random(seed)
        self.stop_flag = stop
        policy = RetryPolicy(attempts=4, budget_s=5)
        self.cw = {
            a: LedgerClient(url, c.caseworker, c.key, retry=policy, timeout=20)
            for a, c in agencies.items()
        }
        self.sup = {
            a: [LedgerClient(url, t, c.key, retry=policy, timeout=20) for t in c.supervisors]
            for a, c in agencies.items()
        }
        for client in self.clients():
            assert client.origin  # asked once, while the server is up; builds need no request
        self.cases: list[CaseModel] = []
        self.acks: list[Ack] = []
        self.unanswered = 0  # tries that got no answer or a transient one (beyond the client's)
        self.reads = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_flag.is_set():
                self.step()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            for client in self.clients():
                client.close()

    def clients(self) -> list[LedgerClient]:
        return [*self.cw.values(), *(s for pair in self.sup.values() for s in pair)]

    # one event, until answered

    def deliver(self, client: LedgerClient, body: dict[str, Any]) -> Ack:
        env = body["envelope"]
        started, tries = time.monotonic(), 0
        while True:
            tries += 1
            try:
                answer = client.submit_body(body)
            except httpx.TransportError:
                pass
            except LedgerHTTPError as exc:
                if exc.status == 410 and env["type"] == "case.erased":
                    # Answered 410 on a resend: our own erasure committed (nobody else erases
                    # this writer's cases); its index is checked against the log at the end.
                    ack = Ack(
                        env["event_id"], env["case_id"], env["type"], 410, exc.body["index"], None
                    )
                    self.acks.append(ack)
                    return ack
                if not is_transient(exc.status, exc.body):
                    raise AssertionError(
                        f"seed {SEED}: {env['type']} {env['event_id']} refused: {exc}"
                    ) from None
            else:
                assert answer.event_id == env["event_id"]
                assert answer.status in (200, 201), answer
                ack = Ack(
                    answer.event_id,
                    answer.case_id,
                    env["type"],
                    answer.status,
                    answer.index,
                    answer.case_version,
                )
                self.acks.append(ack)
                return ack
            self.unanswered += 1
            if time.monotonic() - started > ACK_DEADLINE_S:
                raise AssertionError(
                    f"seed {SEED}: {env['type']} {env['event_id']} not acknowledged after "
                    f"{tries} tries in {ACK_DEADLINE_S:.0f} s"
                )
            time.sleep(0.05 + self.rng.random() * 0.2)

    def submit(self, agency: str, type: str, case_id: str, facts: dict[str, Any],
               attrs: dict[str, Any], payload: dict[str, Any] | None = None,
               client: LedgerClient | None = None) -> Ack:  # fmt: skip
        client = client or self.cw[agency]
        return self.deliver(client, client.build(type, case_id, facts, attrs, payload))

    # the mix

    def step(self) -> None:
        rng = self.rng
        if len(self.cases) < 3 or rng.random() < 0.1:
            self.open_case()
            return
        case = rng.choice(self.cases)
        others = [a for a in AGENCIES if a != case.holder]
        usable = [cid for cid, c in case.consents.items() if c["open"]]
        roll = rng.random()
        if roll < 0.2 or not case.consents:
            consent_id = str(uuid.uuid4())
            to = rng.choice(others)
            self.submit(case.holder, "consent.granted", case.id, {
                "consent_id": consent_id, "purposes": ["referral", "data_sharing"],
                "recipients": [to], "categories": CATEGORIES, "expires_at": None,
                "given_by": "guardian" if case.minor else "survivor",
                "child_assent": True if case.minor else None, "assent_exempt": False,
            }, {"language": "es", "interpreter": False, "notice_version": "2026-1"})  # fmt: skip
            case.consents[consent_id] = {"to": to, "open": True}
        elif roll < 0.4 and usable:
            consent_id = rng.choice(usable)
            to = case.consents[consent_id]["to"]
            if rng.random() < 0.5:
                self.submit(case.holder, "data.shared", case.id, {
                    "share_id": str(uuid.uuid4()), "recipient": to, "consent_id": consent_id,
                    "purpose": "data_sharing", "categories": ["identity"],
                }, {})  # fmt: skip
            else:
                referral_id = str(uuid.uuid4())
                self.submit(case.holder, "referral.made", case.id, {
                    "referral_id": referral_id, "to": to, "consent_id": consent_id,
                    "categories": ["health"],
                }, {"component": rng.choice(["health_psychosocial", "housing", "education"]),
                    "due_by": "2026-12-31T00:00:00Z", "urgency": "routine"})  # fmt: skip
                case.referrals[referral_id] = {"to": to, "status": "pending", "consent": consent_id}
        elif roll < 0.55 and case.referrals:
            referral_id = rng.choice(list(case.referrals))
            referral = case.referrals[referral_id]
            nxt = {"pending": rng.choice(["referral.accepted", "referral.declined"]),
                   "accepted": "referral.completed"}.get(referral["status"])  # fmt: skip
            if nxt is None or (
                nxt == "referral.accepted" and not case.consents[referral["consent"]]["open"]
            ):
                return
            reason = "no_capacity" if nxt == "referral.declined" else None
            self.submit(
                referral["to"], nxt, case.id, {"referral_id": referral_id}, {"reason": reason}
            )
            referral["status"] = nxt.split(".")[1]
        elif roll < 0.65 and usable:
            consent_id = rng.choice(usable)
            self.submit(case.holder, "consent.withdrawn", case.id, {"consent_id": consent_id},
                        {"reason": "survivor_request"})  # fmt: skip
            case.consents[consent_id]["open"] = False
        elif roll < 0.85:
            self.submit(case.holder, "service.delivered", case.id, {"referral_id": None},
                        {"component": "housing"})  # fmt: skip
        elif roll < 0.93:
            self.read(case)
        elif roll < 0.96:
            first, second = self.sup[case.holder]
            request = self.submit(case.holder, "erasure.requested", case.id, {},
                                  {"reason": "survivor_request"}, client=first)  # fmt: skip
            self.submit(case.holder, "case.erased", case.id,
                        {"request_event_id": request.event_id}, {}, client=second)  # fmt: skip
            self.cases.remove(case)
        else:
            self.submit(case.holder, "case.closed", case.id, {}, {"reason": "services_completed"})
            self.cases.remove(case)

    def open_case(self) -> None:
        holder = self.rng.choice(AGENCIES)
        band = self.rng.choice(["adult", "adult", "adult", "15-17", "unknown"])
        case_id = str(uuid.uuid4())
        self.submit(holder, "case.opened", case_id, {"minor": band != "adult"},
                    OPENED_ATTRS | {"age_band": band}, {"notes": f"n-{case_id[:8]}"})  # fmt: skip
        self.cases.append(CaseModel(case_id, holder, band != "adult"))

    def read(self, case: CaseModel) -> None:
        """The holder reads the case (an access entry); resent until answered."""
        for _ in range(int(ACK_DEADLINE_S / 0.2)):
            try:
                data = self.cw[case.holder].read_case(case.id)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            except LedgerHTTPError as exc:
                if is_transient(exc.status, exc.body):
                    time.sleep(0.2)
                    continue
                raise AssertionError(f"seed {SEED}: read of {case.id} refused: {exc}") from None
            assert data["payload"]["notes"] == f"n-{case.id[:8]}"
            self.reads += 1
            return
        raise AssertionError(f"seed {SEED}: read of {case.id} never answered")


# -- the chaos -----------------------------------------------------------------------------------


def projection_positions(views: ViewStore) -> dict[str, int]:
    return {p.name: views.position(p.name) for p in all_projections()}


def kill_worker_mid_catch_up(
    dep: Deployment, views: ViewStore, rng: random.Random, log: list[str]
) -> None:
    """Let a backlog build up with the worker down, start it, and SIGKILL it as soon as it has
    committed its first page, so the kill lands while it is applying the next ones."""
    dep.worker.kill()
    time.sleep(rng.uniform(0.5, 1.5))
    before = projection_positions(views)
    dep.worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and projection_positions(views) == before:
        time.sleep(0.01)
    dep.worker.kill()
    log.append(f"worker killed mid catch-up {before} -> {projection_positions(views)}")
    dep.worker.start()


def chaos(
    dep: Deployment, views: ViewStore, rng: random.Random, seconds: float, kills: int
) -> list[str]:
    """About `seconds` of serving in all, cut by `kills` SIGKILLs of the server's process group
    (with the worker half of the time) after random stretches of uptime, each followed by a
    random pause and a restart; once in the middle, the worker killed mid catch-up."""
    log: list[str] = []
    started = time.monotonic()
    cuts = sorted(rng.uniform(0, seconds) for _ in range(kills))
    uptimes = [b - a for a, b in zip([0.0, *cuts[:-1]], cuts, strict=True)]
    for n, uptime in enumerate(uptimes):
        time.sleep(uptime)
        if n == kills // 2:
            kill_worker_mid_catch_up(dep, views, rng, log)
        both = rng.random() < 0.5
        dep.server.kill()
        if both:
            dep.worker.kill()
        what = "server and worker" if both else "server"
        log.append(f"{what} killed after {uptime:.2f} s up, at {time.monotonic() - started:.1f} s")
        time.sleep(rng.uniform(0.0, 1.0))
        restarting = time.monotonic()
        dep.start_server()
        if both:
            dep.worker.start()
        log.append(f"server answering again {time.monotonic() - restarting:.1f} s after restart")
    time.sleep(max(0.5, seconds - sum(uptimes)))
    return log


# -- the checks ----------------------------------------------------------------------------------


def dump_views(views: ViewStore) -> dict[str, list[tuple[str, ...]]]:
    out = {}
    for p in all_projections():
        for table in p.tables:
            with views.read() as cur:
                cur.execute(views.sql(f"SELECT * FROM {{s}}{table}"))  # noqa: S608
                rows = [tuple(str(v) for v in dict(r).values()) for r in cur.fetchall()]
            out[table] = sorted(rows)
    return out


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"seed {SEED}: timed out waiting for {what}")
        time.sleep(0.2)


def check_log(entries: list[tuple[int, dict[str, Any]]], acks: list[Ack]) -> dict[str, int]:
    """Every acknowledged event exactly once, at its answered index and case version; nothing
    unacknowledged; no gap. Returns counts for the report."""
    assert [i for i, _ in entries] == list(range(len(entries))), f"seed {SEED}: a gap in the log"
    events = [(i, e["envelope"]) for i, e in entries if e["kind"] == "event"]
    where = defaultdict(list)
    for i, env in events:
        where[env["event_id"]].append(i)
    duplicated = {k: v for k, v in where.items() if len(v) > 1}
    assert not duplicated, f"seed {SEED}: events recorded twice: {duplicated}"
    by_id = {a.event_id: a for a in acks}
    assert len(by_id) == len(acks), f"seed {SEED}: an event answered twice"
    missing = [a for a in acks if a.event_id not in where]
    assert not missing, f"seed {SEED}: acknowledged but not in the log: {missing[:5]}"
    unacked = [k for k in where if k not in by_id]
    assert not unacked, f"seed {SEED}: in the log but never acknowledged: {unacked[:5]}"
    version: Counter[str] = Counter()
    for i, env in events:
        version[env["case_id"]] += 1
        ack = by_id[env["event_id"]]
        assert ack.index == i, f"seed {SEED}: {ack} answered index {ack.index}, log has {i}"
        assert ack.case_id == env["case_id"]
        if ack.case_version is not None:
            assert ack.case_version == version[env["case_id"]], f"seed {SEED}: {ack}"
    statuses = Counter(a.status for a in acks)
    return {
        "entries": len(entries),
        "events": len(events),
        **{str(k): v for k, v in statuses.items()},
    }


def check_read_models(
    dep: Deployment, views: ViewStore, entries: list[tuple[int, dict[str, Any]]]
) -> None:
    """Caught up, every entry applied once (per-case event counts, one disclosure row per
    share, referral and read, one consent row per grant), and equal to a rebuild."""
    size = len(entries)
    wait_for(lambda: set(projection_positions(views).values()) == {size}, 120, "the worker")
    dep.worker.stop()
    live = dump_views(views)
    erased = {e["envelope"]["case_id"] for _, e in entries
              if e["kind"] == "event" and e["envelope"]["type"] == "case.erased"}  # fmt: skip
    per_case: Counter[str] = Counter()
    disclosures, consents = set(), Counter()
    for i, e in entries:
        case_id = e["case_id"] if e["kind"] == "access" else e.get("envelope", {}).get("case_id")
        if case_id is None or case_id in erased:
            continue
        if e["kind"] == "access":
            disclosures.add(str(i))
            continue
        per_case[case_id] += 1
        if e["envelope"]["type"] in ("data.shared", "referral.made"):
            disclosures.add(str(i))
        if e["envelope"]["type"] == "consent.granted":
            consents[case_id] += 1
    versions = {row[0]: int(row[5]) for row in live["view_cases"]}  # case_id ... version
    assert versions == dict(per_case), f"seed {SEED}: a case's events applied other than once"
    assert {row[0] for row in live["view_disclosures"]} == disclosures, f"seed {SEED}"
    assert Counter(row[0] for row in live["view_consents"]) == consents, f"seed {SEED}"
    rebuilt = dep.cli("projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert dump_views(views) == live, f"seed {SEED}: the live read models differ from a rebuild"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_acknowledged_events_survive_sigkill_exactly_once(backend: str, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-{backend}")
    print(
        f"crash run: backend {backend} seed {SEED} kills {KILLS} seconds {SECONDS}"
        f" writers {WRITERS}"
    )
    started = time.monotonic()
    with deployment(backend, tmp_path / backend) as dep:
        dep.start_server()
        dep.worker.start()
        views = open_views(dep.settings)
        agencies = register_agencies(dep, AGENCIES)
        audit_args = write_audit_inputs(dep, agencies)
        stop = threading.Event()
        writers = [Writer(n, dep.url, agencies, rng.randrange(2**31), stop) for n in range(WRITERS)]
        for w in writers:
            w.start()
        try:
            events_log = chaos(dep, views, rng, SECONDS, KILLS)
        finally:
            stop.set()
            for w in writers:
                w.join(ACK_DEADLINE_S + 30)
        errors = [w.error for w in writers if w.error is not None]
        assert not errors, f"seed {SEED}: {errors[0]!r}\n{dep.server.tail()}"
        acks = [a for w in writers for a in w.acks]
        entries = log_entries(dep)
        counts = check_log(entries, acks)
        with LedgerClient(dep.url, dep.admin_token) as admin:
            from ledger.audit import checkpoint_size

            wait_for(lambda: checkpoint_size(admin.checkpoint()) == len(entries), 60,
                     "a checkpoint covering the whole log")  # fmt: skip
        audit = dep.cli(*audit_args)
        assert audit.returncode == 0, f"seed {SEED}: {audit.stdout}{audit.stderr}"
        assert f"verified: {len(entries)} entries" in audit.stdout, audit.stdout
        check_read_models(dep, views, entries)
        views.close()
        store, table = open_store(dep.settings)  # no start-up recovery here: the server's did it
        try:
            for a in acks:
                if a.type == "case.erased":
                    assert table.get(a.case_id) is None, f"seed {SEED}: erased case key kept {a}"
        finally:
            store.close()
            table.close()
        print(
            f"crash run: backend {backend} seed {SEED}: {dep.server.kills} server kills, "
            f"{dep.worker.kills} worker kills, {counts}, reads {sum(w.reads for w in writers)}, "
            f"unanswered tries {sum(w.unanswered for w in writers)}, client resends "
            f"{sum(c.retried for w in writers for c in w.cw.values())}, "
            f"{time.monotonic() - started:.1f} s"
        )
        for line in events_log:
            print("crash run:", line)
        assert dep.server.kills == KILLS
