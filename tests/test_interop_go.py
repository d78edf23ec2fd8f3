"""Another RFC 6962 implementation verifies the log: Go's golang.org/x/mod/sumdb (note, tlog).

Runs where a Go toolchain and golang.org/x/mod are installed (Debian: golang-go and
golang-golang-x-mod-dev); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ledger.contract import crypto
from tests.conftest import World

GOPATH = Path("/usr/share/gocode")
PROGRAM = Path(__file__).parent / "interop" / "verify_tlog.go"


def go_available() -> bool:
    return shutil.which("go") is not None and (GOPATH / "src/golang.org/x/mod/sumdb").is_dir()


@pytest.mark.skipif(not go_available(), reason="needs go and golang.org/x/mod (Debian packages)")
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_go_sumdb_verifies_checkpoint_and_proofs(world: World, tmp_path: Path) -> None:
    ngo = world.agency("ngo-a")
    auditor = {"Authorization": f"Bearer {world.token('auditor')}"}
    ngo.open_case()
    world.ledger.log.sign_checkpoint()  # the signer's schedule, now: requests never sign
    old = world.http.get("/v1/log/checkpoint", headers=auditor).text
    old_size = int(old.split("\n")[1])
    answers = [ngo.ok("case.closed", ngo.open_case(), {}, {"reason": "other"}) for _ in range(5)]
    world.ledger.log.sign_checkpoint()
    checkpoint = world.http.get("/v1/log/checkpoint", headers=auditor).text
    size = int(checkpoint.split("\n")[1])
    index = answers[2]["index"]
    entry = world.http.get(
        f"/v1/log/entries?start={index}&end={index + 1}", headers=auditor
    ).json()["entries"][0]["leaf"]
    inclusion = world.http.get(
        f"/v1/log/proof/inclusion?index={index}&size={size}", headers=auditor
    ).json()["proof"]
    consistency = world.http.get(
        f"/v1/log/proof/consistency?from={old_size}&to={size}", headers=auditor
    ).json()["proof"]
    vkey = world.http.get("/v1/log/key", headers=auditor).text
    assert crypto.parse_verify_key(vkey).name == world.ledger.origin
    payload = {
        "vkey": vkey,
        "checkpoint": checkpoint,
        "old_checkpoint": old,
        "entry": entry,
        "index": index,
        "inclusion": inclusion,
        "consistency": consistency,
    }
    env = os.environ | {
        "GOPATH": str(GOPATH),
        "GO111MODULE": "off",
        "GOCACHE": str(tmp_path / "gocache"),
        "GOFLAGS": "",
    }

    def verify_with_go(data: dict[str, object]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["go", "run", str(PROGRAM)],
            input=json.dumps(data),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    run = verify_with_go(payload)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
    # and it rejects a proof with one bit flipped
    bad = dict(
        payload,
        inclusion=[
            crypto.b64(
                bytes([crypto.b64decode_strict(inclusion[0])[0] ^ 1])
                + crypto.b64decode_strict(inclusion[0])[1:]
            )
        ]
        + inclusion[1:],
    )
    run = verify_with_go(bad)
    assert run.returncode == 1 and "inclusion proof" in run.stderr
