"""The log endpoints on both backends: checkpoints, entries, proofs and who may read them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ledger.contract import crypto
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, verify_checkpoint
from ledger.log.service import CheckpointSigner, LogService
from ledger.settings import Settings
from tests.conftest import ORIGIN, World, open_world


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def grow(world: World, cases: int = 3) -> list[dict[str, object]]:
    ngo = world.agency("ngo-a")
    answers = []
    for _ in range(cases):
        case_id = ngo.open_case(payload={"notes": "n"})
        answers.append(ngo.ok("case.closed", case_id, {}, {"reason": "other"}))
    return answers


def log_vkey(world: World) -> crypto.VerifyKey:
    return crypto.parse_verify_key((world.settings.keys / "log.vkey").read_text())


def covering(world: World, headers: dict[str, str], timeout_s: float = 10.0) -> Checkpoint:
    """The served checkpoint, once the log's signer (every 0.2 s in tests) covers the log."""
    size, deadline = world.ledger.store.log_size(), time.monotonic() + timeout_s
    while True:
        r = world.http.get("/v1/log/checkpoint", headers=headers)
        assert r.status_code == 200, r.text
        cp = verify_checkpoint(r.text, log_vkey(world), ORIGIN)
        if cp.size >= size or time.monotonic() > deadline:
            return cp
        time.sleep(0.05)


@pytest.fixture
def unscheduled(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A world whose checkpoint signer never signs by itself (every 10^9 entries or a day):
    whatever is signed here, a request signed it."""

    def idle(service: LogService, every: int, interval_s: float) -> CheckpointSigner:
        return CheckpointSigner(service, 10**9, 86_400.0)

    monkeypatch.setattr("ledger.api.app.CheckpointSigner", idle)
    with open_world(settings) as fresh:
        yield fresh


def test_checkpoint_is_a_signed_note_over_the_current_root(world: World) -> None:
    grow(world)
    auditor = bearer(world.token("auditor"))
    r = world.http.get("/v1/log/checkpoint", headers=auditor)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    cp = covering(world, auditor)
    size = world.ledger.store.log_size()
    assert cp.size == size
    leaves = [merkle.leaf_hash(e) for _, e in world.ledger.store.entries(0, size)]
    assert cp.root == merkle.reference_root(leaves)
    key_line = world.http.get("/v1/log/key", headers=auditor).text.strip()
    assert key_line == log_vkey(world).line()
    assert world.http.get("/v1/log/checkpoint").status_code == 401


def test_each_new_checkpoint_is_consistent_with_the_previous_one(world: World) -> None:
    auditor = bearer(world.token("auditor"))
    grow(world, 1)
    first = covering(world, auditor)
    grow(world, 2)
    second = covering(world, auditor)
    assert second.size > first.size
    r = world.http.get(
        f"/v1/log/proof/consistency?from={first.size}&to={second.size}", headers=auditor
    )
    assert r.status_code == 200
    proof = [crypto.b64decode_strict(p) for p in r.json()["proof"]]
    merkle.verify_consistency(first.size, second.size, first.root, second.root, proof)


def test_entries_page_and_inclusion_proofs_verify_against_the_checkpoint(world: World) -> None:
    answers = grow(world, 4)
    auditor = bearer(world.token("auditor"))
    cp = covering(world, auditor)
    page = world.http.get(f"/v1/log/entries?start=0&end={cp.size + 50}", headers=auditor).json()
    assert [e["index"] for e in page["entries"]] == list(range(cp.size))
    for answer in answers:
        index = int(answer["index"])  # type: ignore[call-overload]
        leaf = crypto.b64decode_strict(page["entries"][index]["leaf"])
        assert crypto.b64(merkle.leaf_hash(leaf)) == answer["leaf_hash"]
        r = world.http.get(f"/v1/log/proof/inclusion?index={index}&size={cp.size}", headers=auditor)
        proof = [crypto.b64decode_strict(p) for p in r.json()["proof"]]
        merkle.verify_inclusion(index, cp.size, merkle.leaf_hash(leaf), proof, cp.root)


@pytest.mark.regression("any token's checkpoint request signed and stored a checkpoint")
def test_a_checkpoint_request_after_the_log_grew_neither_signs_nor_stores_anything(
    unscheduled: World,
) -> None:
    world = unscheduled
    auditor = bearer(world.token("auditor"))
    grow(world, 1)
    first = world.http.get("/v1/log/checkpoint", headers=auditor).text  # the log's first
    stored = world.ledger.store.latest_checkpoint()
    assert stored is not None and stored.note == first
    grow(world, 2)
    assert world.ledger.store.log_size() > stored.size
    for _ in range(3):
        assert world.http.get("/v1/log/checkpoint", headers=auditor).text == first
    assert world.ledger.store.latest_checkpoint() == stored  # nothing signed, nothing stored
    # The log's schedule signs (here by hand, as CheckpointSigner would); then it is served.
    signed = world.ledger.log.sign_checkpoint()
    assert signed.size == world.ledger.store.log_size()
    assert world.http.get("/v1/log/checkpoint", headers=auditor).text == signed.note


def test_the_first_checkpoint_request_of_a_log_without_one_signs_it(unscheduled: World) -> None:
    world = unscheduled
    grow(world, 1)
    assert world.ledger.store.latest_checkpoint() is None
    r = world.http.get("/v1/log/checkpoint", headers=world.agency("ngo-a").auth())
    cp = verify_checkpoint(r.text, log_vkey(world), ORIGIN)
    assert cp.size == world.ledger.store.log_size()
    stored = world.ledger.store.latest_checkpoint()
    assert stored is not None and stored.note == r.text


def test_the_signer_covers_new_entries_on_its_schedule(world: World) -> None:
    auditor = bearer(world.token("auditor"))
    grow(world, 1)
    assert covering(world, auditor).size == world.ledger.store.log_size()
    grow(world, 1)
    assert covering(world, auditor).size == world.ledger.store.log_size()


def signed_size(world: World, size: int, timeout_s: float) -> int:
    """The stored checkpoint's size, once it is `size` or `timeout_s` seconds have passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        latest = world.ledger.store.latest_checkpoint()
        signed = latest.size if latest is not None else -1
        if signed == size or time.monotonic() > deadline:
            return signed
        time.sleep(0.05)


def test_the_signer_signs_every_n_entries_without_waiting_for_its_interval(
    unscheduled: World,
) -> None:
    world = unscheduled
    ngo = world.agency("ngo-a")
    size = world.ledger.log.sign_checkpoint().size
    signer = CheckpointSigner(world.ledger.log, every=2, interval_s=3600.0)
    signer.start()  # it looks at the log once a second
    try:
        ngo.open_case()
        assert signed_size(world, size + 1, 1.5) == size  # one entry behind: it waits
        ngo.open_case()
        assert signed_size(world, size + 2, 5.0) == size + 2  # two: it signs
    finally:
        signer.stop()


def test_agencies_get_proofs_of_their_own_entries_only(world: World) -> None:
    (answer,) = grow(world, 1)
    other = world.agency("ngo-b")
    size = world.ledger.store.log_size()
    index = answer["index"]
    ngo = world.agencies["ngo-a"]
    own = world.http.get(f"/v1/log/proof/inclusion?index={index}&size={size}", headers=ngo.auth())
    assert own.status_code == 200
    theirs = world.http.get(
        f"/v1/log/proof/inclusion?index={index}&size={size}", headers=other.auth()
    )
    assert theirs.status_code == 403
    assert (
        world.http.get(
            f"/v1/log/proof/consistency?from=1&to={size}", headers=other.auth()
        ).status_code
        == 200
    )
    assert world.http.get("/v1/log/entries?start=0&end=5", headers=ngo.auth()).status_code == 403
    monitor = bearer(world.token("monitor"))
    assert world.http.get("/v1/log/entries?start=0&end=5", headers=monitor).status_code == 403
    assert (
        world.http.get(f"/v1/log/proof/consistency?from=1&to={size}", headers=monitor).status_code
        == 403
    )


@pytest.mark.parametrize(
    "query",
    [
        "/v1/log/proof/inclusion?index=5&size=5",
        "/v1/log/proof/inclusion?index=-1&size=5",
        "/v1/log/proof/inclusion?index=0&size=999",
        "/v1/log/proof/inclusion?index=x&size=5",
        "/v1/log/proof/consistency?from=0&to=3",
        "/v1/log/proof/consistency?from=4&to=3",
        "/v1/log/proof/consistency?from=1&to=999",
        "/v1/log/entries?start=4&end=3",
        "/v1/log/entries?start=-1&end=3",
        # integers beyond 2^53 (found by fuzzing: they used to reach SQLite and answer 500)
        f"/v1/log/entries?start={2**83}&end={2**83}",
        f"/v1/log/entries?start=0&end={2**64}",
        f"/v1/log/proof/inclusion?index={2**83}&size={2**83 + 1}",
        f"/v1/log/proof/consistency?from={2**83}&to={2**83}",
    ],
)
def test_out_of_range_log_requests_are_400(world: World, query: str) -> None:
    grow(world, 2)
    assert world.http.get(query, headers=bearer(world.token("auditor"))).status_code == 400


def test_entries_past_the_end_are_an_empty_page(world: World) -> None:
    grow(world, 1)
    auditor = bearer(world.token("auditor"))
    for start in (world.ledger.store.log_size(), 2**53 - 1):
        r = world.http.get(f"/v1/log/entries?start={start}&end={2**53 - 1}", headers=auditor)
        assert r.status_code == 200 and r.json() == {"entries": []}, r.text


def test_equal_sizes_give_an_empty_consistency_proof(world: World) -> None:
    grow(world, 1)
    size = world.ledger.store.log_size()
    r = world.http.get(
        f"/v1/log/proof/consistency?from={size}&to={size}", headers=bearer(world.token("auditor"))
    )
    assert r.json() == {"from": size, "to": size, "proof": []}
