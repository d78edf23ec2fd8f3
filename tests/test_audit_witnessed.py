"""Verifiers require a quorum of witnesses and fail closed, on both backends: `ledger audit
verify --policy` on a bundle whose checkpoint carries cosignatures (exit 1 naming the missing
witnesses otherwise; a bad policy is a usage error naming its line; a cosignature time far
from the others is flagged); `--evidence` alone checks fork evidence with the log key; the
SDK's `verify_inclusion(policy=...)` waits for a witnessed checkpoint, or says who is missing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger import audit
from ledger.cli import app as cli
from ledger.client import LedgerClient, NotWitnessed
from ledger.contract import crypto
from ledger.contract.notes import sign_note, split_note
from ledger.log.checkpoint import Checkpoint
from ledger.log.cosignature import cosign
from ledger.log.evidence import ForkEvidence
from ledger.log.store import StoredCheckpoint
from tests.conftest import OPENED_ATTRS, ORIGIN, World
from tests.test_client_verification import cli_env

NAMES = ("ngo-w", "uni-w", "press-w")
KEYS = {n: crypto.generate_signing_key(f"{n}.test/w", crypto.COSIGNATURE_TYPE) for n in NAMES}


def policy(world: World, quorum: str) -> str:
    log_line = (world.settings.keys / "log.vkey").read_text().strip()
    lines = [f"log {log_line}", *(f"witness {n} {KEYS[n].verify_key.line()}" for n in NAMES)]
    return "\n".join([*lines, quorum]) + "\n"


def covered(world: World) -> StoredCheckpoint:
    """Some history, and a checkpoint over all of it."""
    world.agency("ngo-a").open_case()
    return world.ledger.log.sign_checkpoint()


def cosigned(checkpoint: StoredCheckpoint, *names: str, at: int | None = None) -> str:
    body, _ = split_note(checkpoint.note)
    now = at or int(time.time())
    return checkpoint.note + "".join(cosign(body, KEYS[n], now) for n in names)


def audit_bundle(world: World, tmp_path: Path, note: str, quorum: str, *extra: str) -> list[str]:
    size = int(note.split("\n")[1])
    entries = [e for _, e in world.ledger.store.entries(0, size)]
    audit.write_bundle(tmp_path / "bundle", note, entries)
    (tmp_path / "agency-keys").write_text(world.agency("ngo-a").key.verify_key.line() + "\n")
    (tmp_path / "policy").write_text(policy(world, quorum))
    return ["audit", "verify", "--bundle", str(tmp_path / "bundle"),
            "--log-key", str(world.settings.keys / "log.vkey"),
            "--agency-keys", str(tmp_path / "agency-keys"),
            "--policy", str(tmp_path / "policy"), *extra]  # fmt: skip


def run(world: World, args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, env=cli_env(world.settings))
    return result.exit_code, result.output


def test_a_bundle_cosigned_by_two_of_three_passes_a_two_of_three_policy(
    world: World, tmp_path: Path
) -> None:
    note = cosigned(covered(world), "ngo-w", "press-w")
    code, out = run(
        world, audit_bundle(world, tmp_path, note, "group g 2 ngo-w uni-w press-w\nquorum g")
    )
    assert code == 0, out
    assert "cosigned by: ngo-w, press-w" in out and "verified:" in out


def test_the_same_bundle_fails_three_of_three_naming_the_missing_witness(
    world: World, tmp_path: Path
) -> None:
    note = cosigned(covered(world), "ngo-w", "press-w")
    args = audit_bundle(world, tmp_path, note, "group g all ngo-w uni-w press-w\nquorum g")
    code, out = run(world, args)
    assert code == 1
    assert "witness quorum: quorum g not met: no valid cosignature from uni-w" in out
    code, out = run(world, [*args, "--json"])
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert [f["check"] for f in report["failures"]] == ["witness quorum"]


def test_a_bundle_without_cosignatures_fails_any_quorum(world: World, tmp_path: Path) -> None:
    code, out = run(world, audit_bundle(world, tmp_path, covered(world).note, "quorum uni-w"))
    assert code == 1 and "no valid cosignature from uni-w" in out


def test_a_forged_cosignature_fails_the_audit(world: World, tmp_path: Path) -> None:
    checkpoint = covered(world)
    other = Checkpoint(ORIGIN, checkpoint.size + 1, checkpoint.root).body()
    note = cosigned(checkpoint, "ngo-w") + cosign(other, KEYS["uni-w"], int(time.time()))
    code, out = run(world, audit_bundle(world, tmp_path, note, "quorum ngo-w"))
    assert code == 1 and "does not verify" in out


def test_a_cosignature_time_far_from_the_others_is_flagged(world: World, tmp_path: Path) -> None:
    checkpoint = covered(world)
    now = int(time.time())
    body, _ = split_note(checkpoint.note)
    note = cosigned(checkpoint, "ngo-w", "uni-w", at=now) + cosign(
        body, KEYS["press-w"], now - 7200
    )
    code, out = run(
        world, audit_bundle(world, tmp_path, note, "group g all ngo-w uni-w press-w\nquorum g")
    )
    assert code == 0, out
    assert "flag: log: cosignature time: witness press-w cosigned at" in out
    assert "-7200 s from the other witnesses' median" in out


def test_a_malformed_policy_is_a_usage_error_naming_its_line(world: World, tmp_path: Path) -> None:
    args = audit_bundle(world, tmp_path, covered(world).note, "group g 4 ngo-w uni-w\nquorum g")
    code, out = run(world, args)
    assert code == 2 and "policy line 5" in out


def test_fork_evidence_alone_is_checked_with_the_log_key(world: World, tmp_path: Path) -> None:
    checkpoint = covered(world)
    forged = Checkpoint(ORIGIN, checkpoint.size, bytes(32)).body()
    other = sign_note(forged, world.ledger.log.key)  # the log key signs another root
    fork = ForkEvidence(ORIGIN, "ngo-w.test/w", 1, checkpoint.note, other, checkpoint.size, (), "")
    (tmp_path / "evidence").write_text(fork.to_json())
    args = ["audit", "verify", "--evidence", str(tmp_path / "evidence"),
            "--log-key", str(world.settings.keys / "log.vkey")]  # fmt: skip
    code, out = run(world, args)
    assert code == 1 and out.startswith("FORK PROVEN: the log key signed two checkpoints of size")
    same = ForkEvidence(ORIGIN, "w", 1, checkpoint.note, checkpoint.note, checkpoint.size, (), "")
    (tmp_path / "evidence").write_text(same.to_json())
    code, out = run(world, args)
    assert code == 0 and out.startswith("the evidence proves no fork: both checkpoints")


def test_the_bundle_command_refuses_a_policy_without_the_log_key(
    world: World, tmp_path: Path
) -> None:
    (tmp_path / "policy").write_text(policy(world, "quorum none"))
    args = ["audit", "bundle", "--url", "http://127.0.0.1:9", "--token-file", str(tmp_path / "t"),
            "--out", str(tmp_path / "b"), "--policy", str(tmp_path / "policy")]  # fmt: skip
    code, out = run(world, args)
    assert code == 2 and "--policy needs --log-key" in out


# -- the SDK --------------------------------------------------------------------------------------


def sdk(world: World) -> LedgerClient:
    ngo = world.agency("ngo-a")
    token = ngo.auth()["Authorization"].split()[1]
    client = LedgerClient("http://testserver", token, ngo.key, transport=world.http._transport)
    client._origin = ORIGIN
    return client


def test_verify_inclusion_takes_the_policy_and_fails_closed(world: World) -> None:
    from ledger.audit.policy import parse_policy

    client = sdk(world)
    log_key = crypto.parse_verify_key((world.settings.keys / "log.vkey").read_text())
    case_id = "5b0c4c34-7f7a-4c4e-9a47-0d5bdfc1d6f1"
    answer = client.submit("case.opened", case_id, {"minor": False}, OPENED_ATTRS)
    checkpoint = world.ledger.log.sign_checkpoint()
    body, _ = split_note(checkpoint.note)
    for name in ("ngo-w", "uni-w"):  # gathered by the cosigner, as it would
        line = cosign(body, KEYS[name], int(time.time())).rstrip("\n")
        world.ledger.store.add_cosignature(name, checkpoint.size, line, "2026-01-01T00:00:00Z")
    two = parse_policy(policy(world, "group g 2 ngo-w uni-w press-w\nquorum g"))
    assert client.verify_inclusion(answer, log_key, policy=two) == checkpoint.size
    three = parse_policy(policy(world, "group g all ngo-w uni-w press-w\nquorum g"))
    with pytest.raises(NotWitnessed) as caught:
        client.verify_inclusion(answer, log_key, policy=three, timeout_s=0.5)
    assert "no valid cosignature from press-w" in str(caught.value)
    stranger = crypto.generate_signing_key(ORIGIN).verify_key
    other_log = parse_policy(policy(world, "quorum none").replace(log_key.line(), stranger.line()))
    with pytest.raises(ValueError, match="names no log"):
        client.verify_inclusion(answer, log_key, policy=other_log)
    client.close()
