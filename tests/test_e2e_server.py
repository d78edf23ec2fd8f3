"""The real thing: `ledger init`, `ledger serve` in a subprocess, `ledger demo` against it."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ledger.client import LedgerClient, LedgerHTTPError, new_id
from ledger.contract import crypto
from tests.test_confidentiality import markers

LEDGER = [sys.executable, "-m", "ledger.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    env = os.environ | {
        "LEDGER_HOME": str(tmp_path / "home"),
        "LEDGER_KEYS": str(tmp_path / "keys"),
        "LEDGER_LOG_LEVEL": "debug",
    }
    env.pop("LEDGER_DATABASE_URL", None)
    for _ in range(2):  # idempotent
        subprocess.run(
            [*LEDGER, "init", "--origin", "e2e.example/log"],
            env=env,
            check=True,
            capture_output=True,
        )
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*LEDGER, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{url}/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, env, log_path
        proc.terminate()
        proc.wait(10)


def test_init_writes_key_material_owner_only(server: tuple[str, dict[str, str], Path]) -> None:
    url, env, _ = server
    keys = Path(env["LEDGER_KEYS"])
    for name in ("kek.key", "log.key", "receipt.key", "admin.token", "keystore.db"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600, name
    vkey = crypto.parse_verify_key((keys / "log.vkey").read_text())
    assert vkey.name == "e2e.example/log"
    health = httpx.get(f"{url}/v1/health").json()
    assert health["status"] == "ok" and health["log"] == "e2e.example/log"


def test_demo_plays_the_scenario_and_the_log_holds_no_personal_data(
    server: tuple[str, dict[str, str], Path],
) -> None:
    url, env, log_path = server
    result = subprocess.run(
        [*LEDGER, "demo", "--url", url], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "clinic accepts the referral" in out
    assert "share with legal aid (no consent names it): 403" in out
    assert "legal aid reads before withdrawal: categories ['identity']" in out
    assert "legal aid reads after withdrawal: 403" in out

    # A case with markers through the SDK: none of them may reach the server's output.
    keys = Path(env["LEDGER_KEYS"])
    admin = LedgerClient(url, (keys / "admin.token").read_text().strip())
    key = crypto.generate_signing_key("marker-ngo")
    admin.register_agency("marker-ngo", "Marker NGO", "ngo", key.verify_key.line())
    token = admin.create_token("caseworker", "marker caseworker", "marker-ngo")["token"]
    mark = markers()
    with LedgerClient(url, token, key) as ngo:
        case_id = new_id()
        ngo.submit(
            "case.opened",
            case_id,
            {"minor": False},
            {
                "age_band": "adult",
                "gender": "female",
                "exploitation": ["sexual"],
                "identified_at": "2026-11-02",
            },
            {"identity": {"name": mark["identity"]}, "notes": mark["notes"]},
        )
        assert ngo.read_case(case_id)["payload"]["notes"] == mark["notes"]
        with pytest.raises(LedgerHTTPError) as refused:
            ngo.submit("case.closed", case_id, {}, {"reason": mark["attr"]})
        assert refused.value.status == 422
        assert mark["attr"] not in str(refused.value.body)
    time.sleep(0.2)
    server_log = log_path.read_text()
    assert "event recorded" in server_log  # the server does log, by ids and types
    assert not [m for m in mark.values() if m in server_log]
    # Nor any token or key: bearer tokens, the agency's private key, the deployment's keys.
    kek_and_keys = [(keys / n).read_text().strip() for n in ("kek.key", "log.key", "receipt.key")]
    secrets_ = [(keys / "admin.token").read_text().strip(), token, key.line(), *kek_and_keys]
    assert all(len(s) > 20 for s in secrets_)
    assert not [s for s in secrets_ if s in server_log]
    # Nor the bare base64 of a C2SP key line (PRIVATE+KEY+<name>+<hash>+<base64>, whose
    # base64 may itself hold a '+').
    bare = [s.split("+", 4)[4] for s in secrets_ if s.startswith("PRIVATE+KEY+")]
    assert bare and all(len(b) > 20 for b in bare)
    assert not [b for b in bare if b in server_log]


def test_audit_cli_verifies_online_and_offline_and_names_the_first_failure(
    server: tuple[str, dict[str, str], Path], tmp_path: Path
) -> None:
    url, env, _ = server
    keys = Path(env["LEDGER_KEYS"])
    admin = LedgerClient(url, (keys / "admin.token").read_text().strip())
    key = crypto.generate_signing_key("audited-ngo")
    admin.register_agency("audited-ngo", "Audited NGO", "ngo", key.verify_key.line())
    token = admin.create_token("caseworker", "cw", "audited-ngo")["token"]
    with LedgerClient(url, token, key) as ngo:
        for _ in range(3):
            answer = ngo.submit(
                "case.opened",
                new_id(),
                {"minor": False},
                {
                    "age_band": "adult",
                    "gender": "male",
                    "exploitation": ["labour"],
                    "identified_at": "2026-10-01",
                },
            )
        log_key = crypto.parse_verify_key((keys / "log.vkey").read_text())
        assert ngo.verify_inclusion(answer, log_key) >= answer.index + 1
    auditor = tmp_path / "auditor.token"
    auditor.write_text(admin.create_token("auditor", "auditor")["token"])
    agency_keys = tmp_path / "agency-keys"
    agency_keys.write_text(key.verify_key.line() + "\n")
    state = tmp_path / "state.json"
    common = ["--log-key", str(keys / "log.vkey"), "--agency-keys", str(agency_keys)]
    online = subprocess.run(
        [
            *LEDGER,
            "audit",
            "verify",
            "--url",
            url,
            "--token-file",
            str(auditor),
            "--state",
            str(state),
            *common,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert online.returncode == 0, online.stdout + online.stderr
    assert "verified: 4 entries (3 events, 3 signatures)" in online.stdout
    assert state.exists()
    bundle = tmp_path / "bundle.json"
    subprocess.run(
        [
            *LEDGER,
            "audit",
            "bundle",
            "--url",
            url,
            "--token-file",
            str(auditor),
            "--out",
            str(bundle),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    offline = subprocess.run(
        [
            *LEDGER,
            "audit",
            "verify",
            "--bundle",
            str(bundle),
            "--json",
            "--state",
            str(state),
            *common,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert offline.returncode == 0 and '"ok": true' in offline.stdout
    data = json.loads(bundle.read_text())
    data["entries"][2] = data["entries"][3]  # an entry replaced by a copy of the next
    bundle.write_text(json.dumps(data))
    tampered = subprocess.run(
        [*LEDGER, "audit", "verify", "--bundle", str(bundle), *common],
        env=env,
        capture_output=True,
        text=True,
    )
    assert tampered.returncode == 1
    assert "FAILED" in tampered.stdout and "position 3: gates" in tampered.stdout


def test_the_served_app_keeps_start_up_objects_out_of_garbage_collection(
    server: tuple[str, dict[str, str], Path],
) -> None:
    """`ledger serve`'s app freezes what start-up built and collects young objects every
    10,000 allocations (full collections made the ingest p99; README, Performance)."""
    _, env, _ = server
    probe = (
        "import gc; from ledger.api.app import app_from_settings; app_from_settings();"
        " print(gc.get_threshold(), gc.get_freeze_count())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    assert out[:3] == ["(10000,", "10,", "10)"]
    assert int(out[3]) > 10_000  # modules, routes and schemas, never scanned again


def test_the_demo_can_play_the_shelter_as_a_registered_agency(
    server: tuple[str, dict[str, str], Path], tmp_path: Path
) -> None:
    """`ledger demo --shelter-key`: make run's first agency plays the shelter, so its
    console shows the demo's cases at once."""
    url, env, _ = server
    keys = Path(env["LEDGER_KEYS"])
    admin = LedgerClient(url, (keys / "admin.token").read_text().strip())
    key = crypto.generate_signing_key("first-agency")
    admin.register_agency("first-agency", "First agency", "ngo", key.verify_key.line())
    key_file = tmp_path / "first-agency.key"
    key_file.write_text(key.line())
    result = subprocess.run(
        [*LEDGER, "demo", "--url", url, "--shelter-key", str(key_file)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "first-agency plays the shelter" in result.stdout
    token = admin.create_token("caseworker", "first agency staff", "first-agency")["token"]
    cases = httpx.get(f"{url}/v1/cases", headers={"Authorization": f"Bearer {token}"}).json()
    assert len(cases["cases"]) >= 2  # the demo's adult and child, held by the first agency
