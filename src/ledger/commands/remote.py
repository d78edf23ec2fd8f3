"""The ledger over HTTP from the command line: the URL and token options every such command
takes, the token read from its file, and the log fetched page by page with a progress bar."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ledger.commands.exits import BAD_INPUT, CommandError
from ledger.commands.progress import bar
from ledger.settings import Settings

if TYPE_CHECKING:
    from ledger.client import LedgerClient

PAGE = 1000  # the ledger answers at least this many entries a page

Url = Annotated[str, typer.Option(envvar="LEDGER_URL", help="The ledger's base URL ($LEDGER_URL)")]
AdminTokenFile = Annotated[
    Path | None,
    typer.Option(help="A token file (default: the admin token, $LEDGER_KEYS/admin.token)"),
]
DEFAULT_URL = "http://127.0.0.1:8000"


def read_token(token_file: Path | None) -> str:
    """The token in `token_file`, or the deployment's admin token when none is given."""
    if token_file is None:
        from ledger.deploy import NoDeployment

        keys = Settings().keys
        if not (keys / "admin.token").exists():  # no deployment here: where to look
            raise NoDeployment(keys, "admin.token (or give --token-file)")
    path = token_file or Settings().keys / "admin.token"
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise CommandError(f"{path} holds no token", BAD_INPUT)
    return token


def connect(url: str, token_file: Path | None) -> LedgerClient:
    """A client for `url` with the token of `token_file` (default: the admin token)."""
    from ledger.client import LedgerClient

    return LedgerClient(url, read_token(token_file))


def fetch_log(
    url: str,
    token_file: Path,
    wait: Callable[[Callable[[], str]], str] | None = None,
) -> tuple[str, list[bytes]]:
    """The newest checkpoint (or the one `wait` waits for) and every entry it covers, page by
    page with a progress bar; fewer entries when the log has a gap (the audit says so)."""
    from ledger.audit import checkpoint_size
    from ledger.client import LedgerClient

    with LedgerClient(url, read_token(token_file)) as client:
        note = client.checkpoint() if wait is None else wait(client.checkpoint)
        size = checkpoint_size(note)
        entries: list[bytes] = []
        with bar() as progress:
            task = progress.add_task("fetching the log", total=size)
            while len(entries) < size:
                page = client.entries(len(entries), min(len(entries) + PAGE, size))
                entries += page
                progress.advance(task, len(page))
                if not page:
                    break
        return note, entries
