"""Section 1, this machine's limits: Ed25519 verifies, raw eventsourcing saves."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger.bench.harness import PAYLOAD_BYTES, Report, Sizes, timed
from ledger.contract import crypto
from ledger.settings import Settings


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
