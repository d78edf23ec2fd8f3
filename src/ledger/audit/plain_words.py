"""Each check of the audit in plain words, for the auditor's report: what it makes sure of,
and what its failure means, in sentences an auditor can read to a board."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plain:
    title: str
    what: str  # what the check makes sure of
    failure: str  # what it means when it does not hold


CHECKS: dict[str, Plain] = {
    "checkpoint signature": Plain(
        "The log's signed summary",
        "The summary of the log (its checkpoint: how many entries, and their fingerprint) is "
        "signed by the log's key, checked against the auditor's own copy of that key.",
        "The log's summary is not signed by the key the auditor holds. Nothing in this log "
        "can be relied on: it may come from another system, or have been altered.",
    ),
    "completeness": Plain(
        "Every entry present",
        "Every entry the summary counts was handed to the auditor.",
        "Entries are missing: the log holds fewer entries than its own signed summary "
        "counts. Entries may have been deleted.",
    ),
    "entry format": Plain(
        "Entries readable",
        "Every entry is of a kind the ledger writes, with all its parts and readable times.",
        "An entry is damaged or of an unknown kind: the ledger does not write entries like "
        "it. It was altered, or written by something other than the ledger.",
    ),
    "canonical bytes": Plain(
        "Entries unaltered in form",
        "Every entry is stored in the one exact form the ledger writes.",
        "An entry's bytes differ from the exact form the ledger writes: it was altered after "
        "it was written.",
    ),
    "key registry": Plain(
        "Agency key list",
        "Each agency key is registered once, and revoked only while in use.",
        "The list of agency keys was tampered with: a key registered twice, a revoked key "
        "brought back, or a key that is not a valid key.",
    ),
    "agency keys": Plain(
        "Agencies' own keys",
        "Each agency's first key is the one the auditor obtained from the agency itself, and "
        "every agency that signs is one the auditor knows.",
        "An agency's key in the log is not the key that agency gave the auditor, or an "
        "unknown agency signs: someone may be acting in an agency's name.",
    ),
    "key change signatures": Plain(
        "Key changes approved",
        "Every new agency key was approved by the agency's key in use and by the new key, "
        "at the time it was recorded.",
        "An agency key was added without the agency's own approval, or with an old approval "
        "replayed. What that key signed cannot be attributed to the agency.",
    ),
    "origin": Plain(
        "Events made for this log",
        "Every event names this log as the one it was made for.",
        "An event made for another log was copied into this one.",
    ),
    "signing key": Plain(
        "Keys valid when used",
        "Every event was signed with a key its agency had registered, and not revoked, at "
        "that point of the log.",
        "An event was signed with a key that was not registered, or already revoked, when "
        "the event was recorded.",
    ),
    "event signature": Plain(
        "Events signed by their agency",
        "Every event carries a valid signature of the agency that made it, over its content.",
        "An event's signature does not match its content: the event was altered after the "
        "agency signed it, or the agency never signed it.",
    ),
    "recorded time": Plain(
        "Times in order",
        "Recording times never go back, and stay close to the time the agency signed.",
        "An entry's time is out of order, or far from when it was signed: entries may have "
        "been back-dated, or inserted later.",
    ),
    "event ids": Plain(
        "Each event once",
        "No event is recorded twice.",
        "The same event is recorded more than once: a replay that would count a consent, a "
        "share or a referral twice.",
    ),
    "gates": Plain(
        "The rules, re-checked",
        "Every event was allowed by the ledger's rules at its time: a consent in force "
        "covering who receives what and why, children's consents given by a guardian, who "
        "may do what, recipients that are registered agencies, nothing added to an erased "
        "case.",
        "An event broke the ledger's rules, for example data shared without a consent that "
        "covers it. The ledger refuses such events: this one entered the log another way.",
    ),
    "two-supervisor rule": Plain(
        "Erasures by two supervisors",
        "Every erasure was requested by one supervisor and confirmed by another.",
        "A case was erased without the confirmation of a second, different supervisor.",
    ),
    "access": Plain(
        "Reads of sealed data allowed",
        "Every opening of a case's sealed data was by an agency entitled to it at that time: "
        "the agency holding the case, or one that was sent that data under a consent in "
        "force.",
        "A case's sealed data was opened by an agency not entitled to it at that time.",
    ),
    "acknowledgements": Plain(
        "Confirmations from those told",
        "Confirmations of what was done after a consent withdrawal or an erasure come only "
        "from agencies that were told of it, once each.",
        "A confirmation came from an agency that was never told, or was recorded twice.",
    ),
    "root": Plain(
        "Entries add up to the summary",
        "The fingerprint recomputed from every entry equals the one in the signed summary.",
        "The entries do not add up to the signed summary: entries were altered, removed, "
        "added or reordered.",
    ),
    "consistency with saved checkpoint": Plain(
        "History unchanged since last audit",
        "Today's log still begins with exactly the history verified at the last audit.",
        "The history verified at the last audit was rewritten since: the log was forked, or "
        "cut short.",
    ),
    "receipt signature": Plain(
        "Erasure receipt signed",
        "The erasure receipt is signed by the ledger's receipt key (the auditor's copy).",
        "The erasure receipt is not signed by the receipt key the auditor holds.",
    ),
    "receipt": Plain(
        "Erasure receipt matches the log",
        "The entry the receipt names erased its case, under a summary the entries reproduce.",
        "The erasure receipt does not match the log: the erasure it names is not there.",
    ),
    "witness quorum": Plain(
        "Witnesses cosigned the summary",
        "Enough of the independent witnesses in the auditor's policy cosigned the log's "
        "summary, so the log cannot show this auditor a history it hides from others.",
        "Not enough of the auditor's independent witnesses cosigned the log's summary: the "
        "log may be showing this auditor a history that others do not see.",
    ),
    "fork evidence": Plain(
        "A witness's evidence of a fork",
        "Evidence a witness kept of two different histories was checked with the log's key.",
        "A witness holds proof, signed with the log's own key, that the log showed two "
        "different histories: the log forked.",
    ),
}
UNKNOWN = Plain(
    "Another check",
    "A check of this audit.",
    "A check of the audit did not hold; the technical detail below says which.",
)

OTHER_FLAGS = (
    "Findings that do not fail the audit but deserve a look, such as a witness whose clock "
    "differs from the others'."
)
FLAGGED = (
    "The agency reported that the key may have been in someone else's hands from that "
    "point on. The signatures are valid, but the events may not be the agency's own acts: "
    "the agency should confirm or disown each."
)
UNACKNOWLEDGED = (
    "Agencies told of a consent withdrawal or an erasure that have not confirmed in the log, "
    "after {days} days, what they did with the data they had received."
)


def plain(check: str) -> Plain:
    return CHECKS.get(check, UNKNOWN)
