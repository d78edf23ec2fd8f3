"""Section 5, proofs: inclusion and consistency proofs read from a stored tree."""

from __future__ import annotations

import random
import secrets
import shutil
import tempfile
from pathlib import Path

from ledger.bench.harness import Report, Sizes, timed
from ledger.contract import crypto
from ledger.log import merkle
from ledger.settings import Settings


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
