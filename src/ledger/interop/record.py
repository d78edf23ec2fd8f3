"""One consent as the interoperability formats see it, and codes keyed by the case's key.

A `ConsentRecord` is built from a case's records (cleartext facts, plus the consent's own
attrs unsealed by the caller) and holds nothing else: the receipt, the printout and the FHIR
resource are pure functions of it.

Keyed codes: the receipt code and the FHIR subject id are HMAC-SHA256 under the case's data
key, with a domain label. They look random, reveal nothing about the case id to whoever holds
them, are stable across re-fetches, and die with the case key (crypto-shredding): once the
case is erased nobody can recompute or look them up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_DOMAIN = b"ledger-interop-v1\n"
_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def keyed(key: bytes, label: str, message: str) -> bytes:
    """HMAC-SHA256 under a case key, domain-separated by `label`."""
    return hmac.new(key, _DOMAIN + f"{label}\n{message}".encode(), hashlib.sha256).digest()


def receipt_code(key: bytes, event_id: str) -> str:
    """The printed receipt code of one consent event: 60 bits, Crockford base32, XXXX-XXXX-XXXX
    (no I, L, O or U, so it reads aloud and copies by hand without ambiguity)."""
    raw = base64.b32encode(keyed(key, "consent-receipt-code", event_id)[:10]).decode()
    code = raw.translate(_CROCKFORD)[:12]
    return "-".join(code[i : i + 4] for i in range(0, 12, 4))


def normalise_code(text: str) -> str:
    """What a person typed, in the canonical XXXX-XXXX-XXXX form (Crockford's read rules)."""
    cleaned = text.strip().upper().replace("-", "").replace(" ", "")
    cleaned = cleaned.translate(str.maketrans("OIL", "011"))
    return "-".join(cleaned[i : i + 4] for i in range(0, len(cleaned), 4))


def subject_id(key: bytes) -> str:
    """The opaque id partner systems see for the survivor of a case (not the case id)."""
    return keyed(key, "fhir-subject", "").hex()[:32]


@dataclass(frozen=True)
class ConsentEvent:
    """A `consent.granted` or `consent.withdrawn` as recorded."""

    kind: str  # "granted" or "withdrawn"
    event_id: str
    index: int  # position in the log
    recorded_at: str
    agency: str
    code: str  # the receipt code of this event


@dataclass(frozen=True)
class ConsentRecord:
    """A consent's scope, who gave it, its notice and its events (cleartext and its attrs)."""

    origin: str
    case_id: str
    consent_id: str
    purposes: tuple[str, ...]
    recipients: tuple[str, ...]
    categories: tuple[str, ...]
    expires_at: str | None
    given_by: str
    child_assent: bool | None
    assent_exempt: bool
    minor: bool  # the case was a child's (or of unknown age) when the consent was given
    language: str
    interpreter: bool
    notice_version: str
    granted: ConsentEvent
    withdrawn: ConsentEvent | None
    withdrawal_reason: str | None
    agency_names: Mapping[str, str]
    subject: str  # opaque subject id (see `subject_id`)

    def name(self, agency: str) -> str:
        return self.agency_names.get(agency, agency)

    def event(self, kind: str | None) -> ConsentEvent:
        """The named event (`granted` or `withdrawn`), or the latest when None."""
        if kind in (None, "withdrawn") and self.withdrawn is not None:
            return self.withdrawn
        if kind in (None, "granted"):
            return self.granted
        raise LookupError(kind)


def ordered(values: Any, order: tuple[str, ...]) -> tuple[str, ...]:
    """A set of enumeration values in the enumeration's own order."""
    return tuple(v for v in order if v in set(values))
