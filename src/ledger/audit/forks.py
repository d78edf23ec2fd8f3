"""`ledger audit verify --evidence FILE`: a witness's fork evidence (`ledger.log.evidence`)
checked with the auditor's own copy of the log key, trusting neither the witness nor the log."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ledger.audit.report import AuditFailure
from ledger.contract import crypto
from ledger.log.evidence import ForkEvidence, NotProven, verify_fork

FORK = "fork evidence"


def check_evidence(
    text: str,
    log_key: crypto.VerifyKey,
    consistency: Callable[[int, int], Sequence[bytes]] | None = None,
) -> tuple[AuditFailure | None, str]:
    """A failure when the evidence proves the log signed two inconsistent checkpoints (the
    log failed its audit), with what it proves; None, and why, when it proves nothing."""
    try:
        evidence = ForkEvidence.from_json(text)
        proven = verify_fork(evidence, log_key, consistency)
    except NotProven as exc:
        return None, f"the evidence proves no fork: {exc}"
    message = f"{proven} (kept by witness {evidence.witness} at {evidence.seen_at})"
    return AuditFailure(FORK, message), message
