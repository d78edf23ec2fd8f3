"""`ledger demo`: a realistic scenario played through the Python client against a server.

Intake of an adult and of a child of unknown age, consents in Spanish with an interpreter,
a guardian ad litem with the child's assent, a referral to a health provider accepted by it,
a share refused for lack of consent, a withdrawal, and a read by the recipient before and
after the withdrawal. Names and places are invented.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from ledger.client import LedgerClient, LedgerHTTPError, new_id
from ledger.contract import crypto
from ledger.contract.vocabulary import format_timestamp
from ledger.private_files import write_secret

AGENCIES = (
    ("casa-refugio", "Casa Refugio (shelter)", "shelter"),
    ("clinica-salud", "Clínica Salud (health provider)", "health"),
    ("asesoria-legal", "Asesoría Legal (legal aid)", "legal_aid"),
)


def _agency_key(folder: Path, agency_id: str, suffix: str) -> crypto.SigningKey:
    path = folder / f"{agency_id}-{suffix}.key"
    key = crypto.generate_signing_key(agency_id)
    write_secret(path, (key.line() + "\n").encode())
    return key


def run_demo(
    url: str,
    admin_token: str,
    key_folder: Path,
    console: Console | None = None,
    shelter_key: crypto.SigningKey | None = None,
) -> None:
    """Play the scenario; agency keys are written under `key_folder` (mode 0600).
    `shelter_key`: an agency already registered plays the shelter (the first agency of
    `make run`, whose console then shows the demo's cases)."""
    out = console or Console()
    suffix = secrets.token_hex(3)  # each run registers fresh demo agencies
    key_folder.mkdir(parents=True, exist_ok=True)
    admin = LedgerClient(url, admin_token)
    clients: dict[str, LedgerClient] = {}
    for base, name, kind in AGENCIES:
        if base == "casa-refugio" and shelter_key is not None:
            key, agency_id = shelter_key, shelter_key.name
            out.print(f"[bold]{agency_id}[/] plays the shelter")
        else:
            agency_id = f"{base}-{suffix}"
            key = _agency_key(key_folder, agency_id, "signing")
            reg = admin.register_agency(agency_id, name, kind, key.verify_key.line())
            out.print(f"registered [bold]{agency_id}[/] (log index {reg['index']})")
        token = admin.create_token("caseworker", f"demo caseworker {base}", agency_id)["token"]
        clients[base] = LedgerClient(url, token, key)
    shelter, clinic, legal = (
        clients["casa-refugio"],
        clients["clinica-salud"],
        clients["asesoria-legal"],
    )
    clinic_id, legal_id = clinic.key.name, legal.key.name  # type: ignore[union-attr]
    now = datetime.now(UTC)

    def step(what: str, answer: Any) -> None:
        out.print(f"  [green]✓[/] {what}: index {answer.index}, case version {answer.case_version}")

    def refused(what: str, exc: LedgerHTTPError) -> None:
        out.print(f"  [red]✗[/] {what}: {exc.status} {exc.body.get('message')}")

    # 1. An adult survivor: intake, consent in Spanish with an interpreter, referral to health.
    out.print("\n[bold]Adult survivor[/]")
    adult = new_id()
    step(
        "case opened",
        shelter.submit(
            "case.opened",
            adult,
            {"minor": False},
            {
                "age_band": "adult",
                "gender": "female",
                "exploitation": ["labour"],
                "identified_at": now.date().isoformat(),
            },
            {
                "identity": {"name": "María Ejemplo"},
                "contact": {"phone": "+00 000 0000"},
                "health": {"needs": "atención psicológica"},
            },
        ),
    )
    consent = new_id()
    step(
        "consent granted (es, interpreter) to the clinic",
        shelter.submit(
            "consent.granted",
            adult,
            {
                "consent_id": consent,
                "purposes": ["referral", "data_sharing"],
                "recipients": [clinic_id],
                "categories": ["identity", "health"],
                "expires_at": format_timestamp(now + timedelta(days=180)),
                "given_by": "survivor",
                "child_assent": None,
                "assent_exempt": False,
            },
            {"language": "es", "interpreter": True, "notice_version": "2026-1"},
        ),
    )
    referral = new_id()
    step(
        "referral to the clinic (health, due in 24 h)",
        shelter.submit(
            "referral.made",
            adult,
            {
                "referral_id": referral,
                "to": clinic_id,
                "consent_id": consent,
                "categories": ["identity", "health"],
            },
            {
                "component": "health_psychosocial",
                "due_by": format_timestamp(now + timedelta(hours=24)),
                "urgency": "urgent",
            },
        ),
    )
    step(
        "clinic accepts the referral",
        clinic.submit("referral.accepted", adult, {"referral_id": referral}, {"reason": None}),
    )
    view = clinic.read_case(adult)
    out.print(f"  clinic reads the case: categories {sorted(view['payload'])}")
    try:
        shelter.submit(
            "data.shared",
            adult,
            {
                "share_id": new_id(),
                "recipient": legal_id,
                "consent_id": consent,
                "purpose": "data_sharing",
                "categories": ["identity"],
            },
            {},
        )
    except LedgerHTTPError as exc:
        refused("share with legal aid (no consent names it)", exc)

    # 2. A child of unknown age: presumption of minority, guardian ad litem, child's assent.
    out.print("\n[bold]Child of unknown age[/]")
    child = new_id()
    step(
        "case opened (age unknown: treated as a minor)",
        shelter.submit(
            "case.opened",
            child,
            {"minor": True},
            {
                "age_band": "unknown",
                "gender": "male",
                "exploitation": ["begging"],
                "identified_at": now.date().isoformat(),
            },
            {"identity": {"name": "Niño Ejemplo"}, "location": {"shelter": "Casa Refugio"}},
        ),
    )
    step(
        "guardian ad litem appointed",
        shelter.submit("guardian.appointed", child, {"role": "guardian_ad_litem"}, {}),
    )
    child_consent = new_id()
    step(
        "consent by the guardian ad litem with the child's assent",
        shelter.submit(
            "consent.granted",
            child,
            {
                "consent_id": child_consent,
                "purposes": ["data_sharing"],
                "recipients": [legal_id],
                "categories": ["identity"],
                "expires_at": None,
                "given_by": "guardian_ad_litem",
                "child_assent": True,
                "assent_exempt": False,
            },
            {"language": "es", "interpreter": True, "notice_version": "2026-1"},
        ),
    )
    step(
        "identity shared with legal aid",
        shelter.submit(
            "data.shared",
            child,
            {
                "share_id": new_id(),
                "recipient": legal_id,
                "consent_id": child_consent,
                "purpose": "data_sharing",
                "categories": ["identity"],
            },
            {},
        ),
    )
    before = legal.read_case(child)
    out.print(f"  legal aid reads before withdrawal: categories {sorted(before['payload'])}")
    step(
        "consent withdrawn at the guardian's request",
        shelter.submit(
            "consent.withdrawn",
            child,
            {"consent_id": child_consent},
            {"reason": "guardian_request"},
        ),
    )
    try:
        legal.read_case(child)
    except LedgerHTTPError as exc:
        refused("legal aid reads after withdrawal", exc)
    for client in (admin, *clients.values()):
        client.close()
    out.print(f"\nagency keys written to {key_folder}")
