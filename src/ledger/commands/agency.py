"""`ledger agency keygen|vkey|register` and `ledger agencies list`: an agency makes its
signing key and hands its verifier key line to the ledger's operator, who registers it, and
to the auditors, who verify with it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ledger.commands.exits import BAD_INPUT, CommandError
from ledger.commands.remote import DEFAULT_URL, AdminTokenFile, Url, connect
from ledger.contract import crypto
from ledger.contract.vocabulary import is_agency_id

agency_app = typer.Typer(
    help="An agency's signing key, and its registration with the ledger", no_args_is_help=True
)
agencies_app = typer.Typer(help="The agencies the ledger has registered", no_args_is_help=True)


def _verify_key(given: str) -> crypto.VerifyKey:
    """A verifier key line given as itself, or in a file; a signer key file gives its own."""
    path = Path(given)
    text = path.read_text(encoding="utf-8") if path.exists() else given
    line = text.strip()
    if line.startswith("PRIVATE+KEY+"):
        return crypto.parse_signing_key(line).verify_key
    if "+" not in line and not path.exists():
        raise CommandError(f"{given}: no such file, and not a verifier key line", BAD_INPUT)
    return crypto.parse_verify_key(line)


@agency_app.command("keygen")
def keygen(
    name: Annotated[str, typer.Argument(help="The agency's id, as the ledger will know it")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the private key (default: NAME.key)")
    ] = None,
) -> None:
    """Make an agency's signing key (Ed25519), written 0600, and print its verifier key line:
    the line goes to the ledger's operator (ledger agency register) and to every auditor."""
    from ledger.private_files import write_secret

    if not is_agency_id(name):
        raise CommandError(
            f"{name!r} is not an agency id: lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 63",
            BAD_INPUT,
        )
    private = out or Path(f"{name}.key")
    if private.exists():
        raise CommandError(
            f"{private} exists: an agency keeps its key (print its line with "
            f"`ledger agency vkey {private}`, or choose another --out)",
            BAD_INPUT,
        )
    key = crypto.generate_signing_key(name)
    write_secret(private, (key.line() + "\n").encode())
    typer.echo(key.verify_key.line())
    typer.echo(
        f"private key written to {private} (0600): it stays with the agency, never with the "
        "ledger's operator; the line above is what the operator registers and auditors verify "
        "with",
        err=True,
    )


@agency_app.command("vkey")
def vkey(
    file: Annotated[Path, typer.Argument(help="The agency's private key file (keygen's)")],
) -> None:
    """Print the verifier key line of an agency's private key file, to hand over again."""
    text = file.read_text(encoding="utf-8").strip()
    if text.startswith("PRIVATE+KEY+"):
        typer.echo(crypto.parse_signing_key(text).verify_key.line())
    else:
        typer.echo(crypto.parse_verify_key(text).line())  # a line already: checked, as it is


@agency_app.command("register")
def register(
    key: Annotated[
        str, typer.Argument(help="The verifier key line the agency gave, or a file holding it")
    ],
    name: Annotated[str, typer.Option(help="The agency's name")],
    kind: Annotated[str, typer.Option("--type", help="Its kind: ngo, shelter, health, legal...")],
    url: Url = DEFAULT_URL,
    token_file: AdminTokenFile = None,
) -> None:
    """Register an agency with its first key (admin): its id is the key line's name."""
    verify_key = _verify_key(key)
    with connect(url, token_file) as admin:
        answer = admin.register_agency(verify_key.name, name, kind, verify_key.line())
    typer.echo(
        f"registered agency {answer['id']} with key {verify_key.key_id} at log position "
        f"{answer['index']}"
    )


@agencies_app.command("list")
def agencies_list(url: Url = DEFAULT_URL, token_file: AdminTokenFile = None) -> None:
    """The agencies the ledger has registered: id, kind, whether it may be named now, name.
    For auditors, `ledger audit keys` shows the keys the log registered for each."""
    with connect(url, token_file) as client:
        agencies = client.agencies()
    if not agencies:
        typer.echo("no agency is registered")
    for a in sorted(agencies, key=lambda a: str(a["id"])):
        state = "active" if a["active"] else "removed"
        typer.echo(f"{a['id']:<24} {a['type']:<12} {state:<8} {a['name']}")
