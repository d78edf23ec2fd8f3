"""The witness's add-checkpoint, through its real HTTP app, every answer the spec names: 200 with
a cosignature the tests' own implementation verifies, 400, 403, 404, 409 with the held size as
text/x.tlog.size, 413, 422; fork evidence kept and checkable with the log key alone; the
state survives a restart and a second process on it is refused; `ledger witness keygen`."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from ledger.cli import app as cli
from ledger.contract import crypto
from ledger.contract.notes import sign_note
from ledger.log.checkpoint import Checkpoint
from ledger.log.evidence import ForkEvidence, verify_fork
from ledger.witness.config import ConfigError, parse_logs
from ledger.witness.protocol import Witness
from ledger.witness.server import create_app
from ledger.witness.state import State, StateBusy
from tests import cosignature_spec as spec
from tests.witnesses import TestLog

ORIGIN = "ledger.test/log"
NAME = "witness.test/w1"
NOW = 1_790_000_000


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = TestLog.new(ORIGIN, 40)
        self.fork = self.log.fork(10)
        self.key = crypto.generate_signing_key(NAME, crypto.COSIGNATURE_TYPE)
        self.open()

    def open(self) -> None:
        self.state = State(self.root / "state")
        witness = Witness(self.key, {ORIGIN: [self.log.key.verify_key]}, self.state, lambda: NOW)
        self.http = TestClient(create_app(witness))

    def restart(self) -> None:
        self.http.close()
        self.state.close()
        self.open()

    def post(self, body: bytes) -> tuple[int, str, str]:
        answer = self.http.post("/add-checkpoint", content=body)
        return answer.status_code, answer.text, answer.headers.get("content-type", "")

    def cosigned(self, log: TestLog, old: int, size: int) -> str:
        status, text, _ = self.post(log.request(old, size))
        assert status == 200, text
        return text

    def held(self) -> int:
        status, text, kind = self.post(self.log.request(0, 0))
        return 0 if status == 200 else int(text)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.http.close()
    w.state.close()


def test_a_first_checkpoint_is_cosigned_as_the_spec_says(world: World) -> None:
    line = world.cosigned(world.log, 0, 5)
    pub = world.key.verify_key.raw
    assert spec.verify_line(line, NAME, pub, world.log.body(5)) == NOW
    assert line.count("\n") == 1


def test_growth_with_a_consistency_proof_is_cosigned(world: World) -> None:
    world.cosigned(world.log, 0, 5)
    line = world.cosigned(world.log, 5, 33)
    assert spec.verify_line(line, NAME, world.key.verify_key.raw, world.log.body(33)) == NOW
    world.cosigned(world.log, 33, 33)  # the same checkpoint again: cosigned again
    assert world.held() == 33


def test_a_stale_old_size_is_409_with_the_held_size(world: World) -> None:
    world.cosigned(world.log, 0, 7)
    for old in (0, 3, 8):
        status, text, kind = world.post(world.log.request(old, 20))
        assert (status, text, kind) == (409, "7\n", "text/x.tlog.size")
    world.cosigned(world.log, 7, 20)  # then with the right one: success


def test_an_unknown_log_is_404(world: World) -> None:
    stranger = TestLog.new("other.test/log", 5)
    assert world.post(stranger.request(0, 5))[0] == 404


def test_a_checkpoint_signed_by_another_key_is_403(world: World) -> None:
    impostor = TestLog(crypto.generate_signing_key(ORIGIN), world.log.leaves)
    status, text, _ = world.post(impostor.request(0, 5))
    assert status == 403 and "no signature" in text


def test_a_bad_signature_by_the_logs_key_is_403(world: World) -> None:
    body = world.log.request(0, 5).decode()
    good = body.rsplit(" ", 1)[1]
    raw = bytearray(crypto.b64decode_strict(good.strip()))
    raw[10] ^= 1
    status, text, _ = world.post(
        (body.rsplit(" ", 1)[0] + " " + crypto.b64(bytes(raw)) + "\n").encode()
    )
    assert status == 403 and "does not verify" in text


def test_an_old_size_past_the_checkpoint_is_400_a_rollback_refused(world: World) -> None:
    world.cosigned(world.log, 0, 20)
    status, _, _ = world.post(world.log.request(20, 10, proof=[]))
    assert status == 400
    assert world.held() == 20


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 0\n",  # no empty line, no checkpoint
        b"old 01\n\n",
        b"old -1\n\n",
        b"old 0 \n\n",
        b"new 0\n\n",
        b"\xff\xfe",
        b"old 0\nnot base64!\n\n",
        b"old 0\n" + crypto.b64(b"short").encode() + b"\n\n",
    ],
    ids=[
        "empty",
        "no-checkpoint",
        "leading-zero",
        "negative",
        "trailing-space",
        "not-old",
        "not-utf8",
        "proof-not-base64",
        "proof-not-a-hash",
    ],  # fmt: skip
)
def test_a_malformed_body_is_400(world: World, body: bytes) -> None:
    note = world.log.note(5).encode()
    assert world.post(body + (note if body.endswith(b"\n\n") else b""))[0] == 400


def test_more_than_63_proof_lines_is_400(world: World) -> None:
    assert world.post(world.log.request(0, 5, proof=[bytes(32)] * 64))[0] == 400


def test_a_malformed_checkpoint_is_400(world: World) -> None:
    note = sign_note(f"{ORIGIN}\n05\n{crypto.b64(bytes(32))}\n", world.log.key)
    assert world.post(b"old 0\n\n" + note.encode())[0] == 400


def test_an_oversized_body_is_413(world: World) -> None:
    assert world.post(b"old 0\n" + b"A" * 70_000)[0] == 413


def test_size_zero_must_have_the_empty_root(world: World) -> None:
    bad = sign_note(Checkpoint(ORIGIN, 0, bytes(32)).body(), world.log.key)
    assert world.post(b"old 0\n\n" + bad.encode())[0] == 422
    assert world.post(world.log.request(0, 0))[0] == 200


def test_a_proof_from_size_zero_is_422(world: World) -> None:
    assert world.post(world.log.request(0, 5, proof=[bytes(32)]))[0] == 422


def test_a_proof_that_does_not_verify_is_422_and_kept(world: World) -> None:
    world.cosigned(world.log, 0, 5)
    wrong = world.log.proof(6, 20)
    status, text, _ = world.post(world.log.request(5, 20, proof=wrong))
    assert status == 422 and "kept as evidence" in text
    assert world.held() == 5


def test_a_split_view_at_one_size_is_refused_and_proved(world: World) -> None:
    world.cosigned(world.log, 0, 20)
    status, _, _ = world.post(world.fork.request(20, 20))
    assert status == 422
    (path,) = (world.root / "state" / "evidence").glob("*.json")
    evidence = ForkEvidence.from_json(path.read_text())
    assert evidence.witness == NAME and evidence.origin == ORIGIN
    assert "size 20 with different roots" in verify_fork(evidence, world.log.key.verify_key)
    world.post(world.fork.request(20, 20))  # the same fork again: the same file
    assert len(list((world.root / "state" / "evidence").glob("*.json"))) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_forked_history_is_never_cosigned_past_where_it_forked(world: World) -> None:
    world.cosigned(world.log, 0, 8)  # both histories agree up to 10
    world.cosigned(world.fork, 8, 10)
    assert world.post(world.fork.request(10, 30))[0] == 200  # the fork is the one seen
    assert world.post(world.log.request(30, 35))[0] == 422  # the other cannot follow
    assert world.post(world.log.request(30, 30))[0] == 422


def test_the_state_survives_a_restart(world: World) -> None:
    world.cosigned(world.log, 0, 25)
    world.restart()
    assert world.held() == 25
    assert world.post(world.fork.request(25, 25))[0] == 422
    world.cosigned(world.log, 25, 40)


def test_a_second_process_on_the_same_state_is_refused(world: World) -> None:
    with pytest.raises(StateBusy):
        State(world.root / "state")


def test_the_monitoring_endpoint_serves_the_cosigned_checkpoint(world: World) -> None:
    origin_hash = hashlib.sha256(ORIGIN.encode()).hexdigest()
    assert world.http.get(f"/{origin_hash}/checkpoint").status_code == 404
    line = world.cosigned(world.log, 0, 12)
    served = world.http.get(f"/{origin_hash}/checkpoint").text
    assert served.startswith(world.log.note(12)) and served.endswith(line)
    assert world.http.get(f"/{'0' * 64}/checkpoint").status_code == 404
    assert world.http.get("/add-checkpoint").status_code == 405


def test_the_logs_file_is_read_strictly() -> None:
    key = crypto.generate_signing_key(ORIGIN).verify_key
    logs = parse_logs(f"# logs\n{ORIGIN} {key.line()}  # ours\n")
    assert logs == {ORIGIN: (key,)}
    for bad in ["", f"{ORIGIN}\n", f"{ORIGIN} {key.line()} extra\n", f"{ORIGIN} nokey\n",
                f"{ORIGIN} {key.line()}\n{ORIGIN} {key.line()}\n"]:  # fmt: skip
        with pytest.raises(ConfigError):
            parse_logs(bad)


def test_keygen_writes_a_private_key_and_a_cosignature_verifier_key(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["witness", "keygen", "--name", NAME, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    vkey = crypto.parse_verify_key(result.output.strip(), crypto.COSIGNATURE_TYPE)
    assert (tmp_path / "witness.vkey").read_text().strip() == vkey.line()
    key = crypto.parse_signing_key((tmp_path / "witness.key").read_text(), crypto.COSIGNATURE_TYPE)
    assert key.verify_key == vkey
    assert stat.S_IMODE((tmp_path / "witness.key").stat().st_mode) == 0o600
    again = runner.invoke(cli, ["witness", "keygen", "--name", NAME, "--out", str(tmp_path)])
    assert again.exit_code == 2 and "keeps its key" in again.output
    assert (
        runner.invoke(
            cli, ["witness", "keygen", "--name", "a b", "--out", str(tmp_path / "x")]
        ).exit_code
        == 2
    )


def test_serve_refuses_a_note_key_as_its_own(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(crypto.generate_signing_key(NAME).line())
    (tmp_path / "logs").write_text(
        f"{ORIGIN} {crypto.generate_signing_key(ORIGIN).verify_key.line()}\n"
    )
    args = ["witness", "serve", "--key", str(tmp_path / "k"), "--logs", str(tmp_path / "logs"),
            "--state", str(tmp_path / "s")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "cosignature/v1 key" in result.output


def test_the_evidence_file_is_json_an_auditor_reads(world: World) -> None:
    world.cosigned(world.log, 0, 20)
    world.post(world.fork.request(20, 20))
    (path,) = (world.root / "state" / "evidence").glob("*.json")
    data = json.loads(path.read_text())
    assert data["format"] == "ledger-fork-evidence-v1" and data["old_size"] == 20
    assert data["cosigned"].startswith(world.log.note(20))  # with the witness's cosignature
    assert data["refused"] == world.fork.note(20)
