"""Read models through the API on both backends: case list, consent register, referral
tracker, disclosure register, statistics releases, and their access rules."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import World
from tests.test_erasure import erase


def new() -> str:
    return str(uuid.uuid4())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refer(world: World, case_id: str, consent: str, to: str, component: str,
          due_by: str = "2030-01-01T00:00:00Z") -> str:  # fmt: skip
    referral = new()
    world.agencies["ngo-a"].ok("referral.made", case_id, {
        "referral_id": referral, "to": to, "consent_id": consent, "categories": ["health"]},
        {"component": component, "due_by": due_by, "urgency": "routine"})  # fmt: skip
    return referral


def test_case_list_shows_status_open_referrals_and_readable_categories(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case(payload={"identity": {"n": 1}})
    consent = ngo.grant(case_id, ["clinic"], categories=["identity", "health"])
    refer(world, case_id, consent, "clinic", "health_psychosocial")
    mine = world.http.get("/v1/cases", headers=ngo.auth()).json()["cases"]
    assert [(c["case_id"], c["holder"], c["open_referrals"]) for c in mine] == [(case_id, True, 1)]
    assert len(mine[0]["categories"]) == 10
    theirs = world.http.get("/v1/cases", headers=clinic.auth()).json()["cases"]
    assert theirs[0]["categories"] == [] and not theirs[0]["holder"]  # nothing sent yet
    ngo.share(case_id, "clinic", consent, ["identity"])
    theirs = world.http.get("/v1/cases", headers=clinic.auth()).json()["cases"]
    assert theirs[0]["categories"] == ["identity"]  # what the share sent
    referral = world.models.referrals(world.ledger.authenticate(ngo.tokens["caseworker"]))[
        "referrals"
    ][0]["referral_id"]
    clinic.ok("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    theirs = world.http.get("/v1/cases", headers=clinic.auth()).json()["cases"]
    assert theirs[0]["categories"] == ["identity", "health"]  # and the accepted referral
    assert not theirs[0]["holder"]  # accepting makes no holder
    ngo.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "survivor_request"})
    theirs = world.http.get("/v1/cases", headers=clinic.auth()).json()["cases"]
    assert theirs[0]["categories"] == []
    assert world.http.get("/v1/cases", headers=world.agency("other").auth()).json()["cases"] == []
    assert world.http.get("/v1/cases", headers=bearer(world.token("auditor"))).status_code == 403


def test_consent_register_unseals_language_and_logs_the_read_unless_asked_not_to(
    world: World,
) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    world.agency("legal")
    case_id = ngo.open_case("12-14")
    a = ngo.grant(case_id, ["clinic"], given_by="guardian_ad_litem", child_assent=True)
    # Does not count: an assent exemption in a case of a child over 5 (a survivor's own
    # consent in a child's case is refused at intake since v1.5).
    b = ngo.grant(case_id, ["legal"], given_by="guardian", assent_exempt=True)
    assert ngo.share(case_id, "clinic", a).status_code == 201
    size = world.ledger.store.log_size()
    register = world.http.get(f"/v1/cases/{case_id}/consents", headers=ngo.auth()).json()
    assert world.ledger.store.log_size() == size + 1  # attrs were unsealed: an access entry
    by_id = {c["consent_id"]: c for c in register["consents"]}
    assert by_id[a]["language"] == "es" and by_id[a]["interpreter"] is True
    assert by_id[a]["counts"] is True and by_id[b]["counts"] is False
    assert by_id[a]["given_by"] == "guardian_ad_litem" and by_id[a]["child_assent"] is True
    assert register["may_receive"] == {"clinic": ["identity", "health"]}
    # Without the sealed details: the same register, nothing unsealed, nothing logged.
    size = world.ledger.store.log_size()
    plain = world.http.get(f"/v1/cases/{case_id}/consents?details=false", headers=ngo.auth())
    assert plain.status_code == 200 and world.ledger.store.log_size() == size
    for consent in plain.json()["consents"]:
        full = by_id[consent["consent_id"]]
        assert consent["language"] is None and consent["interpreter"] is None
        assert consent["notice_version"] is None
        sealed = ("language", "interpreter", "notice_version")
        assert {k: v for k, v in consent.items() if k not in sealed} == {
            k: v for k, v in full.items() if k not in sealed
        }
    assert plain.json()["may_receive"] == register["may_receive"]
    seen = world.http.get(f"/v1/cases/{case_id}/consents", headers=clinic.auth()).json()
    assert [c["consent_id"] for c in seen["consents"]] == [a]  # only what names the clinic
    legal = world.http.get(f"/v1/cases/{case_id}/consents", headers=world.agencies["legal"].auth())
    assert legal.status_code == 403  # related, but no consent counts for it
    ngo.ok("consent.withdrawn", case_id, {"consent_id": a}, {"reason": "guardian_request"})
    after = world.http.get(f"/v1/cases/{case_id}/consents", headers=ngo.auth()).json()
    withdrawn = {c["consent_id"]: c for c in after["consents"]}[a]
    assert withdrawn["withdrawn_at"] and withdrawn["active"] is False
    assert after["may_receive"] == {}


def test_health_referrals_are_overdue_24h_after_identification(world: World) -> None:
    # The day after identification, before anything is recorded (the log's times never go
    # back, so the clock is set first and only moves forward).
    world.clock.now = world.clock.now.replace(year=2026, month=11, day=2, hour=12)
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    world.agency("school")
    case_id = ngo.open_case()  # identified 2026-11-01
    consent = ngo.grant(case_id, ["clinic", "school"])
    health = refer(world, case_id, consent, "clinic", "health_psychosocial")
    school = refer(world, case_id, consent, "school", "education")
    tracker = world.http.get("/v1/referrals", headers=ngo.auth()).json()["referrals"]
    by_id = {r["referral_id"]: r for r in tracker}
    assert by_id[health]["due_by"] == "2026-11-03T00:00:00Z" and not by_id[health]["overdue"]
    assert by_id[school]["due_by"] == "2030-01-01T00:00:00Z"
    world.clock.now = world.clock.now.replace(day=3, hour=1)
    late = world.http.get("/v1/referrals?overdue=true", headers=ngo.auth()).json()["referrals"]
    assert [r["referral_id"] for r in late] == [health]
    assert (
        world.http.get("/v1/referrals?component=education", headers=ngo.auth()).json()["referrals"][
            0
        ]["referral_id"]
        == school
    )
    clinic.ok("referral.accepted", case_id, {"referral_id": health}, {"reason": None})
    clinic.ok("referral.completed", case_id, {"referral_id": health}, {"reason": None})
    late = world.http.get("/v1/referrals?overdue=true", headers=ngo.auth()).json()["referrals"]
    assert late == []  # completed referrals are never overdue
    received = world.http.get("/v1/referrals?status=completed", headers=clinic.auth()).json()
    assert [r["referral_id"] for r in received["referrals"]] == [health]
    assert world.http.get("/v1/referrals?status=lost", headers=ngo.auth()).status_code == 400


def test_disclosure_register_answers_who_has_my_data(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case(payload={"identity": {"n": 1}, "health": {"h": 1}})
    consent = ngo.grant(case_id, ["clinic"])
    ngo.share(case_id, "clinic", consent, ["identity"])
    referral = refer(world, case_id, consent, "clinic", "health_psychosocial")
    clinic.read(case_id)  # the referral is pending: only the shared category is readable
    clinic.ok("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    clinic.read(case_id)
    register = world.http.get(f"/v1/cases/{case_id}/disclosures", headers=ngo.auth()).json()
    rows = [(d["kind"], d["agency"], d["categories"], d["consent_id"])
            for d in register["disclosures"]]  # fmt: skip
    assert rows == [
        ("share", "clinic", ["identity"], consent),
        ("referral", "clinic", ["health"], consent),
        ("read", "clinic", ["identity"], None),
        ("read", "clinic", ["identity", "health"], None),
    ]
    assert world.http.get(f"/v1/cases/{case_id}/disclosures",
                          headers=clinic.auth()).status_code == 403  # fmt: skip


def test_erasure_purges_every_read_model_row(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case(payload={"identity": {"n": 1}})
    consent = ngo.grant(case_id, ["clinic"])
    refer(world, case_id, consent, "clinic", "housing")
    clinic.read(case_id)
    world.models.runner.catch_up()
    assert erase(world, case_id).status_code == 201
    world.models.runner.catch_up()
    views = world.models.views
    for table in ("view_cases", "view_case_agencies", "view_consents", "view_referrals",
                  "view_disclosures"):  # fmt: skip
        with views.read() as cur:
            cur.execute(views.sql(f"SELECT COUNT(*) AS n FROM {{s}}{table} WHERE case_id = ?"),
                        (case_id,))  # fmt: skip
            assert cur.fetchone()["n"] == 0, table
    assert world.http.get("/v1/cases", headers=ngo.auth()).json()["cases"] == []


# --- statistics releases ------------------------------------------------------------------


def open_many(world: World, count: int, **attrs: Any) -> list[str]:
    ngo = world.agencies["ngo-a"]
    out = []
    for _ in range(count):
        case_id = new()
        band = attrs.get("age_band", "adult")
        ngo.ok("case.opened", case_id, {"minor": band != "adult"}, {
            "age_band": band, "gender": attrs.get("gender", "female"),
            "exploitation": attrs.get("exploitation", ["labour"]),
            "identified_at": attrs.get("identified_at", "2026-10-15")})  # fmt: skip
        out.append(case_id)
    return out


def cells(release: dict[str, Any], table: str) -> dict[tuple[str, ...], Any]:
    spec = release["tables"][table]
    return {tuple(c[d] for d in spec["dims"]): (c["count"], c["suppressed"])
            for c in spec["cells"]}  # fmt: skip


def test_release_counts_cases_once_suppresses_and_rounds(world: World) -> None:
    world.agency("ngo-a")
    open_many(world, 23, gender="female")
    open_many(world, 12, gender="male", exploitation=["labour", "sexual"])
    open_many(world, 3, gender="male", age_band="15-17")
    open_many(world, 4, identified_at="2026-09-30")  # another month: not counted
    monitor = bearer(world.token("monitor"))
    r = world.http.post("/v1/stats/releases", json={"period": "2026-10"}, headers=monitor)
    assert r.status_code == 201, r.text
    release = r.json()
    assert (release["unit"], release["k"], release["rounding"]) == ("cases", 11, 5)
    exploitation = cells(release, "exploitation")
    assert exploitation[("labour",)] == (35, False) and exploitation[("sexual",)] == (10, False)
    assert cells(release, "age_band")[("15-17",)] == (None, True)
    for table in release["tables"].values():
        for cell in table["cells"]:
            assert (cell["count"] is None) == cell["suppressed"]
            assert cell["count"] is None or cell["count"] % 5 == 0
    again = world.http.post("/v1/stats/releases", json={"period": "2026-10"}, headers=monitor)
    assert again.status_code == 200 and again.json() == release
    assert world.http.get("/v1/stats/releases/2026-10", headers=monitor).json() == release


def test_a_release_never_changes_erasures_included(world: World) -> None:
    world.agency("ngo-a")
    cases = open_many(world, 15)
    monitor = bearer(world.token("monitor"))
    first = world.http.post("/v1/stats/releases", json={"period": "2026-10"}, headers=monitor)
    for case_id in cases[:6]:
        assert erase(world, case_id).status_code == 201
    open_many(world, 30)
    later = world.http.get("/v1/stats/releases/2026-10", headers=monitor)
    assert later.json() == first.json()


@pytest.mark.parametrize(("period", "status"), [("2026-13", 400), ("26-10", 400),
                                                ("2099-01", 422)])  # fmt: skip
def test_releases_cover_ended_months_only(world: World, period: str, status: int) -> None:
    r = world.http.post("/v1/stats/releases", json={"period": period},
                        headers=bearer(world.token("monitor")))  # fmt: skip
    assert r.status_code == status


@pytest.mark.regression("a monitor could freeze releases for any month back to 0001-01")
def test_releases_start_at_the_first_identification_and_early_refusals_cost_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.agency("ngo-a")
    monitor = bearer(world.token("monitor"))
    r = world.http.post("/v1/stats/releases", json={"period": "2026-10"}, headers=monitor)
    assert r.status_code == 422  # no case at all: no month to release
    open_many(world, 3, identified_at="2026-09-30")
    open_many(world, 3)  # 2026-10-15
    for period in ("0001-01", "1999-12", "2026-08"):
        r = world.http.post("/v1/stats/releases", json={"period": period}, headers=monitor)
        assert r.status_code == 422, (period, r.text)
    unwrapped: list[str] = []
    real = world.ledger.keys.get
    monkeypatch.setattr(world.ledger.keys, "get", lambda c: unwrapped.append(c) or real(c))
    for year in range(1000, 1100):  # a hundred early months: nothing unsealed any more
        r = world.http.post("/v1/stats/releases", json={"period": f"{year}-01"}, headers=monitor)
        assert r.status_code == 422
    assert unwrapped == []
    assert world.http.get("/v1/stats/releases/1999-12", headers=monitor).status_code == 404
    for period in ("2026-09", "2026-10"):
        r = world.http.post("/v1/stats/releases", json={"period": period}, headers=monitor)
        assert r.status_code == 201, r.text
    open_many(world, 1, identified_at="2025-01-20")  # identified long before it was opened
    r = world.http.post("/v1/stats/releases", json={"period": "2025-01"}, headers=monitor)
    assert r.status_code == 201, r.text


def test_only_monitors_see_releases(world: World) -> None:
    ngo = world.agency("ngo-a")
    for headers in (ngo.auth(), bearer(world.token("auditor")), bearer(world.admin)):
        r = world.http.post("/v1/stats/releases", json={"period": "2026-10"}, headers=headers)
        assert r.status_code == 403
        assert world.http.get("/v1/stats/releases/2026-10", headers=headers).status_code == 403
    monitor = bearer(world.token("monitor"))
    assert world.http.get("/v1/stats/releases/2026-10", headers=monitor).status_code == 404
    assert world.http.get(f"/v1/cases/{new()}", headers=monitor).status_code == 403


# --- the suppression rules, on the pure functions --------------------------------------------


def figures(n: int, band: str = "adult", gender: str = "female") -> list[Any]:
    from ledger.services.releases import CaseFigures

    return [CaseFigures(band, gender, frozenset({"labour"}), frozenset()) for _ in range(n)]


def test_a_single_small_cell_that_would_follow_from_the_total_is_hidden_with_another() -> None:
    from ledger.services.releases import _determined, count_tables, relations, suppress

    cases = (figures(20, gender="female") + figures(15, gender="male")
             + figures(12, gender="non_binary") + figures(11, gender="other")
             + figures(3, gender="undisclosed"))  # fmt: skip
    tables = count_tables(cases)
    suppress(tables)
    gender = tables["gender"]
    # primary: 3 < 11; secondary: the smallest other cell, or the total would reveal the 3
    assert gender.suppressed == {("undisclosed",), ("other",)}
    cross = tables["age_band_gender"]
    assert {("adult", "undisclosed"), ("adult", "other")} <= cross.suppressed
    suppressed = [(t.name, k) for t in tables.values() for k in t.keys if k in t.suppressed]
    leaks = _determined(suppressed, relations(tables))
    assert all(tables[name].counts[key] == 0 for name, key in leaks)  # only empty groups


def test_a_margin_cannot_reveal_a_cell_of_the_linked_table() -> None:
    from ledger.services.releases import _determined, count_tables, relations, suppress

    # Every age band is large, but within the 12-14 row one gender is small.
    cases = (figures(30, "adult", "female") + figures(30, "adult", "male")
             + figures(25, "12-14", "female") + figures(4, "12-14", "male"))  # fmt: skip
    tables = count_tables(cases)
    suppress(tables)
    cross = tables["age_band_gender"]
    assert ("12-14", "male") in cross.suppressed
    assert ("12-14", "female") in cross.suppressed  # the row's total would reveal the 4
    suppressed = [(t.name, k) for t in tables.values() for k in t.keys if k in t.suppressed]
    leaks = _determined(suppressed, relations(tables))
    assert all(tables[name].counts[key] == 0 for name, key in leaks)


def test_published_counts_are_rounded_down_to_multiples_of_five() -> None:
    from ledger.services.releases import release_body

    body = release_body("2026-10", figures(29) + figures(14, gender="male"))
    gender = {c["gender"]: c["count"] for c in body["tables"]["gender"]["cells"]}
    assert gender["female"] == 25 and gender["male"] == 10
