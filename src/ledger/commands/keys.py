"""`ledger keys rotate-kek`: the key-encryption key replaced, every case key re-wrapped."""

from __future__ import annotations

from typing import Annotated

import typer

from ledger.commands.progress import bar
from ledger.settings import Settings

keys_app = typer.Typer(help="Key material", no_args_is_help=True)


@keys_app.command("rotate-kek")
def rotate_kek(
    every: Annotated[
        float | None,
        typer.Option(help="Only rotate when the current KEK is older than this many days"),
    ] = None,
) -> None:
    """Re-wrap every case key under a new key-encryption key and shred the old one.

    Online and restartable. For cron: `ledger keys rotate-kek --every 30` daily.
    """
    from datetime import UTC, datetime, timedelta

    from ledger.deploy import NoDeployment, key_paths
    from ledger.services.keystore import KeyStore, kek_created_at
    from ledger.services.keystore import rotate_kek as do_rotate
    from ledger.storage import open_store

    settings = Settings()
    paths = key_paths(settings)
    if not paths.kek.exists():
        raise NoDeployment(settings.keys, paths.kek.name)
    if every is not None and not (paths.kek.parent / "kek.next.key").exists():
        age = datetime.now(UTC) - kek_created_at(paths.kek)
        if age < timedelta(days=every):
            typer.echo(f"the KEK is {age.days} days old; not rotating (--every {every:g})")
            return
    store, table = open_store(settings)
    try:
        with bar() as progress:
            task = progress.add_task("re-wrapping case keys", total=None)
            moved = do_rotate(
                KeyStore(table, paths.kek), progress=lambda n: progress.advance(task, n)
            )
    finally:
        store.close()
        table.close()
    typer.echo(f"re-wrapped {moved} case keys under a new KEK; the old KEK file is shredded")
