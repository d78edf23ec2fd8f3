"""`ledger bench`: the ledger's speed beside this machine's own limits, measured in one run.

Every figure says how it was measured (method, count, median and spread over repeats) and,
where there is one, its ratio to the limit measured in the same run. Nothing here is asserted
by the test suite beyond "it runs and reports every key".
"""

from __future__ import annotations

import http.client
import json
import os
import random
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger import audit
from ledger.contract import crypto
from ledger.contract.canonical import jcs, signing_input
from ledger.contract.envelope import build_submission
from ledger.contract.vocabulary import CATEGORIES, format_timestamp
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, sign_note
from ledger.settings import Settings

KEYS = (
    "verify_per_s_one_core",
    "verify_per_s_all_cores",
    "raw_single_save_per_s",
    "raw_batch_save_per_s",
    "ingest_single_per_s",
    "ingest_single_p50_ms",
    "ingest_single_p99_ms",
    "ingest_batch_per_s",
    "loadgen_cpu_share",
    "audit_per_s",
    "audit_events",
    "rebuild_per_s",
    "inclusion_proof_ms",
    "consistency_proof_ms",
    "proof_leaves",
    "erasure_ms_small",
    "erasure_ms_large",
    "key_destroy_ms",
    "hostile_idle_rss_mb",
    "hostile_peak_rss_mb",
    "hostile_rss_ratio",
    "victim_p99_quiet_ms",
    "victim_p99_hostile_ms",
    "victim_p99_ratio",
    "victim_p99_hostile_small_ms",
    "victim_p99_small_ratio",
)
PAYLOAD_BYTES = 1024
ORIGIN = "bench.localhost/log"


@dataclass(frozen=True)
class Sizes:
    verifies: int
    raw_single: int
    raw_batches: int
    ingest_cases: int
    ingest_events_per_case: int
    clients: int
    batch_events: int
    audit_events: int
    proof_leaves: int
    erasure_large: int
    erasure_ledger: int
    repeats: int

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(2_000, 200, 2, 64, 4, 32, 400, 10_000, 100_000, 300, 3_000, 1)
        return cls(20_000, 1_000, 5, 320, 8, 32, 5_000, 100_000, 1_000_000, 10_000, 100_000, 3)


@dataclass
class Report:
    backend: str
    cores: int
    values: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(
        self, key: str, runs: list[float], method: str, count: int, *, limit: str | None = None
    ) -> float:
        median = statistics.median(runs)
        self.values[key] = round(median, 3)
        detail: dict[str, Any] = {
            "method": method,
            "count": count,
            "median": round(median, 3),
            "min": round(min(runs), 3),
            "max": round(max(runs), 3),
        }
        if limit is not None and self.values.get(limit):
            detail["ratio_to"] = limit
            detail["ratio"] = round(median / float(self.values[limit] or 1), 3)
        self.details[key] = detail
        return median

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict.fromkeys(KEYS)
        out.update(self.values)
        return {
            **out,
            "backend": self.backend,
            "cores": self.cores,
            "details": self.details,
            "machine": machine(),
        }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": sys.version.split()[0]}


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- 1. limits -----------------------------------------------------------------------------


def _verify_many(n: int) -> int:
    key = crypto.generate_signing_key("bench")
    message = secrets.token_bytes(PAYLOAD_BYTES)
    signature = crypto.sign(key, message)
    for _ in range(n):
        crypto.verify(key.verify_key, message, signature)
    return n


def bench_limits(report: Report, sizes: Sizes, settings: Settings) -> None:
    n = sizes.verifies
    runs = [n / timed(lambda: _verify_many(n)) for _ in range(sizes.repeats)]
    report.put("verify_per_s_one_core", runs, "PyNaCl Ed25519 verify of 1 KiB, one process", n)
    cores = report.cores
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_verify_many, [100] * cores))  # warm the workers
        runs = [
            n * cores / timed(lambda: list(pool.map(_verify_many, [n] * cores)))
            for _ in range(sizes.repeats)
        ]
    report.put("verify_per_s_all_cores", runs, f"the same on {cores} processes", n * cores)

    with raw_application(settings) as app:
        from ledger.bench.raw import Note

        blob = "x" * PAYLOAD_BYTES
        single = []
        for _ in range(sizes.repeats):
            notes = [Note(blob) for _ in range(sizes.raw_single)]
            start = time.perf_counter()
            for note in notes:
                app.save(note)
            single.append(sizes.raw_single / (time.perf_counter() - start))
        report.put(
            "raw_single_save_per_s",
            single,
            "eventsourcing Application.save of one 1 KiB event per save",
            sizes.raw_single,
        )
        batch = []
        for _ in range(sizes.repeats):
            notes = [Note(blob) for _ in range(1000 * sizes.raw_batches)]
            chunks = [notes[i : i + 1000] for i in range(0, len(notes), 1000)]
            start = time.perf_counter()
            for chunk in chunks:
                app.save(*chunk)
            batch.append(len(notes) / (time.perf_counter() - start))
        report.put(
            "raw_batch_save_per_s",
            batch,
            "eventsourcing Application.save of 1000 events per save",
            1000 * sizes.raw_batches,
        )


@contextmanager
def raw_application(settings: Settings) -> Iterator[Any]:
    from ledger.bench.raw import Notes

    folder = Path(tempfile.mkdtemp(prefix="ledger-bench-raw-"))
    if settings.is_postgres:
        from psycopg.conninfo import conninfo_to_dict

        from ledger.storage.postgres import check_schema

        info = conninfo_to_dict(settings.database_url or "")
        schema = check_schema(f"bench_raw_{secrets.token_hex(4)}")
        import psycopg

        with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": str(info.get("dbname", "postgres")),
            "POSTGRES_HOST": str(info.get("host", "127.0.0.1")),
            "POSTGRES_PORT": str(info.get("port", "5432")),
            "POSTGRES_USER": str(info.get("user", "postgres")),
            "POSTGRES_PASSWORD": str(info.get("password", "")),
            "POSTGRES_SCHEMA": schema,
        }
    else:
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(folder / "raw.db"),
        }
    app = Notes(env=env)
    try:
        yield app
    finally:
        app.close()
        shutil.rmtree(folder, ignore_errors=True)
        if settings.is_postgres:
            import psycopg

            with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {env['POSTGRES_SCHEMA']} CASCADE")


# --- 2. ingest through the real HTTP server ---------------------------------------------------


@dataclass
class Deployment:
    settings: Settings
    env: dict[str, str]
    url: str
    process: subprocess.Popen[bytes]
    admin: str


@contextmanager
def deployment(settings: Settings, *, throttled: bool = False) -> Iterator[Deployment]:
    """A served throwaway ledger; `throttled` keeps the default per-token rate limit (the
    load generator shares one token, so the other sections lift it)."""
    folder = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    schema = f"bench_{secrets.token_hex(4)}"
    env = {
        **os.environ,
        "LEDGER_HOME": str(folder / "home"),
        "LEDGER_KEYS": str(folder / "keys"),
        "LEDGER_LOG_LEVEL": "warning",
        "LEDGER_PG_SCHEMA": schema,
        "LEDGER_WORKERS": str(os.cpu_count() or 1),
    }
    if not throttled:
        env["LEDGER_RATE_PER_S"] = "1000000"  # the load generator shares one token
    if settings.database_url:
        env["LEDGER_DATABASE_URL"] = settings.database_url
    else:
        env.pop("LEDGER_DATABASE_URL", None)
    ledger_cmd = [sys.executable, "-m", "ledger.cli"]
    subprocess.run(  # noqa: S603
        [*ledger_cmd, "init", "--origin", ORIGIN],
        env=env,
        check=True,  # noqa: S603
        capture_output=True,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(  # noqa: S603
        [*ledger_cmd, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(200):
        try:
            httpx.get(f"{url}/v1/health", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    bench_settings = Settings(
        home=folder / "home",
        keys=folder / "keys",
        database_url=settings.database_url,
        pg_schema=schema,
    )
    admin = (folder / "keys" / "admin.token").read_text().strip()
    try:
        yield Deployment(bench_settings, env, url, proc, admin)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
        if settings.is_postgres:
            import psycopg

            with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
                for suffix in ("", "_keys", "_views"):
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema}{suffix} CASCADE")


def agency_for(dep: Deployment, name: str) -> tuple[crypto.SigningKey, str]:
    from ledger.client import LedgerClient

    key = crypto.generate_signing_key(name)
    with LedgerClient(dep.url, dep.admin) as admin:
        admin.register_agency(name, name, "ngo", key.verify_key.line())
        token = str(admin.create_token("caseworker", "bench", name)["token"])
    return key, token


def case_bodies(key: crypto.SigningKey, events: int) -> list[bytes]:
    """One case's realistic sequence: intake with 1 KiB of payload, a consent, then events."""
    case_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    payload = {"identity": {"name": "x" * 400}, "notes": "y" * (PAYLOAD_BYTES - 420)}
    bodies = [
        build_submission(
            key,
            log=ORIGIN,
            case_id=case_id,
            type="case.opened",
            facts={"minor": False},
            signed_at=now,
            payload=payload,
            attrs={
                "age_band": "adult",
                "gender": "female",
                "exploitation": ["labour"],
                "identified_at": "2026-10-01",
            },
        )
    ]
    consent = str(uuid.uuid4())
    bodies.append(
        build_submission(
            key,
            log=ORIGIN,
            case_id=case_id,
            type="consent.granted",
            signed_at=now,
            facts={
                "consent_id": consent,
                "purposes": ["data_sharing"],
                "recipients": ["bench-peer"],
                "categories": ["identity"],
                "expires_at": None,
                "given_by": "survivor",
                "child_assent": None,
                "assent_exempt": False,
            },
            attrs={"language": "es", "interpreter": False, "notice_version": "1"},
        )
    )
    while len(bodies) < events:
        bodies.append(
            build_submission(
                key,
                log=ORIGIN,
                case_id=case_id,
                type="service.delivered",
                signed_at=now,
                facts={"referral_id": None},
                attrs={"component": "housing"},
                payload={"notes": "z" * PAYLOAD_BYTES},
            )
        )
    return [json.dumps(b).encode() for b in bodies]


def _loadgen(url: str, token: str, work: list[list[bytes]], clients: int) -> dict[str, Any]:
    """The load generator process: `clients` threads, keep-alive connections, pre-signed
    bodies; returns latencies, wall time and its own CPU time."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()

    def client(cases: list[list[bytes]]) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        mine, bad = [], []
        for bodies in cases:
            for body in bodies:
                start = time.perf_counter()
                conn.request(
                    "POST",
                    "/v1/events",
                    body=body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                )
                response = conn.getresponse()
                response.read()
                mine.append(time.perf_counter() - start)
                if response.status != 201:
                    bad.append(response.status)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    shares = [work[i::clients] for i in range(clients)]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(s,)) for s in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"latencies": latencies, "wall": wall, "cpu": cpu, "errors": errors}


def _processes() -> list[tuple[int, int, str, float]]:
    """(pid, ppid, cmdline, user + system CPU seconds) of every live process, from /proc
    (empty where there is none)."""
    proc, out = Path("/proc"), []
    if not (proc / "self" / "stat").exists():
        return []
    tick = os.sysconf("SC_CLK_TCK")
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        cpu = (int(fields[11]) + int(fields[12])) / tick
        out.append((int(entry.name), int(fields[1]), cmdline, cpu))
    return out


def _cpu(root: int) -> tuple[float, float] | None:
    """CPU seconds of `root` and all its descendants (the server's processes), and of the
    local PostgreSQL server's processes, from one reading of /proc (None without /proc)."""
    processes = _processes()
    if not processes:
        return None
    children: dict[int, list[int]] = {}
    cpu = {}
    for pid, ppid, _, seconds in processes:
        children.setdefault(ppid, []).append(pid)
        cpu[pid] = seconds
    server, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        server += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, ()))
    database = sum(seconds for _, _, cmd, seconds in processes if cmd.startswith("postgres:"))
    return server, database


def _local_postgres(settings: Settings) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    host = str(conninfo_to_dict(settings.database_url or "").get("host", "localhost"))
    return settings.is_postgres and (host in ("localhost", "127.0.0.1", "::1") or host[:1] == "/")


def bench_ingest(report: Report, sizes: Sizes, dep: Deployment) -> None:
    key, token = agency_for(dep, "bench-ngo")
    agency_for(dep, "bench-peer")
    rates, p50s, p99s, shares = [], [], [], []
    server_ms: list[float] = []
    db_ms: list[float] = []
    postgres = _local_postgres(dep.settings)
    for _ in range(sizes.repeats):
        work = [case_bodies(key, sizes.ingest_events_per_case) for _ in range(sizes.ingest_cases)]
        total = sum(len(w) for w in work)
        before = _cpu(dep.process.pid)
        with ProcessPoolExecutor(1) as pool:
            result = pool.submit(_loadgen, dep.url, token, work, sizes.clients).result()
        after = _cpu(dep.process.pid)
        if before is not None and after is not None:
            server_ms.append((after[0] - before[0]) * 1000 / total)
            if postgres:
                db_ms.append((after[1] - before[1]) * 1000 / total)
        if result["errors"]:
            raise RuntimeError(f"ingest refused {len(result['errors'])} events")
        lat = sorted(result["latencies"])
        rates.append(total / result["wall"])
        p50s.append(lat[len(lat) // 2] * 1000)
        p99s.append(lat[int(len(lat) * 0.99)] * 1000)
        shares.append(result["cpu"] / (result["wall"] * report.cores))
    count = sizes.ingest_cases * sizes.ingest_events_per_case
    method = (
        f"POST /v1/events, {sizes.clients} keep-alive clients in a separate process, "
        "pre-signed 1 KiB events"
    )
    report.put("ingest_single_per_s", rates, method, count, limit="raw_single_save_per_s")
    report.put("ingest_single_p50_ms", p50s, method, count)
    report.put("ingest_single_p99_ms", p99s, method, count)
    report.put("loadgen_cpu_share", shares, "load generator CPU time / (wall time x cores)", count)
    if server_ms:
        report.put(
            "ingest_server_cpu_ms_per_event",
            server_ms,
            "user + system CPU of the server's processes during single-event ingest, per event"
            " (on SQLite this includes the database's work)",
            count,
        )
    if db_ms:
        report.put(
            "ingest_db_cpu_ms_per_event",
            db_ms,
            "user + system CPU of the local PostgreSQL processes during single-event ingest,"
            " per event",
            count,
        )

    runs = []
    for _ in range(sizes.repeats):
        per_case = 5
        bodies = [
            b for _ in range(sizes.batch_events // per_case) for b in case_bodies(key, per_case)
        ]
        batches = [bodies[i : i + 1000] for i in range(0, len(bodies), 1000)]
        conn = http.client.HTTPConnection(dep.url.removeprefix("http://"), timeout=600)
        start = time.perf_counter()
        for batch in batches:
            raw = b'{"events":[' + b",".join(batch) + b"]}"
            conn.request(
                "POST",
                "/v1/events:batch",
                body=raw,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            answer = json.loads(response.read())
            if any(r["status"] != 201 for r in answer["results"]):
                raise RuntimeError("a batch event was refused")
        runs.append(len(bodies) / (time.perf_counter() - start))
        conn.close()
    report.put(
        "ingest_batch_per_s",
        runs,
        "POST /v1/events:batch, 1,000 events per request",
        sizes.batch_events,
        limit="raw_batch_save_per_s",
    )


# --- 3. audit ----------------------------------------------------------------------------------


def synthetic_log(events: int) -> tuple[str, list[bytes], crypto.VerifyKey, dict[str, Any]]:
    """A valid log of `events` signed events (intake, consent, shares) with its checkpoint."""
    log_key = crypto.generate_signing_key(ORIGIN)
    agency = crypto.generate_signing_key("audit-ngo")
    peer = crypto.generate_signing_key("peer")  # the consents' recipient: registered
    now = format_timestamp(datetime.now(UTC))
    digest = crypto.b64(bytes(32))
    entries = [
        jcs(
            {
                "kind": "registry",
                "action": "agency.registered",
                "agency": key.name,
                "key": key.verify_key.line(),
                "signatures": [],
                "actor": "tok_admin",
                "recorded_at": now,
            }
        )
        for key in (agency, peer)
    ]
    made = 0
    while made < events:
        case_id, consent = str(uuid.uuid4()), str(uuid.uuid4())
        for etype, facts in (
            ("case.opened", {"minor": False}),
            (
                "consent.granted",
                {
                    "consent_id": consent,
                    "purposes": ["data_sharing"],
                    "recipients": ["peer"],
                    "categories": ["identity"],
                    "expires_at": None,
                    "given_by": "survivor",
                    "child_assent": None,
                    "assent_exempt": False,
                },
            ),
            (
                "data.shared",
                {
                    "share_id": str(uuid.uuid4()),
                    "recipient": "peer",
                    "consent_id": consent,
                    "purpose": "data_sharing",
                    "categories": ["identity"],
                },
            ),
            ("service.delivered", {"referral_id": None}),
        ):
            envelope = {
                "v": 1,
                "log": ORIGIN,
                "event_id": str(uuid.uuid4()),
                "case_id": case_id,
                "type": etype,
                "agency": "audit-ngo",
                "key": agency.verify_key.key_id,
                "signed_at": now,
                "facts": facts,
                "attrs_digest": digest,
                "payload_digests": dict.fromkeys(CATEGORIES, digest),
            }
            signature = crypto.b64(crypto.sign(agency, signing_input(envelope)))
            entries.append(
                jcs(
                    {
                        "kind": "event",
                        "envelope": envelope,
                        "signature": signature,
                        "sealed_digest": digest,
                        "actor": "tok_cw",
                        "role": "caseworker",
                        "recorded_at": now,
                    }
                )
            )
            made += 1
    tree = merkle.MemoryTree()
    tree.append([merkle.leaf_hash(e) for e in entries])
    note = sign_note(Checkpoint(ORIGIN, len(entries), tree.root()).body(), log_key)
    return note, entries, log_key.verify_key, {k.name: k.verify_key for k in (agency, peer)}


def bench_audit(report: Report, sizes: Sizes) -> None:
    note, entries, log_key, keys = synthetic_log(sizes.audit_events)
    runs = []
    for _ in range(sizes.repeats):
        elapsed = timed(lambda: _check(audit.verify(note, entries, log_key, keys)))
        runs.append(len(entries) / elapsed)
    report.put(
        "audit_per_s",
        runs,
        "ledger.audit.verify over a synthetic bundle (all steps, signatures on all cores)",
        len(entries),
        limit="verify_per_s_all_cores",
    )
    report.values["audit_events"] = len(entries) - 2  # less the two registry entries
    report.details["audit_events"] = {"method": "events in the audited log", "count": len(entries)}


def _check(result: audit.AuditReport) -> None:
    if not result.ok:
        raise RuntimeError(f"the synthetic log failed its audit: {result.first_failure}")


# --- 4. projections, 5. proofs, 6. erasure ------------------------------------------------


def bench_rebuild(report: Report, sizes: Sizes, dep: Deployment) -> None:
    from ledger.deploy import open_ledger, open_readmodels

    ledger = open_ledger(dep.settings)
    models = open_readmodels(dep.settings, ledger)
    try:
        size = ledger.store.log_size()
        runs = [size / timed(models.runner.rebuild) for _ in range(sizes.repeats)]
        report.put(
            "rebuild_per_s",
            runs,
            f"ledger projections rebuild: log entries per second, all "
            f"{len(models.runner.projections)} read models rebuilt from position 0",
            size,
        )
    finally:
        models.views.close()
        ledger.store.close()


def bench_proofs(report: Report, sizes: Sizes, settings: Settings) -> None:
    from ledger.log.service import _StoreNodes
    from ledger.storage import open_store

    folder = Path(tempfile.mkdtemp(prefix="ledger-bench-tree-"))
    schema = f"bench_tree_{secrets.token_hex(4)}"
    local = Settings(
        home=folder, keys=folder / "keys", database_url=settings.database_url, pg_schema=schema
    )
    store, table = open_store(local)
    try:
        store.setup()
        n = sizes.proof_leaves
        tree = merkle.MemoryTree()
        nodes = tree.append([crypto.sha256(i.to_bytes(8, "big")) for i in range(n)])
        with store._write() as cur:  # type: ignore[attr-defined]
            statement = store.sql(  # type: ignore[attr-defined]
                "INSERT INTO {s}tree_nodes (level, idx, hash) VALUES (?, ?, ?)"
            )
            cur.executemany(statement, nodes)
        reader = _StoreNodes(store)
        rng = random.Random(1)
        inclusion = [
            timed(lambda: merkle.inclusion_proof(rng.randrange(n), n, reader)) * 1000
            for _ in range(200)
        ]
        consistency = [
            timed(lambda: merkle.consistency_proof(rng.randrange(1, n), n, reader)) * 1000
            for _ in range(200)
        ]
        report.put(
            "inclusion_proof_ms",
            inclusion,
            "inclusion proof from the stored tree (one batched node read)",
            200,
        )
        report.put(
            "consistency_proof_ms", consistency, "consistency proof from the stored tree", 200
        )
        report.values["proof_leaves"] = n
        report.details["proof_leaves"] = {"method": "leaves in the stored tree", "count": n}
    finally:
        store.close()
        table.close()
        shutil.rmtree(folder, ignore_errors=True)
        if settings.is_postgres:
            import psycopg

            with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
                for suffix in ("", "_keys"):
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema}{suffix} CASCADE")


def _fill(ledger: Any, caseworker: Any, key: crypto.SigningKey, target: int) -> None:
    """Grow the ledger to `target` log entries with realistic 8-event cases, in batches."""
    while (size := ledger.store.log_size()) < target:
        cases = max(1, min(1000, target - size) // 8)
        bodies = [b for _ in range(cases) for b in case_bodies(key, 8)]
        raw = b'{"events":[' + b",".join(bodies) + b"]}"
        if any(status != 201 for status, _ in ledger.submit_batch(caseworker, raw)):
            raise RuntimeError("a filling event was refused")


def bench_erasure(report: Report, sizes: Sizes, dep: Deployment) -> None:
    from ledger.deploy import open_ledger

    ledger = open_ledger(dep.settings)
    try:
        key = crypto.generate_signing_key("bench-eraser")
        admin = ledger.authenticate(dep.admin)
        ledger.register_agency(admin, key.name, "eraser", "ngo", key.verify_key.line())
        if ledger.store.agency("bench-peer") is None:  # the recipient case_bodies names
            peer = crypto.generate_signing_key("bench-peer")
            ledger.register_agency(admin, peer.name, "peer", "ngo", peer.verify_key.line())
        cw = ledger.authenticate(ledger.create_token(admin, key.name, "caseworker", "c")["token"])
        sup = [
            ledger.authenticate(
                ledger.create_token(admin, key.name, "supervisor", f"s{i}")["token"]
            )
            for i in range(2)
        ]

        def build_case(events: int) -> str:
            bodies = case_bodies(key, events)
            for body in bodies:
                status, _ = ledger.submit(cw, body)
                assert status == 201
            return str(json.loads(bodies[0])["envelope"]["case_id"])

        def erase(case_id: str) -> float:
            now = datetime.now(UTC)
            _, request = ledger.submit(
                sup[0],
                json.dumps(
                    build_submission(
                        key,
                        log=ORIGIN,
                        case_id=case_id,
                        type="erasure.requested",
                        facts={},
                        attrs={"reason": "survivor_request"},
                        signed_at=now,
                    )
                ).encode(),
            )
            erased = json.dumps(
                build_submission(
                    key,
                    log=ORIGIN,
                    case_id=case_id,
                    type="case.erased",
                    facts={"request_event_id": request["event_id"]},
                    signed_at=now,
                )
            ).encode()
            start = time.perf_counter()
            status, _ = ledger.submit(sup[1], erased)
            elapsed = (time.perf_counter() - start) * 1000
            assert status == 201
            return elapsed

        large_case = build_case(sizes.erasure_large)
        _fill(ledger, cw, key, sizes.erasure_ledger)
        size = ledger.store.log_size()
        small = [erase(build_case(10)) for _ in range(max(3, sizes.repeats))]
        report.put(
            "erasure_ms_small",
            small,
            f"case.erased of a case of 10 events in a ledger of {size:,} entries"
            " (commit, key destruction, receipt)",
            10,
        )
        large = [erase(large_case)]
        report.put(
            "erasure_ms_large",
            large,
            f"the same for a case of {sizes.erasure_large:,} events",
            sizes.erasure_large,
        )
        destroy = []
        for _ in range(20):
            case_id = str(uuid.uuid4())
            ledger.keys.create(case_id)
            start = time.perf_counter()
            ledger.keys.destroy(case_id)
            destroy.append((time.perf_counter() - start) * 1000)
        report.put("key_destroy_ms", destroy, "delete a wrapped key and compact the key store", 20)
    finally:
        ledger.store.close()


SECTIONS = ("limits", "proofs", "audit", "ingest", "rebuild", "erasure", "hostile")


def run(
    quick: bool,
    settings: Settings,
    progress: Callable[[str], None],
    only: Sequence[str] = SECTIONS,
) -> Report:
    """Every section by default; `only` picks some (the others' keys stay null)."""
    sizes = Sizes.of(quick)
    report = Report("postgres" if settings.is_postgres else "sqlite", os.cpu_count() or 1)
    if "limits" in only:
        progress("limits: Ed25519 verify, raw eventsourcing saves")
        bench_limits(report, sizes, settings)
    if "proofs" in only:
        progress("proofs")
        bench_proofs(report, sizes, settings)
    if "audit" in only:
        progress("audit")
        bench_audit(report, sizes)
    if {"ingest", "rebuild", "erasure"} & set(only):
        with deployment(settings) as dep:
            if "ingest" in only or "rebuild" in only:
                progress("ingest through the HTTP server")
                bench_ingest(report, sizes, dep)
            if "rebuild" in only:
                progress("projection rebuild")
                bench_rebuild(report, sizes, dep)
            if "erasure" in only:
                progress("erasure")
                bench_erasure(report, sizes, dep)
    if "hostile" in only:  # with the deployment's default rate limits, as it would run
        from ledger.bench.hostile import bench_hostile

        progress("hostile bodies: the server's memory, another agency's latency")
        with deployment(settings, throttled=True) as dep:
            bench_hostile(report, sizes, dep)
    return report
