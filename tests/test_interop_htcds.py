"""HTCDS / CTDC-style export: k = 11 over the quasi-identifiers, l = 2 on exploitation, no
free text and no ids, identical on re-runs, closed years only, erased cases excluded; the
export itself on both backends through `ledger export htcds`."""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
from collections import defaultdict
from pathlib import Path

from typer.testing import CliRunner

from ledger.cli import app as cli
from ledger.contract.vocabulary import AGE_BANDS, COMPONENTS, EXPLOITATIONS, GENDERS
from ledger.interop import htcds
from ledger.interop.htcds import CaseProfile
from ledger.settings import Settings
from tests.conftest import OPENED_ATTRS, World
from tests.test_erasure import erase

QI_COLUMNS = ("age_band", "gender", "case_status", *htcds.REFERRAL_COLUMNS)


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def assert_anonymous(text: str) -> list[dict[str, str]]:
    """Every class over the quasi-identifiers has >= 11 rows and >= 2 exploitation
    combinations; every cell is from the fixed vocabulary (so no id and no free text)."""
    rows = parse(text)
    assert text.split("\n")[0].split(",") == list(htcds.COLUMNS)
    classes: dict[tuple[str, ...], set[tuple[str, ...]]] = defaultdict(set)
    sizes: dict[tuple[str, ...], int] = defaultdict(int)
    flags: dict[tuple[str, ...], list[set[str]]] = defaultdict(list)
    for row in rows:
        for column, value in row.items():
            if column != "year_of_identification":
                assert value in htcds.VOCABULARY[column], (column, value)
        qi = tuple(row[c] for c in QI_COLUMNS)
        sizes[qi] += 1
        classes[qi].add(tuple(row[c] for c in htcds.EXPLOITATION_COLUMNS))
        flags[qi].append({c for c in htcds.EXPLOITATION_COLUMNS if row[c] == "1"})
    assert all(n >= htcds.K for n in sizes.values()), sizes
    assert all(len(s) >= htcds.L for s in classes.values())
    # No published flag is 1 in every row of a class (that would tell it of each member).
    assert all(not set.intersection(*rows_flags) for rows_flags in flags.values())
    return rows


def synthetic(n: int, seed: int) -> list[CaseProfile]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        referrals = tuple(sorted(
            (rng.choice(COMPONENTS), rng.choice(("pending", "accepted", "declined", "completed")))
            for _ in range(rng.choice((0, 0, 1, 2)))
        ))  # fmt: skip
        out.append(
            CaseProfile(
                age_band=rng.choice(AGE_BANDS),
                gender=rng.choice(GENDERS[:3]) if rng.random() < 0.9 else rng.choice(GENDERS),
                exploitation=frozenset(rng.sample(EXPLOITATIONS[:4], rng.choice((1, 1, 2)))),
                closed=rng.random() < 0.4,
                referrals=referrals,
            )
        )
    return out


def test_export_is_k_anonymous_l_diverse_and_reports_what_it_did() -> None:
    for n, seed in ((400, 1), (60, 2), (5, 3)):
        profiles = synthetic(n, seed)
        text, report = htcds.export(2025, profiles)
        rows = assert_anonymous(text)
        assert report["rows_published"] == len(rows)
        assert report["rows_published"] + report["rows_suppressed"] == n
        assert set(report["generalisation"]) == set(htcds.QUASI_IDENTIFIERS)
        assert all(r["year_of_identification"] == "2025" for r in rows)
    assert htcds.export(2025, synthetic(5, 3))[1]["rows_published"] == 0  # fewer than k


def test_a_type_every_member_of_a_class_shares_is_not_published() -> None:
    """Eleven girls aged 15-17: ten sexually exploited, one also in labour. Two distinct
    combinations, but `is_sexual` would be 1 in every row: the class is not published."""

    def girl(types: set[str]) -> CaseProfile:
        return CaseProfile("15-17", "female", frozenset(types), False, ())

    profiles = [girl({"sexual"}) for _ in range(10)] + [girl({"sexual", "labour"})]
    text, report = htcds.export(2025, profiles)
    assert parse(text) == []
    assert report["rows_suppressed"] == 11


def test_export_is_identical_whatever_the_order_of_cases() -> None:
    profiles = synthetic(300, 7)
    text, report = htcds.export(2024, profiles)
    shuffled = profiles[:]
    random.Random(1).shuffle(shuffled)
    assert htcds.export(2024, shuffled) == (text, report)


def test_small_groups_are_generalised_before_rows_are_dropped() -> None:
    # 40 adult women, half labour half sexual; 12 boys of 15-17 and 12 girls of 12-14 (mixed
    # exploitation): grouping all children as "12-17" then "minor" keeps them.
    women = [CaseProfile("adult", "female", frozenset({e}), False, ())
             for e in ("labour", "sexual") * 20]  # fmt: skip
    boys = [CaseProfile("15-17", "male", frozenset({e}), False, ())
            for e in ("begging", "labour") * 6]  # fmt: skip
    girls = [CaseProfile("12-14", "female", frozenset({e}), False, ())
             for e in ("sexual", "domestic_servitude") * 6]  # fmt: skip
    text, report = htcds.export(2025, women + boys + girls)
    rows = assert_anonymous(text)
    assert report["rows_suppressed"] == 0 and len(rows) == 64
    assert report["generalisation"]["age_band"]["level"] == 0
    lonely = [CaseProfile("0-5", "non_binary", frozenset({"other"}), True, ())]
    text, report = htcds.export(2025, women + boys + girls + lonely * 3)
    assert_anonymous(text)
    assert report["rows_suppressed"] <= 3 and report["rows_published"] >= 64


def test_an_open_year_is_refused() -> None:
    for year in (2026, 2027):
        try:
            htcds.check_year(year, 2026)
        except htcds.ExportError as exc:
            assert "has not ended" in str(exc)
        else:
            raise AssertionError("an open year was accepted")
    htcds.check_year(2025, 2026)


def _env(settings: Settings) -> dict[str, str]:
    env = {"LEDGER_HOME": str(settings.home), "LEDGER_KEYS": str(settings.keys)}
    if settings.database_url:
        env["LEDGER_DATABASE_URL"] = settings.database_url
        env["LEDGER_PG_SCHEMA"] = settings.pg_schema
    else:
        env["LEDGER_DATABASE_URL"] = ""
    return env


def test_cli_exports_a_closed_year_from_the_ledger(world: World, tmp_path: Path) -> None:
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    case_ids = []
    for i in range(24):
        case_id = str(uuid.uuid4())
        attrs = OPENED_ATTRS | {
            "identified_at": f"2025-{1 + i % 12:02d}-15",
            "exploitation": (["labour"], ["sexual"], ["sexual", "labour"])[i % 3],
        }
        ngo.ok("case.opened", case_id, {"minor": False}, attrs,
               {"identity": {"name": f"marker-{i}"}})  # fmt: skip
        case_ids.append(case_id)
    consent = ngo.grant(case_ids[0], ["clinic"])
    referral = {"referral_id": str(uuid.uuid4()), "to": "clinic", "consent_id": consent,
                "categories": ["health"]}  # fmt: skip
    attrs = {"component": "housing", "due_by": "2030-01-01T00:00:00Z", "urgency": "routine"}
    ngo.ok("referral.made", case_ids[0], referral, attrs)
    other_year = str(uuid.uuid4())
    ngo.ok("case.opened", other_year, {"minor": False},
           OPENED_ATTRS | {"identified_at": "2024-05-01"})  # fmt: skip
    assert erase(world, case_ids[-1]).status_code == 201

    env = _env(world.settings)
    out, report_file = tmp_path / "htcds.csv", tmp_path / "report.json"
    args = ["export", "htcds", "--year", "2025", "--out", str(out), "--report", str(report_file)]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    report = json.loads(report_file.read_text())
    rows = assert_anonymous(text)
    assert report["cases"] == 23  # the erased case and the 2024 case are not in it
    assert len(rows) == report["rows_published"] >= 22
    for case_id in [*case_ids, other_year, consent]:
        assert case_id not in text
    assert "marker" not in text and "2025-" not in text  # no free text, no dates

    # Frozen: a later export of the year is the first one, even after an erasure (two
    # exports either side of it would otherwise differ by exactly that person's row).
    assert erase(world, case_ids[-2]).status_code == 201
    again = CliRunner().invoke(cli, [*args[:-2], "--out", str(tmp_path / "again.csv")], env=env)
    assert again.exit_code == 0
    assert (tmp_path / "again.csv").read_text() == text  # identical when re-run
    assert json.loads(again.stderr) == report  # without --report: on standard error

    year = world.ledger.clock().year
    refused = CliRunner().invoke(cli, ["export", "htcds", "--year", str(year), "--out",
                                       str(tmp_path / "x.csv")], env=env)  # fmt: skip
    assert refused.exit_code == 2 and "has not ended" in refused.output
    assert not (tmp_path / "x.csv").exists()

    # The coordinating body downloads the same frozen export through the API (monitor only).
    monitor = {"Authorization": f"Bearer {world.token('monitor')}"}
    got = world.http.post("/v1/stats/htcds", json={"year": 2025}, headers=monitor)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    assert got.text == text
    staff = world.http.post("/v1/stats/htcds", json={"year": 2025}, headers=ngo.auth("supervisor"))
    assert staff.status_code == 403
    open_year = world.http.post("/v1/stats/htcds", json={"year": year}, headers=monitor)
    assert open_year.status_code == 422 and "has not ended" in open_year.text


def test_a_monitor_lists_the_frozen_releases(world: World) -> None:
    ngo = world.agency("ngo-a")
    ngo.ok("case.opened", str(uuid.uuid4()), {"minor": False},
           OPENED_ATTRS | {"identified_at": "2025-03-01"})  # fmt: skip
    monitor = {"Authorization": f"Bearer {world.token('monitor')}"}
    assert world.http.get("/v1/stats/releases", headers=monitor).json() == {"releases": []}
    for period in ("2025-03", "2025-05"):
        made = world.http.post("/v1/stats/releases", json={"period": period}, headers=monitor)
        assert made.status_code == 201
    listed = world.http.get("/v1/stats/releases", headers=monitor).json()["releases"]
    assert [r["period"] for r in listed] == ["2025-05", "2025-03"]  # the newest first
    assert all(r["created_at"] for r in listed)
    assert world.http.get("/v1/stats/releases", headers=ngo.auth()).status_code == 403
