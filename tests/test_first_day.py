"""From nothing to an audited ledger with only the commands the README shows, on both
backends: the operator's `ledger init` and `ledger serve` (default paths, in its own folder),
each agency's `ledger agency keygen` in its own folder, `ledger agency register` of the line
it printed, `ledger tokens create|list|revoke`, `ledger agencies list`, the agencies'
submissions through the Python client as the README writes them, and the auditor's
`ledger audit keys` and `ledger audit verify` with the key lines the agencies printed."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ledger.client import LedgerClient, LedgerHTTPError, load_signing_key, new_id
from ledger.contract import crypto
from tests.conftest import drop_schemas, require_postgres
from tests.servers import free_port

LEDGER = [sys.executable, "-m", "ledger.cli"]
ATTRS = {"age_band": "adult", "gender": "female", "exploitation": ["labour"],
         "identified_at": "2026-11-02"}  # fmt: skip


class Day:
    """The people of the day, each in a folder of their own, sharing one machine's config."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env

    def folder(self, who: str) -> Path:
        path = self.root / who
        path.mkdir(exist_ok=True)
        return path

    def run(self, who: str, *args: str) -> str:
        done = subprocess.run(
            [*LEDGER, *args], cwd=self.folder(who), env=self.env,
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, f"{who}: ledger {' '.join(args)}\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr
        return done.stdout

    def fails(self, who: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*LEDGER, *args], cwd=self.folder(who), env=self.env,
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode != 0 and "Traceback" not in done.stdout + done.stderr
        return done


@pytest.fixture
def day(backend: str, tmp_path: Path) -> Iterator[Day]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "config"), "LEDGER_CHECKPOINT_INTERVAL_S": "1"}
    schema = f"t_{secrets.token_hex(6)}"
    url = require_postgres() if backend == "postgres" else None
    if url is not None:  # the README's PostgreSQL section: the URL, and the keys by default
        env |= {"LEDGER_DATABASE_URL": url, "LEDGER_PG_SCHEMA": schema}
    try:
        yield Day(tmp_path, env)
    finally:
        if url is not None:
            drop_schemas(url, schema)


def test_from_nothing_to_an_audited_ledger_with_the_readme_commands(day: Day) -> None:
    # The operator: a deployment in its folder, served.
    day.run("operator", "init", "--origin", "first-day.example/log")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*LEDGER, "serve", "--port", str(port)], cwd=day.folder("operator"), env=day.env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(url)
        audited(day, url)
    finally:
        server.terminate()
        server.wait(20)


def audited(day: Day, url: str) -> None:
    # Each agency makes its key in its own folder and hands over the line it prints.
    lines = {a: day.run(a, "agency", "keygen", a).strip() for a in ("ngo-a", "clinic")}
    assert (day.folder("ngo-a") / "ngo-a.key").stat().st_mode & 0o777 == 0o600
    assert not (day.folder("operator") / "ngo-a.key").exists()
    # The operator registers them (the line as given, or in a file) and issues tokens.
    (day.folder("operator") / "clinic.vkey").write_text(lines["clinic"] + "\n")
    said = day.run("operator", "agency", "register", lines["ngo-a"], "--name", "NGO A",
                   "--type", "ngo", "--url", url)  # fmt: skip
    assert "registered agency ngo-a" in said
    day.run("operator", "agency", "register", "clinic.vkey", "--name", "Clinic",
            "--type", "health", "--url", url)  # fmt: skip
    ids = {}
    for who, role, agency, out in (
        ("ana", "caseworker", "ngo-a", "ngo-a/ana.token"),
        ("bea", "caseworker", "clinic", "clinic/bea.token"),
        ("auditor", "auditor", None, "auditor/auditor.token"),
    ):
        target = str(day.root / out)
        args = ["tokens", "create", "--role", role, "--label", who, "--out", target, "--url", url]
        said = day.run("operator", *args, *(["--agency", agency] if agency else []))
        found = re.search(r"token (tok_[0-9a-f]+) ", said)
        assert found is not None, said
        ids[who] = found.group(1)
        assert Path(target).stat().st_mode & 0o777 == 0o600
    listed = day.run("operator", "tokens", "list", "--url", url)
    assert all(i in listed for i in ids.values()) and "lgr_" not in listed
    agencies = day.run("operator", "agencies", "list", "--url", url)
    assert re.search(r"^clinic\s+health\s+active\s+Clinic$", agencies, re.M)

    # The agencies submit through the client, as the README shows.
    ngo_dir, clinic_dir = day.folder("ngo-a"), day.folder("clinic")
    ngo = LedgerClient(url, (ngo_dir / "ana.token").read_text().strip(),
                       load_signing_key(ngo_dir / "ngo-a.key"))  # fmt: skip
    clinic = LedgerClient(url, (clinic_dir / "bea.token").read_text().strip(),
                          load_signing_key(clinic_dir / "clinic.key"))  # fmt: skip
    with ngo, clinic:
        case_id, consent_id, referral_id = new_id(), new_id(), new_id()
        ngo.submit("case.opened", case_id, {"minor": False}, ATTRS, {"identity": {"name": "…"}})
        ngo.submit(
            "consent.granted", case_id,
            {"consent_id": consent_id, "purposes": ["referral"], "recipients": ["clinic"],
             "categories": ["health"], "expires_at": None, "given_by": "survivor",
             "child_assent": None, "assent_exempt": False},
            {"language": "es", "interpreter": False, "notice_version": "2026-1"},
        )  # fmt: skip
        ngo.submit(
            "referral.made", case_id,
            {"referral_id": referral_id, "to": "clinic", "consent_id": consent_id,
             "categories": ["health"]},
            {"component": "health_psychosocial", "due_by": None, "urgency": "urgent"},
        )  # fmt: skip
        answer = clinic.submit("referral.accepted", case_id, {"referral_id": referral_id},
                               {"reason": None})  # fmt: skip
        log_key = crypto.parse_verify_key((day.folder("operator") / "keys/log.vkey").read_text())
        assert clinic.verify_inclusion(answer, log_key) >= answer.index + 1

    # The auditor: its own copy of the log key, and the lines the agencies printed.
    auditor = day.folder("auditor")
    (auditor / "log.vkey").write_text((day.folder("operator") / "keys/log.vkey").read_text())
    (auditor / "agency-keys.txt").write_text(lines["ngo-a"] + "\n" + lines["clinic"] + "\n")
    online = ["--url", url, "--token-file", "auditor.token"]
    compared = day.run("auditor", "audit", "keys", *online, "--agency-keys", "agency-keys.txt")
    assert "never verify with these lines" in compared.lower()
    assert compared.count("first key: the same as your copy") == 2
    verified = day.run("auditor", "audit", "verify", *online, "--log-key", "log.vkey",
                       "--agency-keys", "agency-keys.txt", "--state", "state.json")  # fmt: skip
    assert "verified: 6 entries (4 events, 4 signatures)" in verified

    # Without the clinic's line: one failure naming it, not one per clinic event.
    (auditor / "ngo-only.txt").write_text(lines["ngo-a"] + "\n")
    missing = day.fails("auditor", "audit", "verify", *online, "--log-key", "log.vkey",
                        "--agency-keys", "ngo-only.txt")  # fmt: skip
    assert missing.returncode == 1
    assert "FAILED (1 failures)" in missing.stdout
    assert missing.stdout.count("clinic") == 2  # the agency named, and its own command
    assert "agency clinic's verifier key line is missing" in missing.stdout

    # A person leaves: their token is revoked and answers 401 from then on.
    day.run("operator", "tokens", "revoke", ids["ana"], "--url", url)
    gone = LedgerClient(url, (ngo_dir / "ana.token").read_text().strip(),
                        load_signing_key(ngo_dir / "ngo-a.key"))  # fmt: skip
    with gone, pytest.raises(LedgerHTTPError) as refused:
        gone.submit("case.opened", new_id(), {"minor": False}, ATTRS)
    assert refused.value.status == 401
    assert "revoked" in day.run("operator", "tokens", "list", "--all", "--url", url)


def wait_for(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")
