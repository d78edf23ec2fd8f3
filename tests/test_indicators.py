"""The guideline indicators (`GET /v1/agencies/{id}/indicators`) against a scenario whose
answers the test works out itself from the times it chose: referrals at 23 h 59 min and at
24 h 01 min after the end of the identification day, one made on that day, a referral declined
then made again elsewhere, a withdrawn and an expired consent, a case identified the month
before, and an erasure that takes its case out of every figure at once."""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ledger.contract.vocabulary import format_timestamp
from tests.conftest import CONSENT_ATTRS, OPENED_ATTRS, Agency, World
from tests.test_erasure import erase

MARCH = {"from": "2027-03", "to": "2027-03"}
START = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
END_OF_MARCH_1 = datetime(2027, 3, 2, tzinfo=UTC)  # the end of the identification day


@dataclass
class Scenario:
    world: World
    ngo: Agency
    clinic: Agency
    cases: dict[str, str]  # name → case id
    consents: dict[str, str]
    referrals: dict[str, str]


def at(world: World, moment: datetime) -> None:
    assert moment >= world.clock.now  # the log's time only moves forward
    world.clock.now = moment


def open_case(ngo: Agency, identified: str) -> str:
    case_id = str(uuid.uuid4())
    ngo.ok("case.opened", case_id, {"minor": False}, OPENED_ATTRS | {"identified_at": identified})
    return case_id


def grant(ngo: Agency, case_id: str, expires_at: str | None = None) -> str:
    consent_id = str(uuid.uuid4())
    facts = {"consent_id": consent_id, "purposes": ["referral"],
             "recipients": ["clinic", "shelter"], "categories": ["identity"],
             "expires_at": expires_at, "given_by": "survivor", "child_assent": None,
             "assent_exempt": False}  # fmt: skip
    ngo.ok("consent.granted", case_id, facts, CONSENT_ATTRS)
    return consent_id


def refer(s: Scenario, case: str, to: str, component: str, due_in_h: float = 48) -> str:
    referral_id = str(uuid.uuid4())
    due = format_timestamp(s.world.clock.now + timedelta(hours=due_in_h))
    facts = {"referral_id": referral_id, "to": to, "consent_id": s.consents[case],
             "categories": ["identity"]}  # fmt: skip
    s.ngo.ok("referral.made", s.cases[case], facts,
             {"component": component, "due_by": due, "urgency": "routine"})  # fmt: skip
    return referral_id


def answer(
    s: Scenario, who: Agency, case: str, referral: str, how: str, reason: Any = None
) -> None:
    who.ok(f"referral.{how}", s.cases[case], {"referral_id": s.referrals[referral]},
           {"reason": reason} if how != "completed" else {"reason": None})  # fmt: skip


@pytest.fixture
def scenario(world: World) -> Scenario:
    ngo, clinic, shelter = world.agency("ngo"), world.agency("clinic"), world.agency("shelter")
    s = Scenario(world, ngo, clinic, {}, {}, {})
    at(world, START)
    for name in "ABC":
        s.cases[name] = open_case(ngo, "2027-03-01")
    s.cases["E"] = open_case(ngo, "2027-02-27")  # identified in February, opened in March
    at(world, START + timedelta(minutes=5))
    for name in "ABCE":
        expires = "2027-03-10T00:00:00Z" if name == "B" else None
        s.consents[name] = grant(ngo, s.cases[name], expires)
    at(world, datetime(2027, 3, 1, 10, 0, tzinfo=UTC))  # C: first care on the day itself
    s.referrals["C1"] = refer(s, "C", "clinic", "health_psychosocial", due_in_h=10)
    at(world, datetime(2027, 3, 1, 10, 30, tzinfo=UTC))
    s.referrals["E1"] = refer(s, "E", "clinic", "health_psychosocial")
    at(world, datetime(2027, 3, 1, 12, 0, tzinfo=UTC))
    answer(s, clinic, "C", "C1", "declined", "no_capacity")  # 2 h to answer
    at(world, datetime(2027, 3, 1, 13, 0, tzinfo=UTC))  # ... and made again, elsewhere
    s.referrals["C2"] = refer(s, "C", "shelter", "health_psychosocial")
    at(world, datetime(2027, 3, 1, 15, 0, tzinfo=UTC))
    answer(s, shelter, "C", "C2", "accepted")  # 2 h to answer
    at(world, datetime(2027, 3, 2, 8, 0, tzinfo=UTC))
    s.cases["D"] = open_case(ngo, "2027-03-02")  # no care referral at all
    s.consents["D"] = grant(ngo, s.cases["D"])
    s.referrals["D1"] = refer(s, "D", "clinic", "housing", due_in_h=16)  # due 03-03 00:00
    at(world, END_OF_MARCH_1 + timedelta(hours=23, minutes=59))
    s.referrals["A1"] = refer(s, "A", "clinic", "health_psychosocial")  # in time, just
    at(world, END_OF_MARCH_1 + timedelta(hours=24, minutes=1))
    s.referrals["B1"] = refer(s, "B", "clinic", "health_psychosocial")  # late, just
    at(world, datetime(2027, 3, 4, 9, 0, tzinfo=UTC))
    ngo.ok("consent.withdrawn", s.cases["A"], {"consent_id": s.consents["A"]},
           {"reason": "survivor_request"})  # fmt: skip
    at(world, datetime(2027, 3, 5, 9, 0, tzinfo=UTC))
    answer(s, shelter, "C", "C2", "completed")
    at(world, datetime(2027, 3, 6, 9, 0, tzinfo=UTC))
    ngo.ok("case.closed", s.cases["C"], {}, {"reason": "services_completed"})
    at(world, datetime(2027, 3, 15, 9, 0, tzinfo=UTC))  # B's consent expired on the 10th
    return s


def figures(s: Scenario, agency: Agency | None = None, **query: str) -> dict[str, Any]:
    agency = agency or s.ngo
    r = s.world.http.get(f"/v1/agencies/{agency.id}/indicators", params=MARCH | query,
                         headers=agency.auth("supervisor"))  # fmt: skip
    assert r.status_code == 200, r.text
    return dict(r.json())


def hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def component(data: dict[str, Any], name: str) -> dict[str, Any]:
    (row,) = [r for r in data["referrals"]["by_component"] if r["component"] == name]
    return dict(row)


def test_celerity_counts_the_24_hours_from_the_end_of_the_identification_day(
    scenario: Scenario,
) -> None:
    data = figures(scenario)
    c = data["celerity"]
    # Identified in March: A, B, C, D (E was identified in February). A's first care came
    # 23 h 59 min after the end of its day, B's 24 h 01 min, C's on the day itself (0),
    # D has none.
    waits = [hours(timedelta(hours=23, minutes=59)), hours(timedelta(hours=24, minutes=1)), 0.0]
    assert (c["identified"], c["in_time"], c["late"], c["no_care_yet"]) == (4, 2, 1, 1)
    assert c["share_in_time"] == 0.5
    assert c["median_hours"] == pytest.approx(statistics.median(waits), abs=0.01)
    (march,) = c["by_month"]
    assert march["month"] == "2027-03" and march["identified"] == 4
    february = figures(scenario, **{"from": "2027-02", "to": "2027-02"})["celerity"]
    # E: identified on 27 February, first care on 1 March 10:30: 10.5 h past its deadline.
    assert (february["identified"], february["in_time"], february["late"]) == (1, 0, 1)
    assert february["median_hours"] == pytest.approx(24 + 10.5, abs=0.01)


def test_referrals_by_component_outcome_time_to_answer_and_overdue_now(scenario: Scenario) -> None:
    data = figures(scenario)
    r = data["referrals"]
    assert (r["made"], r["open"]) == (6, 4)  # C1, E1, C2, D1, A1, B1; open: E1 D1 A1 B1
    health = component(data, "health_psychosocial")
    counted = ("made", "pending", "accepted", "declined", "completed", "open")
    assert [health[k] for k in counted] == [5, 3, 0, 1, 1, 3]
    # A health referral is due by the health deadline at the latest: A1, B1 and E1 are past
    # theirs on 15 March; D1 (housing) was due on 3 March.
    assert health["overdue_now"] == 3 and component(data, "housing")["overdue_now"] == 1
    assert r["overdue_now"] == 4
    assert health["median_hours_to_answer"] == 2.0  # C1 declined and C2 accepted, 2 h each
    assert r["declined_by_reason"] == [{"reason": "no_capacity", "declined": 1}]
    only = figures(scenario, component="housing")["referrals"]
    assert (only["made"], [row["component"] for row in only["by_component"]]) == (1, ["housing"])
    received = figures(scenario, scenario.clinic, direction="received")["referrals"]
    assert received["made"] == 5  # C1, E1, D1, A1, B1 went to the clinic
    assert received["declined_by_reason"] == [{"reason": "no_capacity", "declined": 1}]


def test_consents_and_cases_by_month(scenario: Scenario) -> None:
    data = figures(scenario, **{"from": "2027-02", "to": "2027-04"})
    consents = {row["month"]: row for row in data["consents"]}
    assert [consents[m]["granted"] for m in ("2027-02", "2027-03", "2027-04")] == [0, 5, 0]
    assert consents["2027-03"]["withdrawn"] == 1 and consents["2027-03"]["expired"] == 1
    cases = {row["month"]: row for row in data["cases"]}
    assert (cases["2027-03"]["opened"], cases["2027-03"]["closed"]) == (5, 1)
    assert cases["2027-02"]["opened"] == 0  # E counts where it was opened, not identified


def test_an_erased_case_leaves_every_figure_at_once(scenario: Scenario) -> None:
    before = figures(scenario)
    assert component(before, "housing")["made"] == 1
    assert erase(scenario.world, scenario.cases["D"], "ngo").status_code == 201
    after = figures(scenario)
    assert (after["celerity"]["identified"], after["celerity"]["no_care_yet"]) == (3, 0)
    assert [r["component"] for r in after["referrals"]["by_component"]] == ["health_psychosocial"]
    assert {row["month"]: row for row in after["cases"]}["2027-03"]["opened"] == 4
    # The clinic confirms the erasure on the erased case (the one event it still takes): the
    # case does not come back into any figure.
    (told,) = [n for n in scenario.world.ledger.store.notices("clinic", 0, 1000)
               if n.kind == "case.erased"]  # fmt: skip
    ack = {"position": told.position, "kind": "case.erased", "action": "deleted",
           "legal_basis": None}  # fmt: skip
    scenario.clinic.ok("notice.acknowledged", scenario.cases["D"], ack, {})
    assert figures(scenario) == after | {"computed_at": figures(scenario)["computed_at"]}


def test_only_the_agencys_own_supervisors_read_its_indicators(scenario: Scenario) -> None:
    world, url = scenario.world, f"/v1/agencies/{scenario.ngo.id}/indicators"
    monitor = {"Authorization": f"Bearer {world.token('monitor')}"}
    auditor = {"Authorization": f"Bearer {world.token('auditor')}"}
    for headers in (
        scenario.ngo.auth("caseworker"),
        scenario.clinic.auth("supervisor"),
        monitor,
        auditor,
        world.admin_auth,
    ):
        r = world.http.get(url, headers=headers)
        assert r.status_code == 403, r.text
        assert scenario.cases["A"] not in r.text
    assert world.http.get(url).status_code == 401
    sup = scenario.ngo.auth("supervisor")
    for bad in ({"from": "2027-13"}, {"to": "26-03"}, {"component": "nope"},
                {"direction": "sideways"}):  # fmt: skip
        assert world.http.get(url, params=bad, headers=sup).status_code == 400, bad
    backwards = world.http.get(url, params={"from": "2027-04", "to": "2027-03"}, headers=sup)
    assert backwards.status_code == 400 and "start is after its end" in backwards.text
    long = world.http.get(url, params={"from": "2000-01", "to": "2027-03"}, headers=sup)
    assert long.status_code == 400


def test_the_answer_names_no_case(scenario: Scenario) -> None:
    text = scenario.world.http.get(
        f"/v1/agencies/{scenario.ngo.id}/indicators", params=MARCH,
        headers=scenario.ngo.auth("supervisor"),
    ).text  # fmt: skip
    for ids in (scenario.cases, scenario.consents, scenario.referrals):
        assert not any(i in text for i in ids.values())
