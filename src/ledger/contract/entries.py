"""The log's entries (docs/contract.md, the log): their kinds and members, the registry's
actions, and the message both keys sign when an agency adds a key."""

from __future__ import annotations

from ledger.contract.canonical import jcs

KEY_DOMAIN = b"ledger-key-v1\n"
ENTRY_MEMBERS = {
    "event": {"kind", "envelope", "signature", "sealed_digest", "actor", "role", "recorded_at"},
    "registry": {"kind", "action", "agency", "key", "signatures", "actor", "recorded_at"},
    "access": {"kind", "case_id", "agency", "actor", "categories", "recorded_at"},
}
# The members of an event's log entry beside its envelope and signature: the answer carries
# them, so the agency can rebuild the entry and its leaf hash from what it submitted.
ENTRY_ADDED = ("sealed_digest", "actor", "role", "recorded_at")
REGISTRY_ACTIONS = ("agency.registered", "key.added", "key.revoked")


def key_change_message(origin: str, agency: str, key_line: str, signed_at: str) -> bytes:
    """What both the current and the new key sign for `key.added`."""
    body = {"log": origin, "agency": agency, "key": key_line, "signed_at": signed_at}
    return KEY_DOMAIN + jcs(body)
