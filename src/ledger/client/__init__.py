"""The agency SDK: build, sign and submit events with an agency key file (httpx).

client = LedgerClient("http://127.0.0.1:8000", token, load_signing_key("keys/ngo.key"))
answer = client.submit("case.opened", case_id, facts={"minor": False}, attrs={...})
client.verify_inclusion(answer, log_key)  # the event sent is in the log the log key signs
client.verify_inclusion(answer, log_key, policy=parse_policy(text))  # ... and witnessed

The client trusts the server for nothing it can check: an answer's leaf is rebuilt from the
event it sent, and every checkpoint it sees must extend the last one it verified (RFC 9162
consistency), so a log that withholds an event, or shows this agency another history than
it shows the auditors, is caught here.

`session` holds LedgerClient and its retries, `verification` what it checks of the log's
answers (the rebuilt leaf, consistent checkpoints and the `state` file, inclusion), `errors`
the ledger's refusals.
"""

from ledger.client.errors import LedgerHTTPError, bad_answer
from ledger.client.session import (
    TRANSIENT_STATUSES,
    LedgerClient,
    RetryPolicy,
    consistency_proofs,
    is_transient,
    load_signing_key,
    new_id,
)
from ledger.client.verification import (
    ENTRY_ADDED,
    Answer,
    LogMisbehaviour,
    LogVerifier,
    NotCovered,
    NotIncluded,
    NotWitnessed,
)

__all__ = [
    "ENTRY_ADDED",
    "TRANSIENT_STATUSES",
    "Answer",
    "LedgerClient",
    "LedgerHTTPError",
    "LogMisbehaviour",
    "LogVerifier",
    "NotCovered",
    "NotIncluded",
    "NotWitnessed",
    "RetryPolicy",
    "bad_answer",
    "consistency_proofs",
    "is_transient",
    "load_signing_key",
    "new_id",
]
