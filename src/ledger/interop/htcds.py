"""HTCDS / CTDC-style yearly export: one row per case, anonymised for a data collaborative.

Fields the ledger can fill from attrs (the Human Trafficking Case Data Standard's victim
profile and assistance fields, in the Counter Trafficking Data Collaborative's one-row-per-
case, one-flag-per-type layout): year of identification, age band, gender, case status,
exploitation types, and the outcome of referrals per assistance component. No ids, no dates
finer than the year, no free text: every cell is from a fixed vocabulary.

Anonymisation, fixed and deterministic:

1. Quasi-identifiers: age band, gender, case status, the referral columns. Sensitive
   attribute: the exploitation types (as one combination).
2. Each quasi-identifier has a fixed generalisation ladder (`LADDERS`). Every combination
   of ladder levels is tried in a fixed order (least generalisation first); the first one
   whose record suppression stays within `MAX_SUPPRESSION` of the rows wins, else the one
   that suppresses fewest rows.
3. At that level every equivalence class (rows equal on all quasi-identifiers) must have at
   least K = 11 rows, L = 2 distinct exploitation combinations, and no exploitation type
   shared by all of its rows (each `is_*` column is published on its own: a class where
   every row has `is_sexual = 1` tells that of anyone known to be in it); rows of other
   classes are suppressed (left out).
4. Rows are sorted; the CSV has no timestamp; the report names the levels and counts.
5. The first export of a year is frozen (`ExportStore`) and every later one returns it: two
   exports made either side of an erasure or a late entry would otherwise differ by exactly
   one person's row.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.contract.vocabulary import AGE_BANDS, COMPONENTS, EXPLOITATIONS, GENDERS
from ledger.storage.base import ViewStore

FORMAT = "ledger-htcds-export/1"
K = 11
L = 2
MAX_SUPPRESSION = 0.05
SUPPRESSED = "*"
OUTCOMES = ("none", "pending", "accepted", "declined", "completed")
# Which outcome a component shows when a case has several referrals for it.
_OUTCOME_RANK = {"declined": 0, "pending": 1, "accepted": 2, "completed": 3}


class ExportError(Exception):
    """The export cannot be made as asked (say what to do instead)."""


@dataclass(frozen=True)
class CaseProfile:
    """What one case contributes (unsealed at export time, never stored)."""

    age_band: str
    gender: str
    exploitation: frozenset[str]
    closed: bool
    referrals: tuple[tuple[str, str], ...]  # (component, outcome), sorted


@dataclass(frozen=True)
class Rung:
    """One level of a generalisation ladder: what it is called and what it does to a value."""

    rule: str
    apply: Callable[[str], str]


def _map(table: dict[str, str]) -> Callable[[str], str]:
    return lambda value: table.get(value, value)


def _suppress(_value: str) -> str:
    return SUPPRESSED


def _identity(value: str) -> str:
    return value


LADDERS: dict[str, tuple[Rung, ...]] = {
    "age_band": (
        Rung("as recorded: 0-5, 6-11, 12-14, 15-17, adult, unknown", _identity),
        Rung(
            "0-11, 12-17, adult, unknown",
            _map({"0-5": "0-11", "6-11": "0-11", "12-14": "12-17", "15-17": "12-17"}),
        ),
        Rung(
            "minor, adult, unknown",
            _map({b: "minor" for b in ("0-5", "6-11", "12-14", "15-17")}),
        ),
        Rung("suppressed", _suppress),
    ),
    "gender": (
        Rung("as recorded: female, male, non_binary, other, undisclosed", _identity),
        Rung(
            "female, male, other_or_undisclosed",
            _map({g: "other_or_undisclosed" for g in ("non_binary", "other", "undisclosed")}),
        ),
        Rung("suppressed", _suppress),
    ),
    "case_status": (
        Rung("as recorded: open, closed (at the end of the year)", _identity),
        Rung("suppressed", _suppress),
    ),
    "referrals": (
        Rung("per component: none, pending, accepted, declined, completed", _identity),
        Rung("per component: referred, none", lambda v: "none" if v == "none" else "referred"),
        Rung("suppressed", _suppress),
    ),
}
QUASI_IDENTIFIERS = tuple(LADDERS)
REFERRAL_COLUMNS = tuple(f"referral_{c}" for c in COMPONENTS)
EXPLOITATION_COLUMNS = tuple(f"is_{e}" for e in EXPLOITATIONS)
COLUMNS = (
    "year_of_identification",
    "age_band",
    "gender",
    "case_status",
    *EXPLOITATION_COLUMNS,
    *REFERRAL_COLUMNS,
)
# Every value a cell may hold, per column (the tests check the export against it).
VOCABULARY: dict[str, frozenset[str]] = {
    "age_band": frozenset({*AGE_BANDS, "0-11", "12-17", "minor", SUPPRESSED}),
    "gender": frozenset({*GENDERS, "other_or_undisclosed", SUPPRESSED}),
    "case_status": frozenset({"open", "closed", SUPPRESSED}),
    **{c: frozenset({"0", "1"}) for c in EXPLOITATION_COLUMNS},
    **{c: frozenset({*OUTCOMES, "referred", SUPPRESSED}) for c in REFERRAL_COLUMNS},
}


def _raw_row(profile: CaseProfile) -> dict[str, Any]:
    best: dict[str, str] = {}
    for component, outcome in profile.referrals:
        if component not in best or _OUTCOME_RANK[outcome] > _OUTCOME_RANK[best[component]]:
            best[component] = outcome
    return {
        "age_band": profile.age_band,
        "gender": profile.gender,
        "case_status": "closed" if profile.closed else "open",
        "referrals": tuple(best.get(c, "none") for c in COMPONENTS),
        "sensitive": tuple(sorted(profile.exploitation)),
    }


def _generalise(raw: dict[str, Any], levels: dict[str, int]) -> tuple[Any, ...]:
    """The row's quasi-identifiers at the given ladder levels."""
    rung = {name: LADDERS[name][levels[name]].apply for name in QUASI_IDENTIFIERS}
    return (
        rung["age_band"](raw["age_band"]),
        rung["gender"](raw["gender"]),
        rung["case_status"](raw["case_status"]),
        tuple(rung["referrals"](v) for v in raw["referrals"]),
    )


@dataclass(frozen=True)
class Outcome:
    levels: dict[str, int]
    kept: list[tuple[tuple[Any, ...], tuple[str, ...]]]  # (quasi-identifiers, sensitive)
    suppressed_rows: int
    suppressed_classes: int


def _evaluate(raws: Sequence[dict[str, Any]], levels: dict[str, int]) -> Outcome:
    classes: dict[tuple[Any, ...], list[tuple[str, ...]]] = defaultdict(list)
    for raw in raws:
        classes[_generalise(raw, levels)].append(raw["sensitive"])
    kept: list[tuple[tuple[Any, ...], tuple[str, ...]]] = []
    suppressed_rows = suppressed_classes = 0
    for qi, sensitive in classes.items():
        shared = set.intersection(*(set(s) for s in sensitive))  # types every row has
        if len(sensitive) >= K and len(set(sensitive)) >= L and not shared:
            kept.extend((qi, s) for s in sensitive)
        else:
            suppressed_rows += len(sensitive)
            suppressed_classes += 1
    return Outcome(levels, kept, suppressed_rows, suppressed_classes)


def lattice() -> list[dict[str, int]]:
    """Every combination of ladder levels, least generalised first, in a fixed order."""
    ranges = [range(len(LADDERS[name])) for name in QUASI_IDENTIFIERS]
    nodes = sorted(itertools.product(*ranges), key=lambda n: (sum(n), n))
    return [dict(zip(QUASI_IDENTIFIERS, node, strict=True)) for node in nodes]


def anonymise(profiles: Sequence[CaseProfile]) -> Outcome:
    """Choose the ladder levels (fixed order and rule) and apply k-anonymity and l-diversity."""
    raws = [_raw_row(p) for p in profiles]
    budget = int(MAX_SUPPRESSION * len(raws))
    best: Outcome | None = None
    for levels in lattice():
        outcome = _evaluate(raws, levels)
        if outcome.suppressed_rows <= budget:
            return outcome
        if best is None or outcome.suppressed_rows < best.suppressed_rows:
            best = outcome
    assert best is not None
    return best


def export(year: int, profiles: Sequence[CaseProfile]) -> tuple[str, dict[str, Any]]:
    """The CSV text and the report of what was generalised and suppressed."""
    outcome = anonymise(profiles)
    rows = []
    for (age, gender, status, referrals), sensitive in outcome.kept:
        flags = ["1" if e in sensitive else "0" for e in EXPLOITATIONS]
        rows.append([str(year), age, gender, status, *flags, *referrals])
    rows.sort()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    report = {
        "format": FORMAT,
        "year": year,
        "as_of": f"{year + 1}-01-01T00:00:00Z",
        "k": K,
        "l": L,
        "l_diversity_on": "exploitation: at least L distinct combinations of types per class,"
        " and no type shared by every row of a class",
        "max_suppression": MAX_SUPPRESSION,
        "quasi_identifiers": list(QUASI_IDENTIFIERS),
        "cases": len(profiles),
        "rows_published": len(rows),
        "rows_suppressed": outcome.suppressed_rows,
        "classes_suppressed": outcome.suppressed_classes,
        "generalisation": {
            name: {
                "level": outcome.levels[name],
                "rule": LADDERS[name][outcome.levels[name]].rule,
                "generalised": outcome.levels[name] > 0,
            }
            for name in QUASI_IDENTIFIERS
        },
        "excluded": "erased cases, and cases identified in other years",
    }
    return out.getvalue(), report


def check_year(year: int, current_year: int) -> None:
    """Only a year that has ended can be exported."""
    if year >= current_year:
        raise ExportError(
            f"{year} has not ended: an HTCDS export covers a closed year "
            f"({current_year - 1} or earlier)"
        )
    if year < 1900:
        raise ExportError("the year must be a four-digit year that has ended")


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {s}htcds_exports (year INTEGER PRIMARY KEY,"
    " created_at TEXT NOT NULL, csv TEXT NOT NULL, report TEXT NOT NULL)",
)


class ExportStore:
    """Frozen exports in the view store: the first export of a year is the only one."""

    def __init__(self, views: ViewStore) -> None:
        self.views = views
        views.setup(SCHEMA)

    def get(self, year: int) -> tuple[str, dict[str, Any]] | None:
        with self.views.read() as cur:
            cur.execute(
                self.views.sql("SELECT csv, report FROM {s}htcds_exports WHERE year = ?"), (year,)
            )
            row = cur.fetchone()
        return None if row is None else (str(row["csv"]), dict(json.loads(row["report"])))

    def freeze(self, year: int, text: str, report: dict[str, Any], created_at: str) -> None:
        with self.views.transaction() as cur:
            cur.execute(
                self.views.sql(
                    "INSERT INTO {s}htcds_exports (year, created_at, csv, report)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
                ),
                (year, created_at, text, json.dumps(report, sort_keys=True)),
            )
