"""Section 6, erasure: a small and a large case erased in a filled ledger; a key destroyed."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from ledger.bench.harness import ORIGIN, Report, Sizes
from ledger.bench.server import Deployment
from ledger.bench.workload import case_bodies
from ledger.contract import crypto
from ledger.contract.envelope import build_submission


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
