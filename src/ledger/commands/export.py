"""`ledger export htcds`: a closed year's anonymised one-row-per-case export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ledger.commands.progress import bar
from ledger.settings import Settings

export_app = typer.Typer(help="Anonymised exports for data collaboratives", no_args_is_help=True)


@export_app.command("htcds")
def export_htcds(
    year: Annotated[int, typer.Option(help="A year that has ended (cases by identification)")],
    out: Annotated[Path, typer.Option(help="Where to write the CSV")],
    report: Annotated[
        Path | None, typer.Option(help="Write the JSON report here (default: standard error)")
    ] = None,
) -> None:
    """HTCDS / CTDC-style one-row-per-case CSV of a closed year: k = 11, l = 2, no ids, no
    free text. Runs on the deployment (it unseals attrs with the key-encryption key)."""
    from ledger.deploy import open_ledger, open_readmodels
    from ledger.interop import htcds
    from ledger.interop.service import InteropService
    from ledger.private_files import replace_private

    settings = Settings()
    ledger = open_ledger(settings)
    try:
        htcds.check_year(year, ledger.clock().year)
    except htcds.ExportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    models = open_readmodels(settings, ledger)
    try:  # the first export of a year is the only one (see docs)
        with bar() as progress:
            task = progress.add_task("reading the cases", total=None)
            text, details = InteropService(ledger, models).htcds_export(
                year, lambda done, total: progress.update(task, completed=done, total=total)
            )
    finally:
        models.views.close()
        ledger.store.close()
        ledger.keys.table.close()
    # One row per survivor, still data about people: owner only, even over a wider file.
    replace_private(out, text.encode("utf-8"))
    rendered = json.dumps(details, indent=2) + "\n"
    if report is not None:
        report.write_text(rendered, encoding="utf-8")
    else:
        typer.echo(rendered, err=True, nl=False)
    typer.echo(
        f"wrote {details['rows_published']} rows to {out} "
        f"({details['rows_suppressed']} suppressed of {details['cases']})"
    )
