"""What an audit found: `AuditFailure`, `AuditReport`, and the step each check belongs to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ledger.audit.keys import KeyRecord
from ledger.audit.state import SavedState
from ledger.audit.tally import Tally

# Checks the command runs after the log's steps, each when asked for (--receipt, --policy,
# --evidence): listed in the report only then.
RECEIPT_STEP, QUORUM_STEP, EVIDENCE_STEP = 9, 10, 11
# The step each check belongs to: for one position, the earliest step's failure is reported
# first (a non-canonical entry is that, whatever else is wrong with it).
CHECK_STEPS = {
    "checkpoint signature": 1,
    "completeness": 2,
    "entry format": 3,
    "canonical bytes": 3,
    "key registry": 4,
    "agency keys": 4,
    "key change signatures": 4,
    "origin": 5,
    "signing key": 5,
    "event signature": 5,
    "recorded time": 6,
    "event ids": 6,
    "gates": 6,
    "two-supervisor rule": 6,
    "access": 6,
    "acknowledgements": 6,
    "root": 7,
    "consistency with saved checkpoint": 8,
    "receipt signature": RECEIPT_STEP,  # with --receipt, after the log's steps
    "receipt": RECEIPT_STEP,
    "witness quorum": QUORUM_STEP,  # ledger.audit.quorum
    "fork evidence": EVIDENCE_STEP,  # ledger.audit.forks
}


@dataclass(frozen=True)
class AuditFailure:
    """One check that did not hold; `position` is None for whole-log checks."""

    check: str
    message: str
    position: int | None = None

    def __str__(self) -> str:
        where = "log" if self.position is None else f"position {self.position}"
        return f"{where}: {self.check}: {self.message}"


@dataclass(frozen=True)
class Unacknowledged:
    """A withdrawal or erasure notice its recipient has not acknowledged in the log."""

    position: int  # of the withdrawal or erasure
    kind: str
    case_id: str
    agency: str
    told_at: str

    def __str__(self) -> str:
        return (
            f"position {self.position}: {self.kind} of case {self.case_id}, told to "
            f"{self.agency} at {self.told_at}, not acknowledged"
        )


@dataclass(frozen=True)
class CheckOutcome:
    """One check of the audit and how it came out: `not run` when its step was not reached
    (nothing after a bad checkpoint signature, no root with entries missing) or not asked
    for (no saved checkpoint, no receipt)."""

    step: int
    check: str
    outcome: Literal["passed", "failed", "not run"]
    failures: int = 0
    first: AuditFailure | None = None


@dataclass
class AuditReport:
    origin: str
    size: int
    root: str
    events: int = 0
    signatures: int = 0
    failures: list[AuditFailure] = field(default_factory=list)
    flags: list[AuditFailure] = field(default_factory=list)
    unacknowledged: list[Unacknowledged] = field(default_factory=list)
    ack_days: int = 7
    ran: set[int] = field(default_factory=lambda: {1})  # the steps run
    tally: Tally = field(default_factory=Tally)  # counted as the steps ran
    keys: list[KeyRecord] = field(default_factory=list)  # every agency's key history
    saved: SavedState | None = None  # the checkpoint verified last time (--state)

    @property
    def ok(self) -> bool:
        return not self.failures

    def outcomes(self) -> list[CheckOutcome]:
        """Every check in the order the audit runs them, passed, failed or not run."""
        found: dict[str, list[AuditFailure]] = {}
        for failure in self.failures:
            found.setdefault(failure.check, []).append(failure)
        steps = CHECK_STEPS | {check: EVIDENCE_STEP for check in found if check not in CHECK_STEPS}
        out = []
        for check, step in steps.items():
            failed = found.get(check, [])
            if failed:
                first = min(failed, key=failure_order)
                out.append(CheckOutcome(step, check, "failed", len(failed), first))
            else:
                out.append(CheckOutcome(step, check, "passed" if step in self.ran else "not run"))
        return out

    def add_checks(self, step: int, failures: list[AuditFailure]) -> None:
        """The outcome of a check run after the log's steps (`check_receipt`, `check_quorum`,
        `check_evidence`): its failures, and that it ran."""
        self.failures += failures
        self.ran.add(step)

    @property
    def first_failure(self) -> AuditFailure | None:
        if not self.failures:
            return None
        return min(self.failures, key=failure_order)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "origin": self.origin,
            "size": self.size,
            "root": self.root,
            "events": self.events,
            "signatures": self.signatures,
            "first_failure": None if self.first_failure is None else str(self.first_failure),
            "failures": [f.__dict__ for f in self.failures],
            "flags": [f.__dict__ for f in self.flags],
            "ack_days": self.ack_days,
            "unacknowledged": [u.__dict__ for u in self.unacknowledged],
        }


def failure_order(failure: AuditFailure) -> tuple[bool, int, int]:
    """Log order, and within one position the order of the steps."""
    position = failure.position
    return (position is None, position or 0, CHECK_STEPS.get(failure.check, 9))
