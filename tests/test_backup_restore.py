"""`ledger backup` and `ledger restore` on both backends: a backup taken while the ledger is
open, more written, the backup put back; the restored ledger then refuses to serve a log
older than the newest checkpoint it signed until told explicitly, and then serves it, and
`audit verify` passes on it (and fails, rightly, for an auditor who saw the later log)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ledger import audit
from ledger.commands.exits import BAD_INPUT, ROLLED_BACK
from ledger.contract import crypto
from ledger.services.keystore import load_kek
from ledger.settings import Settings
from tests.conftest import Agency, World, open_world
from tests.servers import free_port

LEDGER = [sys.executable, "-m", "ledger.cli"]


def env_of(settings: Settings, tmp: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env = base | {
        "LEDGER_HOME": str(settings.home),
        "LEDGER_KEYS": str(settings.keys),
        "LEDGER_PG_SCHEMA": settings.pg_schema,
        "XDG_CONFIG_HOME": str(tmp / "config"),
    }
    if settings.database_url:
        env["LEDGER_DATABASE_URL"] = settings.database_url
    return env


def cli(
    settings: Settings, tmp: Path, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LEDGER, *args], env=env_of(settings, tmp) | extra, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip


def cases(world: World, n: int, tag: str) -> dict[str, str]:
    """`n` cases of ngo-a, each with a marker in its sealed identity: case id -> marker."""
    ngo = world.agency("ngo-a")
    out = {}
    for i in range(n):
        marker = f"{tag}-{i}-{os.urandom(4).hex()}"
        out[ngo.open_case(payload={"identity": {"name": marker}})] = marker
    return out


def saved_state(world: World) -> audit.SavedState:
    """What an auditor who verified the log now keeps (`--state`)."""
    note = world.ledger.log.sign_checkpoint().note
    entries = [e for _, e in world.ledger.store.entries(0, audit.checkpoint_size(note))]
    log_key = crypto.parse_verify_key((world.settings.keys / "log.vkey").read_text())
    report = audit.verify(note, entries, log_key, agency_keys(world))
    assert report.ok, report.failures
    return audit.SavedState(log_key.name, report.size, crypto.b64decode_strict(report.root))


def agency_keys(world: World) -> dict[str, crypto.VerifyKey]:
    return {a.id: a.key.verify_key for a in world.agencies.values()}


def test_a_restored_rollback_is_served_only_when_accepted_and_audits(
    settings: Settings, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "backup"
    with open_world(settings) as world:
        kept = cases(world, 3, "kept")
        world.ledger.log.sign_checkpoint()
        # 1. A backup while the ledger is open (its server's stores hold their connections).
        made = cli(settings, tmp_path, "backup", str(backup_dir), TTY_COMPATIBLE="1")
        assert made.returncode == 0, made.stdout + made.stderr
        assert "backing up" in made.stderr  # the progress bar, on a terminal
        assert "key-encryption key is NOT in it" in made.stdout
        backed_up = world.ledger.store.log_size()
        # 2. More written, and signed: auditors may hold this checkpoint.
        lost = cases(world, 2, "lost")
        later = saved_state(world)
        keys, signing = agency_keys(world), world.agencies["ngo-a"].key
        assert later.size > backed_up
    watermark = (settings.keys / "latest-checkpoint").read_text()
    assert watermark.split("\n")[1] == str(later.size)

    # The backup: owner only, with no key-encryption key in any of its files.
    _, kek = load_kek(settings.keys / "kek.key")
    assert backup_dir.stat().st_mode & 0o777 == 0o700
    for path in backup_dir.rglob("*"):
        if path.is_file():
            assert path.stat().st_mode & 0o777 == 0o600, path
            data = path.read_bytes()
            assert kek not in data and crypto.b64(kek).encode() not in data, path
            assert path.name not in ("kek.key", "latest-checkpoint"), path
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert manifest["log_size"] == backed_up and manifest["case_keys"] == 3

    # 3. Put back: restored, but not served, and serving refuses, saying why.
    restored = cli(settings, tmp_path, "restore", str(backup_dir))
    assert restored.returncode == ROLLED_BACK, restored.stdout + restored.stderr
    assert f"fewer than the checkpoint of {later.size}" in restored.stderr
    assert "--accept-rollback" in restored.stderr and "Traceback" not in restored.stderr
    port = free_port()
    refused = cli(settings, tmp_path, "serve", "--port", str(port))
    assert refused.returncode == ROLLED_BACK and "rollback" in refused.stderr
    assert "Traceback" not in refused.stderr

    # 4. Told explicitly: accepted, the superseded checkpoint kept as evidence.
    accepted = cli(settings, tmp_path, "restore", "--accept-rollback")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "rollback accepted" in accepted.stdout
    assert watermark in (settings.keys / "rollbacks").read_text()

    # 5. The restored ledger: what was backed up is there and readable, what came after not.
    with open_world(settings) as world:
        assert world.ledger.store.log_size() == backed_up
        ngo = world.agencies["ngo-a"] = Agency(world, "ngo-a", signing)
        for case_id, marker in kept.items():
            r = ngo.read(case_id)
            assert r.status_code == 200, r.text
            assert r.json()["payload"]["identity"]["name"] == marker
        for case_id in lost:
            assert ngo.read(case_id).status_code == 404
        note = world.ledger.log.sign_checkpoint().note
        entries = [e for _, e in world.ledger.store.entries(0, audit.checkpoint_size(note))]
        audit.write_bundle(tmp_path / "restored.bundle", note, entries)

    # 6. audit verify passes on the restored log; an auditor who saw the later one is told.
    (tmp_path / "agency-keys").write_text("".join(k.line() + "\n" for k in keys.values()))
    (tmp_path / "state.json").write_text(later.to_json())
    args = ["audit", "verify", "--bundle", str(tmp_path / "restored.bundle"),
            "--log-key", str(settings.keys / "log.vkey"),
            "--agency-keys", str(tmp_path / "agency-keys")]  # fmt: skip
    verified = cli(settings, tmp_path, *args)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"verified: {len(entries)} entries (3 events, 3 signatures)" in verified.stdout
    # The restored log grew again (the reads above are entries): for whoever saw the later
    # log it is now a fork, which is why serving it took an explicit acceptance.
    forked = cli(settings, tmp_path, *args, "--state", str(tmp_path / "state.json"))
    assert forked.returncode == 1 and "consistency with saved checkpoint" in forked.stdout

    # 7. And `ledger serve` serves it now (and a restore meanwhile is refused).
    server = subprocess.Popen(
        [*LEDGER, "serve", "--port", str(port)], env=env_of(settings, tmp_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_health(f"http://127.0.0.1:{port}") == 200
        # A restore under a running server would change the database beneath it: refused.
        busy = cli(settings, tmp_path, "restore", str(backup_dir))
        assert busy.returncode == BAD_INPUT and "ledger is running here" in busy.stderr
    finally:
        server.terminate()
        server.wait(20)


def wait_health(url: str, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return httpx.get(f"{url}/v1/health", timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.1)
    return 0


def test_a_backup_from_before_a_kek_rotation_needs_that_kek_and_is_rewrapped(
    settings: Settings, tmp_path: Path
) -> None:
    backup_dir, old_kek = tmp_path / "backup", tmp_path / "kek-copy-kept-apart.key"
    with open_world(settings) as world:
        kept = cases(world, 2, "kept")
        signing = world.agencies["ngo-a"].key
        world.ledger.log.sign_checkpoint()
        assert cli(settings, tmp_path, "backup", str(backup_dir)).returncode == 0
    old_kek.write_bytes((settings.keys / "kek.key").read_bytes())
    old_id = load_kek(old_kek)[0]
    rotated = cli(settings, tmp_path, "keys", "rotate-kek")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    new_id = load_kek(settings.keys / "kek.key")[0]
    assert new_id != old_id

    refused = cli(settings, tmp_path, "restore", str(backup_dir))
    assert refused.returncode == BAD_INPUT, refused.stdout + refused.stderr
    assert f"wrapped by KEK {old_id}" in refused.stderr and "--kek" in refused.stderr
    restored = cli(settings, tmp_path, "restore", str(backup_dir), "--kek", str(old_kek))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"re-wrapped 2 case keys under KEK {new_id}" in restored.stdout
    assert load_kek(settings.keys / "kek.key")[0] == new_id  # no KEK file replaced
    with open_world(settings) as world:
        ngo = world.agencies["ngo-a"] = Agency(world, "ngo-a", signing)
        for case_id, marker in kept.items():
            assert ngo.read(case_id).json()["payload"]["identity"]["name"] == marker
        wrapped = world.ledger.keys.table.wrapped_by_other(new_id, 10)
        assert wrapped == []  # every case key is under the deployment's own KEK


def test_with_the_keys_lost_a_checkpoint_kept_elsewhere_still_stops_a_rollback(
    settings: Settings, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "backup"
    with open_world(settings) as world:
        cases(world, 1, "kept")
        world.ledger.log.sign_checkpoint()
        assert cli(settings, tmp_path, "backup", str(backup_dir)).returncode == 0
        cases(world, 1, "lost")
        world.ledger.log.sign_checkpoint()
        held = world.ledger.log.checkpoint()  # what a witness or an auditor kept
    (tmp_path / "held.checkpoint").write_text(held)
    (settings.keys / "latest-checkpoint").unlink()  # lost with the machine's keys folder
    (settings.keys / "rollbacks").unlink(missing_ok=True)
    restored = cli(settings, tmp_path, "restore", str(backup_dir),
                   "--seen", str(tmp_path / "held.checkpoint"))  # fmt: skip
    assert restored.returncode == ROLLED_BACK, restored.stdout + restored.stderr
    assert "rollback" in restored.stderr
    other = crypto.generate_signing_key(held.split("\n")[0]).verify_key.line()
    (tmp_path / "other.checkpoint").write_text(other)
    wrong = cli(settings, tmp_path, "restore", str(backup_dir),
                "--seen", str(tmp_path / "other.checkpoint"))  # fmt: skip
    assert wrong.returncode == BAD_INPUT and "not a checkpoint" in wrong.stderr
