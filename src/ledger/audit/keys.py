"""The auditor's own copies of the agency keys, and the history of each key in the log."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from ledger.contract import crypto


def parse_agency_keys(text: str) -> dict[str, crypto.VerifyKey]:
    """One C2SP verifier key line per agency; the key's name is the agency id."""
    keys: dict[str, crypto.VerifyKey] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key = crypto.parse_verify_key(line)
            keys[key.name] = key
    return keys


@dataclass
class KeyState:
    key: crypto.VerifyKey
    added_at: int
    revoked_at: int | None = None
    compromised_since: int | None = None
    # Positions of the events it signed, until its revocation says from where they are
    # suspect: 8 bytes an event, dropped when the key is revoked.
    signed: array[int] = field(default_factory=lambda: array("q"))
