"""Typed domain errors. Domain code raises these; `ledger.api.errors` maps them to HTTP once.

Messages say what was wrong and what to do; they never echo personal data, tokens or keys.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every refusal the ledger explains to its caller."""

    status = 500
    code = "error"

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class Unauthorized(LedgerError):
    status, code = 401, "unauthorized"


class BadRequest(LedgerError):
    status, code = 400, "bad_request"


class Forbidden(LedgerError):
    status, code = 403, "forbidden"


class NotFound(LedgerError):
    status, code = 404, "not_found"


class Conflict(LedgerError):
    status, code = 409, "conflict"


class WriteConflict(Conflict):
    """409 as well, but transient: concurrent writes took the case version (or a new case's
    key) first, even after the ledger decided the submission again a few times. Sending the
    identical submission again is safe and may succeed; clients tell this from a final
    conflict by the code `write_conflict`."""

    code = "write_conflict"


class Gone(LedgerError):
    status, code = 410, "gone"


class TooLarge(LedgerError):
    status, code = 413, "too_large"


class UnsupportedMediaType(LedgerError):
    """415: a body declared as something other than JSON."""

    status, code = 415, "unsupported_media_type"


class Invalid(LedgerError):
    """422: well-formed but not acceptable (facts, attrs, references)."""

    status, code = 422, "invalid"


class VerificationError(Invalid):
    """422: signature, digest, key, origin or freshness did not check out."""

    code = "verification_failed"


def failure_site(exc: BaseException) -> str:
    """Where an unexpected exception was raised (file:line), for a log line that names its
    type and place only: messages may hold data."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
