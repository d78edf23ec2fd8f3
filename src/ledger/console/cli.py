"""`ledger console`: serve an agency's console, and create its accounts."""

from __future__ import annotations

import getpass
import logging
from typing import Annotated

import typer

from ledger.console.accounts import AccountError, Accounts, Policy
from ledger.console.settings import ConsoleSettings
from ledger.contract import crypto
from ledger.private_files import write_secret

console_app = typer.Typer(help="The agency console (web interface)", no_args_is_help=True)


def open_accounts(settings: ConsoleSettings) -> Accounts:
    """The console's store, with its own sealing key (made on first use, 0600)."""
    key_path = settings.state_dir / "console.key"
    if not key_path.exists():
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        write_secret(key_path, crypto.b64(crypto.new_data_key()).encode())
    key = crypto.b64decode_strict(key_path.read_text().strip())
    policy = Policy(
        idle_s=settings.idle_timeout_s,
        absolute_s=settings.absolute_timeout_s,
        max_failures=settings.max_failed_logins,
        lockout_s=settings.lockout_s,
    )
    return Accounts(key, settings.state_dir / "console.db", settings.database_url, policy)


@console_app.command("serve")
def serve() -> None:
    """Serve the console for the agency whose signing key is LEDGER_CONSOLE_AGENCY_KEY_FILE."""
    import uvicorn

    from ledger.client import load_signing_key
    from ledger.console.app import Console, create_app

    settings = ConsoleSettings()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    key = load_signing_key(settings.agency_key_file) if settings.agency_key_file else None
    app = create_app(Console(settings, open_accounts(settings), key))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)


@console_app.command("create-account")
def create_account(
    username: Annotated[str, typer.Argument(help="The person's username")],
    name: Annotated[str, typer.Option(help="The person's name as colleagues know it")],
    role: Annotated[str, typer.Option(help="caseworker or supervisor")] = "caseworker",
    language: Annotated[str, typer.Option(help="es, en, pt or fr")] = "es",
    token_file: Annotated[
        typer.FileText, typer.Option(help="A file holding the person's own ledger token")
    ] = ...,  # type: ignore[assignment]
) -> None:
    """Create an account bound to the person's own ledger token; the password is asked for."""
    settings = ConsoleSettings()
    password = getpass.getpass("password (12 characters or more): ")
    accounts = open_accounts(settings)
    try:
        account, secret = accounts.create(
            username, name, role, password, token_file.read().strip(), language
        )
    except AccountError as exc:
        typer.echo(f"error: {exc.message.format(**exc.params)}", err=True)
        raise typer.Exit(2) from None
    finally:
        accounts.close()
    typer.echo(f"account {account.username} created ({account.role})")
    if secret is not None:
        typer.echo(f"enrol this secret in the person's authenticator app, once: {secret}")
