"""The `ledger` command."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ledger.settings import Settings

app = typer.Typer(help="Survivor case ledger", no_args_is_help=True, add_completion=False)


@app.command()
def init(
    origin: Annotated[str | None, typer.Option(help="The log origin (set once)")] = None,
) -> None:
    """Create key material, stores, the log origin and an admin token (idempotent)."""
    from ledger.deploy import KeyPaths
    from ledger.deploy import init as do_init

    settings = Settings()
    chosen = do_init(settings, origin)
    paths = KeyPaths(settings.keys)
    typer.echo(f"ledger ready: origin {chosen}")
    typer.echo(f"admin token: {paths.admin_token} (mode 0600); log key: {paths.log_vkey}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from ledger.api.app import create_app
    from ledger.deploy import open_ledger

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    ledger = open_ledger(settings)
    api = create_app(
        ledger,
        max_body_bytes=settings.max_body_bytes,
        checkpoint_every=settings.checkpoint_every,
        checkpoint_interval_s=settings.checkpoint_interval_s,
    )
    uvicorn.run(api, host=host, port=port, log_level=settings.log_level, server_header=False)


@app.command()
def demo(
    url: Annotated[str, typer.Option(help="The ledger's base URL")] = "http://127.0.0.1:8000",
    admin_token_file: Annotated[
        Path | None, typer.Option(help="Admin token file (default $LEDGER_KEYS/admin.token)")
    ] = None,
) -> None:
    """Play a realistic scenario through the Python client and print what happened."""
    from ledger.demo import run_demo

    settings = Settings()
    token_file = admin_token_file or settings.keys / "admin.token"
    run_demo(url, token_file.read_text().strip(), settings.keys / "demo")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
