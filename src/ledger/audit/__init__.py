"""The auditor's verifier: the whole history, checked without any decryption key.

Pure over a checkpoint, the entries and the keys the auditor brings; it imports neither the
API nor storage. `verify` returns an `AuditReport`; every failure names its position and the
check that failed. Steps, in order:

1. the checkpoint is signed by the trusted log key;
2. every entry up to the checkpoint's size is present;
3. each entry's bytes are the canonical JCS of what they parse to, of a known kind;
4. the agency registry: first keys equal the auditor's own copies, every key change is signed
   by the agency's current key and the new key within the freshness window of its recording,
   a key id is registered once in the whole log (a revoked key cannot come back), revocations
   are honoured;
5. every event signature verifies against the key valid at its position (on all cores);
6. the gates, re-checked in log order from the cleartext facts (consent, permissions, the
   two-supervisor rule of erasures, nothing appended to an erased case, every agency an event
   names as a recipient registered and not removed), each event id recorded once, and
   recording times that never go back;
7. the root recomputed from every entry equals the checkpoint's root;
8. the checkpoint is consistent with the one saved last time;
9. with `--receipt`, an erasure receipt against the entries (`check_receipt`).

As it runs, the verifier also counts what the auditor's report shows (`Tally`: entries by kind
and day, events re-checked by type) and keeps every agency's key history, so the report
(`ledger.audit.board_report`, HTML or PDF) never reads the log again.

The checks that depend on order (registry, gates, the tree) run in this process as entries
stream in; the per-entry work that does not (re-serialising to JCS for step 3, and step 5's
Ed25519 verification with the key the registry gave) goes to worker processes a chunk at a
time, overlapping with the next chunk.
"""

from ledger.audit.bundle import BUNDLE_FORMAT, checkpoint_size, read_bundle, write_bundle
from ledger.audit.keys import KeyRecord, parse_agency_keys
from ledger.audit.receipts import check_receipt
from ledger.audit.report import CHECK_STEPS, AuditFailure, AuditReport, CheckOutcome
from ledger.audit.state import SavedState
from ledger.audit.verifier import verify

__all__ = [
    "BUNDLE_FORMAT",
    "CHECK_STEPS",
    "AuditFailure",
    "AuditReport",
    "CheckOutcome",
    "KeyRecord",
    "SavedState",
    "check_receipt",
    "checkpoint_size",
    "parse_agency_keys",
    "read_bundle",
    "verify",
    "write_bundle",
]
