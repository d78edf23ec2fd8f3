"""The events the sections submit: one case's realistic sequence, signed and encoded."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from ledger.bench.harness import ORIGIN, PAYLOAD_BYTES
from ledger.contract import crypto
from ledger.contract.envelope import build_submission


def case_bodies(key: crypto.SigningKey, events: int, share: bool = False) -> list[bytes]:
    """One case's realistic sequence: intake with 1 KiB of payload, a consent, then events
    (the first a share to `bench-peer` with `share`: one notice per case)."""
    case_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    payload = {"identity": {"name": "x" * 400}, "notes": "y" * (PAYLOAD_BYTES - 420)}
    bodies = [
        build_submission(
            key,
            log=ORIGIN,
            case_id=case_id,
            type="case.opened",
            facts={"minor": False},
            signed_at=now,
            payload=payload,
            attrs={
                "age_band": "adult",
                "gender": "female",
                "exploitation": ["labour"],
                "identified_at": "2026-10-01",
            },
        )
    ]
    consent = str(uuid.uuid4())
    bodies.append(
        build_submission(
            key,
            log=ORIGIN,
            case_id=case_id,
            type="consent.granted",
            signed_at=now,
            facts={
                "consent_id": consent,
                "purposes": ["data_sharing"],
                "recipients": ["bench-peer"],
                "categories": ["identity"],
                "expires_at": None,
                "given_by": "survivor",
                "child_assent": None,
                "assent_exempt": False,
            },
            attrs={"language": "es", "interpreter": False, "notice_version": "1"},
        )
    )
    if share:
        bodies.append(
            build_submission(
                key,
                log=ORIGIN,
                case_id=case_id,
                type="data.shared",
                signed_at=now,
                facts={
                    "share_id": str(uuid.uuid4()),
                    "recipient": "bench-peer",
                    "consent_id": consent,
                    "purpose": "data_sharing",
                    "categories": ["identity"],
                },
                attrs={},
            )
        )
    while len(bodies) < events:
        bodies.append(
            build_submission(
                key,
                log=ORIGIN,
                case_id=case_id,
                type="service.delivered",
                signed_at=now,
                facts={"referral_id": None},
                attrs={"component": "housing"},
                payload={"notes": "z" * PAYLOAD_BYTES},
            )
        )
    return [json.dumps(b).encode() for b in bodies]
