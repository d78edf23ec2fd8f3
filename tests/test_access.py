"""One access path (`ledger.services.access.CaseAccess`) for every read that unseals case data: the
case read, the consent register, the referral tracker and the consent receipts. A change
committed between loading the case and logging the read makes the read decide again on the
new state (never 500, never data past a withdrawal); one that keeps happening answers 409
`write_conflict`, which clients retry; no access entry is written for an answer not given.
Through the real API on both backends."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ledger.services import readmodels
from tests.conftest import World


def new() -> str:
    return str(uuid.uuid4())


def scenario(world: World) -> tuple[str, str, str]:
    """A case whose holder shared with a clinic and referred it (pending)."""
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    case_id = ngo.open_case(payload={"identity": {"n": 1}})
    consent = ngo.grant(case_id, ["clinic"])
    assert ngo.share(case_id, "clinic", consent).status_code == 201
    referral = new()
    ngo.ok(
        "referral.made",
        case_id,
        {"referral_id": referral, "to": "clinic", "consent_id": consent, "categories": ["health"]},
        {"component": "housing", "due_by": "2030-01-01T00:00:00Z", "urgency": "routine"},
    )
    return case_id, consent, referral


def append_before_logging(world: World, monkeypatch: pytest.MonkeyPatch, times: int,
                          body: Any = None) -> list[int]:  # fmt: skip
    """Commit an event to the case right before each of the next `times` access entries is
    made: the state the read decided on is then stale."""
    access, fired = world.ledger.access, []
    real = access._access

    def racing(principal: Any, case: Any, categories: Any, now: Any) -> Any:
        if len(fired) < times:
            ngo = world.agencies["ngo-a"]
            event = body or ngo.body("service.delivered", case.state.case_id,
                                     {"referral_id": None}, {"component": "housing"})  # fmt: skip
            fired.append(ngo.post(event).status_code)
        return real(principal, case, categories, now)

    monkeypatch.setattr(access, "_access", racing)
    return fired


def urls(case_id: str, consent: str) -> dict[str, str]:
    return {
        "case": f"/v1/cases/{case_id}",
        "consents": f"/v1/cases/{case_id}/consents",
        "referrals": "/v1/referrals",
        "receipt": f"/v1/cases/{case_id}/consents/{consent}/receipt?format=html",
    }


@pytest.mark.regression("a read racing a withdrawal returned data the withdrawal had cut")
def test_a_read_racing_a_withdrawal_never_returns_data_after_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id, consent, _ = scenario(world)
    ngo, clinic = world.agencies["ngo-a"], world.agencies["clinic"]
    withdrawal = ngo.body(
        "consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "survivor_request"}
    )
    fired = append_before_logging(world, monkeypatch, 1, withdrawal)
    assert clinic.read(case_id).status_code == 403
    assert fired == [201]


@pytest.mark.regression("the consent register and the referral tracker answered 500 on a race")
@pytest.mark.parametrize("read", ["case", "consents", "referrals", "receipt"])
def test_a_write_between_load_and_access_entry_is_decided_again(
    world: World, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    case_id, consent, _ = scenario(world)
    clinic = world.agencies["clinic"]
    url = urls(case_id, consent)[read]
    size = world.ledger.store.log_size()
    fired = append_before_logging(world, monkeypatch, 1)
    r = world.http.get(url, headers=clinic.auth())
    assert r.status_code == 200, r.text
    assert fired == [201]
    # One event appended by the race, one access entry for the answer given: none for the
    # answer decided on the stale state and thrown away.
    assert world.ledger.store.log_size() == size + 2


@pytest.mark.regression("a read that kept losing its race ended in a 500 or a final conflict")
@pytest.mark.parametrize("read", ["case", "consents", "referrals", "receipt"])
def test_a_read_that_keeps_losing_answers_write_conflict(
    world: World, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    case_id, consent, _ = scenario(world)
    clinic = world.agencies["clinic"]
    fired = append_before_logging(world, monkeypatch, 100)
    size = world.ledger.store.log_size()
    r = world.http.get(urls(case_id, consent)[read], headers=clinic.auth())
    assert r.status_code == 409 and r.json()["error"] == "write_conflict", r.text
    assert world.ledger.store.log_size() == size + len(fired)  # no access entry at all


@pytest.mark.regression("the referral tracker logged reads of answers it never delivered")
def test_the_referral_tracker_logs_nothing_when_its_answer_fails(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [scenario(world), scenario(world)]
    ngo = world.agencies["ngo-a"]
    for case_id, consent, _ in cases:  # health referrals: their deadline is computed
        ngo.ok(
            "referral.made",
            case_id,
            {"referral_id": new(), "to": "clinic", "consent_id": consent,
             "categories": ["health"]},
            {"component": "health_psychosocial", "due_by": "2030-01-01T00:00:00Z",
             "urgency": "urgent"},
        )  # fmt: skip
    assert world.http.get("/v1/referrals", headers=ngo.auth()).status_code == 200
    calls: list[str] = []
    real = readmodels.health_deadline

    def fail_on_the_second_case(identified_at: str) -> Any:
        calls.append(identified_at)
        if len(calls) == 2:
            raise RuntimeError("the server failed while building the answer")
        return real(identified_at)

    monkeypatch.setattr(readmodels, "health_deadline", fail_on_the_second_case)
    size = world.ledger.store.log_size()
    r = world.http.get("/v1/referrals", headers=ngo.auth())
    assert r.status_code == 500
    assert world.ledger.store.log_size() == size  # neither case's read was logged
