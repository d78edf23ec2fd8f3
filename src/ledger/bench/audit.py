"""Section 3, audit: `ledger.audit.verify` over a synthetic log of signed events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from ledger import audit
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
