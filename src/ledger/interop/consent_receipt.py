"""The survivor's consent receipt: a record structured after ISO/IEC TS 27560:2023, signed by
the receipt key as a C2SP signed note (the same key and note format as erasure receipts).

One receipt per consent event (`consent.granted`, `consent.withdrawn`). Its note text is

    ledger consent receipt v1
    <JCS of the record>

so it carries the full detail (purposes and categories as recorded, the case and log
references); the printout (`printout.py`) shows only what is safe to carry.
"""

from __future__ import annotations

import json
from typing import Any

from ledger.contract import crypto
from ledger.contract.canonical import jcs
from ledger.contract.notes import NoteError, open_note, sign_note
from ledger.interop.record import ConsentEvent, ConsentRecord

HEADER = "ledger consent receipt v1"
SCHEMA = "ledger-consent-receipt/1"
STANDARD = "structured after ISO/IEC TS 27560:2023 (consent record information structure)"
SECTIONS = ("record_header", "processing", "personal_data_categories", "parties", "events")
WITHDRAWAL_METHOD = (
    "Ask any agency listed as controller to record a consent.withdrawn, in person or through "
    "whoever assists you, quoting the receipt code; it takes effect when recorded, at no cost "
    "and without loss of the assistance you receive."
)


class ConsentReceiptError(Exception):
    """The consent receipt is malformed or not signed by the receipt key."""


def receipt_record(consent: ConsentRecord, event: ConsentEvent) -> dict[str, Any]:
    """The receipt of one consent event, as JSON-ready data (ISO/IEC TS 27560 sections)."""
    events = [consent.granted]
    if event.kind == "withdrawn" and consent.withdrawn is not None:
        events.append(consent.withdrawn)

    def event_entry(e: ConsentEvent) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": e.kind,
            "at": e.recorded_at,
            "by": e.agency,
            "receipt_code": e.code,
            "event_id": e.event_id,
            "log_index": e.index,
        }
        if e.kind == "withdrawn":
            entry["reason"] = consent.withdrawal_reason
        return entry

    return {
        "record_header": {
            "schema": SCHEMA,
            "standard": STANDARD,
            "receipt_code": event.code,
            "issued_for": event.kind,
            "issued_at": event.recorded_at,
            "consent_id": consent.consent_id,
            "case_id": consent.case_id,
            "log_origin": consent.origin,
            "pii_principal": {
                "given_by": consent.given_by,
                "minor_case": consent.minor,
                "child_assent": consent.child_assent,
                "assent_exempt": consent.assent_exempt,
            },
            "notice": {
                "version": consent.notice_version,
                "language": consent.language,
                "interpreter": consent.interpreter,
            },
            "state": "withdrawn" if event.kind == "withdrawn" else "active",
        },
        "processing": {
            "legal_basis": "consent",
            "purposes": list(consent.purposes),
            "recipients": list(consent.recipients),
            "valid_from": consent.granted.recorded_at,
            "valid_until": consent.expires_at,
            "withdrawal": {"at_any_time": True, "method": WITHDRAWAL_METHOD},
        },
        "personal_data_categories": list(consent.categories),
        "parties": [
            {
                "role": "controller",
                "agency": consent.granted.agency,
                "name": consent.name(consent.granted.agency),
            },
            *(
                {"role": "recipient", "agency": a, "name": consent.name(a)}
                for a in consent.recipients
            ),
        ],  # fmt: skip
        "events": [event_entry(e) for e in events],
    }


def note_body(record: dict[str, Any]) -> str:
    return f"{HEADER}\n{jcs(record).decode()}\n"


def sign_receipt(record: dict[str, Any], key: crypto.SigningKey) -> str:
    """The signed note of a receipt record (Ed25519: the same record always signs the same)."""
    return sign_note(note_body(record), key)


def verify_consent_receipt(text: str, key: crypto.VerifyKey) -> dict[str, Any]:
    """Check a consent receipt: the receipt key's signature, then its form. Returns the record."""
    # 1. The receipt key's signature over the note text.
    try:
        body = open_note(text, key)
    except NoteError as exc:
        raise ConsentReceiptError(f"not signed by the receipt key: {exc}") from exc
    # 2. The header line, then one line of JSON.
    lines = body.split("\n")
    if len(lines) != 3 or lines[0] != HEADER or lines[2] != "":
        raise ConsentReceiptError("not a consent receipt (header or line count)")
    try:
        record = json.loads(lines[1])
    except ValueError as exc:
        raise ConsentReceiptError("the receipt's record is not JSON") from exc
    # 3. Canonical (JCS) and with every section.
    if not isinstance(record, dict) or set(record) != set(SECTIONS):
        raise ConsentReceiptError("the receipt's record does not have the five sections")
    if note_body(record) != body:
        raise ConsentReceiptError("the receipt's record is not in canonical (JCS) form")
    header = record["record_header"]
    if not isinstance(header, dict) or header.get("schema") != SCHEMA:
        raise ConsentReceiptError("unknown receipt schema")
    return record
