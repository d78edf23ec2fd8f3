"""The auditor's own copies of the agency keys, and the history of each key in the log."""

from __future__ import annotations

from array import array
from collections.abc import Mapping
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
    added_time: str  # its entry's recorded_at
    revoked_at: int | None = None
    revoked_time: str | None = None
    compromised_since: int | None = None
    # Positions of the events it signed, until its revocation says from where they are
    # suspect: 8 bytes an event, dropped when the key is revoked.
    signed: array[int] = field(default_factory=lambda: array("q"))


@dataclass
class UnverifiedAgency:
    """An agency the log registered with no line of the auditor's (`missing`) or with another
    key: one failure for it, however many events it signed."""

    registered_at: int
    missing: bool
    events: int = 0  # whose signatures were not checked

    def message(self, agency: str) -> str:
        unchecked = f"its {self.events} events' signatures were not checked"
        if self.missing:
            return (
                f"agency {agency}'s verifier key line is missing from the auditor's agency "
                f"keys ({unchecked}): get the line from {agency} itself (`ledger agency vkey`), "
                "add it to --agency-keys and verify again"
            )
        return (
            f"agency {agency} was registered with a key other than the auditor's copy "
            f"({unchecked}: whoever holds the log's key for it may be acting in its name)"
        )


@dataclass(frozen=True)
class KeyRecord:
    """One key of an agency as the log registered it: when added, revoked, compromised."""

    agency: str
    key_id: str
    registered: bool  # the agency's first key, registered with it (else a key change)
    added_at: int
    added_time: str
    revoked_at: int | None
    revoked_time: str | None
    compromised_since: int | None


def key_history(keys: Mapping[str, Mapping[str, KeyState]]) -> list[KeyRecord]:
    """Every agency's keys, by agency and in log order (its first key is its registration)."""
    return [
        KeyRecord(
            agency,
            s.key.key_id,
            i == 0,
            s.added_at,
            s.added_time,
            s.revoked_at,
            s.revoked_time,
            s.compromised_since,
        )
        for agency in sorted(keys)
        for i, s in enumerate(sorted(keys[agency].values(), key=lambda s: s.added_at))
    ]
