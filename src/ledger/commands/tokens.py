"""`ledger tokens create|list|revoke`: one token per person, through the ledger's API with
an admin token (by default the deployment's own, `$LEDGER_KEYS/admin.token`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from ledger.commands.exits import BAD_INPUT, CommandError
from ledger.commands.remote import DEFAULT_URL, AdminTokenFile, Url, connect

tokens_app = typer.Typer(help="Tokens: one per person, with a role", no_args_is_help=True)


@tokens_app.command("create")
def create(
    role: Annotated[str, typer.Option(help="caseworker, supervisor, auditor, monitor or admin")],
    label: Annotated[str, typer.Option(help="Who it is for (shown in `tokens list`)")],
    agency: Annotated[
        str | None, typer.Option(help="The agency it acts for (caseworkers, supervisors)")
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option(help="When it stops working, YYYY-MM-DDTHH:MM:SSZ")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the token to this file (0600) instead of printing it"),
    ] = None,
    url: Url = DEFAULT_URL,
    token_file: AdminTokenFile = None,
) -> None:
    """Issue a token for one person (admin). The token is shown once: give it to that person
    only, as a file readable by them alone (--out writes one)."""
    from ledger.private_files import write_secret

    if out is not None and out.exists():
        raise CommandError(f"{out} exists: choose another --out (a token is never overwritten)")
    with connect(url, token_file) as admin:
        made = admin.create_token(role, label, agency, expires_at)
    about = f"token {made['id']} ({role}{f' of {agency}' if agency else ''}, {label!r})"
    if out is None:
        typer.echo(made["token"])
        typer.echo(f"{about}: shown once, keep it as a file only its holder reads", err=True)
    else:
        write_secret(out, (made["token"] + "\n").encode())
        typer.echo(f"{about} written to {out} (0600)")


def _state(token: dict[str, str | None], now: str) -> str:
    if token["revoked_at"]:
        return "revoked"
    expires = token["expires_at"]
    return "expired" if expires is not None and expires <= now else "active"


@tokens_app.command("list")
def list_tokens(
    everything: Annotated[
        bool, typer.Option("--all", help="Also revoked and expired tokens")
    ] = False,
    url: Url = DEFAULT_URL,
    token_file: AdminTokenFile = None,
) -> None:
    """The ledger's tokens (admin): id, role, agency, state, creation time, label; never a
    token itself, which only its creation showed."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with connect(url, token_file) as admin:
        tokens = list(admin.every("/v1/tokens", "tokens"))
    shown = [t for t in tokens if everything or _state(t, now) == "active"]
    for t in sorted(shown, key=lambda t: (str(t["created_at"]), str(t["id"]))):
        typer.echo(
            f"{t['id']:<22} {t['role']:<10} {t['agency'] or '-':<20} {_state(t, now):<8} "
            f"{t['created_at']}  {t['label']}"
        )
    hidden = len(tokens) - len(shown)
    more = f" ({hidden} revoked or expired: --all shows them)" if hidden else ""
    typer.echo(f"{len(shown)} tokens{more}", err=True)


@tokens_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_..., from tokens list)")],
    url: Url = DEFAULT_URL,
    token_file: AdminTokenFile = None,
) -> None:
    """Revoke a token: it answers 401 from now on (an admin any; a supervisor's token its
    own agency's staff)."""
    if not token_id.startswith("tok_"):
        raise CommandError(f"{token_id!r} is not a token id: ids start with tok_", BAD_INPUT)
    with connect(url, token_file) as admin:
        admin.revoke_token(token_id)
    typer.echo(f"token {token_id} revoked")
