"""One clear line, never a traceback: what the `ledger` command says when something fails,
with what to do, and the exit code it ends with (`exits.py`, also in `ledger --help`)."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

import typer

from ledger.commands.exits import (
    BAD_INPUT,
    INTERNAL,
    NO_DEPLOYMENT,
    REFUSED,
    ROLLED_BACK,
    UNREACHABLE,
    CommandError,
)

_HINTS = {
    401: "the token is not valid (revoked, expired, or not this ledger's): check --token-file",
    403: "this token's role may not do it: an admin's is in $LEDGER_KEYS/admin.token",
    404: "not found",
    409: "it exists already",
}


def _url(exc: Any) -> str:
    try:
        request = exc.request
    except RuntimeError:
        return "the ledger"
    return f"{request.url.scheme}://{request.url.netloc.decode()}"


def describe(exc: BaseException) -> tuple[str, int]:
    """The line to print for `exc`, and the exit code."""
    import httpx  # here, not at start-up: `ledger --help` stays quick

    from ledger.client import LedgerHTTPError
    from ledger.contract import crypto
    from ledger.contract.notes import NoteError
    from ledger.deploy import NoDeployment
    from ledger.log.watermark import RolledBack

    if isinstance(exc, CommandError):
        return exc.message, exc.code
    if isinstance(exc, NoDeployment):
        from ledger.commands.deployment import where_to_look

        return where_to_look(exc), NO_DEPLOYMENT
    if isinstance(exc, RolledBack):
        return str(exc), ROLLED_BACK
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename}: no such file or folder (check the path)", BAD_INPUT
    if isinstance(exc, PermissionError):
        return (
            f"{exc.filename}: permission denied (run as the deployment's owner, or check the "
            "file's mode)",
            BAD_INPUT,
        )
    if isinstance(exc, IsADirectoryError | NotADirectoryError):
        return f"{exc.filename}: {exc.strerror} (give a file)", BAD_INPUT
    if isinstance(exc, UnicodeDecodeError):
        return "a file given is not UTF-8 text: is it the right file?", BAD_INPUT
    if isinstance(exc, crypto.BadKeyLine):
        return f"not a key the ledger reads ({exc}): check the key file given", BAD_INPUT
    if isinstance(exc, NoteError):
        return f"not a checkpoint signed by this log's key ({exc}): check the file given", BAD_INPUT
    if isinstance(exc, json.JSONDecodeError):
        return (
            f"a file given is not the JSON expected ({exc.msg}): is it the right file?",
            BAD_INPUT,
        )
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return f"bad URL ({exc}): give --url like https://ledger.example.org", BAD_INPUT
    if isinstance(exc, httpx.TimeoutException):
        return f"{_url(exc)} did not answer in time: is it running? check --url", UNREACHABLE
    if isinstance(exc, httpx.TransportError):
        return f"cannot reach {_url(exc)} ({exc}): is it running? check --url", UNREACHABLE
    if isinstance(exc, LedgerHTTPError):
        said = exc.body.get("message") or exc.error
        hint = _HINTS.get(exc.status)
        return f"the ledger refused: {exc.status} {said}" + (f" ({hint})" if hint else ""), REFUSED
    if _is_database_error(exc):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot use the database: {first} (check LEDGER_DATABASE_URL)", UNREACHABLE
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}", UNREACHABLE
    return (
        f"internal error ({type(exc).__name__}: {exc}); this is a bug: LEDGER_DEBUG=1 shows "
        "the traceback",
        INTERNAL,
    )


def _is_database_error(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc, psycopg.OperationalError | sqlite3.OperationalError)


def run(app: Callable[[], object]) -> None:
    """Run the command; a failure becomes one line on standard error and its exit code."""
    try:
        app()
    except SystemExit as exc:
        if isinstance(exc.code, str):  # raise SystemExit("message"): a message, not a code
            typer.echo(f"ledger: {exc.code}", err=True)
            sys.exit(BAD_INPUT)
        raise
    except KeyboardInterrupt:
        typer.echo("ledger: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("LEDGER_DEBUG"):
            raise
        line, code = describe(exc)
        typer.echo(f"ledger: {line}", err=True)
        sys.exit(code)
