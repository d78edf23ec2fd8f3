"""Where the deployment is. `ledger init` run with the default paths (`./.ledger`,
`./keys`: relative to the working directory) records where it made the deployment, in
`$XDG_CONFIG_HOME/ledger/deployments.json` (default `~/.config`, 0600; no password). A
command run with the default paths from a folder that holds no deployment then uses the one
recorded, if it is the only one, or says which settings to give; it never advises a second
`ledger init` while a deployment exists elsewhere. Settings given (`LEDGER_HOME`,
`LEDGER_KEYS`) are taken as they are and never recorded."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ledger.commands.exits import CommandError
from ledger.private_files import replace_private
from ledger.settings import Settings

if TYPE_CHECKING:
    from ledger.deploy import NoDeployment

# A deployment is where its log key is (`deploy.KeyPaths`; its KEK may be elsewhere,
# LEDGER_KEK_FILE).
MARK = "log.key"
# Commands that never use a deployment's paths (or make one, in the working directory).
_OWN_PATHS = {"init", "audit", "witness", "console", "bench", "agency"}


@dataclass(frozen=True)
class Recorded:
    """One deployment `ledger init` made: absolute paths, and its database without secrets."""

    home: str
    keys: str
    database: str  # "sqlite", or the PostgreSQL URL without its password
    pg_schema: str
    origin: str
    at: str

    @property
    def exists(self) -> bool:
        return (Path(self.keys) / MARK).exists()

    def settings_line(self) -> str:
        line = f"LEDGER_KEYS={self.keys} LEDGER_HOME={self.home}"
        if self.database != "sqlite":
            line += f" LEDGER_DATABASE_URL={self.database} (with its password)"
            if self.pg_schema != "ledger":
                line += f" LEDGER_PG_SCHEMA={self.pg_schema}"
        return line


def record_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ledger" / "deployments.json"


def _paths_given() -> bool:
    return "LEDGER_HOME" in os.environ or "LEDGER_KEYS" in os.environ


def recorded() -> list[Recorded]:
    """The deployments recorded that still exist (their key-encryption key is there)."""
    try:
        data = json.loads(record_file().read_text(encoding="utf-8"))
        found = [Recorded(**item) for item in data["deployments"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [r for r in found if r.exists]


def _redacted(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    info.pop("password", None)
    user = f"{info.pop('user')}@" if "user" in info else ""
    host, port = info.pop("host", "localhost"), info.pop("port", None)
    db = info.pop("dbname", "")
    rest = "?" + "&".join(f"{k}={v}" for k, v in sorted(info.items())) if info else ""
    return f"postgresql://{user}{host}{f':{port}' if port else ''}/{db}{rest}"


def remember(settings: Settings, origin: str) -> str | None:
    """After `ledger init`: record the deployment if it was made with the default paths;
    a note to print when another recorded deployment exists (this one is separate)."""
    if _paths_given():
        return None
    here = Recorded(
        str(settings.home.resolve()),
        str(settings.keys.resolve()),
        _redacted(settings.database_url or "") if settings.is_postgres else "sqlite",
        settings.pg_schema,
        origin,
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    others = [r for r in recorded() if r.keys != here.keys]
    body = {"deployments": [asdict(r) for r in [*others, here]]}
    try:
        replace_private(record_file(), (json.dumps(body, indent=2) + "\n").encode())
    except OSError as exc:  # the deployment is made: only finding it from elsewhere is lost
        return f"note: could not record where this deployment is ({record_file()}: {exc.strerror})"
    if not others:
        return None
    listed = ", ".join(str(Path(r.keys).parent) for r in others)
    return f"note: this deployment is separate from the one(s) recorded at {listed}"


def locate(command: str | None) -> None:
    """Before a command: with the default paths and no deployment in the working folder,
    use the one `ledger init` recorded, if it is the only one and on the same database."""
    if command in _OWN_PATHS or _paths_given() or (Settings().keys / MARK).exists():
        return
    found = [r for r in recorded() if _same_backend(r)]
    if len(found) != 1:
        return  # a command that needs one says what to set (`where_to_look`)
    os.environ["LEDGER_HOME"], os.environ["LEDGER_KEYS"] = found[0].home, found[0].keys
    typer.echo(
        f"ledger: using the deployment at {Path(found[0].keys).parent} (recorded by ledger init;"
        " LEDGER_KEYS and LEDGER_HOME choose another)",
        err=True,
    )


def _same_backend(r: Recorded) -> bool:
    return (r.database != "sqlite") == Settings().is_postgres


def where_to_look(exc: NoDeployment) -> str:
    """What to say when a command finds no deployment: the settings of the ones recorded,
    or, when there is none anywhere, how to make one."""
    here = f"no deployment at {exc.where} (no {exc.missing})"
    found = recorded()
    if len(found) == 1:
        return (
            f"{here}; the deployment ledger init made is elsewhere: set {found[0].settings_line()}"
        )
    if found:
        listed = "; ".join(r.settings_line() for r in found)
        return f"{here}; ledger init made several, set the settings of one: {listed}"
    if _paths_given():
        return (
            f"{here}: check LEDGER_KEYS and LEDGER_HOME (those given to ledger init), or run "
            "ledger init with them to make a new deployment there"
        )
    return f"{here}, and none is recorded: run ledger init to make one here"


def before_any_command(ctx: typer.Context) -> None:
    """`ledger`'s callback: where the deployment is, before the command runs."""
    locate(ctx.invoked_subcommand)


_SERVING: list[int] = []  # the lock's descriptor, held for the life of `serve` or `worker`


def serving(settings: Settings) -> None:
    """`ledger serve` and `ledger worker` hold `$LEDGER_KEYS/in-use.lock` (shared) while they
    run, so a restore sees them and refuses (`restoring`); the kernel drops it with them."""
    import fcntl

    fd = os.open(settings.keys / "in-use.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _SERVING.append(fd)


@contextmanager
def restoring(settings: Settings) -> Iterator[None]:
    """The deployment's lock, exclusively: none of its servers or workers on this machine."""
    import fcntl

    settings.keys.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.keys / "in-use.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CommandError(
                "the ledger is running here (ledger serve or ledger worker holds "
                f"{settings.keys / 'in-use.lock'}): stop them, then restore"
            ) from None
        yield
    finally:
        os.close(fd)
