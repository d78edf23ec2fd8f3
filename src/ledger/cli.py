"""The `ledger` command."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ledger.commands.agency import agencies_app, agency_app
from ledger.commands.audit_keys import audit_keys
from ledger.commands.backup import backup, restore
from ledger.commands.deployment import before_any_command, serving
from ledger.commands.errors import run
from ledger.commands.exits import EXIT_CODES
from ledger.commands.export import export_app
from ledger.commands.keys import keys_app
from ledger.commands.progress import bar
from ledger.commands.tokens import tokens_app
from ledger.console.cli import console_app
from ledger.settings import Settings
from ledger.witness.cli import witness_app

if TYPE_CHECKING:
    from ledger.audit.policy import Policy

app = typer.Typer(
    help="Survivor case ledger", epilog=EXIT_CODES, no_args_is_help=True, add_completion=False
)
app.callback()(before_any_command)  # finds the deployment `ledger init` recorded
app.add_typer(console_app, name="console")
app.add_typer(witness_app, name="witness")
app.add_typer(agency_app, name="agency")
app.add_typer(agencies_app, name="agencies")
app.add_typer(tokens_app, name="tokens")
app.add_typer(keys_app, name="keys")
app.add_typer(export_app, name="export")


@app.command()
def init(
    origin: Annotated[str | None, typer.Option(help="The log origin (set once)")] = None,
) -> None:
    """Create key material, stores, the log origin and an admin token (idempotent)."""
    from ledger.commands.deployment import remember
    from ledger.deploy import init as do_init
    from ledger.deploy import key_paths

    settings = Settings()
    chosen = do_init(settings, origin)
    paths = key_paths(settings)
    if note := remember(settings, chosen):  # where it is, for commands run elsewhere
        typer.echo(note, err=True)
    typer.echo(f"ledger ready: origin {chosen}")
    typer.echo(f"admin token: {paths.admin_token} (mode 0600); log key: {paths.log_vkey}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[
        int | None, typer.Option(help="Server processes (default $LEDGER_WORKERS or 1)")
    ] = None,
) -> None:
    """Serve the HTTP API (several processes share one database)."""
    from ledger.deploy import check
    from ledger.server import serve as run_server

    settings = Settings()
    check(settings)  # a deployment, whose log extends what it signed: or one line, not a trace
    serving(settings)  # seen by `ledger restore`, which then refuses
    _logging(settings)
    run_server(host, port, workers or settings.workers, settings.log_level)


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


@app.command()
def worker() -> None:
    """Run the projections, and tell the agencies (webhook deliveries, consent expiries and
    overdue referrals), as their own process (PostgreSQL deployments)."""
    from ledger.deploy import notice_loops, open_ledger, open_readmodels
    from projections.runner import Follower

    settings = Settings()
    _logging(settings)
    ledger = open_ledger(settings)
    serving(settings)
    models = open_readmodels(settings, ledger)
    loops = [] if settings.notices_in_api_setting else notice_loops(settings, ledger)
    for loop in loops:
        loop.start()
    logging.getLogger("ledger.projections").info(
        "worker following the log%s", ", delivering notices" if loops else ""
    )
    try:
        Follower(models.runner).run()
    finally:
        for loop in loops:
            loop.stop()


projections_app = typer.Typer(help="Read models", no_args_is_help=True)
app.add_typer(projections_app, name="projections")


@projections_app.command("status")
def projections_status() -> None:
    """Each projection's position and lag behind the log."""
    from ledger.deploy import open_ledger, open_readmodels

    settings = Settings()
    models = open_readmodels(settings, open_ledger(settings))
    for row in models.runner.status():
        typer.echo(f"{row['name']:<12} position {row['position']:>9}  lag {row['lag']:>7}")


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[str | None, typer.Argument(help="One projection (default: all)")] = None,
) -> None:
    """Rebuild read models from the log, with a progress bar."""
    from ledger.deploy import open_ledger, open_readmodels

    settings = Settings()
    models = open_readmodels(settings, open_ledger(settings))
    chosen = models.runner.named(name)
    size = models.runner.store.log_size()
    with bar() as progress:
        task = progress.add_task("rebuilding", total=size * len(chosen))
        models.runner.rebuild(name, lambda n: progress.advance(task, n))
    typer.echo(f"rebuilt {', '.join(p.name for p in chosen)} from {size} log entries")


log_app = typer.Typer(help="The log and its witnesses", no_args_is_help=True)
app.add_typer(log_app, name="log")


@log_app.command("status")
def log_status() -> None:
    """The log's newest checkpoint, and per witness the last size it cosigned and any failure."""
    from ledger.deploy import open_ledger, witnesses
    from ledger.services.cosigning import status_lines

    settings = Settings()
    ledger = open_ledger(settings)
    try:
        typer.echo("\n".join(status_lines(ledger.store, witnesses(settings))))
    finally:
        ledger.store.close()
        ledger.keys.table.close()


@app.command()
def bench(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    quick: Annotated[bool, typer.Option(help="A reduced run (under 2 minutes)")] = False,
    backend: Annotated[str, typer.Option(help="sqlite or postgres")] = "sqlite",
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL (default $LEDGER_DATABASE_URL)")
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated sections: limits,proofs,audit,ingest,rebuild,erasure,"
            "notices,hostile,console,dashboard,witness (rebuild also ingests)"
        ),
    ] = None,
) -> None:
    """Measure ingest, audit, projections, proofs and erasure beside this machine's limits."""
    from ledger.bench import SECTIONS, run

    sections = SECTIONS if only is None else tuple(x.strip() for x in only.split(","))
    if unknown := set(sections) - set(SECTIONS):
        raise typer.BadParameter(f"unknown sections: {', '.join(sorted(unknown))}")

    settings = Settings()
    if backend == "postgres":
        url = database_url or settings.database_url
        if not url:
            raise typer.BadParameter(
                "--backend postgres needs --database-url or LEDGER_DATABASE_URL"
            )
        settings = Settings(database_url=url)
    elif backend == "sqlite":
        settings = Settings(database_url=None)
    else:
        raise typer.BadParameter("backend is sqlite or postgres")
    report = run(quick, settings, lambda step: typer.echo(f"bench: {step}", err=True), sections)
    data = report.to_json()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"backend {data['backend']}, {data['cores']} cores, {data['machine']['cpu']}")
    for key, detail in data["details"].items():
        ratio = f"  ({detail['ratio']}x {detail['ratio_to']})" if "ratio" in detail else ""
        spread = f" [{detail['min']}..{detail['max']}]" if "min" in detail else ""
        typer.echo(f"{key:<30} {data[key]!s:>12}{spread}{ratio}  {detail['method']}")


@app.command()
def demo(
    url: Annotated[str, typer.Option(help="The ledger's base URL")] = "http://127.0.0.1:8000",
    admin_token_file: Annotated[
        Path | None, typer.Option(help="Admin token file (default $LEDGER_KEYS/admin.token)")
    ] = None,
    shelter_key: Annotated[
        Path | None,
        typer.Option(help="A registered agency's key to play the shelter (make run's console)"),
    ] = None,
) -> None:
    """Play a realistic scenario through the Python client and print what happened."""
    from ledger.contract import crypto
    from ledger.demo import run_demo

    settings = Settings()
    token_file = admin_token_file or settings.keys / "admin.token"
    key = crypto.parse_signing_key(shelter_key.read_text()) if shelter_key else None
    run_demo(url, token_file.read_text().strip(), settings.keys / "demo", shelter_key=key)


audit_app = typer.Typer(
    help="Verify the whole history without any decryption key", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")


def _fetch(
    url: str, token_file: Path, wait: Callable[[Callable[[], str]], str] | None = None
) -> tuple[str, list[bytes]]:
    from ledger.commands.remote import fetch_log  # page by page, with a progress bar

    return fetch_log(url, token_file, wait)


audit_app.command("keys")(audit_keys)


def _witnessing(
    policy: Path | None, log_key: Path | None, wait_s: float
) -> tuple[Policy | None, Callable[[Callable[[], str]], str] | None]:
    """With --policy: the policy, and a wait for a checkpoint its quorum cosigned."""
    from ledger.audit.policy import PolicyError
    from ledger.audit.quorum import witnessing
    from ledger.contract import crypto

    if policy is None or log_key is None:
        return None, None
    try:
        return witnessing(policy.read_text(), crypto.parse_verify_key(log_key.read_text()), wait_s)
    except PolicyError as exc:
        raise typer.BadParameter(str(exc), param_hint="--policy") from None


POLICY_HELP = "A witness policy (Sigsum format): require its quorum's cosignatures"
WAIT_HELP = "With --policy online: wait up to this long for a checkpoint the quorum cosigned"


@audit_app.command("bundle")
def audit_bundle(
    url: Annotated[str, typer.Option(help="The ledger's base URL")],
    token_file: Annotated[Path, typer.Option(help="An auditor (or admin) token file")],
    out: Annotated[Path, typer.Option(help="Where to write the bundle")],
    policy: Annotated[Path | None, typer.Option(help=POLICY_HELP + " (with --log-key)")] = None,
    log_key: Annotated[Path | None, typer.Option(help="The log's verifier key line")] = None,
    wait_s: Annotated[float, typer.Option(help=WAIT_HELP)] = 30.0,
) -> None:
    """Write an offline bundle: the checkpoint (with its cosignatures) and every entry below."""
    from ledger.audit import write_bundle

    if policy is not None and log_key is None:
        raise typer.BadParameter("--policy needs --log-key")
    note, entries = _fetch(url, token_file, _witnessing(policy, log_key, wait_s)[1])
    write_bundle(out, note, entries)
    typer.echo(f"bundle written: {len(entries)} entries to {out}")


@audit_app.command("verify")
def audit_verify(
    log_key: Annotated[Path, typer.Option(help="The log's verifier key line (your own copy)")],
    agency_keys: Annotated[Path | None, typer.Option(help="One vkey line per agency")] = None,
    url: Annotated[str | None, typer.Option(help="The ledger's base URL")] = None,
    token_file: Annotated[Path | None, typer.Option(help="An auditor token file")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Verify an offline bundle")] = None,
    state: Annotated[Path | None, typer.Option(help="Checkpoint saved by the last run")] = None,
    receipt: Annotated[Path | None, typer.Option(help="Also check an erasure receipt")] = None,
    receipt_key: Annotated[
        Path | None, typer.Option(help="The receipt key's verifier key line (your own copy)")
    ] = None,
    policy: Annotated[Path | None, typer.Option(help=POLICY_HELP)] = None,
    wait_s: Annotated[float, typer.Option(help=WAIT_HELP)] = 10.0,
    evidence: Annotated[Path | None, typer.Option(help="Check a witness's fork evidence")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report")] = False,
    ack_days: Annotated[
        int,
        typer.Option(
            min=0, help="List withdrawal and erasure notices unacknowledged after this many days"
        ),
    ] = 7,
    report_file: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write a report for a board, FILE.html or FILE.pdf (also on failure)",
        ),
    ] = None,
) -> None:
    """Verify checkpoint, entries, signatures, key changes, gates and consistency; list the
    withdrawal and erasure notices whose recipients have not acknowledged them."""
    from ledger.audit import SavedState, check_receipt, parse_agency_keys, read_bundle, verify
    from ledger.audit.forks import check_evidence
    from ledger.audit.quorum import check_quorum
    from ledger.audit.report import EVIDENCE_STEP, QUORUM_STEP, RECEIPT_STEP
    from ledger.client import consistency_proofs
    from ledger.contract import crypto
    from ledger.private_files import replace_private

    if report_file is not None:  # known before the audit runs, not after
        from ledger.audit.board_report import Inputs, report_format, write_report

        try:
            report_format(report_file)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--report") from None

    trusted_log_key = crypto.parse_verify_key(log_key.read_text())
    if evidence is not None and bundle is None and url is None:  # the evidence alone
        fork, said = check_evidence(evidence.read_text(), trusted_log_key)
        typer.echo(f"FORK PROVEN: {said}" if fork else said)
        raise typer.Exit(1 if fork else 0)
    witness_policy, wait = _witnessing(policy, log_key, wait_s)
    if bundle is not None:
        note, entries = read_bundle(bundle)
    elif url is not None and token_file is not None:
        note, entries = _fetch(url, token_file, wait)
    else:
        raise typer.BadParameter("give --bundle FILE, or --url and --token-file")
    if agency_keys is None:
        raise typer.BadParameter("--agency-keys is needed to verify the log")
    keys = parse_agency_keys(agency_keys.read_text())
    saved = SavedState.from_json(state.read_text()) if state and state.exists() else None
    with bar(disable=as_json) as progress:  # on standard error, on a terminal
        task = progress.add_task("verifying", total=len(entries))
        report = verify(
            note,
            entries,
            trusted_log_key,
            keys,
            saved,
            progress=lambda n: progress.advance(task, n),
            ack_days=ack_days,
        )
    if receipt is not None:
        if receipt_key is None:
            raise typer.BadParameter("--receipt needs --receipt-key")
        trusted_receipt_key = crypto.parse_verify_key(receipt_key.read_text())
        receipt_failures = check_receipt(receipt.read_text(), trusted_receipt_key, entries)
        report.add_checks(RECEIPT_STEP, receipt_failures)
    witnessed = witness_policy and check_quorum(note, witness_policy, trusted_log_key)
    if witnessed:  # the quorum's cosignatures, or a failure naming the missing witnesses
        report.add_checks(QUORUM_STEP, witnessed.failures)
        report.flags += witnessed.flags
    if evidence is not None:
        token = token_file.read_text().strip() if token_file else ""
        consistency = consistency_proofs(url, token) if url and token else None
        fork, said = check_evidence(evidence.read_text(), trusted_log_key, consistency)
        report.add_checks(EVIDENCE_STEP, [fork] if fork else [])
        typer.echo(said, err=as_json)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for flag in report.flags:
            typer.echo(f"flag: {flag}")
        for missing in report.unacknowledged:
            typer.echo(f"unacknowledged after {ack_days} days: {missing}")
        if witnessed and witnessed.cosigned:
            typer.echo(f"cosigned by: {', '.join(sorted(witnessed.cosigned))}")
        if report.ok:
            typer.echo(
                f"verified: {report.size} entries ({report.events} events, "
                f"{report.signatures} signatures), root {report.root}"
            )
        else:
            typer.echo(f"FAILED ({len(report.failures)} failures); first: {report.first_failure}")
    if report_file is not None:  # failed or not: a failure is when it matters most
        source = str(url) if bundle is None else f"the bundle {bundle.name}"
        named = Inputs(source, state.name if state else None, receipt.name if receipt else None)
        write_report(report_file, report, named)
        typer.echo(f"report written: {report_file}", err=as_json)
    if report.ok and state is not None:
        # The auditor's record of the log it verified: owner only, even over a wider file.
        saved_now = SavedState(
            trusted_log_key.name, report.size, crypto.b64decode_strict(report.root)
        )
        replace_private(state, saved_now.to_json().encode())
    raise typer.Exit(0 if report.ok else 1)


receipt_app = typer.Typer(help="Receipts signed by the receipt key", no_args_is_help=True)
app.add_typer(receipt_app, name="receipt")


@receipt_app.command("verify")
def receipt_verify(
    file: Annotated[Path, typer.Argument(help="A consent or erasure receipt (signed note)")],
    receipt_key: Annotated[
        Path | None,
        typer.Option(help="The receipt key's verifier key line (default in $LEDGER_KEYS)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verified record")] = False,
) -> None:
    """Check a receipt's signature by the receipt key and its form; exit 1 if it fails."""
    from ledger.contract import crypto
    from ledger.contract.receipts import ReceiptError, verify_receipt
    from ledger.interop.consent_receipt import HEADER as CONSENT_HEADER
    from ledger.interop.consent_receipt import ConsentReceiptError, verify_consent_receipt

    key_file = receipt_key or Settings().keys / "receipt.vkey"
    try:
        key = crypto.parse_verify_key(key_file.read_text())
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, crypto.BadKeyLine) as exc:
        typer.echo(f"cannot read the receipt or the receipt key: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        if text.startswith(CONSENT_HEADER + "\n"):
            record = verify_consent_receipt(text, key)
            header = record["record_header"]
            summary = (
                f"verified: consent receipt {header['receipt_code']} ({header['issued_for']} "
                f"at {header['issued_at']}), signed by {key.key_id}"
            )
        else:
            erasure = verify_receipt(text, key)
            record = {"case_id": erasure.case_id, "index": erasure.index,
                      "erased_at": erasure.erased_at}  # fmt: skip
            summary = f"verified: erasure receipt, log index {erasure.index}, key {key.key_id}"
    except (ConsentReceiptError, ReceiptError) as exc:
        typer.echo(f"FAILED: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(record, indent=2, ensure_ascii=False) if as_json else summary)


app.command("backup")(backup)
app.command("restore")(restore)


def main() -> None:
    run(app)  # a failure is one line and its exit code (`ledger --help`), never a traceback


if __name__ == "__main__":
    main()
