"""The authorisation matrix (issue 7): every endpoint × caller × relation to the case answers
the status `docs/authorization-matrix.csv` states, through the real app on both backends;
an unrelated agency cannot tell whether a case exists; refused requests leave no log entry;
the published `docs/authorization-matrix.md` is the rendering of that table.

The scenario is built once per module and backend; cells that succeed in changing something
get their own fresh referral, agency, key, token or period, so cells do not depend on order.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.contract import crypto
from ledger.contract.vocabulary import format_timestamp
from ledger.interop.consent_receipt import verify_consent_receipt
from tests import authz_table
from tests.authz_table import CALLERS, NOT_APPLICABLE, RELATIONS
from tests.conftest import (
    BACKENDS,
    CONSENT_ATTRS,
    OPENED_ATTRS,
    Agency,
    World,
    deployment,
    open_world,
)
from tests.test_erasure import receipt_key

ROLES = ("caseworker", "supervisor", "auditor", "monitor", "admin")
AGENCY_IDS = {r: f"{r}-ngo" for r in RELATIONS if r != "no agency"}


@dataclass
class CaseIds:
    case_id: str
    consent_id: str  # active; names shared, named, referred and accepted
    withdrawn_consent_id: str  # names withdrawn, whose referral was accepted before
    grant_code: str  # printed receipt code of the active consent's grant
    withdrawal_code: str  # ... and of the withdrawn consent's withdrawal
    accepted: dict[str, str]  # agency -> the referral it accepted


@dataclass
class Scenario:
    world: World
    case: CaseIds
    erased: CaseIds
    missing: str  # a case id never used
    tokens: dict[tuple[str, str], str | None]  # (relation, caller) -> bearer token
    period: str  # a frozen statistics release
    registry_index: dict[str, int]  # agency id -> index of its agency.registered entry
    caller: Caller
    counter: Iterator[int] = field(default_factory=itertools.count)
    # Things a cell may use up (a pending referral, a spare key, agency or token): made when
    # first needed and again after a request that succeeded with them. A refused request
    # leaves them as they were (the test checks that refusals leave the log unchanged).
    spares: dict[str, Any] = field(default_factory=dict)

    def spare(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self.spares:
            self.spares[name] = make()
        return self.spares[name]

    def agency(self, relation: str) -> Agency:
        """The agency in `relation`; tokens without an agency submit the holder's events."""
        return self.world.agencies[AGENCY_IDS.get(relation, AGENCY_IDS["holder"])]

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{next(self.counter)}"


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    json: Any = None
    spare: str | None = None  # the spare it uses up if it succeeds


Action = Callable[[Scenario, str, str], Request]  # (scenario, relation, case_id) -> request


def new() -> str:
    return str(uuid.uuid4())


# --- building the scenario -------------------------------------------------------------------


def referral(world: World, holder: Agency, case_id: str, to: str, consent_id: str) -> str:
    referral_id = new()
    holder.ok(
        "referral.made",
        case_id,
        {"referral_id": referral_id, "to": to, "consent_id": consent_id, "categories": ["health"]},
        {
            "component": "health_psychosocial",
            "due_by": format_timestamp(world.clock.now),
            "urgency": "urgent",
        },
    )
    return referral_id


def receipt_code(world: World, holder: Agency, case_id: str, consent_id: str, event: str) -> str:
    """The code printed on a receipt, as the holder fetches it (keyed by the case's key)."""
    url = f"/v1/cases/{case_id}/consents/{consent_id}/receipt?event={event}"
    r = world.http.get(url, headers=holder.auth())
    assert r.status_code == 200, r.text
    return str(verify_consent_receipt(r.text, receipt_key(world))["record_header"]["receipt_code"])


def build_case(world: World) -> CaseIds:
    """A case in which each agency stands in the relation its name says."""
    ids = AGENCY_IDS
    holder = world.agencies[ids["holder"]]
    case_id = holder.open_case(payload={"identity": {"name": "A"}, "health": {"notes": "B"}})
    consent = holder.grant(case_id, [ids[r] for r in ("shared", "named", "referred", "accepted")])
    holder.grant(case_id, [ids["statistics"]], purposes=["statistics"])
    withdrawn = holder.grant(case_id, [ids["withdrawn"]])
    assert holder.share(case_id, ids["shared"], consent, ["identity"]).status_code == 201
    accepted = {}
    for relation, under in (("accepted", consent), ("withdrawn", withdrawn)):
        agency = world.agencies[ids[relation]]
        accepted[agency.id] = referral(world, holder, case_id, agency.id, under)
        agency.ok("referral.accepted", case_id, {"referral_id": accepted[agency.id]},
                  {"reason": None})  # fmt: skip
    holder.ok("consent.withdrawn", case_id, {"consent_id": withdrawn}, {"reason": "other"})
    referral(world, holder, case_id, ids["referred"], consent)
    case = world.ledger.cases.load(case_id)
    assert case is not None
    assert case.state.holder == ids["holder"]
    assert case.state.related == {ids[r] for r in ids if r != "unrelated"}
    statuses = sorted(r.status for r in case.state.referrals.values())
    assert statuses == ["accepted", "accepted", "pending"]
    grant_code = receipt_code(world, holder, case_id, consent, "granted")
    withdrawal_code = receipt_code(world, holder, case_id, withdrawn, "withdrawn")
    return CaseIds(case_id, consent, withdrawn, grant_code, withdrawal_code, accepted)


def issue(world: World, role: str, agency: str | None, expires_at: str | None = None) -> dict:
    r = world.http.post(
        "/v1/tokens",
        headers=world.admin_auth,
        json={"agency": agency, "role": role, "label": "matrix", "expires_at": expires_at},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def build_scenario(world: World) -> Scenario:
    world.http.app.state.rate_limiter.rate = 0  # type: ignore[attr-defined]
    registry_index = {}
    for agency_id in [*AGENCY_IDS.values(), "outsider-ngo"]:
        world.agency(agency_id)
    for index, leaf in world.ledger.store.entries(0, world.ledger.store.log_size()):
        entry = json.loads(leaf)
        if entry["kind"] == "registry" and entry["action"] == "agency.registered":
            registry_index[entry["agency"]] = index
    case = build_case(world)
    erased = build_case(world)
    holder = world.agencies[AGENCY_IDS["holder"]]
    # A survivor identified long ago: statistics releases may cover months from 2000-01 on.
    holder.ok("case.opened", new(), {"minor": False},
              OPENED_ATTRS | {"identified_at": "2000-01-15"})  # fmt: skip
    request = holder.ok(
        "erasure.requested", erased.case_id, {}, {"reason": "survivor_request"}, role="supervisor"
    )
    second = {"Authorization": f"Bearer {world.token('supervisor', holder.id)}"}
    body = holder.body("case.erased", erased.case_id, {"request_event_id": request["event_id"]}, {})
    assert world.http.post("/v1/events", json=body, headers=second).status_code == 201

    tokens: dict[tuple[str, str], str | None] = {}
    soon = format_timestamp(world.clock.now.replace(microsecond=0) + timedelta(seconds=60))
    for relation in RELATIONS:
        agency = AGENCY_IDS.get(relation)
        failing_role = "caseworker" if agency else "auditor"
        for role in ROLES:
            if agency is None and role in ("caseworker", "supervisor"):
                tokens[relation, role] = None
            else:
                tokens[relation, role] = issue(world, role, agency)["token"]
        expiring = issue(world, failing_role, agency, soon)["token"]
        assert world.http.get("/v1/log/key", headers=headers(expiring)).status_code == 200
        tokens[relation, "expired"] = expiring
        revoked = issue(world, failing_role, agency)
        r = world.http.delete(f"/v1/tokens/{revoked['id']}", headers=world.admin_auth)
        assert r.status_code == 204
        tokens[relation, "revoked"] = revoked["token"]
        tokens[relation, "bad token"] = "lgr_" + secrets.token_urlsafe(32)
        tokens[relation, "no token"] = None
    world.clock.advance(seconds=120)  # the expiring tokens expire

    period = (world.clock.now.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    monitor = {"Authorization": f"Bearer {world.token('monitor')}"}
    r = world.http.post("/v1/stats/releases", json={"period": period}, headers=monitor)
    assert r.status_code == 201, r.text
    caller = Caller(world.http.app)
    return Scenario(world, case, erased, new(), tokens, period, registry_index, caller)


@pytest.fixture(scope="module", params=BACKENDS)
def scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    path: Path = tmp_path_factory.mktemp("matrix")
    with deployment(str(request.param), path) as settings, open_world(settings) as world:
        built = build_scenario(world)
        yield built
        built.caller.close()


# --- the requests, one per row of the table -------------------------------------------------


def event(s: Scenario, relation: str, etype: str, case_id: str, facts: dict, attrs: dict) -> Any:
    return s.agency(relation).body(etype, case_id, facts, attrs)


def service_delivered(s: Scenario, relation: str, case_id: str) -> Any:
    return event(
        s, relation, "service.delivered", case_id, {"referral_id": None}, {"component": "housing"}
    )


def append(s: Scenario, relation: str, case_id: str) -> Request:
    return Request("POST", "/v1/events", service_delivered(s, relation, case_id))


def append_batch(s: Scenario, relation: str, case_id: str) -> Request:
    return Request(
        "POST", "/v1/events:batch", {"events": [service_delivered(s, relation, case_id)]}
    )


def reopen(s: Scenario, relation: str, case_id: str) -> Request:
    body = event(s, relation, "case.opened", case_id, {"minor": False}, OPENED_ATTRS)
    return Request("POST", "/v1/events", body)


def answer_referral(s: Scenario, relation: str, case_id: str) -> Request:
    referral_id, spare = new(), None
    if case_id == s.case.case_id:  # a pending referral of its own: a 201 changes nothing else
        holder = s.world.agencies[AGENCY_IDS["holder"]]
        spare = "referral"
        referral_id = s.spare(
            spare,
            lambda: referral(s.world, holder, case_id, AGENCY_IDS["referred"], s.case.consent_id),
        )
    facts = {"referral_id": referral_id}
    body = event(s, relation, "referral.declined", case_id, facts, {"reason": "no_capacity"})
    return Request("POST", "/v1/events", body, spare)


def provide(s: Scenario, relation: str, case_id: str) -> Request:
    """A provider's append for its own accepted referral (that of *accepted* for callers
    without one of their own)."""
    ids = case_ids(s, case_id)
    agency = s.agency(relation)
    referral_id = new()
    if ids is not None:
        referral_id = ids.accepted.get(agency.id, ids.accepted[AGENCY_IDS["accepted"]])
    facts = {"referral_id": referral_id}
    body = event(s, relation, "service.delivered", case_id, facts, {"component": "housing"})
    return Request("POST", "/v1/events", body)


def record_consent(s: Scenario, relation: str, case_id: str) -> Request:
    """A consent naming the caller's own agency (the holder's for tokens without one)."""
    facts = {
        "consent_id": new(),
        "purposes": ["data_sharing"],
        "recipients": [s.agency(relation).id],
        "categories": ["notes"],
        "expires_at": None,
        "given_by": "survivor",
        "child_assent": None,
        "assent_exempt": False,
    }
    body = event(s, relation, "consent.granted", case_id, facts, CONSENT_ATTRS)
    return Request("POST", "/v1/events", body)


def share_onward(s: Scenario, relation: str, case_id: str) -> Request:
    """A share of `identity` to *shared* under the case's active consent."""
    ids = case_ids(s, case_id)
    facts = {
        "share_id": new(),
        "recipient": AGENCY_IDS["shared"],
        "consent_id": ids.consent_id if ids is not None else new(),
        "purpose": "data_sharing",
        "categories": ["identity"],
    }
    return Request("POST", "/v1/events", event(s, relation, "data.shared", case_id, facts, {}))


def assess_age(s: Scenario, relation: str, case_id: str) -> Request:
    attrs = {"age_band": "adult", "method": "document"}
    body = event(s, relation, "age.assessed", case_id, {"minor": False}, attrs)
    return Request("POST", "/v1/events", body)


def request_erasure(s: Scenario, relation: str, case_id: str) -> Request:
    body = event(s, relation, "erasure.requested", case_id, {}, {"reason": "survivor_request"})
    return Request("POST", "/v1/events", body)


def get(path: str) -> Action:
    return lambda s, relation, case_id: Request("GET", path.format(case=case_id))


def case_ids(s: Scenario, case_id: str) -> CaseIds | None:
    return {s.case.case_id: s.case, s.erased.case_id: s.erased}.get(case_id)


def consent_get(suffix: str, consent: str = "active") -> Action:
    """A request about one consent of the case: its active or withdrawn one, or an id never
    used (also when the case id names neither case of the scenario)."""

    def action(s: Scenario, relation: str, case_id: str) -> Request:
        ids = case_ids(s, case_id)
        consent_id = s.missing
        if ids is not None and consent == "active":
            consent_id = ids.consent_id
        elif ids is not None and consent == "withdrawn":
            consent_id = ids.withdrawn_consent_id
        return Request("GET", f"/v1/cases/{case_id}/consents/{consent_id}/{suffix}")

    return action


def lookup_code(withdrawal: bool = False) -> Action:
    """Look up a receipt code of the case (a well-formed code never issued when the case id
    names neither case of the scenario)."""

    def action(s: Scenario, relation: str, case_id: str) -> Request:
        ids = case_ids(s, case_id)
        code = "0000-0000-0000"
        if ids is not None:
            code = ids.withdrawal_code if withdrawal else ids.grant_code
        return Request("GET", f"/v1/consent-receipts/{code}")

    return action


def create_release(s: Scenario, relation: str, case_id: str) -> Request:
    n = next(s.counter)  # a month of its own (from the first identification, 2000-01, on):
    period = f"{2000 + n // 12}-{n % 12 + 1:02d}"  # 201 every time it is allowed
    return Request("POST", "/v1/stats/releases", {"period": period})


def register_agency(s: Scenario, relation: str, case_id: str) -> Request:
    agency_id = s.fresh("new")
    key = crypto.generate_signing_key(agency_id)
    body = {"id": agency_id, "name": "N", "type": "ngo", "verify_key": key.verify_key.line()}
    return Request("POST", "/v1/agencies", body)


def key_body(s: Scenario, agency: Agency) -> tuple[crypto.SigningKey, dict[str, Any]]:
    new_key = crypto.generate_signing_key(agency.id)
    return new_key, agency.key_change(new_key)


def add_key(s: Scenario, relation: str, case_id: str) -> Request:
    agency = s.agency(relation)  # its own agency (tokens without one: the holder's)
    return Request("POST", f"/v1/agencies/{agency.id}/keys", key_body(s, agency)[1])


def spare_key(s: Scenario, agency: Agency) -> str:
    new_key, body = key_body(s, agency)
    r = s.world.http.post(f"/v1/agencies/{agency.id}/keys", json=body, headers=s.world.admin_auth)
    assert r.status_code == 201, r.text
    return new_key.verify_key.key_id


def revoke_key(s: Scenario, relation: str, case_id: str) -> Request:
    agency = s.agency(relation)
    spare = f"key {agency.id}"  # a key of its own, so a 200 here revokes nothing in use
    key_id = s.spare(spare, lambda: spare_key(s, agency))
    url = f"/v1/agencies/{agency.id}/keys/{key_id}/revoke"
    return Request("POST", url, {"compromised_since": None}, spare)


def remove_agency(s: Scenario, relation: str, case_id: str) -> Request:
    agency_id = s.spare("agency", lambda: s.world.agency(s.fresh("gone")).id)
    return Request("DELETE", f"/v1/agencies/{agency_id}", spare="agency")


def create_token(s: Scenario, relation: str, case_id: str) -> Request:
    return Request("POST", "/v1/tokens", {"agency": None, "role": "auditor", "label": "m"})


def revoke_token(s: Scenario, relation: str, case_id: str) -> Request:
    token_id = s.spare("token", lambda: issue(s.world, "auditor", None)["id"])
    return Request("DELETE", f"/v1/tokens/{token_id}", spare="token")


def revoke_staff_token(s: Scenario, relation: str, case_id: str) -> Request:
    """A caseworker token of the caller's agency (the holder's for tokens without one)."""
    agency = s.agency(relation).id
    token_id = s.spare(f"token-{agency}", lambda: issue(s.world, "caseworker", agency)["id"])
    return Request("DELETE", f"/v1/tokens/{token_id}", spare=f"token-{agency}")


WEBHOOK_URL = "https://93.184.216.34/hooks"  # public: registration checks it, never connects


def webhook_of(s: Scenario, relation: str) -> tuple[str, str]:
    """An endpoint of the caller's agency (the holder's for callers without one), made by
    its supervisor; the same one until a request removes it."""
    agency = s.agency(relation)

    def make() -> str:
        r = s.world.http.post(
            f"/v1/agencies/{agency.id}/webhooks", json={"url": WEBHOOK_URL},
            headers=agency.auth("supervisor"),
        )  # fmt: skip
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    return agency.id, s.spare(f"webhook-{agency.id}", make)


def register_webhook(s: Scenario, relation: str, case_id: str) -> Request:
    agency = s.agency(relation).id
    return Request("POST", f"/v1/agencies/{agency}/webhooks", {"url": WEBHOOK_URL})


def webhooks_of(s: Scenario, relation: str, case_id: str) -> Request:
    return Request("GET", f"/v1/agencies/{s.agency(relation).id}/webhooks")


def indicators_of(s: Scenario, relation: str, case_id: str) -> Request:
    return Request("GET", f"/v1/agencies/{s.agency(relation).id}/indicators")


def on_webhook(method: str, suffix: str, uses_it_up: bool = False) -> Action:
    def action(s: Scenario, relation: str, case_id: str) -> Request:
        agency, hook_id = webhook_of(s, relation)
        spare = f"webhook-{agency}" if uses_it_up else None
        return Request(method, f"/v1/agencies/{agency}/webhooks/{hook_id}{suffix}", spare=spare)

    return action


def inclusion(own: bool) -> Action:
    def action(s: Scenario, relation: str, case_id: str) -> Request:
        agency = s.agency(relation).id if own else "outsider-ngo"
        index, size = s.registry_index[agency], s.world.ledger.store.log_size()
        return Request("GET", f"/v1/log/proof/inclusion?index={index}&size={size}")

    return action


def consistency(s: Scenario, relation: str, case_id: str) -> Request:
    return Request("GET", f"/v1/log/proof/consistency?from=1&to={s.world.ledger.store.log_size()}")


def release(s: Scenario, relation: str, case_id: str) -> Request:
    return Request("GET", f"/v1/stats/releases/{s.period}")


def htcds(s: Scenario, relation: str, case_id: str) -> Request:
    return Request("POST", "/v1/stats/htcds", {"year": s.world.clock.now.year - 1})


RECEIPT = "/v1/cases/{case_id}/consents/{consent_id}/receipt"
FHIR = "/v1/cases/{case_id}/consents/{consent_id}/fhir"
LOOKUP = "/v1/consent-receipts/{code}"

# (method, route path, action label) -> (request, which case: "case", "erased" or None)
ACTIONS: dict[tuple[str, str, str], tuple[Action, str | None]] = {
    ("GET", "/v1/health", ""): (get("/v1/health"), None),
    ("POST", "/v1/events", "service.delivered"): (append, "case"),
    ("POST", "/v1/events", "case.opened with the case's id"): (reopen, "case"),
    ("POST", "/v1/events", "referral.declined of a pending referral to *referred*"): (
        answer_referral,
        "case",
    ),
    ("POST", "/v1/events", "service.delivered for the caller's accepted referral"): (
        provide,
        "case",
    ),
    ("POST", "/v1/events", "consent.granted naming the caller's agency"): (
        record_consent,
        "case",
    ),
    ("POST", "/v1/events", "data.shared to *shared*"): (share_onward, "case"),
    ("POST", "/v1/events", "age.assessed"): (assess_age, "case"),
    ("POST", "/v1/events", "erasure.requested"): (request_erasure, "case"),
    ("POST", "/v1/events", "service.delivered to the erased case"): (append, "erased"),
    ("POST", "/v1/events:batch", "service.delivered"): (append_batch, "case"),
    ("POST", "/v1/events:batch", "service.delivered to the erased case"): (append_batch, "erased"),
    ("GET", "/v1/cases", ""): (get("/v1/cases"), None),
    ("GET", "/v1/erasure-requests", ""): (get("/v1/erasure-requests"), None),
    ("GET", "/v1/cases/{case_id}", ""): (get("/v1/cases/{case}"), "case"),
    ("GET", "/v1/cases/{case_id}", "erased case"): (get("/v1/cases/{case}"), "erased"),
    ("GET", "/v1/cases/{case_id}/consents", ""): (get("/v1/cases/{case}/consents"), "case"),
    ("GET", "/v1/cases/{case_id}/consents", "erased case"): (
        get("/v1/cases/{case}/consents"),
        "erased",
    ),
    ("GET", RECEIPT, "the active consent"): (consent_get("receipt"), "case"),
    ("GET", RECEIPT, "the withdrawn consent"): (consent_get("receipt", "withdrawn"), "case"),
    ("GET", RECEIPT, "a consent id never used"): (consent_get("receipt", "missing"), "case"),
    ("GET", RECEIPT, "erased case"): (consent_get("receipt"), "erased"),
    ("GET", FHIR, "the active consent"): (consent_get("fhir"), "case"),
    ("GET", FHIR, "the withdrawn consent"): (consent_get("fhir", "withdrawn"), "case"),
    ("GET", FHIR, "a consent id never used"): (consent_get("fhir", "missing"), "case"),
    ("GET", FHIR, "erased case"): (consent_get("fhir"), "erased"),
    ("GET", LOOKUP, "the active consent's grant"): (lookup_code(), "case"),
    ("GET", LOOKUP, "the withdrawn consent's withdrawal"): (lookup_code(withdrawal=True), "case"),
    ("GET", LOOKUP, "a consent of the erased case"): (lookup_code(), "erased"),
    ("GET", "/v1/cases/{case_id}/disclosures", ""): (get("/v1/cases/{case}/disclosures"), "case"),
    ("GET", "/v1/cases/{case_id}/disclosures", "erased case"): (
        get("/v1/cases/{case}/disclosures"),
        "erased",
    ),
    ("GET", "/v1/cases/{case_id}/erasure-receipt", "case not erased"): (
        get("/v1/cases/{case}/erasure-receipt"),
        "case",
    ),
    ("GET", "/v1/cases/{case_id}/erasure-receipt", "erased case"): (
        get("/v1/cases/{case}/erasure-receipt"),
        "erased",
    ),
    ("GET", "/v1/referrals", ""): (get("/v1/referrals"), None),
    ("GET", "/v1/notices", ""): (get("/v1/notices"), None),
    ("GET", "/v1/cases/{case_id}/notices", ""): (get("/v1/cases/{case}/notices"), "case"),
    ("GET", "/v1/cases/{case_id}/notices", "erased case"): (
        get("/v1/cases/{case}/notices"),
        "erased",
    ),
    ("POST", "/v1/stats/releases", "a new period"): (create_release, None),
    ("GET", "/v1/stats/releases/{period}", ""): (release, None),
    ("GET", "/v1/stats/releases", ""): (get("/v1/stats/releases"), None),
    ("POST", "/v1/stats/htcds", "a closed year"): (htcds, None),
    ("POST", "/v1/agencies", ""): (register_agency, None),
    ("POST", "/v1/agencies/{agency_id}/keys", "its own agency's"): (add_key, None),
    ("POST", "/v1/agencies/{agency_id}/keys/{key_id}/revoke", "its own agency's"): (
        revoke_key,
        None,
    ),
    ("DELETE", "/v1/agencies/{agency_id}", "another agency"): (remove_agency, None),
    ("POST", "/v1/tokens", ""): (create_token, None),
    ("DELETE", "/v1/tokens/{token_id}", "another token"): (revoke_token, None),
    ("DELETE", "/v1/tokens/{token_id}", "a caseworker token of the caller's agency"): (
        revoke_staff_token,
        None,
    ),
    ("GET", "/v1/tokens", ""): (get("/v1/tokens"), None),
    ("GET", "/v1/tokens/self", ""): (get("/v1/tokens/self"), None),
    ("POST", "/v1/agencies/{agency_id}/webhooks", "its own agency's"): (register_webhook, None),
    ("GET", "/v1/agencies/{agency_id}/webhooks", "its own agency's"): (webhooks_of, None),
    ("GET", "/v1/agencies/{agency_id}/indicators", "its own agency's"): (indicators_of, None),
    ("POST", "/v1/agencies/{agency_id}/webhooks/{hook_id}/rotate-secret", "its own agency's"): (
        on_webhook("POST", "/rotate-secret"),
        None,
    ),
    ("GET", "/v1/agencies/{agency_id}/webhooks/{hook_id}/dead-letters", "its own agency's"): (
        on_webhook("GET", "/dead-letters"),
        None,
    ),
    ("DELETE", "/v1/agencies/{agency_id}/webhooks/{hook_id}", "its own agency's"): (
        on_webhook("DELETE", "", uses_it_up=True),
        None,
    ),
    ("GET", "/v1/agencies", ""): (get("/v1/agencies"), None),
    ("GET", "/v1/log/checkpoint", ""): (get("/v1/log/checkpoint"), None),
    ("GET", "/v1/log/key", ""): (get("/v1/log/key"), None),
    ("GET", "/v1/log/entries", ""): (get("/v1/log/entries?start=0&end=10"), None),
    ("GET", "/v1/log/proof/inclusion", "its own agency's entry"): (inclusion(True), None),
    ("GET", "/v1/log/proof/inclusion", "another agency's entry"): (inclusion(False), None),
    ("GET", "/v1/log/proof/consistency", ""): (consistency, None),
}


def headers(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


class Caller:
    """HTTP to the same app in one event loop of its own (the test client's portal thread
    costs several milliseconds a request, and the matrix makes two thousand)."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    def __call__(self, req: Request, token: str | None) -> httpx.Response:
        return self.loop.run_until_complete(
            self.client.request(req.method, req.url, json=req.json, headers=headers(token))
        )

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


def call(s: Scenario, req: Request, token: str | None) -> httpx.Response:
    return s.caller(req, token)


def observed(response: Any) -> str:
    """A cell as the table writes it: the status, and for a batch its one item's status."""
    if response.status_code == 200 and "results" in response.text:
        return f"200 ({response.json()['results'][0]['status']})"
    return str(response.status_code)


def target(s: Scenario, which: str | None) -> str:
    return {"case": s.case.case_id, "erased": s.erased.case_id, None: s.missing}[which]


# --- the tests -------------------------------------------------------------------------------


def test_the_table_covers_every_route_and_only_routes(scenario: Scenario) -> None:
    """A route added to the app without rows in the matrix fails here (the routes are read
    from the app's OpenAPI document, which every route of the API is in)."""
    paths = scenario.world.http.app.openapi()["paths"]  # type: ignore[attr-defined]
    routes = {(method.upper(), path) for path, operations in paths.items() for method in operations}
    assert len(routes) >= 22
    rows = authz_table.load()
    covered = {(row.method, row.path) for row in rows}
    assert covered == routes, {"not in the table": routes - covered, "no route": covered - routes}
    assert {row.key for row in rows} == set(ACTIONS)
    for key in ACTIONS:
        relations = [row.relation for row in rows if row.key == key]
        assert sorted(relations) == sorted(RELATIONS), (key, relations)


def test_every_cell_has_the_documented_status(scenario: Scenario) -> None:
    """Each request, as each caller in each relation, answers what the table says; a refused
    request leaves the log as it was."""
    s, mismatches, traces = scenario, [], []
    for row in authz_table.load():
        action, which = ACTIONS[row.key]
        for caller in CALLERS:
            token = s.tokens[row.relation, caller]
            if token is None and caller != "no token":
                assert row.expected[caller] == NOT_APPLICABLE, (row.key, row.relation, caller)
                continue
            req = action(s, row.relation, target(s, which))
            size = s.world.ledger.store.log_size()
            response = call(s, req, token)
            got = observed(response)
            if response.status_code < 300 and req.spare is not None:
                s.spares.pop(req.spare)
            if got != row.expected[caller]:
                mismatches.append(
                    f"{row.method} {row.path} [{row.action}] {row.relation}/{caller}: "
                    f"table {row.expected[caller]}, got {got}: {response.text[:80]!r}"
                )
            if response.status_code >= 400 and s.world.ledger.store.log_size() != size:
                traces.append(f"{row.method} {row.path} [{row.action}] {row.relation}/{caller}")
    assert not mismatches, "\n".join(mismatches)
    assert not traces, "refused requests that left log entries:\n" + "\n".join(traces)


CASE_ACTIONS = [key for key, (_, which) in ACTIONS.items() if which == "case"]


@pytest.mark.parametrize("role", ROLES)
def test_an_unrelated_agency_cannot_tell_whether_a_case_exists(
    scenario: Scenario, role: str
) -> None:
    """Byte-identical answers for a live case, an erased one and an id never used: every
    request about a case, every role of an unrelated agency (auditors and admins read erasure
    receipts of any case by design, so that one request is left out for them)."""
    s = scenario
    token = s.tokens["unrelated", role]
    if role in ("caseworker", "supervisor"):  # its lists hold nothing of either case
        assert call(s, Request("GET", "/v1/cases"), token).json() == {"cases": []}
        assert call(s, Request("GET", "/v1/referrals"), token).json() == {"referrals": []}
    for key in CASE_ACTIONS:
        method, path, label = key
        if path.endswith("erasure-receipt") and role in ("auditor", "admin"):
            continue
        action = ACTIONS[key][0]
        cases = [s.case.case_id, s.erased.case_id]
        if label != "case.opened with the case's id":  # an unused id would open a new case
            cases.append(s.missing)
        if method == "GET":
            cases.append("not-a-case-id")  # (in a body it is malformed: 400 at step 2)
        answers = set()
        for case_id in cases:
            response = call(s, action(s, "unrelated", case_id), token)
            answers.add((observed(response), response.content))
        assert len(answers) == 1, (key, role, answers)
        ((status, _),) = answers
        assert status in ("403", "404", "200 (404)"), (key, role, status)


def test_the_published_matrix_is_the_rendering_of_the_table() -> None:
    """docs/authorization-matrix.md cannot drift from the table the tests check."""
    assert authz_table.DOC.read_text() == authz_table.render(authz_table.load()), (
        "run: python -m tests.authz_table --write"
    )


def test_the_table_is_well_formed() -> None:
    rows = authz_table.load()
    status = re.compile(r"^(n/a|[1-5][0-9]{2}|200 \([1-5][0-9]{2}\))$")
    for row in rows:
        for caller, cell in row.expected.items():
            assert status.match(cell), (row.key, row.relation, caller, cell)
        failing = {row.expected[c] for c in ("expired", "revoked", "bad token", "no token")}
        assert failing == ({"200"} if row.path == "/v1/health" else {"401"}), row
