"""Submissions as they arrive (step 2 of the refusal order: parsed alone or as a batch) and
as they are answered (an item's refusal or failure in its turn)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger.contract.envelope import Submission, parse_submission, submission_from
from ledger.contract.parsing import loads_strict
from ledger.errors import BadRequest, LedgerError
from ledger.services.tokens import Principal

__all__ = ["BATCH_LIMIT", "Incoming", "Outcome", "answer_of", "parse", "parse_batch"]

BATCH_LIMIT = 1000  # submissions in one POST /v1/events:batch

Outcome = tuple[int, dict[str, Any]] | LedgerError | Exception
"""An item's answer in a group: (status, answer), its refusal, or (not a refusal) its failure."""


@dataclass(frozen=True)
class Incoming:
    """One single submission for `Ingest.submit_many`: its authenticated caller and its body,
    as bytes or already parsed (`parse`: the API parses before it joins the group)."""

    caller: Principal
    body: bytes | Submission | LedgerError = field(repr=False)


def _refusal(exc: LedgerError) -> tuple[int, dict[str, Any]]:
    return exc.status, {"error": exc.code, "message": exc.message, **exc.extra}


def _parsed(parse: Callable[[Any], Submission], value: Any) -> Submission | LedgerError:
    """Step 2 on one item of a group: the submission, or its refusal, answered in its turn."""
    try:
        return parse(value)
    except LedgerError as exc:
        return exc


def answer_of(outcome: Outcome) -> tuple[int, dict[str, Any]]:
    """A batch item's answer: its refusal's, or (a failure, not a refusal) a bare 500 that
    names nothing."""
    if isinstance(outcome, LedgerError):
        return _refusal(outcome)
    if isinstance(outcome, Exception):  # logged where it was caught
        message = "the server failed on this item; send it again (a recorded one answers 200)"
        return 500, {"error": "internal", "message": message}
    return outcome


def parse(body: bytes | Submission | LedgerError) -> Submission | LedgerError:
    """Step 2 of the refusal order on one body: the submission, or its refusal (a body
    already parsed passes through)."""
    if isinstance(body, bytes):
        return _parsed(parse_submission, body)
    return body


def parse_batch(raw: bytes) -> list[Submission | LedgerError]:
    """Step 2 of a batch: the body as a whole (a refusal raises: 400 for the whole batch),
    then each item, the submission or its refusal, answered in its turn."""
    body = loads_strict(raw)
    if (
        not isinstance(body, dict)
        or set(body) != {"events"}
        or not isinstance(body["events"], list)
    ):
        raise BadRequest('a batch is {"events": [submission, ...]}')
    if not 1 <= len(body["events"]) <= BATCH_LIMIT:
        raise BadRequest(f"a batch holds 1 to {BATCH_LIMIT} events")
    return [_parsed(submission_from, item) for item in body["events"]]
