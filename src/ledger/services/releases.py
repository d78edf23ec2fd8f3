"""Statistics releases: frozen monthly tables that never identify anyone.

A release counts cases once, by month of identification, from attrs unsealed at release time,
and stores only aggregates. Cells under k = 11 are suppressed; then secondary suppression runs
over the whole set of tables until no suppressed cell follows from a total, a margin or a
linked table (checked exactly, by linear algebra over the published relations); published
counts are rounded down to a multiple of 5. A release never changes afterwards, erasures
included.

Whether the `statistics` consent purpose is required: it is not. A release is an anonymous
aggregate with suppression and rounding, not a disclosure of anyone's data; every case
identified in the month and not erased when the release is made is counted.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ledger.contract.vocabulary import AGE_BANDS, COMPONENTS, EXPLOITATIONS, GENDERS
from ledger.storage.base import ViewStore

K = 11
ROUNDING = 5
OUTCOMES = ("pending", "accepted", "declined", "completed")
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {s}stats_releases (period TEXT PRIMARY KEY,"
    " created_at TEXT NOT NULL, body TEXT NOT NULL)",
)


@dataclass(frozen=True)
class CaseFigures:
    """What one case contributes to a release (unsealed at release time, never stored)."""

    age_band: str
    gender: str
    exploitation: frozenset[str]
    referrals: frozenset[tuple[str, str]]  # (component, outcome)


@dataclass
class Table:
    name: str
    dims: tuple[str, ...]
    keys: list[tuple[str, ...]]
    counts: dict[tuple[str, ...], int]
    suppressed: set[tuple[str, ...]] = field(default_factory=set)


def count_tables(cases: Sequence[CaseFigures]) -> dict[str, Table]:
    def table(
        name: str, dims: tuple[str, ...], values: Sequence[Sequence[str]], keys_of: Any
    ) -> Table:
        keys = [tuple(k) for k in itertools.product(*values)]
        counts = dict.fromkeys(keys, 0)
        for case in cases:
            for key in keys_of(case):
                counts[key] += 1
        return Table(name, dims, keys, counts)

    return {
        "age_band": table("age_band", ("age_band",), [AGE_BANDS], lambda c: [(c.age_band,)]),
        "gender": table("gender", ("gender",), [GENDERS], lambda c: [(c.gender,)]),
        "age_band_gender": table(
            "age_band_gender",
            ("age_band", "gender"),
            [AGE_BANDS, GENDERS],
            lambda c: [(c.age_band, c.gender)],
        ),
        "exploitation": table(
            "exploitation",
            ("exploitation",),
            [EXPLOITATIONS],
            lambda c: [(e,) for e in sorted(c.exploitation)],
        ),
        "referral_component_outcome": table(
            "referral_component_outcome",
            ("component", "outcome"),
            [COMPONENTS, OUTCOMES],
            lambda c: sorted(c.referrals),
        ),
    }


Cell = tuple[str, tuple[str, ...]]  # (table name, key)


def relations(tables: dict[str, Table]) -> list[tuple[list[Cell], Cell | None]]:
    """Published additive relations: `sum(cells) == total`, total None meaning the case
    count N (treated as known). Multi-valued tables (a case in several cells) add none."""
    age, gender, cross = tables["age_band"], tables["gender"], tables["age_band_gender"]
    rels: list[tuple[list[Cell], Cell | None]] = [
        ([("age_band", k) for k in age.keys], None),
        ([("gender", k) for k in gender.keys], None),
        ([("age_band_gender", k) for k in cross.keys], None),
    ]
    for (band,) in age.keys:
        row = [("age_band_gender", k) for k in cross.keys if k[0] == band]
        rels.append((row, ("age_band", (band,))))
    for (sex,) in gender.keys:
        column = [("age_band_gender", k) for k in cross.keys if k[1] == sex]
        rels.append((column, ("gender", (sex,))))
    return rels


def _determined(suppressed: list[Cell], rels: list[tuple[list[Cell], Cell | None]]) -> list[Cell]:
    """Suppressed cells whose value follows from the relations (Gaussian elimination)."""
    index = {cell: i for i, cell in enumerate(suppressed)}
    rows: list[list[Fraction]] = []
    for cells, total in rels:
        row = [Fraction(0)] * len(suppressed)
        for cell in cells:
            if cell in index:
                row[index[cell]] += 1
        if total is not None and total in index:
            row[index[total]] -= 1
        if any(row):
            rows.append(row)
    # Row-reduce; a variable is determined iff its unit vector lies in the row space, i.e. a
    # reduced row has exactly one non-zero entry.
    pivot_rows: list[list[Fraction]] = []
    for row in rows:
        row = row[:]
        for prow in pivot_rows:
            lead = next(i for i, v in enumerate(prow) if v)
            if row[lead]:
                factor = row[lead] / prow[lead]
                row = [a - factor * b for a, b in zip(row, prow, strict=True)]
        if any(row):
            lead = next(i for i, v in enumerate(row) if v)
            row = [v / row[lead] for v in row]
            for j, prow in enumerate(pivot_rows):
                if prow[lead]:
                    factor = prow[lead]
                    pivot_rows[j] = [a - factor * b for a, b in zip(prow, row, strict=True)]
            pivot_rows.append(row)
    determined = []
    for prow in pivot_rows:
        nonzero = [i for i, v in enumerate(prow) if v]
        if len(nonzero) == 1:
            determined.append(suppressed[nonzero[0]])
    return determined


def _pinned(
    tables: dict[str, Table], primary: set[Cell], rels: list[tuple[list[Cell], Cell | None]]
) -> list[Cell]:
    """Suppressed cells an attacker pins to one value by bounds propagation: a primary cell
    lies in [0, k-1], a secondary one in [k, N], and every relation must add up."""
    total = sum(tables["age_band"].counts.values())
    bounds: dict[Cell, list[int]] = {}
    for t in tables.values():
        for key in t.suppressed:
            cell = (t.name, key)
            bounds[cell] = [0, K - 1] if cell in primary else [K, total]

    def interval(cell: Cell | None) -> tuple[int, int]:
        if cell is None:
            return (total, total)  # N, the number of cases, is taken as known
        if cell in bounds:
            return (bounds[cell][0], bounds[cell][1])
        count = tables[cell[0]].counts[cell[1]]
        return (count, count)

    changed, rounds = True, 0
    while changed and rounds < 100:
        changed, rounds = False, rounds + 1
        for cells, total_cell in rels:
            # sum(cells) - total_cell = 0, as signed terms
            terms: list[tuple[int, Cell | None]] = [(1, c) for c in cells] + [(-1, total_cell)]
            for i, (sign, term) in enumerate(terms):
                if term is None or term not in bounds:
                    continue
                lo = hi = 0  # bounds of sign * cell = -(sum of the other terms)
                for j, (other_sign, other) in enumerate(terms):
                    if j != i:
                        olo, ohi = interval(other)
                        lo, hi = (lo - ohi, hi - olo) if other_sign > 0 else (lo + olo, hi + ohi)
                new_lo, new_hi = (lo, hi) if sign > 0 else (-hi, -lo)
                b = bounds[term]
                if new_lo > b[0] or new_hi < b[1]:
                    b[0], b[1] = max(b[0], new_lo), min(b[1], new_hi)
                    changed = True
    return [cell for cell, (lo, hi) in bounds.items() if lo >= hi]


def _disclosive(tables: dict[str, Table], cells: list[Cell]) -> list[Cell]:
    """A derivable suppressed cell discloses people unless it is a true zero: learning that
    nobody is in a group names no one (and zeros pinned this way still pin other cells)."""
    return [c for c in cells if tables[c[0]].counts[c[1]] > 0]


def suppress(tables: dict[str, Table]) -> None:
    """Primary suppression (< k), then secondary until no suppressed count of people can be
    derived: neither exactly, by linear algebra over the relations, nor by propagating the
    bounds an attacker knows (a primary cell is under k, a secondary one is not)."""
    for table in tables.values():
        table.suppressed = {k for k in table.keys if table.counts[k] < K}
    primary = {(t.name, k) for t in tables.values() for k in t.suppressed}
    rels = relations(tables)
    while True:
        suppressed = [(t.name, k) for t in tables.values() for k in t.keys if k in t.suppressed]
        leaks = _disclosive(tables, _determined(suppressed, rels)) or _disclosive(
            tables, _pinned(tables, primary, rels)
        )
        if not leaks:
            return
        leak = leaks[0]
        # Suppress the smallest published cell sharing a relation with the leaking cell.
        candidates = [
            cell
            for cells, total in rels
            if leak in cells or leak == total
            for cell in [*cells, *([total] if total else [])]
            if cell[1] not in tables[cell[0]].suppressed
        ]
        if not candidates:  # every related cell is hidden: widen to the linked tables
            candidates = [
                (t.name, k)
                for t in tables.values()
                for k in t.keys
                if k not in t.suppressed and t.name in ("age_band", "gender", "age_band_gender")
            ]
        if not candidates:
            return  # everything linked is suppressed: nothing more can be hidden
        chosen = min(candidates, key=lambda c: (tables[c[0]].counts[c[1]], c))
        tables[chosen[0]].suppressed.add(chosen[1])


def release_body(period: str, cases: Sequence[CaseFigures]) -> dict[str, Any]:
    tables = count_tables(cases)
    suppress(tables)
    out: dict[str, Any] = {}
    for name, table in tables.items():
        cells = []
        for key in table.keys:
            hidden = key in table.suppressed
            count = None if hidden else table.counts[key] // ROUNDING * ROUNDING
            cells.append(
                {**dict(zip(table.dims, key, strict=True)), "count": count, "suppressed": hidden}
            )
        out[name] = {"dims": list(table.dims), "cells": cells}
    return {"period": period, "unit": "cases", "k": K, "rounding": ROUNDING, "tables": out}


class ReleaseStore:
    """Frozen releases in the view store; the first release of a period is the only one."""

    def __init__(self, views: ViewStore) -> None:
        self.views = views

    def get(self, period: str) -> dict[str, Any] | None:
        with self.views.read() as cur:
            cur.execute(
                self.views.sql("SELECT body FROM {s}stats_releases WHERE period = ?"), (period,)
            )
            row = cur.fetchone()
        return None if row is None else dict(json.loads(row["body"]))

    def listed(self) -> list[dict[str, str]]:
        """Every frozen release's period and when it was frozen, the newest period first."""
        with self.views.read() as cur:
            cur.execute(
                self.views.sql(
                    "SELECT period, created_at FROM {s}stats_releases ORDER BY period DESC"
                )
            )
            return [{"period": r["period"], "created_at": r["created_at"]} for r in cur.fetchall()]

    def freeze(self, body: dict[str, Any], created_at: str) -> dict[str, Any]:
        """Store a release unless the period has one already; return the stored release."""
        with self.views.transaction() as cur:
            cur.execute(
                self.views.sql(
                    "INSERT INTO {s}stats_releases (period, created_at, body) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING"
                ),
                (body["period"], created_at, json.dumps(body, sort_keys=True)),
            )
        stored = self.get(body["period"])
        assert stored is not None
        return stored


def periods(values: Iterable[str]) -> list[str]:
    return sorted(set(values))
