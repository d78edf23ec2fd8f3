"""Who may read and do what (issue 15): the agency that opened a case holds it; an agency that
accepts a referral reads the referral's categories while its consent counts and appends what
a service provider appends for that referral, nothing else; reads follow what a share or an
accepted referral actually sent, under a consent with a disclosing purpose. Through the real
API on both backends, and the audit re-checks the same rules from the cleartext facts.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ledger import audit
from ledger.contract import crypto
from ledger.contract.canonical import jcs
from ledger.contract.envelope import build_submission
from ledger.contract.vocabulary import format_timestamp
from ledger.log.merkle import leaf_hash
from ledger.storage.base import Commit, NewEntry
from tests.conftest import CONSENT_ATTRS, ORIGIN, Agency, World

PAYLOAD = {
    "identity": {"name": "IDENTITY-MARKER"},
    "location": {"shelter": "LOCATION-MARKER"},
    "health": {"notes": "HEALTH-MARKER"},
}


def new() -> str:
    return str(uuid.uuid4())


def refer(world: World, holder: Agency, case_id: str, to: str, consent_id: str,
          categories: list[str]) -> str:  # fmt: skip
    referral_id = new()
    holder.ok(
        "referral.made",
        case_id,
        {"referral_id": referral_id, "to": to, "consent_id": consent_id, "categories": categories},
        {
            "component": "health_psychosocial",
            "due_by": format_timestamp(world.clock.now),
            "urgency": "urgent",
        },
    )
    return referral_id


def health_referral(world: World, age_band: str = "adult") -> tuple[Agency, Agency, str, str, str]:
    """The field's most common flow: a shelter refers a survivor to a clinic for health care,
    under a consent that covers health only; the clinic accepts."""
    shelter, clinic = world.agency("shelter"), world.agency("clinic")
    world.agency("legal")
    case_id = shelter.open_case(age_band, payload=PAYLOAD)
    guardian = {} if age_band == "adult" else {"given_by": "guardian", "child_assent": True}
    consent = shelter.grant(
        case_id, ["clinic"], purposes=["referral"], categories=["health"], **guardian
    )
    referral = refer(world, shelter, case_id, "clinic", consent, ["health"])
    clinic.ok("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    return shelter, clinic, case_id, consent, referral


def status(agency: Agency, etype: str, case_id: str, facts: dict[str, Any],
           attrs: dict[str, Any], role: str = "caseworker") -> int:  # fmt: skip
    return int(agency.submit(etype, case_id, facts, attrs, role=role).status_code)


def consent_facts(recipients: list[str], **facts: Any) -> dict[str, Any]:
    return {
        "consent_id": new(),
        "purposes": ["referral", "data_sharing"],
        "recipients": recipients,
        "categories": ["identity", "location"],
        "expires_at": None,
        "given_by": "survivor",
        "child_assent": None,
        "assent_exempt": False,
    } | facts


@pytest.mark.regression("an accepted referral made the recipient a holder of the whole case")
def test_an_accepted_health_referral_reads_health_only(world: World) -> None:
    _shelter, clinic, case_id, _consent, _referral = health_referral(world)
    read = clinic.read(case_id)
    assert read.status_code == 200, read.text
    assert read.json()["payload"] == {"health": PAYLOAD["health"]}  # not identity, not location
    assert read.json()["attrs"]["gender"] == "female"
    cases = world.http.get("/v1/cases", headers=clinic.auth()).json()["cases"]
    assert [(c["case_id"], c["holder"], c["categories"]) for c in cases] == [
        (case_id, False, ["health"])
    ]
    assert (
        world.http.get(f"/v1/cases/{case_id}/disclosures", headers=clinic.auth()).status_code == 403
    )


@pytest.mark.regression("withdrawing the consent of an accepted referral changed nothing")
def test_withdrawing_the_referrals_consent_cuts_the_providers_reads_and_appends(
    world: World,
) -> None:
    shelter, clinic, case_id, consent, referral = health_referral(world)
    assert clinic.read(case_id).status_code == 200
    shelter.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "other"})
    assert clinic.read(case_id).status_code == 403
    register = world.http.get(f"/v1/cases/{case_id}/consents", headers=clinic.auth())
    assert register.status_code == 403
    cases = world.http.get("/v1/cases", headers=clinic.auth()).json()["cases"]
    assert cases[0]["categories"] == []
    delivered = {"referral_id": referral}
    assert status(clinic, "service.delivered", case_id, delivered, {"component": "housing"}) == 403
    # Closing out its own referral stays possible: it records what was done, discloses nothing.
    clinic.ok("referral.completed", case_id, {"referral_id": referral}, {"reason": None})


@pytest.mark.regression("a referral's recipient, once it accepted, could act as the holder")
def test_a_provider_appends_for_its_referral_and_nothing_else(world: World) -> None:
    shelter, clinic, case_id, consent, referral = health_referral(world, age_band="12-14")
    size = world.ledger.store.log_size()
    refused = [
        ("consent.granted", consent_facts(["legal"]), CONSENT_ATTRS, "caseworker"),
        ("consent.withdrawn", {"consent_id": consent}, {"reason": "other"}, "caseworker"),
        (
            "data.shared",
            {"share_id": new(), "recipient": "legal", "consent_id": consent,
             "purpose": "data_sharing", "categories": ["health"]},
            {},
            "caseworker",
        ),  # fmt: skip
        (
            "referral.made",
            {"referral_id": new(), "to": "legal", "consent_id": consent, "categories": ["health"]},
            {"component": "health_psychosocial", "due_by": "2030-01-01T00:00:00Z",
             "urgency": "routine"},
            "caseworker",
        ),  # fmt: skip
        # marking a child's case adult would switch the guardian rule off
        ("age.assessed", {"minor": False}, {"age_band": "adult", "method": "interview"},
         "caseworker"),
        ("guardian.appointed", {"role": "guardian"}, {}, "caseworker"),
        ("case.closed", {}, {"reason": "other"}, "caseworker"),
        ("erasure.requested", {}, {"reason": "survivor_request"}, "supervisor"),
        # its appends must name its own accepted referral
        ("service.delivered", {"referral_id": None}, {"component": "health_psychosocial"},
         "caseworker"),
        ("feedback.recorded", {"referral_id": None}, {"rating": 5}, "caseworker"),
        ("plan.goal_set", {"goal_id": new(), "referral_id": None},
         {"component": "health_psychosocial", "status": "planned"}, "caseworker"),
    ]  # fmt: skip
    for etype, facts, attrs, role in refused:
        assert status(clinic, etype, case_id, facts, attrs, role) == 403, etype
    assert world.ledger.store.log_size() == size  # refusals leave no trace
    other = refer(world, shelter, case_id, "legal", shelter.grant(case_id, ["legal"],
                  given_by="guardian", child_assent=True), ["identity"])  # fmt: skip
    assert status(clinic, "service.delivered", case_id, {"referral_id": other},
                  {"component": "housing"}) == 403  # another agency's referral  # fmt: skip
    # What a service provider does for its referral.
    mine = {"referral_id": referral}
    clinic.ok("service.delivered", case_id, mine, {"component": "health_psychosocial"})
    clinic.ok("feedback.recorded", case_id, mine, {"rating": 4})
    goal = new()
    clinic.ok("plan.goal_set", case_id, {"goal_id": goal, "referral_id": referral},
              {"component": "health_psychosocial", "status": "planned"})  # fmt: skip
    clinic.ok("plan.goal_updated", case_id, {"goal_id": goal},
              {"component": "health_psychosocial", "status": "achieved"})  # fmt: skip
    holders_goal = new()
    shelter.ok("plan.goal_set", case_id, {"goal_id": holders_goal, "referral_id": None},
               {"component": "housing", "status": "planned"})  # fmt: skip
    assert status(clinic, "plan.goal_updated", case_id, {"goal_id": holders_goal},
                  {"component": "housing", "status": "dropped"}) == 403  # fmt: skip
    clinic.ok("referral.completed", case_id, mine, {"reason": None})
    assert status(clinic, "service.delivered", case_id, mine, {"component": "housing"}) == 403
    assert run_audit(world).ok


@pytest.mark.regression("a consent for statistics naming a prosecutor let it unseal the case")
@pytest.mark.parametrize(
    "purposes", [["statistics"], ["prosecution"], ["statistics", "prosecution"]]
)
def test_a_consent_without_a_disclosing_purpose_grants_no_read(
    world: World, purposes: list[str]
) -> None:
    ngo, prosecutor = world.agency("ngo-a"), world.agency("prosecutor")
    case_id = ngo.open_case(payload=PAYLOAD)
    consent = ngo.grant(case_id, ["prosecutor"], purposes=purposes)
    assert prosecutor.read(case_id).status_code == 403  # related (named), reads nothing
    assert (
        world.http.get(f"/v1/cases/{case_id}/consents", headers=prosecutor.auth()).status_code
        == 403
    )
    for purpose in ("data_sharing", *purposes):
        assert ngo.share(case_id, "prosecutor", consent, purpose=purpose).status_code == 403
    cases = world.http.get("/v1/cases", headers=prosecutor.auth()).json()["cases"]
    assert cases[0]["categories"] == []


@pytest.mark.regression("a named recipient read every consented category before any share")
def test_reads_follow_what_was_shared(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case(payload=PAYLOAD)
    consent = ngo.grant(case_id, ["clinic"], categories=["identity", "location", "health"])
    assert clinic.read(case_id).status_code == 403  # named by the consent, nothing sent
    assert ngo.share(case_id, "clinic", consent, ["identity"]).status_code == 201
    assert clinic.read(case_id).json()["payload"] == {"identity": PAYLOAD["identity"]}
    assert ngo.share(case_id, "clinic", consent, ["health"]).status_code == 201
    assert set(clinic.read(case_id).json()["payload"]) == {"identity", "health"}
    # A second consent that names the clinic for location sends nothing by itself.
    ngo.grant(case_id, ["clinic"], categories=["location"])
    assert set(clinic.read(case_id).json()["payload"]) == {"identity", "health"}
    assert run_audit(world).ok


@pytest.mark.regression("a pending referral's recipient could not see what it was asked to do")
def test_a_pending_referral_shows_its_recipient_the_referral_but_not_the_case(
    world: World,
) -> None:
    shelter, clinic = world.agency("shelter"), world.agency("clinic")
    case_id = shelter.open_case(payload=PAYLOAD)
    consent = shelter.grant(case_id, ["clinic"], purposes=["referral"], categories=["health"])
    refer(world, shelter, case_id, "clinic", consent, ["health"])
    assert clinic.read(case_id).status_code == 403  # nothing is sent before it accepts
    (item,) = world.http.get("/v1/referrals", headers=clinic.auth()).json()["referrals"]
    assert item["component"] == "health_psychosocial" and item["urgency"] == "urgent"
    shelter.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "other"})
    (item,) = world.http.get("/v1/referrals", headers=clinic.auth()).json()["referrals"]
    assert item["component"] is None  # its consent no longer counts: sealed again
    assert run_audit(world).ok


# --- the audit re-checks the same rules --------------------------------------------------------


def run_audit(world: World) -> audit.AuditReport:
    checkpoint = world.ledger.log.sign_checkpoint()
    entries = [e for _, e in world.ledger.store.entries(0, checkpoint.size)]
    log_key = crypto.parse_verify_key((world.settings.keys / "log.vkey").read_text())
    keys = {a.id: a.key.verify_key for a in world.agencies.values()}
    return audit.verify(checkpoint.note, entries, log_key, keys)


def inject_event(world: World, agency: Agency, etype: str, case_id: str,
                 facts: dict[str, Any]) -> int:  # fmt: skip
    """What a dishonest server (or an older one without the gates) could write: an event the
    agency really signed, appended without any check."""
    body = build_submission(agency.key, log=ORIGIN, case_id=case_id, type=etype, facts=facts,
                            signed_at=world.clock.now)  # fmt: skip
    entry = jcs({
        "kind": "event", "envelope": body["envelope"], "signature": body["signature"],
        "sealed_digest": crypto.b64(crypto.sha256(b"")), "actor": "tok_forged",
        "role": "caseworker", "recorded_at": format_timestamp(world.clock.now),
    })  # fmt: skip
    (position,) = world.ledger.store.append(
        Commit(entries=[NewEntry("event", entry, leaf_hash(entry), case_id, agency.id)])
    )
    return position


def inject_access(world: World, agency: Agency, case_id: str, categories: list[str]) -> int:
    entry = jcs({
        "kind": "access", "case_id": case_id, "agency": agency.id, "actor": "tok_forged",
        "categories": categories, "recorded_at": format_timestamp(world.clock.now),
    })  # fmt: skip
    (position,) = world.ledger.store.append(
        Commit(entries=[NewEntry("access", entry, leaf_hash(entry), case_id, agency.id)])
    )
    return position


@pytest.mark.regression("the audit accepted a referral recipient acting as a holder")
def test_the_audit_fails_a_providers_append_that_the_holder_alone_may_make(
    world: World,
) -> None:
    _shelter, clinic, case_id, _consent, _referral = health_referral(world, age_band="12-14")
    assert run_audit(world).ok
    position = inject_event(world, clinic, "age.assessed", case_id, {"minor": False})
    failure = run_audit(world).first_failure
    assert failure is not None and (failure.position, failure.check) == (position, "gates")


@pytest.mark.regression("the audit accepted reads of categories never sent to the reader")
def test_the_audit_fails_a_read_of_categories_never_sent(world: World) -> None:
    _shelter, clinic, case_id, _consent, _referral = health_referral(world)
    assert clinic.read(case_id).status_code == 200
    assert run_audit(world).ok
    position = inject_access(world, clinic, case_id, ["health", "location"])
    failure = run_audit(world).first_failure
    assert failure is not None and (failure.position, failure.check) == (position, "access")


@pytest.mark.regression("the audit accepted reads under a consent for statistics alone")
def test_the_audit_fails_a_read_under_a_statistics_consent(world: World) -> None:
    ngo, prosecutor = world.agency("ngo-a"), world.agency("prosecutor")
    case_id = ngo.open_case(payload=PAYLOAD)
    ngo.grant(case_id, ["prosecutor"], purposes=["statistics"])
    assert run_audit(world).ok
    position = inject_access(world, prosecutor, case_id, ["identity"])
    failure = run_audit(world).first_failure
    assert failure is not None and (failure.position, failure.check) == (position, "access")


# --- recipients must be registered, live agencies ------------------------------------------------


@pytest.mark.regression("a share to a typo of an agency id was accepted and waited for it")
def test_recipients_must_be_registered_live_agencies(world: World) -> None:
    ngo = world.agency("ngo-a")
    world.agency("clinic-north")
    gone = world.agency("gone")
    case_id = ngo.open_case(payload=PAYLOAD)
    consent = ngo.grant(case_id, ["clinic-north", "gone"])
    size = world.ledger.store.log_size()
    typo = consent_facts(["clinic-nort"])
    assert status(ngo, "consent.granted", case_id, typo, CONSENT_ATTRS) == 422
    assert ngo.share(case_id, "clinic-nort", consent).status_code == 422  # before 403
    r = ngo.submit(
        "referral.made",
        case_id,
        {"referral_id": new(), "to": "clinic-nort", "consent_id": consent,
         "categories": ["health"]},
        {"component": "health_psychosocial", "due_by": "2030-01-01T00:00:00Z",
         "urgency": "urgent"},
    )  # fmt: skip
    assert r.status_code == 422 and "not registered" in r.json()["message"]
    assert "clinic-nort" not in r.text  # the submitted id is not echoed
    assert world.ledger.store.log_size() == size
    removed = world.http.delete(f"/v1/agencies/{gone.id}", headers=world.admin_auth)
    assert removed.status_code == 200, removed.text
    assert ngo.share(case_id, "gone", consent).status_code == 422
    assert ngo.share(case_id, "clinic-north", consent).status_code == 201
    batch = world.http.post(
        "/v1/events:batch",
        json={"events": [ngo.body("data.shared", case_id, {
            "share_id": new(), "recipient": "gone", "consent_id": consent,
            "purpose": "data_sharing", "categories": ["identity"]}, {})]},
        headers=ngo.auth(),
    )  # fmt: skip
    assert batch.json()["results"][0]["status"] == 422
    # The registry entries say it too: the audit re-checks every named agency.
    assert run_audit(world).ok


@pytest.mark.regression("an agency removed between the decision and the commit still received")
@pytest.mark.parametrize("path", ["single", "batch"])
def test_a_recipient_removed_before_the_commit_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    ngo, gone = world.agency("ngo-a"), world.agency("gone")
    case_id = ngo.open_case(payload=PAYLOAD)
    consent = ngo.grant(case_id, ["gone"])
    store, looked_up = world.ledger.store, []
    real = store.live_agencies

    def removed_after_the_look_up(ids: Any) -> set[str]:
        live = real(ids)
        if not looked_up:  # the agency is removed right after the decision looked it up
            looked_up.append(1)
            assert world.http.delete(f"/v1/agencies/{gone.id}",
                                     headers=world.admin_auth).status_code == 200  # fmt: skip
        return live

    monkeypatch.setattr(store, "live_agencies", removed_after_the_look_up)
    size = store.log_size()
    body = ngo.body("data.shared", case_id, {
        "share_id": new(), "recipient": "gone", "consent_id": consent,
        "purpose": "data_sharing", "categories": ["identity"]}, {})  # fmt: skip
    if path == "single":
        assert ngo.post(body).status_code == 422
    else:
        r = world.http.post("/v1/events:batch", json={"events": [body]}, headers=ngo.auth())
        assert r.json()["results"][0]["status"] == 422
    assert looked_up == [1]
    revocations = store.log_size() - size  # the removal's key revocation, nothing else
    assert revocations == 1


# --- unrelated agencies cannot tell a case exists, by timing either --------------------------


def traced(world: World, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every look-up the ledger makes of cases and keys, with what it returned (sizes)."""
    calls: list[tuple[str, Any]] = []
    targets = [
        (world.ledger.cases, ("load", "load_many", "records")),
        (world.ledger.keys, ("get", "get_many")),
        (world.ledger.store, ("case_versions", "related", "events_after", "find_events")),
    ]
    for obj, names in targets:
        for name in names:
            real = getattr(obj, name)

            def spy(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
                result = _real(*args, **kw)
                size = len(result) if hasattr(result, "__len__") else result is not None
                calls.append((_name, size))
                return result

            monkeypatch.setattr(obj, name, spy)
    return calls


@pytest.mark.regression("the batch path loaded cases and unwrapped keys before step 3")
@pytest.mark.parametrize("path", ["batch", "single", "read"])
def test_an_unrelated_agency_costs_the_ledger_the_same_for_a_real_and_an_unused_case(
    world: World, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    ngo, outsider = world.agency("ngo-a"), world.agency("outsider")
    real_cases = [ngo.open_case(payload=PAYLOAD) for _ in range(5)]
    unused = [new() for _ in range(5)]
    world.ledger.cases.load(real_cases[0])  # one cached, as a busy server would have it

    def attempt(case_ids: list[str]) -> tuple[list[Any], list[tuple[str, Any]]]:
        with monkeypatch.context() as patch:
            calls = traced(world, patch)
            bodies = [outsider.body("service.delivered", c, {"referral_id": None},
                                    {"component": "housing"}) for c in case_ids]  # fmt: skip
            if path == "batch":
                r = world.http.post("/v1/events:batch", json={"events": bodies},
                                    headers=outsider.auth())  # fmt: skip
                answers = [(i["status"], i["body"]) for i in r.json()["results"]]
            elif path == "single":
                answers = [(r.status_code, r.json()) for r in map(outsider.post, bodies)]
            else:
                answers = [(r.status_code, r.json()) for r in map(outsider.read, case_ids)]
        return answers, calls

    real_answers, real_calls = attempt(real_cases)
    unused_answers, unused_calls = attempt(unused)
    assert {status for status, _ in real_answers} == {404}
    assert real_answers == unused_answers  # the same bodies too
    assert real_calls == unused_calls  # the same look-ups, each answering as much
    assert not any(name in ("load", "load_many", "get", "get_many", "records")
                   and size for name, size in real_calls)  # fmt: skip
