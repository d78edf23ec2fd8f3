"""FHIR R4 Consent export, on both backends: every consent the ledger can hold exports as a
resource that validates (fhir.resources, R4B models: Consent is the same in R4 and R4B),
uses codes from the R4 value sets, and names the survivor only by an opaque id."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fhir.resources.R4B.consent import Consent
from pydantic import ValidationError

from ledger.contract.vocabulary import CATEGORIES, PURPOSES
from tests.conftest import World

# R4 required value sets of the elements the export fills.
CONSENT_STATE = {"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"}
PROVISION_TYPE = {"deny", "permit"}
CONSENT_ACTION = {"collect", "access", "use", "disclose", "correct"}
SCOPE = {"adr", "research", "patient-privacy", "treatment"}


def fhir(world: World, case_id: str, consent_id: str, agency: str = "ngo-a") -> Any:
    return world.http.get(
        f"/v1/cases/{case_id}/consents/{consent_id}/fhir",
        headers=world.agencies[agency].auth(),
    )


def check(resource: dict[str, Any], case_id: str) -> Consent:
    """Validate as a FHIR Consent and check what the model does not: value sets, the
    consent invariants (ppc-1: a policy or policyRule; ppc-2: privacy scope has a patient),
    and that the case id appears nowhere."""
    model = Consent.model_validate(resource)
    assert model.status in CONSENT_STATE
    assert {c.code for c in model.scope.coding} <= SCOPE
    assert model.policyRule is not None or model.policy
    assert model.patient is not None and model.patient.identifier is not None
    assert model.provision is not None and model.provision.type in PROVISION_TYPE
    for action in model.provision.action or []:
        assert {c.code for c in action.coding} <= CONSENT_ACTION
    assert case_id not in json.dumps(resource)
    return model


def test_every_exported_fhir_consent_validates(world: World) -> None:
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    world.agency("legal")
    adult = ngo.open_case()
    child = ngo.open_case("12-14")
    consents = [
        (adult, ngo.grant(adult, ["clinic", "legal"], purposes=list(PURPOSES),
                          categories=list(CATEGORIES))),
        (adult, ngo.grant(adult, ["clinic"], expires_at="2030-06-30T12:00:00Z")),
        (child, ngo.grant(child, ["clinic"], given_by="guardian_ad_litem", child_assent=True)),
        (child, ngo.grant(child, ["legal"], given_by="guardian", assent_exempt=True)),
    ]  # fmt: skip
    withdrawn = consents[1][1]
    ngo.ok("consent.withdrawn", adult, {"consent_id": withdrawn}, {"reason": "other"})
    subjects = {}
    for case_id, consent_id in consents:
        r = fhir(world, case_id, consent_id)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+json")
        model = check(r.json(), case_id)
        assert model.id == consent_id
        subjects.setdefault(case_id, set()).add(model.patient.identifier.value)
    assert all(len(s) == 1 for s in subjects.values())  # one opaque id per survivor ...
    assert subjects[adult] != subjects[child]  # ... and not shared between cases

    full = fhir(world, adult, consents[0][1]).json()
    provision = full["provision"]
    assert full["status"] == "active" and full["language"] == "es"
    assert [a["reference"]["identifier"]["value"] for a in provision["actor"]] == [
        "clinic",
        "legal",
    ]
    assert [c["code"] for c in provision["class"]] == list(CATEGORIES)
    ledger_purposes = [p["code"] for p in provision["purpose"] if "ledger" in p["system"]]
    assert ledger_purposes == list(PURPOSES)
    assert {"code": "HLEGAL"}.items() <= next(
        p for p in provision["purpose"] if p["code"] == "HLEGAL"
    ).items()
    assert full["organization"][0]["identifier"]["value"] == "ngo-a"

    gone = fhir(world, adult, withdrawn).json()
    assert gone["status"] == "inactive" and "end" in gone["provision"]["period"]
    guardian = fhir(world, child, consents[2][1]).json()
    assert guardian["performer"] == [{"type": "RelatedPerson", "display": "guardian ad litem"}]


def test_the_validator_catches_a_broken_resource(world: World) -> None:
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    case_id = ngo.open_case()
    resource = fhir(world, case_id, ngo.grant(case_id, ["clinic"])).json()
    for broken in (
        {k: v for k, v in resource.items() if k != "status"},
        resource | {"dateTime": "2026-11-31T25:00:00+00:00"},
        resource | {"provision": resource["provision"] | {"actor": [{"role": {"text": "x"}}]}},
    ):
        with pytest.raises(ValidationError):
            Consent.model_validate(broken)


def test_fhir_export_follows_the_consent_registers_rules(world: World) -> None:
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    world.agency("other")
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    assert fhir(world, case_id, consent, "clinic").status_code == 403  # named, sent nothing
    assert ngo.share(case_id, "clinic", consent).status_code == 201
    size = world.ledger.store.log_size()
    assert fhir(world, case_id, consent, "clinic").status_code == 200
    assert world.ledger.store.log_size() == size + 1  # the unsealed language: an access entry
    assert fhir(world, case_id, consent, "other").status_code == 404
    assert fhir(world, case_id, "no-such-consent").status_code == 404
    ngo.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "other"})
    assert fhir(world, case_id, consent, "clinic").status_code == 403
