"""`ledger audit keys`: the agency keys as the log's registry entries say, for an auditor
to compare with the lines the agencies hand over. Never a substitute for them: an audit run
with the lines the log itself gives would trust the server it audits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.commands.remote import fetch_log

HEADER = (
    "# What this ledger's log registers for each agency: the ledger's own account, for\n"
    "# comparison with the line each agency gave you. Never verify with these lines (that\n"
    "# would trust the server you audit): --agency-keys takes the agencies' own.\n"
)


@dataclass
class _Agency:
    registered_at: int | None = None
    keys: list[str] = field(default_factory=list)  # lines, in log order
    events: dict[str, list[str]] = field(default_factory=dict)  # key id -> what happened


def registry(entries: list[bytes]) -> dict[str, _Agency]:
    """Every agency's keys from the registry entries, in log order; nothing verified."""
    found: dict[str, _Agency] = {}
    for position, raw in enumerate(entries):
        try:
            entry: Any = json.loads(raw)
            if entry.get("kind") != "registry":
                continue
            action, agency, line = entry["action"], str(entry["agency"]), str(entry["key"])
            key_id = line.rsplit("+", 1)[0]
        except (ValueError, AttributeError, KeyError, TypeError):
            continue  # `audit verify` names what is malformed
        at = f"{position} ({entry.get('recorded_at')})"
        a = found.setdefault(agency, _Agency())
        if action == "agency.registered":
            a.registered_at = position
        if action in ("agency.registered", "key.added") and line not in a.keys:
            a.keys.append(line)
        verb = {"agency.registered": "registered", "key.added": "added"}.get(action, "revoked")
        said = a.events.setdefault(key_id, [])
        said.append(f"{verb} at {at}")
        since = entry.get("compromised_since")
        if action == "key.revoked" and isinstance(since, int):
            said.append(f"reported compromised from position {since}")
    return found


def audit_keys(
    url: Annotated[str | None, typer.Option(help="The ledger's base URL")] = None,
    token_file: Annotated[Path | None, typer.Option(help="An auditor token file")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Read an offline bundle instead")] = None,
    agency_keys: Annotated[
        Path | None, typer.Option(help="Your agency keys: say for each whether the log agrees")
    ] = None,
) -> None:
    """What the log's registry says each agency's keys are, for comparison with the lines
    the agencies hand over (never a substitute for them)."""
    from ledger.audit import parse_agency_keys, read_bundle

    if bundle is not None:
        _, entries = read_bundle(bundle)
    elif url is not None and token_file is not None:
        _, entries = fetch_log(url, token_file)
    else:
        raise typer.BadParameter("give --bundle FILE, or --url and --token-file")
    yours = parse_agency_keys(agency_keys.read_text(encoding="utf-8")) if agency_keys else None
    found = registry(entries)
    typer.echo(HEADER, nl=False)
    for agency in sorted(found):
        a = found[agency]
        first = a.keys[0] if a.keys else None
        typer.echo(f"{agency}")
        for line in a.keys:
            said = "; ".join(a.events.get(line.rsplit("+", 1)[0], []))
            typer.echo(f"  {line}  {said}")
        if yours is not None:
            mine = yours.get(agency)
            if mine is None:
                verdict = "MISSING from your agency keys: ask the agency for its line"
            elif first is not None and mine.line() == first:
                verdict = "the same as your copy"
            else:
                verdict = f"DIFFERENT from your copy (yours: {mine.key_id}): ask the agency"
            typer.echo(f"  first key: {verdict}")
    if yours is not None:
        for agency in sorted(set(yours) - set(found)):
            typer.echo(f"{agency}\n  in your agency keys, never registered in this log")
