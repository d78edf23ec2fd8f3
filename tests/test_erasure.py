"""Survivor erasure by crypto-shredding, on both backends, including crashes mid-way."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from ledger import audit
from ledger.contract import crypto
from ledger.contract.receipts import ReceiptError, verify_receipt
from ledger.deploy import KeyPaths, open_ledger
from ledger.services.keystore import KeyStore, rotate_kek
from tests.conftest import World
from tests.test_audit import run_audit
from tests.test_confidentiality import files_containing, markers


def erase(world: World, case_id: str, agency: str = "ngo-a") -> Any:
    ngo = world.agencies[agency]
    request = ngo.ok("erasure.requested", case_id, {}, {"reason": "survivor_request"},
                     role="supervisor")  # fmt: skip
    second = world.token("supervisor", agency)
    body = ngo.body("case.erased", case_id, {"request_event_id": request["event_id"]}, {})
    return world.http.post("/v1/events", json=body, headers={"Authorization": f"Bearer {second}"})


def receipt_key(world: World) -> crypto.VerifyKey:
    return crypto.parse_verify_key(KeyPaths(world.settings.keys).receipt_vkey.read_text())


def all_entries(world: World) -> list[bytes]:
    return [e for _, e in world.ledger.store.entries(0, world.ledger.store.log_size())]


def test_erasure_end_to_end(world: World) -> None:
    mark = markers()
    ngo, clinic, legal = world.agency("ngo-a"), world.agency("clinic"), world.agency("legal")
    case_id = ngo.open_case(payload={"identity": {"name": mark["identity"]},
                                     "location": {"shelter": mark["location"]},
                                     "notes": mark["notes"]})  # fmt: skip
    consent = ngo.grant(case_id, ["clinic", "legal"], categories=["identity", "location"])
    assert ngo.share(case_id, "clinic", consent, ["identity", "location"]).status_code == 201
    assert clinic.read(case_id).status_code == 200
    assert legal.read(case_id).status_code == 403  # named in the consent, sent nothing
    found = world.ledger.keys.table.get(case_id)
    assert found is not None
    wrapped = found[1]
    if not world.settings.is_postgres:  # the scan below would find it, were it still there
        assert files_containing(world.settings.keys, [wrapped])

    r = erase(world, case_id)
    assert r.status_code == 201, r.text
    answer = r.json()
    assert answer["notify"] == ["clinic", "legal"]
    receipt = verify_receipt(answer["receipt"], receipt_key(world))
    assert (receipt.case_id, receipt.index) == (case_id, answer["index"])
    assert audit.check_receipt(answer["receipt"], receipt_key(world), all_entries(world)) == []

    # Afterwards: 410 with time and position for related agencies, the key is gone.
    for agency in (ngo, clinic):
        gone = agency.read(case_id)
        assert gone.status_code == 410
        assert gone.json()["index"] == answer["index"] and gone.json()["erased_at"]
    assert ngo.submit("case.closed", case_id, {}, {"reason": "other"}).status_code == 410
    assert world.agency("other").read(case_id).status_code == 404
    assert world.ledger.keys.get(case_id) is None
    later = world.http.get(f"/v1/cases/{case_id}/erasure-receipt", headers=clinic.auth())
    assert later.status_code == 200 and later.text == answer["receipt"]
    assert world.http.get(f"/v1/cases/{case_id}/erasure-receipt",
                          headers=world.agency("other").auth()).status_code == 404  # fmt: skip

    # The history stays verifiable, envelopes and all.
    assert run_audit(world).ok
    assert any(json.loads(e).get("envelope", {}).get("case_id") == case_id
               for e in all_entries(world))  # fmt: skip

    # Nothing readable is left: no marker anywhere, and (SQLite) not even the wrapped key.
    needles = [m.encode() for m in mark.values()]
    hits = files_containing(world.settings.keys, [*needles, wrapped])
    if world.settings.is_postgres:
        with psycopg.connect(world.settings.database_url or "", autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            row = conn.execute("SHOW data_directory").fetchone()
        assert row is not None
        from pathlib import Path

        hits += files_containing(Path(row[0]), needles)
    else:
        hits += files_containing(world.settings.home, needles)
    assert hits == []


def test_a_crash_between_commit_and_key_destruction_ends_fully_erased(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case(payload={"notes": "n"})

    def crash(_: str) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(world.ledger.keys, "destroy", crash)
    r = erase(world, case_id)
    assert r.status_code == 201  # committed: the case is erased whatever follows
    assert "receipt" not in r.json()
    assert world.ledger.keys.table.get(case_id) is not None  # the key survived the crash
    assert ngo.read(case_id).status_code == 410  # ...but nothing unseals the case

    restarted = open_ledger(world.settings)  # start-up finishes the erasure
    try:
        assert restarted.keys.get(case_id) is None
        erasure = restarted.store.erasure(case_id)
        assert erasure is not None and erasure.key_destroyed and erasure.receipt
        assert restarted.recover() == 0
    finally:
        restarted.store.close()
        restarted.keys.table.close()


def test_an_erasure_whose_key_destruction_failed_is_finished_while_the_server_runs(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key store fails once, after the commit: the running server's recoverer destroys
    the key and signs the receipt without waiting for a restart."""
    import time

    from ledger.services.erasure import Recoverer

    ngo = world.agency("ngo-a")
    case_id = ngo.open_case(payload={"notes": "n"})
    real_destroy, failures = world.ledger.keys.destroy, []

    def fails_once(case: str) -> None:
        if not failures:
            failures.append(case)
            raise OSError("key store unreachable")
        real_destroy(case)

    monkeypatch.setattr(world.ledger.keys, "destroy", fails_once)
    assert erase(world, case_id).status_code == 201
    assert world.ledger.keys.table.get(case_id) is not None  # not destroyed yet
    recoverer = Recoverer(world.ledger.erasures, interval_s=0.05, erasure_age_s=0)
    recoverer.start()
    try:
        deadline = time.monotonic() + 10
        while world.ledger.keys.table.get(case_id) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        recoverer.stop()
    assert world.ledger.keys.table.get(case_id) is None
    erasure = world.ledger.store.erasure(case_id)
    assert erasure is not None and erasure.key_destroyed and erasure.receipt
    assert failures == [case_id]


def test_a_younger_unfinished_erasure_is_left_to_its_own_request(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recover(erasure_age_s=...) leaves an erasure committed less than that long ago alone
    (its own request may still be finishing it); an older one it finishes."""
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()

    def crash(_: str) -> None:
        raise OSError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(world.ledger.keys, "destroy", crash)
        assert erase(world, case_id).status_code == 201
    assert world.ledger.recover(erasure_age_s=60) == 0
    assert world.ledger.keys.table.get(case_id) is not None
    world.clock.advance(seconds=61)
    assert world.ledger.recover(erasure_age_s=60) == 1
    assert world.ledger.keys.table.get(case_id) is None


def test_a_tampered_or_foreign_receipt_fails(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    text = erase(world, case_id).json()["receipt"]
    tampered = text.replace(f"case {case_id}", f"case {ngo.open_case()}")
    with pytest.raises(ReceiptError):
        verify_receipt(tampered, receipt_key(world))
    log_key = crypto.parse_verify_key(KeyPaths(world.settings.keys).log_vkey.read_text())
    with pytest.raises(ReceiptError):
        verify_receipt(text, log_key)
    other = ngo.open_case()
    lying = audit.check_receipt(text, receipt_key(world), all_entries(world)[:-3])
    assert lying and lying[0].check == "receipt"
    assert other


def test_kek_rotation_rewraps_every_live_key_and_shreds_the_old_kek(world: World) -> None:
    ngo = world.agency("ngo-a")
    cases = [ngo.open_case(payload={"notes": str(i)}) for i in range(5)]
    paths = KeyPaths(world.settings.keys)
    old_kek = json.loads(paths.kek.read_text())["key"]
    moved = rotate_kek(world.ledger.keys, grace_s=0)
    assert moved == 5
    assert json.loads(paths.kek.read_text())["key"] != old_kek
    assert not (paths.kek.parent / "kek.next.key").exists()
    assert files_containing(world.settings.keys, [old_kek.encode()]) == []
    fresh = KeyStore(world.ledger.keys.table, paths.kek)
    for case_id in cases:
        assert fresh.get(case_id) is not None
        assert ngo.read(case_id).json()["payload"]["notes"]  # the running server still reads


def test_a_crash_in_the_middle_of_kek_rotation_loses_no_key(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ngo = world.agency("ngo-a")
    cases = [ngo.open_case(payload={"notes": str(i)}) for i in range(6)]
    table = world.ledger.keys.table
    real_rewrap, calls = table.rewrap, []

    def crashing_rewrap(*args: Any) -> bool:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("killed")
        return real_rewrap(*args)

    monkeypatch.setattr(table, "rewrap", crashing_rewrap)
    with pytest.raises(OSError):
        rotate_kek(world.ledger.keys, grace_s=0)
    monkeypatch.setattr(table, "rewrap", real_rewrap)
    paths = KeyPaths(world.settings.keys)
    # Mid-rotation: both KEK files exist; every key still unwraps, new cases use the new KEK.
    survivor = KeyStore(table, paths.kek)
    assert all(survivor.get(c) is not None for c in cases)
    cases.append(ngo.open_case(payload={"notes": "during"}))
    rotate_kek(survivor, grace_s=0)  # the restarted rotation finishes
    after = KeyStore(table, paths.kek)
    assert all(after.get(c) is not None for c in cases)
    assert not (paths.kek.parent / "kek.next.key").exists()


@pytest.mark.regression("the erasure receipt of a malformed case id answered 500 to auditors")
@pytest.mark.parametrize("case_id", ["0", "not-a-case", "00000000-0000-0000-0000-000000000000"])
def test_the_erasure_receipt_of_a_malformed_case_id_is_404_for_every_role(
    world: World, case_id: str
) -> None:
    ngo = world.agency("ngo-a")
    for headers in (ngo.auth(), {"Authorization": f"Bearer {world.token('auditor')}"},
                    world.admin_auth):  # fmt: skip
        r = world.http.get(f"/v1/cases/{case_id}/erasure-receipt", headers=headers)
        assert r.status_code == 404, r.text
