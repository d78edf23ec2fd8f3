"""Section 3, audit: `ledger.audit.verify` over a synthetic log of signed events, alone and
with the auditor's report (HTML, PDF) written from it, in the same run."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from ledger import audit, charts
from ledger.audit.board_report import Inputs, write_report
from ledger.bench.harness import ORIGIN, Report, Sizes, timed
from ledger.contract import crypto
from ledger.contract.canonical import jcs, signing_input
from ledger.contract.notes import sign_note
from ledger.contract.vocabulary import CATEGORIES, format_timestamp
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint


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


# What `audit verify --report` imports beyond the audit itself, timed in a fresh interpreter.
_IMPORT = (
    "import time, ledger.audit; t = time.perf_counter();"
    " import ledger.charts, ledger.audit.board_report, ledger.audit.board_pdf;"
    " print(time.perf_counter() - t)"
)


def bench_audit(report: Report, sizes: Sizes) -> None:
    note, entries, log_key, keys = synthetic_log(sizes.audit_events)
    alone: list[float] = []
    with_report: dict[str, list[float]] = {"html": [], "pdf": []}
    inputs = Inputs("the bench's synthetic log")
    with tempfile.TemporaryDirectory() as tmp:
        write_report(
            Path(tmp) / "warm.pdf", audit.verify(note, entries[:50], log_key, keys), inputs
        )
        for _ in range(sizes.repeats):  # alternated, so drift in the machine hits all three
            elapsed = timed(lambda: _check(audit.verify(note, entries, log_key, keys)))
            alone.append(len(entries) / elapsed)
            for kind, runs in with_report.items():
                path = Path(tmp) / f"report.{kind}"
                elapsed = timed(partial(_audit_and_report, path, note, entries, log_key, keys))
                runs.append(len(entries) / elapsed)
    report.put(
        "audit_per_s",
        alone,
        "ledger.audit.verify over a synthetic bundle (all steps, signatures on all cores)",
        len(entries),
        limit="verify_per_s_all_cores",
    )
    report.values["audit_events"] = len(entries) - 2  # less the two registry entries
    report.details["audit_events"] = {"method": "events in the audited log", "count": len(entries)}
    for kind, runs in with_report.items():
        report.put(
            f"audit_report_{kind}_per_s",
            runs,
            f"the same audit and its board report written as {kind.upper()} (audit verify"
            " --report), beside the audit alone (target: adds <= 10 %, ratio >= 0.91)",
            len(entries),
            limit="audit_per_s",
        )
    imports = [
        1000 * float(subprocess.check_output([sys.executable, "-c", _IMPORT], text=True))  # noqa: S603
        for _ in range(sizes.repeats)
    ]
    report.put(
        "audit_report_import_ms",
        imports,
        "once per command: importing the report's renderers (matplotlib, jinja2, fpdf2) in a"
        " fresh interpreter after ledger.audit",
        sizes.repeats,
    )


def _audit_and_report(
    path: Path,
    note: str,
    entries: list[bytes],
    log_key: crypto.VerifyKey,
    keys: dict[str, crypto.VerifyKey],
) -> None:
    """`ledger audit verify --report PATH`, less reading the bundle."""
    charts._DRAWN.clear()  # one command draws its chart once: no drawing kept from a repeat
    result = _check(audit.verify(note, entries, log_key, keys))
    write_report(path, result, Inputs("the bench's synthetic log"))


def _check(result: audit.AuditReport) -> audit.AuditReport:
    if not result.ok:
        raise RuntimeError(f"the synthetic log failed its audit: {result.first_failure}")
    return result
