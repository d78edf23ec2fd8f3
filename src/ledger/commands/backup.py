"""`ledger backup` and `ledger restore`.

A backup is a folder (0700): the databases' consistent copies (`snapshots.py`), the log's and
the receipts' signing keys and the admin token (`keys/`), and `manifest.json` (what it holds,
each file's SHA-256). Never the key-encryption key: it is backed up apart, and a restore takes
it from `$LEDGER_KEYS/kek.key` or `--kek`. Never `latest-checkpoint` either (`log/watermark.py`):
restoring a backup does not roll back the ledger's memory of what it has signed, so a restored
log older than that is refused until the operator accepts it (`--accept-rollback`).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.commands.deployment import restoring
from ledger.commands.exits import BAD_INPUT, ROLLED_BACK, CommandError
from ledger.commands.progress import bar
from ledger.commands.snapshots import snapshots_for
from ledger.private_files import replace_private
from ledger.settings import Settings

FORMAT = "ledger-backup-v1"
KEY_FILES = ("log.key", "log.vkey", "receipt.key", "receipt.vkey", "admin.token")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _kek_id(path: Path) -> str | None:
    from ledger.services.keystore import load_kek

    return load_kek(path)[0] if path.exists() else None


def backup(
    out: Annotated[Path, typer.Argument(help="A new folder for the backup (not under the keys)")],
) -> None:
    """A consistent backup of the deployment, taken while it serves: the databases, the
    signing keys and the admin token, never the key-encryption key (back that up apart)."""
    from ledger.deploy import NoDeployment, key_paths

    settings = Settings()
    paths = key_paths(settings)
    if not paths.kek.exists():
        raise NoDeployment(settings.keys, paths.kek.name)
    if not settings.is_postgres and not (settings.home / "ledger.db").exists():
        raise NoDeployment(settings.home, "ledger.db")
    if out.resolve().is_relative_to(settings.keys.resolve()):
        raise CommandError(f"{out} is under {settings.keys}: a backup never sits beside the KEK")
    if out.exists() and any(out.iterdir()):
        raise CommandError(f"{out} exists and is not empty: give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    snapshots = snapshots_for(settings)
    with bar() as progress:
        task = progress.add_task("backing up", total=len(snapshots.files()) + len(KEY_FILES))
        facts = snapshots.take(out, lambda _: progress.advance(task))
        for name in KEY_FILES:
            if (settings.keys / name).exists():
                replace_private(out / "keys" / name, (settings.keys / name).read_bytes())
            progress.advance(task)
    (out / "keys").chmod(0o700)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "backend": "postgresql" if settings.is_postgres else "sqlite",
        "pg_schema": settings.pg_schema if settings.is_postgres else None,
        "origin": facts.origin,
        "log_size": facts.log_size,
        "checkpoint": facts.checkpoint,
        "case_keys": facts.case_keys,
        "kek_ids": facts.kek_ids,
        "files": {name: _sha256(out / name) for name in files},
    }
    replace_private(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    kek = ", ".join(facts.kek_ids) or _kek_id(paths.kek) or "-"
    typer.echo(
        f"backup of {facts.log_size} log entries and {facts.case_keys} case keys written to "
        f"{out}. The key-encryption key is NOT in it: keep a copy of {paths.kek} (KEK {kek}) "
        "apart, on another medium in another place: a restore needs it, and whoever holds "
        "both can read every case not erased"
    )


def _manifest(folder: Path) -> dict[str, Any]:
    """The backup's manifest, every file checked against it."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CommandError(f"{folder} is not a ledger backup ({FORMAT})")
    for name, digest in manifest["files"].items():
        if _sha256(folder / name) != digest:
            raise CommandError(f"{folder / name} is not the file backed up (its SHA-256 differs)")
    return manifest


def _check_kek(manifest: dict[str, Any], kek: Path, given: Path | None) -> None:
    """Every KEK the backup's case keys are wrapped by is here, or given with --kek."""
    here = {i for i in (_kek_id(kek), _kek_id(kek.with_name("kek.next.key"))) if i}
    have = here | ({_kek_id(given)} if given is not None else set())
    missing = sorted(set(manifest["kek_ids"]) - have)
    if missing:
        raise CommandError(
            f"the backup's case keys are wrapped by KEK {', '.join(missing)}, and "
            f"{kek} is {', '.join(sorted(here)) or 'missing'}: give your copy of that KEK "
            "with --kek FILE. After a rotation an older backup is unreadable without it, by "
            "design: that is how an erasure reaches the backups",
            BAD_INPUT,
        )


def _rewrap(settings: Settings, given: Path) -> int:
    """The restored case keys wrapped by the KEK given, re-wrapped under the deployment's
    own (which stays in place: a restore never replaces nor deletes a KEK file)."""
    from ledger.deploy import key_paths
    from ledger.services.keystore import KeyStore
    from ledger.storage import open_store

    store, table = open_store(settings)
    try:
        mine, theirs = KeyStore(table, key_paths(settings).kek), KeyStore(table, given)
        moved = 0
        while rows := table.wrapped_by_other(mine.kek_id, 500):
            for case_id, kek_id, wrapped in rows:
                key = theirs.unwrap(case_id, kek_id, wrapped)
                moved += table.rewrap(case_id, kek_id, mine.kek_id, mine.wrap(case_id, key))
        table.compact()
        return moved
    finally:
        store.close()
        table.close()


def restore(
    folder: Annotated[
        Path | None, typer.Argument(help="The backup's folder (none: only --accept-rollback)")
    ] = None,
    kek: Annotated[
        Path | None, typer.Option(help="Your copy of the KEK the backup needs, if not in place")
    ] = None,
    seen: Annotated[
        Path | None,
        typer.Option(help="A checkpoint auditors or witnesses hold, not to be rolled back"),
    ] = None,
    accept_rollback: Annotated[
        bool,
        typer.Option(help="Serve the restored log even if older than a checkpoint signed"),
    ] = False,
) -> None:
    """Put a backup back (stop the API and the worker first). A log older than the newest
    checkpoint this deployment signed is not served until accepted with --accept-rollback."""
    from ledger.deploy import key_paths, open_ledger
    from ledger.log.watermark import RolledBack, Watermark

    settings = Settings()
    paths = key_paths(settings)
    if folder is not None:
        with restoring(settings):  # refused while a server or worker runs here
            _put_back(settings, folder, kek, seen)
    elif not accept_rollback:
        raise typer.BadParameter("give the backup's folder, or --accept-rollback alone")
    ledger = open_ledger(settings, rollback_ok=True)
    try:
        watermark = Watermark(paths.watermark)
        size = ledger.store.log_size()
        superseded = watermark.accept(ledger.log) if accept_rollback else None
        if superseded is not None:
            typer.echo(
                f"rollback accepted: the log of {size} entries is served, though this "
                f"deployment signed one of {superseded} (kept in {watermark.rollbacks}). Tell "
                "the auditors and the witnesses' operators: their checkpoints no longer extend"
            )
        watermark.check(ledger.log)
    except RolledBack as exc:  # always a restore's own (an acceptance leaves none)
        typer.echo(f"restored, but not to be served: {exc}", err=True)
        raise typer.Exit(ROLLED_BACK) from None
    finally:
        ledger.store.close()
        ledger.keys.table.close()
    typer.echo(f"the ledger's log has {size} entries and extends every checkpoint it signed")


def _put_back(settings: Settings, folder: Path, kek: Path | None, seen: Path | None) -> None:
    from ledger.contract import crypto
    from ledger.deploy import key_paths
    from ledger.log.checkpoint import verify_checkpoint
    from ledger.private_files import write_secret

    manifest = _manifest(folder)
    backend = "postgresql" if settings.is_postgres else "sqlite"
    if manifest["backend"] != backend:
        raise CommandError(
            f"the backup is of a {manifest['backend']} deployment, this is {backend}"
        )
    if settings.is_postgres and manifest["pg_schema"] != settings.pg_schema:
        raise CommandError(f"the backup is of schema {manifest['pg_schema']}: set LEDGER_PG_SCHEMA")
    paths = key_paths(settings)
    _check_kek(manifest, paths.kek, kek)
    log_key = crypto.parse_verify_key((folder / "keys" / "log.vkey").read_text(encoding="utf-8"))
    held = seen.read_text(encoding="utf-8") if seen is not None else None
    if held is not None:
        verify_checkpoint(held, log_key, log_key.name)  # NoteError: not this log's
    settings.keys.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.keys, 0o700)
    snapshots = snapshots_for(settings)
    with bar() as progress:
        task = progress.add_task("restoring", total=len(snapshots.files()) + len(KEY_FILES))
        snapshots.put_back(folder, lambda _: progress.advance(task))
        for name in KEY_FILES:
            if (folder / "keys" / name).exists():
                replace_private(settings.keys / name, (folder / "keys" / name).read_bytes())
            progress.advance(task)
    mine = _kek_id(paths.kek)
    if kek is not None and mine is None:
        write_secret(paths.kek, kek.read_bytes())  # a new machine: the KEK given is its own
    elif kek is not None and _kek_id(kek) != mine:
        typer.echo(f"re-wrapped {_rewrap(settings, kek)} case keys under KEK {mine}")
    if held is not None:
        from ledger.log.store import StoredCheckpoint
        from ledger.log.watermark import Watermark

        body = verify_checkpoint(held, log_key, log_key.name)
        Watermark(paths.watermark).remember(StoredCheckpoint(body.size, body.root, held, ""))
    typer.echo(
        f"restored {manifest['log_size']} log entries and {manifest['case_keys']} case keys "
        f"from {folder} (taken {manifest['created_at']})"
    )
    if not (settings.keys / "webhooks.key").exists():
        typer.echo(
            f"put your copy of webhooks.key back in {settings.keys} before serving: without it "
            "the webhook secrets cannot be read, and agencies must register their endpoints again",
            err=True,
        )
