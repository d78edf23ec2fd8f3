"""Notices (the transactional outbox): each rule of who is told of what, recorded with the
event in its own transaction (a refused event leaves none), read by the agency told
(`GET /v1/notices`, paged by `seq`) and by the case's holder (`GET /v1/cases/{id}/notices`),
never rebuilt or repeated by a projections rebuild, and with nothing personal in them."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import World
from tests.test_erasure import erase
from tests.test_readmodels import refer

MARKER = "MARKER-notices"


def told(world: World, agency: str, after: int = 0) -> list[dict[str, Any]]:
    r = world.http.get(f"/v1/notices?after={after}", headers=world.agencies[agency].auth())
    assert r.status_code == 200, r.text
    return list(r.json()["notices"])


def kinds(world: World, agency: str) -> list[tuple[str, str | None]]:
    return [(n["kind"], n["subject"]) for n in told(world, agency)]


def test_each_rule_tells_exactly_the_agencies_it_names(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    world.agency("legal")
    world.agency("school")
    case_id = ngo.open_case(payload={"identity": {"name": MARKER}})
    consent = ngo.grant(case_id, ["clinic", "legal", "school"])
    assert told(world, "clinic") == []  # a consent naming an agency tells it nothing yet
    referral = refer(world, case_id, consent, "clinic", "health_psychosocial")
    share = ngo.share(case_id, "legal", consent)
    assert share.status_code == 201
    assert kinds(world, "clinic") == [("referral.made", referral)]
    ((kind, shared),) = kinds(world, "legal")
    assert kind == "data.shared" and shared is not None and uuid.UUID(shared)
    clinic.ok("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    clinic.ok("referral.completed", case_id, {"referral_id": referral}, {"reason": None})
    assert kinds(world, "ngo-a") == [
        ("referral.accepted", referral),
        ("referral.completed", referral),
    ]
    # Withdrawal: everyone who received data or a referral under it (not school, named only).
    ngo.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "survivor_request"})
    assert kinds(world, "clinic")[-1] == ("consent.withdrawn", consent)
    assert kinds(world, "legal")[-1] == ("consent.withdrawn", consent)
    assert told(world, "school") == []
    withdrawn = told(world, "clinic")[-1]
    assert withdrawn["acknowledge"] is True and "stop using" in withdrawn["ask"]
    # Erasure: the `notify` list, with the event's position.
    answer = erase(world, case_id).json()
    erased = [n for n in told(world, "clinic") if n["kind"] == "case.erased"]
    assert len(erased) == 1 and erased[0]["position"] == answer["index"]
    assert set(answer["notify"]) == {"clinic", "legal", "school"}
    assert [n["kind"] for n in told(world, "school")] == ["case.erased"]
    assert not [n for n in told(world, "ngo-a") if n["kind"] == "case.erased"]  # not itself


def test_a_referral_answer_tells_the_agency_that_made_it_and_nobody_else(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    referral = refer(world, case_id, consent, "clinic", "health_psychosocial")
    clinic.ok("referral.declined", case_id, {"referral_id": referral}, {"reason": "no_capacity"})
    assert kinds(world, "ngo-a") == [("referral.declined", referral)]
    assert kinds(world, "clinic") == [("referral.made", referral)]  # not of its own answer
    notice = told(world, "ngo-a")[0]
    assert notice["acknowledge"] is False and notice["case_id"] == case_id


def test_a_refused_event_leaves_no_notice(world: World) -> None:
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    world.agency("legal")
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    refused = ngo.share(case_id, "legal", consent)  # the consent does not name legal
    assert refused.status_code == 403
    assert told(world, "legal") == []
    with world.ledger.store._read() as cur:  # type: ignore[attr-defined]
        cur.execute(world.ledger.store.sql("SELECT COUNT(*) AS n FROM {s}notices"))  # type: ignore[attr-defined]
        assert int(cur.fetchone()["n"]) == 0


def test_an_agency_reads_its_own_notices_a_page_at_a_time(world: World) -> None:
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    world.agency("legal")
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic", "legal"])
    made = [refer(world, case_id, consent, "clinic", "education") for _ in range(5)]
    refer(world, case_id, consent, "legal", "justice_reparation")
    headers = world.agencies["clinic"].auth()
    seen, after = [], 0
    while True:
        page = world.http.get(f"/v1/notices?after={after}&limit=2", headers=headers).json()
        if not page["notices"]:
            assert page["next"] == after
            break
        seen += [n["subject"] for n in page["notices"]]
        after = page["next"]
    assert seen == made  # in commit order, none missed, none twice, only the clinic's
    for bad in ("after=-1", "limit=0", "limit=101"):
        assert world.http.get(f"/v1/notices?{bad}", headers=headers).status_code == 400
    auditor = {"Authorization": f"Bearer {world.token('auditor')}"}
    assert world.http.get("/v1/notices", headers=auditor).status_code == 403


def test_the_holder_sees_whom_each_notice_told(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    referral = refer(world, case_id, consent, "clinic", "health_psychosocial")
    r = world.http.get(f"/v1/cases/{case_id}/notices", headers=ngo.auth())
    assert r.status_code == 200
    assert [(n["agency"], n["kind"], n["subject"]) for n in r.json()["notices"]] == [
        ("clinic", "referral.made", referral)
    ]
    assert world.http.get(f"/v1/cases/{case_id}/notices", headers=clinic.auth()).status_code == 403


def test_a_projections_rebuild_makes_and_repeats_no_notice(world: World) -> None:
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    refer(world, case_id, consent, "clinic", "health_psychosocial")
    before = told(world, "clinic")
    assert world.models.runner.rebuild() > 0
    assert told(world, "clinic") == before


def test_no_notice_carries_personal_data(world: World) -> None:
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    case_id = ngo.open_case(payload={"identity": {"name": MARKER}, "notes": {"text": MARKER}})
    consent = ngo.grant(case_id, ["clinic"])
    refer(world, case_id, consent, "clinic", "health_psychosocial")
    ngo.share(case_id, "clinic", consent)
    ngo.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "survivor_request"})
    answer = world.http.get("/v1/notices", headers=world.agencies["clinic"].auth()).text
    assert len(told(world, "clinic")) == 3 and MARKER not in answer
    for field in ("es", "interpreter", "labour", "female", "2026-11-01"):  # sealed attrs
        assert f'"{field}"' not in answer
    with world.ledger.store._read() as cur:  # type: ignore[attr-defined]
        cur.execute(world.ledger.store.sql("SELECT * FROM {s}notices"))  # type: ignore[attr-defined]
        rows = [dict(r) for r in cur.fetchall()]
    assert rows and all(MARKER not in str(v) for row in rows for v in row.values())
