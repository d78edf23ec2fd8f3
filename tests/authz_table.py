"""The authorisation matrix as data: `docs/authorization-matrix.csv` is the one source of
truth, read by `tests/test_authz_matrix.py` (which checks every cell against the running API)
and rendered into `docs/authorization-matrix.md` by this module (no ledger needed).

    python -m tests.authz_table            # print the rendering
    python -m tests.authz_table --write    # rewrite docs/authorization-matrix.md
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
TABLE = DOCS / "authorization-matrix.csv"
DOC = DOCS / "authorization-matrix.md"

# The caller's agency's relation to the case (ARCHITECTURE.md section 3), in column order.
RELATIONS = {
    "holder": "opened the case: its holder",
    "shared": "named by the active consent, and sent `identity` by a share under it",
    "named": "named by the active consent, and sent nothing",
    "statistics": "named only by a consent for `statistics`",
    "referred": "`to` of a pending referral (and named by the active consent it was made under)",
    "accepted": "accepted a referral of the case whose consent counts: its provider",
    "withdrawn": "accepted a referral of the case whose consent was withdrawn since",
    "unrelated": "never appended to the case nor named in it",
    "no agency": "token issued without an agency (auditor, monitor and admin only)",
}
# Who calls: a token of each role of an agency in that relation, then tokens that fail step 1.
CALLERS = {
    "caseworker": "caseworker token of the agency",
    "supervisor": "supervisor token of the agency",
    "auditor": "auditor token issued with that agency",
    "monitor": "monitor token issued with that agency",
    "admin": "admin token issued with that agency",
    "expired": "a caseworker token of the agency past its `expires_at` "
    "(relation *no agency*: an auditor token)",
    "revoked": "a caseworker token of the agency revoked by an admin "
    "(relation *no agency*: an auditor token)",
    "bad token": "a bearer token the ledger never issued",
    "no token": "no `Authorization` header",
}
NOT_APPLICABLE = "n/a"


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    action: str
    relation: str
    expected: dict[str, str]  # caller -> "201", "403", "200 (403)" for batches, or "n/a"

    @property
    def key(self) -> tuple[str, str, str]:
        return self.method, self.path, self.action


def load(path: Path = TABLE) -> list[Row]:
    """The table's rows, in file order; raises ValueError on a malformed table."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or ())
        if header != ["method", "path", "action", "relation", *CALLERS]:
            raise ValueError(f"{path.name}: unexpected header {header}")
        rows = []
        for line in reader:
            if line["relation"] not in RELATIONS:
                raise ValueError(f"{path.name}: unknown relation {line['relation']!r}")
            rows.append(
                Row(
                    line["method"],
                    line["path"],
                    line["action"],
                    line["relation"],
                    {caller: line[caller] for caller in CALLERS},
                )
            )
    return rows


def render(rows: list[Row]) -> str:
    """docs/authorization-matrix.md: one table per relation, requests down, callers across."""
    out = [
        "# Authorisation matrix",
        "",
        "<!-- Generated from authorization-matrix.csv by `python -m tests.authz_table --write`;"
        " do not edit by hand. -->",
        "",
        "Every cell is the HTTP status the API answers, checked request by request against the",
        "running application by `tests/test_authz_matrix.py` on SQLite and PostgreSQL (which also",
        "fails when a route is added that this table does not cover). The rules behind it are in",
        "[authorization.md](authorization.md) and [contract.md](contract.md); the data is",
        "[authorization-matrix.csv](authorization-matrix.csv).",
        "",
        "The scenario: one case opened by the *holder*, with an active consent (referral and",
        "data sharing of `identity` and `health`) naming *shared*, *named*, *referred* and",
        "*accepted*, a share of `identity` to *shared* under it, a consent for statistics only",
        "naming *statistics*, a referral accepted by *accepted* and one still pending to",
        "*referred*, and a referral accepted by *withdrawn* under a consent withdrawn since; a",
        "second case built the same way and then erased by two supervisors of the holder.",
        "`POST /v1/events` and `POST /v1/events:batch`",
        "submit events signed by the caller's agency (by the holder for tokens without an agency);",
        'a batch cell reads "outer status (status of its one item)". Writes that succeed change',
        "nothing the other cells depend on: every such cell gets its own fresh referral, agency,",
        "key, token or statistics period. Consent receipts and FHIR resources are asked for the",
        "active consent, the withdrawn one and a consent id never used; the receipt codes looked",
        "up are those printed on the holder's receipts (a well-formed code never issued stands",
        "for a case id never used).",
        "",
        "An unrelated agency cannot tell whether a case exists: for every request about a case it",
        "gets byte-identical answers (status and body) for this case, the erased one and a case id",
        "never used (a `case.opened` with an unused id opens a new case, so that one compares the",
        "live and the erased case only; auditor and admin tokens read the erasure receipt of any",
        "case by design). Its case and referral lists are empty. The test checks all of this, and",
        "that every refused request leaves the log as it was.",
        "",
        "Callers:",
        "",
    ]
    out += [f"- **{caller}**: {text}" for caller, text in CALLERS.items()]
    out += ["", "`n/a`: caseworker and supervisor tokens always have an agency.", ""]
    for relation, text in RELATIONS.items():
        out += [f"## {relation}", "", f"The caller's agency: {text}.", ""]
        out.append("| request | " + " | ".join(CALLERS) + " |")
        out.append("|---|" + "---|" * len(CALLERS))
        for row in rows:
            if row.relation != relation:
                continue
            label = f"`{row.method} {row.path}`" + (f" {row.action}" if row.action else "")
            out.append(f"| {label} | " + " | ".join(row.expected[c] for c in CALLERS) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    text = render(load())
    if "--write" in argv:
        DOC.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
