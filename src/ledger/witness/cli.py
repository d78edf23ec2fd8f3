"""`ledger witness keygen` and `ledger witness serve`: the witness's own commands. It reads no
ledger setting and no ledger file: only its key, the logs file and its state folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ledger.contract import crypto

witness_app = typer.Typer(
    help="A witness: cosigns the checkpoints of the logs it trusts (c2sp.org/tlog-witness)",
    no_args_is_help=True,
)


@witness_app.command("keygen")
def keygen(
    name: Annotated[
        str, typer.Option(help="The witness's name, a schema-less URL (witness.example.org/w1)")
    ],
    out: Annotated[Path, typer.Option(help="Folder for witness.key (0600) and witness.vkey")],
) -> None:
    """Make a witness key (cosignature/v1, Ed25519) and print its verifier key line."""
    from ledger.private_files import write_secret

    try:
        key = crypto.generate_signing_key(name, crypto.COSIGNATURE_TYPE)
    except crypto.BadKeyLine as exc:
        raise typer.BadParameter(str(exc)) from exc
    private = out / "witness.key"
    if private.exists():
        typer.echo(f"{private} exists: a witness keeps its key (move it away first)", err=True)
        raise typer.Exit(2)
    write_secret(private, (key.line() + "\n").encode())
    (out / "witness.vkey").write_text(key.verify_key.line() + "\n")
    typer.echo(key.verify_key.line())


@witness_app.command("serve")
def serve(
    key: Annotated[
        Path, typer.Option(envvar="LEDGER_WITNESS_KEY", help="The witness key (keygen's)")
    ],
    logs: Annotated[
        Path,
        typer.Option(
            envvar="LEDGER_WITNESS_LOGS", help="The logs to witness: `<origin> <vkey>` per line"
        ),
    ],
    state: Annotated[
        Path, typer.Option(envvar="LEDGER_WITNESS_STATE", help="Folder of the durable state")
    ],
    host: Annotated[str, typer.Option(envvar="LEDGER_WITNESS_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="LEDGER_WITNESS_PORT")] = 8300,
    log_level: Annotated[str, typer.Option(envvar="LEDGER_WITNESS_LOG_LEVEL")] = "info",
) -> None:
    """Serve add-checkpoint; every cosigned checkpoint is fsynced before it is answered."""
    from ledger.witness.config import ConfigError, parse_logs
    from ledger.witness.protocol import Witness
    from ledger.witness.server import serve as run
    from ledger.witness.state import State, StateBusy

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        signing = crypto.parse_signing_key(key.read_text(), crypto.COSIGNATURE_TYPE)
        trusted = parse_logs(logs.read_text())
        held = State(state)
    except (OSError, crypto.BadKeyLine, ConfigError, StateBusy) as exc:
        typer.echo(f"cannot start the witness: {exc}", err=True)
        raise typer.Exit(2) from exc
    logging.getLogger("ledger.witness").info(
        "witness %s for %s", signing.verify_key.key_id, ", ".join(sorted(trusted))
    )
    try:
        run(Witness(signing, trusted, held), host, port, log_level)
    finally:
        held.close()
