"""What the auditor's report shows, worked out once from the `AuditReport` for the page and
the PDF: the verdict, every check with what it looked at and its outcome, the checkpoints,
the log's growth as a chart, the gates per event type, the key history, the problems."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from ledger.audit.keys import KeyRecord
from ledger.audit.plain_words import Plain, plain
from ledger.audit.report import RECEIPT_STEP, AuditFailure, AuditReport, CheckOutcome
from ledger.contract import crypto

if TYPE_CHECKING:
    from ledger.charts import Chart

SHOWN = 50  # rows of a list of problems; the rest are counted (all are in --json)


@dataclass(frozen=True)
class Inputs:
    """What the auditor gave the command, as the report names it."""

    source: str  # the ledger's URL, or the bundle's file name
    state: str | None = None  # the --state file, when given
    receipt: str | None = None  # the --receipt file, when given
    written_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))


@dataclass(frozen=True)
class CheckRow:
    step: int
    check: str
    words: Plain
    looked_at: str
    outcome: str  # passed, failed, not run
    says: str


@dataclass(frozen=True)
class Listed:
    """A list shown up to SHOWN rows, with how many more there are."""

    rows: list[AuditFailure]
    more: int


@dataclass(frozen=True)
class View:
    """Everything the report shows, worked out once for the page and the PDF."""

    ok: bool
    origin: str
    verdict: str
    headline: str
    attention: list[str]
    facts: list[tuple[str, str]]
    first: AuditFailure | None
    first_words: Plain | None
    checks: list[CheckRow]
    checkpoints: list[tuple[str, str, str, str]]  # which, entries, root, outcome
    chart: Chart | None
    figures: list[tuple[str, str]]
    gates: list[tuple[str, int, int]]  # event type, re-checked, would have been refused
    reads: str  # "12 reads of sealed data were"
    keys: list[KeyRecord]
    failures: Listed
    flags: Listed  # events signed with a key reported compromised
    other_flags: Listed  # anything else flagged (a witness's clock)
    unacknowledged: list[tuple[int, str, str, str]]  # position, kind, agency, told at
    unacknowledged_more: int
    ack_days: int
    written_at: str


def when(text: str | None) -> str:
    """A recorded time as people read it ("2026-12-08 14:02 UTC"), or the text as it was."""
    if text is None:
        return ""
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text):
        return f"{text[:10]} {text[11:16]} UTC"
    return text


def where(failure: AuditFailure) -> str:
    if failure.position is None:
        return "the log as a whole"
    return f"log position {failure.position:,}"


def count(n: int, one: str, many: str | None = None) -> str:
    """`n` and its noun: "1 erasure", "2,002 entries"."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def _looked_at(check: str, report: AuditReport) -> str:
    """How much a check looked at, from the verifier's counts."""
    tally = report.tally
    entries, events = count(tally.read, "entry", "entries"), count(report.events, "event")
    registry = count(tally.kinds.get("registry", 0), "key entry", "key entries")
    return {
        "checkpoint signature": f"the checkpoint of {count(report.size, 'entry', 'entries')}",
        "completeness": f"{tally.read:,} of {count(report.size, 'entry', 'entries')}",
        "entry format": entries,
        "canonical bytes": entries,
        "key registry": registry,
        "agency keys": count(len({k.agency for k in report.keys}), "agency", "agencies"),
        "key change signatures": registry,
        "origin": events,
        "signing key": events,
        "event signature": count(report.signatures, "signature"),
        "recorded time": entries,
        "event ids": events,
        "gates": count(sum(tally.checked.values()), "event"),
        "two-supervisor rule": count(tally.checked.get("case.erased", 0), "erasure"),
        "access": count(tally.kinds.get("access", 0), "read", "reads") + " of sealed data",
        "acknowledgements": count(tally.checked.get("notice.acknowledged", 0), "confirmation"),
        "root": entries,
        "consistency with saved checkpoint": (
            f"the first {count(report.saved.size, 'entry', 'entries')}" if report.saved else ""
        ),
        "receipt signature": "the erasure receipt",
        "receipt": "the erasure receipt",
        "witness quorum": "the checkpoint's cosignatures",
        "fork evidence": "a witness's evidence",
    }.get(check, "")


def _not_run(outcome: CheckOutcome, report: AuditReport, inputs: Inputs) -> str:
    if 2 not in report.ran:
        return "Not checked: the log's summary is not signed by its key; nothing it covers is."
    if outcome.step == 7:
        return "Not checked: entries are missing, so the fingerprint cannot be recomputed."
    if outcome.step == 8 and inputs.state:
        return f"Not checked: {inputs.state} held no earlier checkpoint (a first audit)."
    if outcome.step == 8:
        return "Not checked: no checkpoint of an earlier audit was given (--state)."
    return "Not checked."


def _check_rows(report: AuditReport, inputs: Inputs) -> list[CheckRow]:
    rows = []
    for outcome in report.outcomes():
        if outcome.step >= RECEIPT_STEP and outcome.outcome == "not run":
            continue  # not asked for (no --receipt, --policy, --evidence): nothing to say
        if outcome.outcome == "failed" and outcome.first is not None:
            more = f" ({outcome.failures:,} in all)" if outcome.failures > 1 else ""
            at = (
                "for the whole log"
                if outcome.first.position is None
                else f"at {where(outcome.first)}"
            )
            says = f"FAILED {at}{more}"
        elif outcome.outcome == "passed":
            says = "Passed"
        else:
            says = _not_run(outcome, report, inputs)
        ran = outcome.outcome != "not run"
        looked_at = _looked_at(outcome.check, report) if ran else ""
        words = plain(outcome.check)
        rows.append(CheckRow(outcome.step, outcome.check, words, looked_at, outcome.outcome, says))
    return rows


def _checkpoints(report: AuditReport, rows: list[CheckRow]) -> list[tuple[str, str, str, str]]:
    if report.ok:
        verified = "verified, with every entry"
    else:
        verified = "signed, but the entries do not verify" if report.root else "NOT verified"
    out = [("This audit", f"{report.size:,}", report.root or "(not verified)", verified)]
    if report.saved is not None:
        (step8,) = [r for r in rows if r.step == 8]
        consistent = {"passed": "consistent with this audit", "failed": "NOT consistent"}.get(
            step8.outcome, "not compared"
        )
        saved_root = crypto.b64(report.saved.root)
        out.append(("The last audit (--state)", f"{report.saved.size:,}", saved_root, consistent))
    return out


def growth(days: dict[str, int]) -> tuple[Chart | None, list[tuple[str, str]]]:
    """Entries per day (up to a month of history), per month (up to three years) or per
    year, every period in between shown, with its figures."""
    from ledger.charts import Chart

    dated: dict[date, int] = {}
    for day, count in days.items():
        try:
            at = date.fromisoformat(day)
        except ValueError:
            continue  # a malformed time, reported by the checks
        dated[at] = dated.get(at, 0) + count
    if not dated:
        return None, []
    first, last = min(dated), max(dated)
    if (last - first).days < 31:
        period, keys = (
            "day",
            [date.fromordinal(d) for d in range(first.toordinal(), last.toordinal() + 1)],
        )
        label = "%m-%d" if first.year == last.year else "%Y-%m-%d"
        names = [d.strftime(label) for d in keys]
        counts = [dated.get(d, 0) for d in keys]
    else:
        months = (last.year - first.year) * 12 + last.month - first.month
        per: dict[str, int] = {}
        if months < 36:
            period = "month"
            for i in range(months + 1):
                y, m = divmod(first.month - 1 + i, 12)
                per[f"{first.year + y}-{m + 1:02d}"] = 0
            for d, n in dated.items():
                per[d.strftime("%Y-%m")] += n
        else:
            period = "year"
            per = {str(y): 0 for y in range(first.year, last.year + 1)}
            for d, n in dated.items():
                per[str(d.year)] += n
        names, counts = list(per), list(per.values())
    year = f", {first.year}" if period == "day" and first.year == last.year else ""
    chart = Chart(
        f"Entries recorded per {period}{year}", names, {"entries": counts}, unit="entries"
    )
    return chart, [(name, f"{count:,}") for name, count in zip(names, counts, strict=True)]


def _reads(n: int) -> str:
    return f"{count(n, 'read')} of sealed data {'was' if n == 1 else 'were'}"


def _listed(rows: list[AuditFailure]) -> Listed:
    return Listed(rows[:SHOWN], max(0, len(rows) - SHOWN))


def view(report: AuditReport, inputs: Inputs) -> View:
    """What the report shows, from the audit's report and the command's inputs."""
    checks = _check_rows(report, inputs)
    first = report.first_failure
    failed_checks = sum(r.outcome == "failed" for r in checks)
    if first is None:
        ran = sum(r.outcome == "passed" for r in checks)
        headline = (
            f"All {ran} checks passed: the {report.size:,} entries ({report.events:,} events, "
            f"{report.signatures:,} signatures) are the log's whole history, unaltered."
        )
        if report.saved is None:
            headline += " It was not compared with an earlier audit (no saved checkpoint)."
    else:
        headline = (
            f"The log does not verify: {count(len(report.failures), 'problem')}, found by "
            f"{failed_checks} of the checks. The first is at {where(first)}."
        )
    attention = []
    compromised = [f for f in report.flags if f.check == "compromised key"]
    others = [f for f in report.flags if f.check != "compromised key"]
    if compromised:
        attention.append(
            f"{count(len(compromised), 'event')} signed with a key its agency reported "
            "compromised (see below)."
        )
    if others:
        attention.append(f"{count(len(others), 'other finding')} (see below).")
    if report.unacknowledged:
        attention.append(
            f"{count(len(report.unacknowledged), 'notice')} of a withdrawal or an erasure not "
            f"acknowledged after {report.ack_days} days (see below)."
        )
    written = when(inputs.written_at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    facts = [("Audited", inputs.source), ("Written", written)]
    if inputs.receipt:
        facts.append(("Erasure receipt", inputs.receipt))
    chart, figures = growth(report.tally.days)
    tally = report.tally
    gates = [(t, n, tally.refused.get(t, 0)) for t, n in sorted(tally.checked.items())]
    unack = report.unacknowledged
    return View(
        ok=report.ok,
        origin=report.origin,
        verdict="VERIFIED" if report.ok else "FAILED",
        headline=headline,
        attention=attention,
        facts=facts,
        first=first,
        first_words=None if first is None else plain(first.check),
        checks=checks,
        checkpoints=_checkpoints(report, checks),
        chart=chart,
        figures=figures,
        gates=gates,
        reads=_reads(tally.kinds.get("access", 0)),
        keys=report.keys,
        failures=_listed(report.failures),
        flags=_listed(compromised),
        other_flags=_listed(others),
        unacknowledged=[(u.position, u.kind, u.agency, when(u.told_at)) for u in unack[:SHOWN]],
        unacknowledged_more=max(0, len(unack) - SHOWN),
        ack_days=report.ack_days,
        written_at=written,
    )
