"""The `ledger` command's failures: one line saying what was wrong and what to do, the
documented exit code, never a traceback; and where the deployment is, from another folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.commands.exits import BAD_INPUT, NO_DEPLOYMENT, REFUSED, UNREACHABLE
from ledger.contract.crypto import generate_signing_key
from tests.servers import deployment, free_port

LEDGER = [sys.executable, "-m", "ledger.cli"]


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    """No LEDGER_* setting from the caller's environment; this test's own config folder."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return base | {"XDG_CONFIG_HOME": str(tmp / "config")} | extra


def ledger(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LEDGER, *args], cwd=cwd, env=env_for(cwd.parent, **extra),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def one_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with `code` and said why in one line, with no traceback."""
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ledger: "), done.stderr
    return lines[0]


@pytest.fixture
def here(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def test_a_missing_file_is_one_line_naming_it(here: Path) -> None:
    (here / "log.vkey").write_text(generate_signing_key("x.example/log").verify_key.line())
    done = ledger(
        here, "audit", "verify", "--bundle", "no-such.bundle",
        "--log-key", "log.vkey", "--agency-keys", "agency-keys.txt",
    )  # fmt: skip
    assert "no-such.bundle: no such file" in one_line(done, BAD_INPUT)


def test_a_key_file_that_is_no_key_is_one_line(here: Path) -> None:
    (here / "ngo.key").write_text("this is not a key\n")
    line = one_line(ledger(here, "agency", "vkey", "ngo.key"), BAD_INPUT)
    assert "not a key" in line
    line = one_line(ledger(here, "agency", "vkey", "missing.key"), BAD_INPUT)
    assert "missing.key: no such file" in line


def test_keygen_writes_the_key_owner_only_and_never_overwrites_it(here: Path) -> None:
    made = ledger(here, "agency", "keygen", "ngo-a")
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line.startswith("ngo-a+") and "PRIVATE" not in made.stdout + made.stderr
    assert (here / "ngo-a.key").stat().st_mode & 0o777 == 0o600
    again = ledger(here, "agency", "vkey", "ngo-a.key")
    assert again.stdout.strip() == line
    assert "ledger agency vkey" in one_line(ledger(here, "agency", "keygen", "ngo-a"), BAD_INPUT)
    assert "not an agency id" in one_line(ledger(here, "agency", "keygen", "NGO A"), BAD_INPUT)


def test_a_ledger_that_does_not_answer_is_one_line(here: Path) -> None:
    (here / "admin.token").write_text("lgr_x\n")
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line(
        ledger(here, "tokens", "list", "--url", url, "--token-file", "admin.token"), UNREACHABLE
    )
    assert f"cannot reach {url}" in line and "check --url" in line
    bad = ledger(here, "agencies", "list", "--url", "ftp:/x", "--token-file", "admin.token")
    assert "bad URL" in one_line(bad, BAD_INPUT)


def test_a_refusal_by_the_ledger_is_one_line_with_its_status(here: Path) -> None:
    with deployment("sqlite", here.parent / "ledger", workers=1) as dep:
        dep.start_server()
        (here / "wrong.token").write_text("lgr_not-a-token\n")
        done = ledger(here, "tokens", "list", "--url", dep.url, "--token-file", "wrong.token")
        line = one_line(done, REFUSED)
        assert "401" in line and "--token-file" in line


def test_help_documents_the_exit_codes(here: Path) -> None:
    done = ledger(here, "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    codes = ("0 done", "1 a verification failed", "2 bad input", "3 the ledger", "4 the",
             "5 no deployment", "6 the log here is a rollback", "70 an internal error")  # fmt: skip
    assert [code for code in codes if code not in text] == []


def test_a_command_from_another_folder_finds_the_deployment_init_recorded(tmp_path: Path) -> None:
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    site.mkdir()
    elsewhere.mkdir()
    made = ledger(site, "init", "--origin", "paths.example/log")
    assert made.returncode == 0, made.stderr
    record = json.loads((tmp_path / "config" / "ledger" / "deployments.json").read_text())
    assert [d["keys"] for d in record["deployments"]] == [str(site / "keys")]
    assert (tmp_path / "config" / "ledger" / "deployments.json").stat().st_mode & 0o777 == 0o600
    found = ledger(elsewhere, "projections", "status")
    assert found.returncode == 0, found.stderr
    assert f"using the deployment at {site}" in found.stderr
    assert not (elsewhere / "keys").exists() and not (elsewhere / ".ledger").exists()


def test_without_a_deployment_here_the_settings_to_give_are_named_never_init(
    tmp_path: Path,
) -> None:
    site, other, elsewhere = tmp_path / "site", tmp_path / "other", tmp_path / "elsewhere"
    for folder in (site, other, elsewhere):
        folder.mkdir()
    assert ledger(site, "init").returncode == 0
    # Given settings are taken as they are: the recorded one is named, not a new init.
    line = one_line(
        ledger(elsewhere, "projections", "status", LEDGER_KEYS=str(elsewhere / "k")),
        NO_DEPLOYMENT,
    )
    assert f"LEDGER_KEYS={site / 'keys'}" in line and "run ledger init" not in line
    # A second deployment, made on purpose, is separate and said so; then neither is guessed.
    second = ledger(other, "init")
    assert second.returncode == 0 and "separate" in second.stderr
    line = one_line(ledger(elsewhere, "projections", "status"), NO_DEPLOYMENT)
    assert f"LEDGER_KEYS={site / 'keys'}" in line and f"LEDGER_KEYS={other / 'keys'}" in line
    assert "run ledger init" not in line
    assert not (elsewhere / "keys").exists()


def test_with_no_deployment_anywhere_init_is_what_to_do(here: Path) -> None:
    line = one_line(ledger(here, "projections", "status"), NO_DEPLOYMENT)
    assert "none is recorded: run ledger init" in line
    assert not (here / ".ledger").exists()
