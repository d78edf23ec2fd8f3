"""A real ledger (`ledger serve`, two processes) with three real witnesses (`ledger witness
serve`), on both backends, through the stages the issue lists:

1. all up: the served checkpoint carries three cosignatures (checked by the tests' own
   implementation of the spec) and `ledger log status` shows each witness at it;
2. one killed: the log keeps growing and signing, the two others cosign, a 2-of-3 policy
   passes `ledger audit verify --policy` online, a 3-of-3 fails naming the dead witness;
3. one stale: the witness holds a size the ledger does not know of (409), then cosigns;
4. a split view forged by the test with the log key (two checkpoints of one size): no honest
   witness cosigns the second, each keeps the fork evidence, `--evidence` proves the fork,
   and an auditor holding the other checkpoint fails the policy;
5. a witness shown a fork that extends the log: the ledger logs an ALARM when it refuses the
   log's own next checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from ledger import audit
from ledger.client import LedgerClient, new_id
from ledger.contract import crypto
from ledger.contract.notes import sign_note, split_note
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint
from tests import cosignature_spec as spec
from tests.conftest import OPENED_ATTRS
from tests.servers import (
    ORIGIN,
    AgencyCreds,
    Deployment,
    deployment,
    register_agencies,
    write_audit_inputs,
)
from tests.witnesses import WitnessProc

NAMES = ("w1", "w2", "w3")


class Scene:
    def __init__(self, dep: Deployment, root: Path) -> None:
        self.dep = dep
        self.log_vkey = crypto.parse_verify_key((dep.keys / "log.vkey").read_text())
        self.witnesses = {
            n: WitnessProc(root / n, f"{n}.witness.test/w", [(ORIGIN, self.log_vkey)])
            for n in NAMES
        }
        listed = [
            {"name": n, "key": w.vkey.line(), "url": w.url} for n, w in self.witnesses.items()
        ]
        dep.env["LEDGER_WITNESSES"] = json.dumps(listed)
        dep.env["LEDGER_WITNESS_TIMEOUT_S"] = "2"
        dep.env["LEDGER_WITNESS_RETRY_MAX_S"] = "2"
        self.agencies: dict[str, AgencyCreds] = {}  # registered once the server runs
        self.audit_args: list[str] = []
        self.http = httpx.Client(base_url=dep.url, timeout=10)

    def start(self) -> None:
        for w in self.witnesses.values():
            w.start()
        self.dep.start_server()
        self.agencies = register_agencies(self.dep, ["ngo-a"])
        self.audit_args = write_audit_inputs(self.dep, self.agencies)

    def stop(self) -> None:
        self.http.close()
        for w in self.witnesses.values():
            w.stop()

    def grow(self, events: int = 2) -> None:
        ngo = self.agencies["ngo-a"]
        with LedgerClient(self.dep.url, ngo.caseworker, ngo.key) as client:
            for _ in range(events):
                client.submit("case.opened", new_id(), {"minor": False}, OPENED_ATTRS)

    def checkpoint(self) -> str:
        answer = self.http.get("/v1/log/checkpoint", headers=self.admin)
        answer.raise_for_status()
        return answer.text

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.dep.admin_token}"}

    def size(self) -> int:
        return int(self.http.get("/v1/log/checkpoint", headers=self.admin).text.split("\n")[1])

    def cosigners(self, note: str) -> set[str]:
        """The witnesses whose lines on `note` verify, by the tests' own implementation."""
        body, lines = split_note(note)
        out = set()
        for name, w in self.witnesses.items():
            for line in lines:
                if line.name == w.key.name:
                    spec.verify_line(line.line + "\n", w.key.name, w.vkey.raw, body)
                    out.add(name)
        return out

    def witnessed(self, names: set[str], timeout: float = 30) -> str:
        """Grow the log, then wait until its newest checkpoint covers it and `names` cosign."""
        self.grow()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            note = self.checkpoint()
            entries = self.http.get(
                "/v1/log/entries", params={"start": 0, "end": 1 << 40}, headers=self.admin
            ).json()["entries"]
            if note.split("\n")[1] == str(len(entries)) and self.cosigners(note) >= names:
                return note
            time.sleep(0.1)
        raise AssertionError(f"not cosigned by {names} in time:\n{self.dep.server.tail()}")

    def policy(self, root: Path, quorum: str) -> Path:
        lines = [f"log {self.log_vkey.line()} {self.dep.url}"]
        lines += [f"witness {n} {w.vkey.line()} {w.url}" for n, w in self.witnesses.items()]
        path = root / f"policy-{abs(hash(quorum))}"
        path.write_text("\n".join([*lines, quorum]) + "\n")
        return path

    def leaves(self) -> list[bytes]:
        entries = self.http.get(
            "/v1/log/entries", params={"start": 0, "end": 1 << 40}, headers=self.admin
        ).json()["entries"]
        return [merkle.leaf_hash(crypto.b64decode_strict(e["leaf"])) for e in entries]


def post(w: WitnessProc, body: str) -> httpx.Response:
    return httpx.post(f"{w.url}/add-checkpoint", content=body.encode(), timeout=10)


def request(old: int, proof: list[bytes], note: str) -> str:
    return "\n".join([f"old {old}", *(crypto.b64(p) for p in proof)]) + "\n\n" + note


def test_three_witnesses_through_death_staleness_and_a_split_view(
    backend: str, tmp_path: Path
) -> None:
    with deployment(backend, tmp_path / "ledger", workers=2) as dep:
        scene = Scene(dep, tmp_path)
        try:
            scene.start()
            _stages(scene, tmp_path)
        finally:
            scene.stop()


def _stages(scene: Scene, tmp_path: Path) -> None:
    dep, w1, w3 = scene.dep, scene.witnesses["w1"], scene.witnesses["w3"]
    two = scene.policy(tmp_path, "group g 2 w1 w2 w3\nquorum g")
    three = scene.policy(tmp_path, "group g all w1 w2 w3\nquorum g")

    # 1. All up: three cosignatures on the newest checkpoint.
    first = scene.witnessed({"w1", "w2", "w3"})
    status = dep.cli("log", "status")
    assert status.returncode == 0, status.stderr
    size = first.split("\n")[1]
    assert all(f"witness {n} (" in status.stdout for n in NAMES)
    assert status.stdout.count(f"last cosigned {size} at") == 3, status.stdout
    verified = dep.cli(*scene.audit_args, "--policy", str(three))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "cosigned by: w1, w2, w3" in verified.stdout

    # 2. One dead: the log grows, two cosign; 2-of-3 passes, 3-of-3 fails naming w3.
    w3.kill()
    before = scene.size()
    note = scene.witnessed({"w1", "w2"})
    assert int(note.split("\n")[1]) > before and "w3" not in scene.cosigners(note)
    passed = dep.cli(*scene.audit_args, "--policy", str(two))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    failed = dep.cli(*scene.audit_args, "--policy", str(three), "--wait-s", "1")
    assert failed.returncode == 1
    assert "quorum g not met: no valid cosignature from w3" in failed.stdout
    status = dep.cli("log", "status").stdout
    assert "witness w3 (" in status and "unreachable" in status

    # 3. One stale: w3 is shown the newest checkpoint by someone else while the ledger does
    #    not know it (on another port), so the ledger's next request is answered 409; then
    #    it sends the proof from there, and w3 cosigns again.
    newest = int(note.split("\n")[1])
    consistency = scene.http.get(
        "/v1/log/proof/consistency", params={"from": int(size), "to": newest}, headers=scene.admin
    ).json()["proof"]
    aside, url = w3.elsewhere()
    proof = [crypto.b64decode_strict(p) for p in consistency]
    shown = httpx.post(f"{url}/add-checkpoint", content=request(int(size), proof, note).encode())
    assert shown.status_code == 200, shown.text
    aside.stop()
    w3.start()
    note = scene.witnessed({"w1", "w2", "w3"})
    assert "w3" in scene.cosigners(note)

    # 4. A split view: the log key signs a second checkpoint of the newest size.
    log_key = crypto.parse_signing_key((dep.keys / "log.key").read_text())
    body, _ = split_note(note)
    honest = Checkpoint.parse(body)
    forged = sign_note(
        Checkpoint(ORIGIN, honest.size, crypto.sha256(b"the other view")).body(), log_key
    )
    for w in scene.witnesses.values():
        assert post(w, request(0, [], forged)).text == f"{honest.size}\n"  # 409: it holds N
        assert post(w, request(honest.size, [], forged)).status_code == 422
        (evidence,) = w.evidence()
        proved = dep.cli("audit", "verify", "--evidence", str(evidence),
                         "--log-key", str(dep.keys / "log.vkey"))  # fmt: skip
        assert proved.returncode == 1 and proved.stdout.startswith("FORK PROVEN"), proved.stdout
    entries = [crypto.b64decode_strict(e["leaf"]) for e in scene.http.get(
        "/v1/log/entries", params={"start": 0, "end": honest.size}, headers=scene.admin
    ).json()["entries"]]  # fmt: skip
    audit.write_bundle(tmp_path / "other-view.bundle", forged, entries)
    held_by_auditor = dep.cli(
        "audit", "verify", "--bundle", str(tmp_path / "other-view.bundle"),
        "--log-key", str(dep.keys / "log.vkey"), "--agency-keys", str(dep.root / "agency-keys"),
        "--policy", str(two), "--json",
    )  # fmt: skip
    assert held_by_auditor.returncode == 1
    failures = json.loads(held_by_auditor.stdout)["failures"]
    quorum = [f["message"] for f in failures if f["check"] == "witness quorum"]
    assert quorum and "no valid cosignature from w1, w2, w3" in quorum[0]

    # 5. w1 is shown a fork that extends the log's newest checkpoint (the log key signs
    #    it): the ledger's own next checkpoint is refused, and the ledger raises the alarm.
    tree = merkle.MemoryTree(scene.leaves()[: honest.size])
    tree.append([crypto.sha256(b"fork %d" % i) for i in range(3)])
    ahead = sign_note(Checkpoint(ORIGIN, tree.size, tree.root()).body(), log_key)
    extension = merkle.consistency_proof(honest.size, tree.size, tree)
    assert post(w1, request(honest.size, extension, ahead)).status_code == 200
    scene.grow(5)
    deadline = time.monotonic() + 30
    while "ALARM: witness w1" not in dep.server.tail(100_000):
        assert time.monotonic() < deadline, dep.server.tail()
        time.sleep(0.2)
    assert "w1" not in scene.cosigners(scene.witnessed({"w2", "w3"}))
