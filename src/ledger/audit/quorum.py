"""A checkpoint held against a witness policy: signed by the log, cosigned by a quorum of the
policy's witnesses, and which cosignature times stand out. Fails closed: a witness counts only
for a cosignature that verifies, a cosignature by a known witness key that does not verify
rejects the checkpoint, and a policy that does not name the log accepts nothing of it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ledger.audit.policy import Policy
from ledger.audit.report import AuditFailure
from ledger.contract import crypto
from ledger.contract.notes import NoteError
from ledger.log.checkpoint import verify_checkpoint
from ledger.log.cosignature import cosignatures

SKEW_S = 300  # a cosignature further than this from the others' median time is reported
QUORUM = "witness quorum"


@dataclass
class Witnessed:
    """What a policy made of one checkpoint: who cosigned it (policy name -> timestamp)."""

    size: int | None = None
    cosigned: dict[str, int] = field(default_factory=dict)
    failures: list[AuditFailure] = field(default_factory=list)
    flags: list[AuditFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, message: str) -> Witnessed:
        self.failures.append(AuditFailure(QUORUM, message))
        return self


def check_quorum(
    note: str,
    policy: Policy,
    log_key: crypto.VerifyKey,
    *,
    now: float | None = None,
    skew_s: float = SKEW_S,
) -> Witnessed:
    """Hold the signed checkpoint `note` against `policy`; `log_key` is the auditor's own."""
    out = Witnessed()
    # 1. The policy accepts the log whose key the verifier brings.
    if not policy.accepts(log_key):
        return out.fail(f"the policy names no log with the key {log_key.key_id}")
    # 2. The checkpoint is signed by that key.
    try:
        out.size = verify_checkpoint(note, log_key, log_key.name).size
    except NoteError as exc:
        return out.fail(f"the checkpoint is not the log's: {exc}")
    # 3. The policy's witnesses' cosignatures, each verified; one that fails rejects it all.
    try:
        _, found = cosignatures(note, [w.key for w in policy.witnesses.values()])
    except NoteError as exc:
        return out.fail(f"the checkpoint is rejected: {exc}")
    out.cosigned = {
        name: found[w.key].timestamp for name, w in policy.witnesses.items() if w.key in found
    }
    # 4. A quorum of them.
    if not policy.satisfied(out.cosigned.keys()):
        out.fail(policy.shortfall(out.cosigned.keys()))
    # 5. Cosignature times far from the other witnesses', or ahead of this clock.
    out.flags = skewed(out.cosigned, time.time() if now is None else now, skew_s)
    return out


def skewed(cosigned: dict[str, int], now: float, skew_s: float) -> list[AuditFailure]:
    """A flag for each witness whose time is over `skew_s` from the median of the others'
    (with two, each is from the other), or over `skew_s` ahead of `now`."""
    flags = []
    for name, at in cosigned.items():
        others = [t for n, t in cosigned.items() if n != name]
        if others and abs(at - statistics.median(others)) > skew_s:
            gap = at - statistics.median(others)
            flags.append(
                AuditFailure(
                    "cosignature time",
                    f"witness {name} cosigned at {at}, {gap:+.0f} s from the other witnesses'"
                    f" median: its clock, or when it saw this checkpoint, differs",
                )
            )
        elif at > now + skew_s:
            flags.append(
                AuditFailure(
                    "cosignature time",
                    f"witness {name} cosigned at {at}, {at - now:.0f} s ahead of this clock",
                )
            )
    return flags


def wait_witnessed(
    fetch: Callable[[], str],
    policy: Policy,
    log_key: crypto.VerifyKey,
    wait_s: float,
    poll_s: float = 0.5,
) -> str:
    """The newest checkpoint `fetch` gives once it satisfies `policy`, or the last one seen
    after `wait_s` seconds (whose check then fails, naming what is missing)."""
    deadline = time.monotonic() + wait_s
    while True:
        note = fetch()
        if check_quorum(note, policy, log_key).ok or time.monotonic() >= deadline:
            return note
        time.sleep(poll_s)


def witnessing(
    policy_text: str, log_key: crypto.VerifyKey, wait_s: float
) -> tuple[Policy, Callable[[Callable[[], str]], str]]:
    """A policy file's policy, and a wait of up to `wait_s` for a checkpoint its quorum
    cosigned (the newest checkpoint is signed first and cosigned a moment later)."""
    from ledger.audit.policy import parse_policy

    policy = parse_policy(policy_text)
    return policy, lambda fetch: wait_witnessed(fetch, policy, log_key, wait_s)
