"""POST /v1/events through the real app on both backends: refusal order, gates, permissions."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest

from ledger.contract import crypto
from ledger.contract.vocabulary import format_timestamp
from tests.conftest import CONSENT_ATTRS, OPENED_ATTRS, World


def new() -> str:
    return str(uuid.uuid4())


def log_size(world: World) -> int:
    return world.ledger.store.log_size()


def resign(world: World, body: dict[str, Any], key: crypto.SigningKey) -> dict[str, Any]:
    """Re-sign an edited envelope so only the edit under test is wrong."""
    from ledger.contract.canonical import signing_input

    body["signature"] = crypto.b64(crypto.sign(key, signing_input(body["envelope"])))
    return body


# --- answers ---------------------------------------------------------------------------------


def test_accepted_event_answers_position_version_and_leaf_hash(world: World) -> None:
    ngo = world.agency("ngo-a")
    before = log_size(world)
    case_id = new()
    r = ngo.submit("case.opened", case_id, {"minor": False}, OPENED_ATTRS)
    assert r.status_code == 201, r.text
    answer = r.json()
    assert set(answer) == {"event_id", "case_id", "index", "case_version", "leaf_hash", "entry"}
    assert answer["index"] == before and answer["case_version"] == 1
    ((position, entry),) = world.ledger.store.entries(before, before + 1)
    from ledger.log.merkle import leaf_hash

    assert crypto.b64(leaf_hash(entry)) == answer["leaf_hash"]
    parsed = json.loads(entry)
    assert parsed["kind"] == "event" and parsed["role"] == "caseworker"
    # The answer names what the ledger added to the entry: the agency can rebuild its bytes.
    assert answer["entry"] == {
        k: parsed[k] for k in ("sealed_digest", "actor", "role", "recorded_at")
    }
    assert parsed["envelope"]["case_id"] == case_id
    second = ngo.ok(
        "age.assessed", case_id, {"minor": False}, {"age_band": "adult", "method": "document"}
    )
    assert second["case_version"] == 2 and second["index"] == before + 1


def test_identical_retry_gets_the_original_answer_even_after_the_freshness_window(
    world: World,
) -> None:
    ngo = world.agency("ngo-a")
    body = ngo.body("case.opened", new(), {"minor": False}, OPENED_ATTRS, {"notes": "n"})
    first = ngo.post(body)
    assert first.status_code == 201
    size = log_size(world)
    world.clock.advance(hours=2)
    again = ngo.post(body)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert log_size(world) == size


# --- 1. authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
def test_missing_or_bad_token_is_401_before_anything_else(world: World, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    r = world.http.post("/v1/events", content=b"{not json", headers=headers)
    assert r.status_code == 401
    assert world.http.get(f"/v1/cases/{new()}", headers=headers).status_code == 401


# --- 2. malformed ----------------------------------------------------------------------------


def test_malformed_body_is_400_even_for_an_unknown_case(world: World) -> None:
    ngo = world.agency("ngo-a")
    for raw in (b"{not json", b'{"envelope": 1, "envelope": 2}', b"[]", b""):
        r = world.http.post("/v1/events", content=raw, headers=ngo.auth())
        assert r.status_code == 400, raw
    body = ngo.body("consent.withdrawn", new(), {"consent_id": new()}, {"reason": "other"})
    body["envelope"]["v"] = 2
    assert ngo.post(body).status_code == 400
    body["envelope"]["v"] = 1
    body["envelope"]["type"] = "case.reopened"
    assert ngo.post(body).status_code == 400
    body["envelope"]["type"] = "consent.withdrawn"
    body["extra"] = True
    assert ngo.post(body).status_code == 400


# --- 3. unknown to the caller ----------------------------------------------------------------


def test_unknown_case_is_404_before_signature_checks(world: World) -> None:
    ngo = world.agency("ngo-a")
    body = ngo.body("consent.withdrawn", new(), {"consent_id": new()}, {"reason": "other"})
    body["signature"] = crypto.b64(bytes(64))
    assert ngo.post(body).status_code == 404


def test_unrelated_agency_gets_404_for_an_existing_case(world: World) -> None:
    ngo, other = world.agency("ngo-a"), world.agency("ngo-b")
    case_id = ngo.open_case()
    r = other.submit("case.closed", case_id, {}, {"reason": "other"})
    assert r.status_code == 404
    assert other.read(case_id).status_code == 404
    # the same answer as for a case that does not exist at all
    assert other.read(new()).json()["message"] == other.read(case_id).json()["message"]


def test_reopening_a_used_case_id_is_404_if_unrelated_and_409_if_related(world: World) -> None:
    ngo, other = world.agency("ngo-a"), world.agency("ngo-b")
    case_id = ngo.open_case()
    size = log_size(world)
    assert other.submit("case.opened", case_id, {"minor": False}, OPENED_ATTRS).status_code == 404
    assert ngo.submit("case.opened", case_id, {"minor": False}, OPENED_ATTRS).status_code == 409
    assert log_size(world) == size


def test_auditor_monitor_and_admin_tokens_read_no_case_data(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    for role in ("auditor", "monitor", "admin"):
        token = world.token(role)
        r = world.http.get(f"/v1/cases/{case_id}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403, role
        # the same answer for a case that does not exist: no existence is revealed
        other = world.http.get(f"/v1/cases/{new()}", headers={"Authorization": f"Bearer {token}"})
        assert other.status_code == 403 and other.json() == r.json()
    # even when such a token names an agency that holds the case
    token = world.token("auditor", "ngo-a")
    r = world.http.get(f"/v1/cases/{case_id}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403


# --- 4. erased -------------------------------------------------------------------------------


def erase(world: World, agency_id: str, case_id: str) -> dict[str, Any]:
    ngo = world.agencies[agency_id]
    req = ngo.ok(
        "erasure.requested", case_id, {}, {"reason": "survivor_request"}, role="supervisor"
    )
    second = world.token("supervisor", agency_id)
    body = ngo.body("case.erased", case_id, {"request_event_id": req["event_id"]}, {})
    r = world.http.post("/v1/events", json=body, headers={"Authorization": f"Bearer {second}"})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_erased_case_answers_410_to_related_and_404_to_unrelated(world: World) -> None:
    ngo, other = world.agency("ngo-a"), world.agency("ngo-b")
    case_id = ngo.open_case(payload={"identity": {"name": "N"}})
    erase(world, "ngo-a", case_id)
    body = ngo.body("case.closed", case_id, {}, {"reason": "other"})
    body["signature"] = crypto.b64(bytes(64))  # 410 comes before signature checks
    assert ngo.post(body).status_code == 410
    read = ngo.read(case_id)
    assert read.status_code == 410
    assert read.json()["erased_at"]
    assert other.read(case_id).status_code == 404
    assert other.submit("case.closed", case_id, {}, {"reason": "other"}).status_code == 404


# --- 6. verification ---------------------------------------------------------------------------


def test_bad_signature_origin_key_and_freshness_are_422(world: World) -> None:
    ngo, other = world.agency("ngo-a"), world.agency("ngo-b")
    case_id = ngo.open_case()
    facts, attrs = {"minor": False}, {"age_band": "adult", "method": "interview"}

    body = ngo.body("age.assessed", case_id, facts, attrs)
    body["signature"] = crypto.b64(crypto.sign(other.key, b"something else"))
    assert ngo.post(body).status_code == 422

    body = ngo.body("age.assessed", case_id, facts, attrs)
    body["envelope"]["log"] = "elsewhere.example/log"
    assert ngo.post(resign(world, body, ngo.key)).status_code == 422

    # a key that is registered, but to another agency
    body = ngo.body("age.assessed", case_id, facts, attrs)
    body["envelope"]["key"] = other.key.verify_key.key_id
    assert ngo.post(resign(world, body, other.key)).status_code == 422

    # a key nobody registered
    rogue = crypto.generate_signing_key("ngo-a")
    body = ngo.body("age.assessed", case_id, facts, attrs)
    body["envelope"]["key"] = rogue.verify_key.key_id
    assert ngo.post(resign(world, body, rogue)).status_code == 422

    for seconds in (-301, 301):
        world.clock.advance(seconds=seconds)
        stale = ngo.body("age.assessed", case_id, facts, attrs)
        world.clock.advance(seconds=-seconds)
        r = ngo.post(stale)
        assert r.status_code == 422, r.text
        assert "clock" in r.json()["message"]

    body = ngo.body("age.assessed", case_id, facts, attrs)
    body["attrs"]["method"] = "medical"  # changed after signing: digest mismatch
    assert ngo.post(body).status_code == 422

    body = ngo.body("age.assessed", case_id, facts, attrs)
    body["salt"] = body["salt"].rstrip("=")
    assert ngo.post(body).status_code == 422


def test_signature_failure_comes_before_event_id_conflict(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    first = ngo.ok("case.closed", case_id, {}, {"reason": "other"})
    body = ngo.body(
        "case.closed", case_id, {}, {"reason": "lost_contact"}, event_id=first["event_id"]
    )
    assert ngo.post(body).status_code == 409
    body["signature"] = crypto.b64(bytes(64))
    assert ngo.post(body).status_code == 422


# --- 7, 8, 9 ----------------------------------------------------------------------------------


def test_event_id_reused_with_other_content_is_409_before_invalid_facts(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    first = ngo.ok("case.closed", case_id, {}, {"reason": "other"})
    body = ngo.body(
        "case.closed", case_id, {"bogus": 1}, {"reason": "other"}, event_id=first["event_id"]
    )
    assert ngo.post(body).status_code == 409


def test_invalid_facts_and_unknown_references_are_422_before_permission(world: World) -> None:
    ngo, other = world.agency("ngo-a"), world.agency("ngo-b")
    case_id = ngo.open_case()
    auditor = world.token("auditor")
    body = ngo.body("case.closed", case_id, {"bogus": 1}, {"reason": "other"})
    # step 3 runs for the auditor's (empty) agency first: use the holder's token with bad facts
    assert ngo.post(body).status_code == 422
    share = ngo.body(
        "data.shared",
        case_id,
        {
            "share_id": new(),
            "recipient": "ngo-b",
            "consent_id": new(),
            "purpose": "data_sharing",
            "categories": ["identity"],
        },
        {},
    )
    assert ngo.post(share).status_code == 422  # unknown consent, not 403
    # Another agency's caseworker: step 8 (the facts) before step 9 (agency).
    opened = ngo.body("case.opened", new(), {"minor": True}, OPENED_ATTRS)  # adult but minor
    assert world.http.post("/v1/events", json=opened, headers=other.auth()).status_code == 422
    # Roles that never append are refused before the body is read (issue 15): 403 for them.
    r = world.http.post("/v1/events", json=opened, headers={"Authorization": f"Bearer {auditor}"})
    assert r.status_code == 403


def test_roles_that_never_append_are_403(world: World) -> None:
    ngo = world.agency("ngo-a")
    for role in ("auditor", "monitor", "admin"):
        token = world.token(role)
        body = ngo.body("case.opened", new(), {"minor": False}, OPENED_ATTRS)
        r = world.http.post("/v1/events", json=body, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403, role


def test_token_of_one_agency_cannot_append_for_another(world: World) -> None:
    ngo, other = world.agency("ngo-a"), world.agency("ngo-b")
    body = other.body("case.opened", new(), {"minor": False}, OPENED_ATTRS)
    size = log_size(world)
    assert ngo.post(body).status_code == 403
    assert log_size(world) == size


def test_a_refused_new_case_leaves_no_key_and_no_entry(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = new()
    size = log_size(world)
    token = world.token("monitor")
    body = ngo.body("case.opened", case_id, {"minor": False}, OPENED_ATTRS)
    r = world.http.post("/v1/events", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert log_size(world) == size
    assert world.ledger.keys.get(case_id) is None
    assert world.ledger.cases.load(case_id) is None


# --- append permissions ----------------------------------------------------------------------


def test_only_holders_append_and_a_referral_recipient_becomes_one_by_accepting(
    world: World,
) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    # related (named in a consent) but not a holder
    assert clinic.submit("case.closed", case_id, {}, {"reason": "other"}).status_code == 403
    assert (
        clinic.submit(
            "consent.granted",
            case_id,
            {
                "consent_id": new(),
                "purposes": ["referral"],
                "recipients": ["clinic"],
                "categories": ["health"],
                "expires_at": None,
                "given_by": "survivor",
                "child_assent": None,
                "assent_exempt": False,
            },
            CONSENT_ATTRS,
        ).status_code
        == 403
    )
    referral = new()
    ngo.ok(
        "referral.made",
        case_id,
        {"referral_id": referral, "to": "clinic", "consent_id": consent, "categories": ["health"]},
        {
            "component": "health_psychosocial",
            "due_by": format_timestamp(world.clock.now),
            "urgency": "urgent",
        },
    )
    # only the referral's recipient answers it
    assert (
        ngo.submit(
            "referral.accepted", case_id, {"referral_id": referral}, {"reason": None}
        ).status_code
        == 403
    )
    clinic.ok("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    assert (
        clinic.submit(
            "referral.accepted", case_id, {"referral_id": referral}, {"reason": None}
        ).status_code
        == 422
    )  # already accepted
    clinic.ok(
        "service.delivered",
        case_id,
        {"referral_id": referral},
        {"component": "health_psychosocial"},
    )
    clinic.ok("referral.completed", case_id, {"referral_id": referral}, {"reason": None})


def test_erasure_needs_two_different_supervisors(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    assert (
        ngo.submit("erasure.requested", case_id, {}, {"reason": "survivor_request"}).status_code
        == 403
    )  # caseworker
    req = ngo.ok(
        "erasure.requested", case_id, {}, {"reason": "survivor_request"}, role="supervisor"
    )
    facts = {"request_event_id": req["event_id"]}
    assert ngo.submit("case.erased", case_id, facts, {}).status_code == 403  # caseworker
    assert ngo.submit("case.erased", case_id, facts, {}, role="supervisor").status_code == 403
    assert (
        ngo.submit(
            "case.erased", case_id, {"request_event_id": new()}, {}, role="supervisor"
        ).status_code
        == 422
    )
    answer = erase_second(world, ngo.id, case_id, facts)
    assert answer["case_version"] == 4 - 1


def erase_second(world: World, agency: str, case_id: str, facts: dict[str, Any]) -> dict[str, Any]:
    second = world.token("supervisor", agency)
    body = world.agencies[agency].body("case.erased", case_id, facts, {})
    r = world.http.post("/v1/events", json=body, headers={"Authorization": f"Bearer {second}"})
    assert r.status_code == 201, r.text
    return dict(r.json())


# --- consent gates -------------------------------------------------------------------------


def test_share_is_refused_unless_a_consent_covers_recipient_purpose_and_categories(
    world: World,
) -> None:
    ngo, legal = world.agency("ngo-a"), world.agency("legal")
    world.agency("clinic")
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"], categories=["identity", "health"])
    size = log_size(world)
    assert ngo.share(case_id, "legal", consent).status_code == 403  # not named
    assert ngo.share(case_id, "clinic", consent, ["location"]).status_code == 403  # category
    assert ngo.share(case_id, "clinic", consent, purpose="prosecution").status_code == 403
    assert log_size(world) == size
    assert ngo.share(case_id, "clinic", consent, ["identity", "health"]).status_code == 201
    referral_only = ngo.grant(case_id, ["legal"], purposes=["referral"])
    assert ngo.share(case_id, "legal", referral_only).status_code == 403  # no data_sharing
    sharing_only = ngo.grant(case_id, ["legal"], purposes=["data_sharing"])
    r = ngo.submit(
        "referral.made",
        case_id,
        {
            "referral_id": new(),
            "to": "legal",
            "consent_id": sharing_only,
            "categories": ["identity"],
        },
        {"component": "justice_reparation", "due_by": "2030-01-01T00:00:00Z", "urgency": "routine"},
    )
    assert r.status_code == 403  # no referral purpose
    assert legal.read(case_id).status_code == 403  # named, but nothing was sent to it yet
    assert ngo.share(case_id, "legal", sharing_only).status_code == 201
    assert legal.read(case_id).status_code == 200


def test_withdrawal_and_expiry_cut_shares_and_reads(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case(
        payload={"identity": {"name": "A"}, "health": {"h": 1}, "location": {"shelter": "S"}}
    )
    consent = ngo.grant(case_id, ["clinic"], categories=["identity", "health"])
    assert ngo.share(case_id, "clinic", consent, ["identity", "health"]).status_code == 201
    view = clinic.read(case_id)
    assert view.status_code == 200
    assert set(view.json()["payload"]) == {"identity", "health"}
    ngo.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "survivor_request"})
    assert clinic.read(case_id).status_code == 403
    assert ngo.share(case_id, "clinic", consent).status_code == 403
    expiring = ngo.grant(
        case_id, ["clinic"], expires_at=format_timestamp(world.clock.now.replace(year=2099))
    )
    assert clinic.read(case_id).status_code == 403  # a new consent sends nothing by itself
    assert ngo.share(case_id, "clinic", expiring).status_code == 201
    assert clinic.read(case_id).status_code == 200
    world.clock.now = world.clock.now.replace(year=2100)
    assert clinic.read(case_id).status_code == 403
    assert ngo.share(case_id, "clinic", expiring).status_code == 403


@pytest.mark.parametrize(
    ("age_band", "facts", "allowed"),
    [
        ("unknown", {"given_by": "survivor"}, False),
        ("12-14", {"given_by": "survivor"}, False),
        ("12-14", {"given_by": "guardian", "child_assent": True}, True),
        ("12-14", {"given_by": "guardian_ad_litem", "child_assent": True}, True),
        ("12-14", {"given_by": "guardian", "child_assent": False}, False),
        ("12-14", {"given_by": "guardian", "child_assent": None, "assent_exempt": True}, False),
        ("0-5", {"given_by": "guardian", "child_assent": None, "assent_exempt": True}, True),
        ("0-5", {"given_by": "survivor", "child_assent": None, "assent_exempt": True}, False),
        ("unknown", {"given_by": "guardian_ad_litem", "child_assent": True}, True),
        ("adult", {"given_by": "survivor"}, True),
    ],
)
def test_children_and_unknown_age_need_guardian_consent_with_assent(
    world: World, age_band: str, facts: dict[str, Any], allowed: bool
) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case(age_band, payload={"identity": {"n": 1}})
    assenting = facts.get("child_assent") is True or facts.get("assent_exempt")
    if age_band != "adult" and (facts["given_by"] == "survivor" or not assenting):
        # (v1.5) A consent that could never count is refused when it is submitted, saying why.
        base = {"consent_id": str(uuid.uuid4()), "purposes": ["data_sharing"],
                "recipients": ["clinic"], "categories": ["identity"], "expires_at": None,
                "given_by": "survivor", "child_assent": None, "assent_exempt": False}  # fmt: skip
        refused = ngo.submit("consent.granted", case_id, base | facts, CONSENT_ATTRS)
        assert refused.status_code == 403 and "never count" in refused.json()["message"]
        assert not allowed
        return
    consent = ngo.grant(case_id, ["clinic"], **facts)
    assert ngo.share(case_id, "clinic", consent).status_code == (201 if allowed else 403)
    assert clinic.read(case_id).status_code == (200 if allowed else 403)


def test_age_assessment_changes_which_consents_count(world: World) -> None:
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    case_id = ngo.open_case("unknown")
    guardian = ngo.grant(case_id, ["clinic"], given_by="guardian", child_assent=True)
    assert ngo.share(case_id, "clinic", guardian).status_code == 201
    ngo.ok("age.assessed", case_id, {"minor": False}, {"age_band": "adult", "method": "document"})
    consent = ngo.grant(case_id, ["clinic"])  # an adult's own (refused before: v1.5)
    assert ngo.share(case_id, "clinic", consent).status_code == 201
    exempt = ngo.grant(case_id, ["clinic"], given_by="guardian", assent_exempt=True)
    ngo.ok("age.assessed", case_id, {"minor": True}, {"age_band": "6-11", "method": "medical"})
    assert ngo.share(case_id, "clinic", exempt).status_code == 403  # exemption only under 6
    ngo.ok("age.assessed", case_id, {"minor": True}, {"age_band": "0-5", "method": "medical"})
    assert ngo.share(case_id, "clinic", exempt).status_code == 201


# --- reads ---------------------------------------------------------------------------------


def test_every_read_is_logged_with_the_categories_unsealed(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case(payload={"identity": {"n": 1}, "location": {"s": 2}})
    consent = ngo.grant(case_id, ["clinic"], categories=["identity"])
    assert ngo.share(case_id, "clinic", consent, ["identity"]).status_code == 201
    size = log_size(world)
    view = clinic.read(case_id).json()
    assert view["payload"] == {"identity": {"n": 1}}
    assert view["attrs"]["gender"] == "female" and view["status"] == "open"
    ((_, entry),) = world.ledger.store.entries(size, size + 1)
    access = json.loads(entry)
    assert access["kind"] == "access" and access["agency"] == "clinic"
    assert access["categories"] == ["identity"] and access["case_id"] == case_id
    holder_view = ngo.read(case_id).json()
    assert set(holder_view["payload"]) == {"identity", "location"}


def test_later_payload_replaces_earlier_values_per_category(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case(payload={"contact": {"phone": "1"}, "notes": "first"})
    ngo.ok(
        "service.delivered",
        case_id,
        {"referral_id": None},
        {"component": "housing"},
        {"contact": {"phone": "2"}},
    )
    assert ngo.read(case_id).json()["payload"] == {"contact": {"phone": "2"}, "notes": "first"}


def test_openapi_schema_lists_every_event_type_and_enumeration(world: World) -> None:
    schema = world.http.get("/openapi.json").json()
    assert len(schema["x-event-types"]) == 18  # (v1.2: notice.acknowledged)
    text = json.dumps(schema)
    for value in ("guardian_ad_litem", "health_psychosocial", "forced_criminality", "0-5"):
        assert value in text
    body = copy.deepcopy(schema["components"]["schemas"]["SubmissionDoc"])
    assert set(body["properties"]) == {"envelope", "attrs", "payload", "salt", "signature"}


# --- races and findings of the security review --------------------------------------------


def test_a_referral_cannot_be_accepted_after_its_consent_is_withdrawn(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case(payload={"identity": {"n": 1}, "location": {"shelter": "S"}})
    consent = ngo.grant(case_id, ["clinic"], categories=["health"])
    referral = new()
    ngo.ok(
        "referral.made",
        case_id,
        {"referral_id": referral, "to": "clinic", "consent_id": consent, "categories": ["health"]},
        {"component": "health_psychosocial", "due_by": "2030-01-01T00:00:00Z", "urgency": "urgent"},
    )
    ngo.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "survivor_request"})
    r = clinic.submit("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    assert r.status_code == 403
    assert clinic.read(case_id).status_code == 403  # never became a holder
    declined = clinic.submit(
        "referral.declined", case_id, {"referral_id": referral}, {"reason": "no_capacity"}
    )
    assert declined.status_code == 201  # declining needs no consent


def test_data_shared_with_a_payload_is_refused(world: World) -> None:
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    case_id = ngo.open_case(payload={"health": {"h": "original"}})
    consent = ngo.grant(case_id, ["clinic"])
    facts = {
        "share_id": new(),
        "recipient": "clinic",
        "consent_id": consent,
        "purpose": "data_sharing",
        "categories": ["health"],
    }
    r = ngo.submit("data.shared", case_id, facts, {}, {"health": {"h": "injected"}})
    assert r.status_code == 422
    assert ngo.read(case_id).json()["payload"]["health"] == {"h": "original"}


def test_an_event_racing_the_revocation_of_its_key_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    supervisor = world.ledger.authenticate(world.token("supervisor", "ngo-a"))
    real_append, fired = world.ledger.store.append, []

    def revoke_first(commit: Any) -> list[int]:
        if commit.signing_key and not fired:
            fired.append(1)
            world.ledger.revoke_key(supervisor, "ngo-a", ngo.key.verify_key.key_id, None)
        return real_append(commit)

    monkeypatch.setattr(world.ledger.store, "append", revoke_first)
    body = ngo.body("case.closed", case_id, {}, {"reason": "other"})
    size = world.ledger.store.log_size()
    response = ngo.post(body)
    # The commit lost to the revocation; decided again, the submission meets the revoked key.
    assert fired == [1]
    assert response.status_code == 422, response.text
    assert world.ledger.store.log_size() == size + 1  # the revocation entry only
    assert world.ledger.store.find_event(body["envelope"]["event_id"]) is None
    assert ngo.post(body).status_code == 422


def test_identical_submissions_at_once_get_one_201_and_otherwise_200(world: World) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    body = ngo.body("case.closed", case_id, {}, {"reason": "other"})
    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(lambda _: ngo.post(body).status_code, range(4)))
    assert statuses == [200, 200, 200, 201]


def test_stored_ciphertext_does_not_tell_which_categories_a_case_holds() -> None:
    from ledger.contract.canonical import canonical_fields
    from ledger.contract.sealing import seal_record

    key = crypto.new_data_key()
    health = canonical_fields({}, {"health": {"hiv": True}})
    immigration = canonical_fields({}, {"immigration": {"st": 1}})
    a = json.loads(seal_record(key, new(), new(), health, "s"))
    b = json.loads(seal_record(key, new(), new(), immigration, "s"))
    assert set(a["payload"]) == set(b["payload"])  # all ten, always
    assert [len(v) for v in a["payload"].values()] == [len(v) for v in b["payload"].values()]


def test_a_batch_answers_each_event_on_its_own_in_order(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = new()
    opened = ngo.body("case.opened", case_id, {"minor": False}, OPENED_ATTRS)
    forged = ngo.body("case.closed", case_id, {}, {"reason": "other"})
    forged["signature"] = crypto.b64(bytes(64))
    closed = ngo.body("case.closed", case_id, {}, {"reason": "other"})
    unknown = ngo.body("case.closed", new(), {}, {"reason": "other"})
    size = log_size(world)
    r = world.http.post(
        "/v1/events:batch",
        headers=ngo.auth(),
        json={"events": [opened, forged, closed, unknown, opened]},
    )
    assert r.status_code == 200, r.text
    statuses = [item["status"] for item in r.json()["results"]]
    assert statuses == [201, 422, 201, 404, 200]
    assert r.json()["results"][0]["body"]["case_version"] == 1
    assert r.json()["results"][2]["body"]["case_version"] == 2
    assert log_size(world) == size + 2  # refused items left nothing behind
    assert (
        world.http.post("/v1/events:batch", headers=ngo.auth(), json={"events": []}).status_code
        == 400
    )
    assert world.http.post("/v1/events:batch", json={"events": [opened]}).status_code == 401
