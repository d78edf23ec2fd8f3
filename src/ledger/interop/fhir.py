"""FHIR R4 Consent resources for partner systems (the Consent resource is identical in R4 and
R4B; tests validate against `fhir.resources.R4B`).

The survivor appears only as an opaque identifier keyed by the case key (`record.subject_id`),
never the case id; agencies are identified by their ledger agency id. Codes come from the HL7
terminology where one fits (consent scope, LOINC consent category, consent actions, v3
participation and purpose of use) and from the ledger's own code systems otherwise, so no
meaning is lost or stretched. docs/interop/fhir-consent.md has the mapping table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.contract.vocabulary import parse_timestamp
from ledger.interop.record import ConsentRecord

LEDGER = "urn:survivor-case-ledger"
SYSTEM_AGENCY = f"{LEDGER}:agency"
SYSTEM_SUBJECT = f"{LEDGER}:subject"
SYSTEM_CONSENT = f"{LEDGER}:consent"
SYSTEM_PURPOSE = f"{LEDGER}:purpose"
SYSTEM_CATEGORY = f"{LEDGER}:category"
SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
LOINC = "http://loinc.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
PURPOSE_OF_USE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"

# HL7 purpose of use where one means the same; every purpose also carries the ledger's code.
V3_PURPOSE = {
    "assistance": ("COC", "coordination of care"),
    "referral": ("COC", "coordination of care"),
    "data_sharing": ("COC", "coordination of care"),
    "prosecution": ("HLEGAL", "legal"),
}
GIVEN_BY = {"guardian": "guardian", "guardian_ad_litem": "guardian ad litem"}


def _instant(timestamp: str) -> str:
    return timestamp.replace("Z", "+00:00")


def status(consent: ConsentRecord, now: datetime) -> str:
    """`active` while the consent holds; `inactive` once withdrawn or expired."""
    if consent.withdrawn is not None:
        return "inactive"
    if consent.expires_at is not None and parse_timestamp(consent.expires_at) <= now:
        return "inactive"
    return "active"


def _agency(consent: ConsentRecord, agency: str) -> dict[str, Any]:
    return {
        "identifier": {"system": SYSTEM_AGENCY, "value": agency},
        "display": consent.name(agency),
    }


def consent_resource(consent: ConsentRecord, now: datetime) -> dict[str, Any]:
    """The FHIR R4 Consent of a ledger consent, as JSON-ready data."""
    subject = {"identifier": {"system": SYSTEM_SUBJECT, "value": consent.subject}}
    if consent.given_by in GIVEN_BY:
        performer: dict[str, Any] = {"type": "RelatedPerson", "display": GIVEN_BY[consent.given_by]}
    else:
        performer = {"type": "Patient", **subject}
    end = consent.expires_at
    if consent.withdrawn is not None and (end is None or consent.withdrawn.recorded_at < end):
        end = consent.withdrawn.recorded_at
    period = {"start": _instant(consent.granted.recorded_at)}
    if end is not None:
        period["end"] = _instant(end)
    purposes = []
    for purpose in consent.purposes:
        purposes.append({"system": SYSTEM_PURPOSE, "code": purpose})
        if purpose in V3_PURPOSE:
            code, display = V3_PURPOSE[purpose]
            purposes.append({"system": PURPOSE_OF_USE, "code": code, "display": display})
    unique_purposes = list({(p["system"], p["code"]): p for p in purposes}.values())
    return {
        "resourceType": "Consent",
        "id": consent.consent_id,
        "language": consent.language,
        "identifier": [{"system": SYSTEM_CONSENT, "value": consent.consent_id}],
        "status": status(consent, now),
        "scope": {
            "coding": [{"system": SCOPE, "code": "patient-privacy", "display": "Privacy Consent"}]
        },
        "category": [
            {"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}
        ],
        "patient": subject,
        "dateTime": _instant(consent.granted.recorded_at),
        "performer": [performer],
        "organization": [_agency(consent, consent.granted.agency)],
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN", "display": "opt-in"}]},
        "provision": {
            "type": "permit",
            "period": period,
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": PARTICIPATION,
                                "code": "IRCP",
                                "display": "information recipient",
                            }
                        ]
                    },
                    "reference": _agency(consent, recipient),
                }
                for recipient in consent.recipients
            ],
            "action": [
                {"coding": [{"system": CONSENT_ACTION, "code": code}]}
                for code in ("access", "disclose")
            ],
            "purpose": unique_purposes,
            "class": [{"system": SYSTEM_CATEGORY, "code": c} for c in consent.categories],
        },
    }
