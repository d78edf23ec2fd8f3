"""`ledger console`: serve an agency's console, and create its accounts."""

from __future__ import annotations

import getpass
import logging
import secrets
import threading
from pathlib import Path
from typing import Annotated

import typer

from ledger.console.accounts import AccountError, Accounts, Policy
from ledger.console.settings import ConsoleSettings
from ledger.contract import crypto
from ledger.private_files import write_secret

console_app = typer.Typer(help="The agency console (web interface)", no_args_is_help=True)


def open_accounts(settings: ConsoleSettings) -> Accounts:
    """The console's store, with its own sealing key (made on first use, 0600)."""
    key_path = settings.key_file or settings.state_dir / "console.key"
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # its owner's only
    if not key_path.exists():
        key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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

    from ledger.charts import warm
    from ledger.client import load_signing_key
    from ledger.console.app import Console, create_app

    settings = ConsoleSettings()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # each request's URL: not needed
    key = load_signing_key(settings.agency_key_file) if settings.agency_key_file else None
    app = create_app(Console(settings, open_accounts(settings), key))
    threading.Thread(target=warm, name="charts-warm", daemon=True).start()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)


@console_app.command("bootstrap")
def bootstrap(
    agency: Annotated[str, typer.Option(help="The first agency's id")] = "ngo-first",
    name: Annotated[str, typer.Option(help="Its name")] = "First agency",
    admin_token_file: Annotated[
        Path, typer.Option(help="The ledger's admin token (`ledger init` writes it)")
    ] = Path("keys/admin.token"),
) -> None:
    """A first agency for a trial on one machine (`make run`): its signing key made in the
    console's own state directory (0600, never among the ledger's keys), the agency
    registered with the admin token, and a first supervisor account whose one-time password
    and TOTP secret are written to `<state dir>/first-login` (0600): the password must be
    changed at the first login, which deletes the file. Does nothing if the account exists."""
    from ledger.client import LedgerClient, LedgerHTTPError

    settings = ConsoleSettings()
    key_file = settings.agency_key_file or settings.state_dir / f"{agency}.key"
    login_file = settings.state_dir / "first-login"
    accounts = open_accounts(settings)
    try:
        if any(a.username == "supervisor" for a in accounts.list()):
            typer.echo("console: the first supervisor's account exists")
            return
        if not key_file.exists():
            write_secret(key_file, crypto.generate_signing_key(agency).line().encode())
        key = crypto.parse_signing_key(key_file.read_text())
        admin = LedgerClient(settings.ledger_url, admin_token_file.read_text().strip())
        with admin:
            try:
                admin.register_agency(agency, name, "ngo", key.verify_key.line())
            except LedgerHTTPError as exc:
                if exc.status != 409:  # registered by an earlier, interrupted bootstrap
                    raise
            token = admin.create_token("supervisor", "first supervisor (console)", agency)
        password = secrets.token_urlsafe(12)
        _, secret = accounts.create(
            "supervisor", "First supervisor", "supervisor", password, token["token"],
            settings.language, must_change=True,
        )  # fmt: skip
        write_secret(
            login_file,
            f"username: supervisor\npassword: {password}\ntotp secret: {secret}\n".encode(),
        )
        typer.echo(f"console: agency {agency} registered; first login in {login_file}")
    finally:
        accounts.close()


@console_app.command("create-account")
def create_account(
    username: Annotated[str, typer.Argument(help="The person's username")],
    name: Annotated[str, typer.Option(help="The person's name as colleagues know it")],
    role: Annotated[
        str, typer.Option(help="caseworker, supervisor, or monitor (a console with no agency key)")
    ] = "caseworker",
    language: Annotated[str, typer.Option(help="es, en, pt or fr")] = "es",
    token_file: Annotated[
        typer.FileText, typer.Option(help="A file holding the person's own ledger token")
    ] = ...,  # type: ignore[assignment]
) -> None:
    """Create an account bound to the person's own ledger token; the password is asked for."""
    from ledger.client import LedgerClient
    from ledger.console.pages import check_token

    settings = ConsoleSettings()
    token = token_file.read().strip()
    key = crypto.parse_signing_key(settings.agency_key_file.read_text()) if (
        settings.agency_key_file) else None  # fmt: skip
    agency = key.name if key is not None else settings.agency
    password = getpass.getpass("password (12 characters or more): ")
    accounts = open_accounts(settings)
    try:
        with LedgerClient(settings.ledger_url, token) as ledger:
            check_token(ledger, role, agency)  # live, this agency's, of this role
        account, secret = accounts.create(username, name, role, password, token, language)
    except AccountError as exc:
        typer.echo(f"error: {exc.message.format(**exc.params)}", err=True)
        raise typer.Exit(2) from None
    finally:
        accounts.close()
    typer.echo(f"account {account.username} created ({account.role})")
    if secret is not None:
        typer.echo(f"enrol this secret in the person's authenticator app, once: {secret}")
