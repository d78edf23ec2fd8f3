"""The ledger gathers witness cosignatures, on both backends: every new checkpoint goes to every
witness (real witness apps served over HTTP on this machine), the cosignatures come back on
`GET /v1/log/checkpoint`; a dead or slow witness holds up neither the log nor the others; a
409 is answered with the proof from the size the witness holds; a witness shown another
history is an ALARM; an answer that is not the witness's cosignature is not kept."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ledger.contract import crypto
from ledger.contract.notes import split_note
from ledger.deploy import witnesses as configured
from ledger.log.cosignature import cosign
from ledger.services.cosigning import Cosigner, Witness, status_lines
from ledger.settings import Settings, WitnessSetting
from ledger.storage.base import Store
from ledger.witness.protocol import Witness as WitnessService
from ledger.witness.server import create_app
from ledger.witness.state import State
from tests import cosignature_spec as spec
from tests.conftest import ORIGIN, World
from tests.servers import free_port
from tests.witnesses import TestLog


@contextmanager
def served(app: Starlette) -> Iterator[str]:
    """`app` served by uvicorn on a free port of this machine, in a thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Honest:
    """A witness of the world's log: its key, its state and its service."""

    def __init__(self, world: World, root: Path, name: str) -> None:
        self.key = crypto.generate_signing_key(f"{name}.test/w", crypto.COSIGNATURE_TYPE)
        self.state = State(root / name)
        logs = {ORIGIN: [world.ledger.log.verify_key]}
        self.service = WitnessService(self.key, logs, self.state)
        self.name = name

    def listed(self, url: str) -> Witness:
        return Witness(self.name, self.key.verify_key, url)


@contextmanager
def honest_witnesses(world: World, root: Path, *names: str) -> Iterator[list[Witness]]:
    honest = [Honest(world, root, n) for n in names]
    with ExitStack() as stack:
        for h in honest:
            stack.callback(h.state.close)
        urls = [stack.enter_context(served(create_app(h.service))) for h in honest]
        yield [h.listed(u) for h, u in zip(honest, urls, strict=True)]


def grow(world: World, events: int = 1) -> None:
    ngo = world.agency("ngo-a")
    for _ in range(events):
        ngo.open_case()


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def served_checkpoint(world: World) -> str:
    answer = world.http.get("/v1/log/checkpoint", headers=world.admin_auth)
    assert answer.status_code == 200
    return answer.text


def cosigned_by(note: str, witnesses: list[Witness]) -> dict[str, int]:
    """Which witnesses' lines on the served checkpoint verify, by the tests' own code."""
    body, lines = split_note(note)
    out = {}
    for w in witnesses:
        for line in lines:
            if line.name == w.key.name:
                out[w.name] = spec.verify_line(line.line + "\n", w.key.name, w.key.raw, body)
    return out


@contextmanager
def running(cosigner: Cosigner) -> Iterator[Cosigner]:
    cosigner.start()
    try:
        yield cosigner
    finally:
        cosigner.stop()


def test_every_new_checkpoint_is_cosigned_by_every_witness(world: World, tmp_path: Path) -> None:
    with honest_witnesses(world, tmp_path, "a", "b", "c") as listed:
        cosigner = Cosigner(world.ledger.store, world.ledger.log, listed, poll_s=0.1)
        with running(cosigner):
            for _ in range(3):
                grow(world, 2)
                size = world.ledger.store.log_size()
                wait_for(lambda size=size: (n := served_checkpoint(world)).split("\n")[1]
                         == str(size) and len(cosigned_by(n, listed)) == 3)  # fmt: skip
    note = served_checkpoint(world)
    assert set(cosigned_by(note, listed)) == {"a", "b", "c"}
    lines = status_lines(world.ledger.store, listed)
    assert lines[0].startswith(f"log: {size} entries; newest checkpoint {size}")
    assert all(f"last cosigned {size} at" in line and ", 0 behind" in line for line in lines[1:])


@contextmanager
def silent_port() -> Iterator[str]:
    """A port that accepts connections and never answers: a witness that hangs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_dead_and_a_hanging_witness_hold_up_neither_the_log_nor_the_others(
    world: World, tmp_path: Path
) -> None:
    nobody = crypto.generate_signing_key("dead.test/w", crypto.COSIGNATURE_TYPE).verify_key
    dead = Witness("dead", nobody, f"http://127.0.0.1:{free_port()}")
    with honest_witnesses(world, tmp_path, "live") as (live,), silent_port() as url:
        hanging = Witness("hanging", dead.key, url)
        cosigner = Cosigner(world.ledger.store, world.ledger.log, [dead, hanging, live],
                            timeout_s=3, poll_s=0.1)  # fmt: skip
        with running(cosigner):
            for _ in range(4):
                grow(world)
                size = world.ledger.store.log_size()
                started = time.monotonic()
                wait_for(lambda size=size: (n := served_checkpoint(world)).split("\n")[1]
                         == str(size) and "live" in cosigned_by(n, [live]), timeout=10)  # fmt: skip
                assert time.monotonic() - started < 2.5  # signed and cosigned, within the timeout
            wait_for(
                lambda: len([s for s in world.ledger.store.witness_statuses() if s.error]) == 2
            )
    statuses = {s.witness: s for s in world.ledger.store.witness_statuses()}
    assert statuses["dead"].error == "unreachable: ConnectError"
    assert statuses["hanging"].error == "unreachable: ReadTimeout"
    assert statuses["live"].cosigned_size == size and statuses["live"].error is None
    lines = "\n".join(status_lines(world.ledger.store, [dead, hanging, live]))
    assert "witness dead (" in lines and "never cosigned; at" in lines


def test_a_stale_size_is_answered_with_the_proof_from_the_held_size(
    world: World, tmp_path: Path
) -> None:
    with honest_witnesses(world, tmp_path, "a") as listed:
        grow(world, 3)
        first = world.ledger.log.sign_checkpoint()
        before = Cosigner(world.ledger.store, world.ledger.log, listed)
        assert before.gather(listed[0], first)
        grow(world, 4)
        second = world.ledger.log.sign_checkpoint()
        # This process thinks the witness holds 1 (it holds first.size): 409, then success.
        world.ledger.store.witness_attempt("a", "2026-01-01T00:00:00Z", 1, "stale")
        again = Cosigner(world.ledger.store, world.ledger.log, listed)
        again.owner = before.owner  # the same process, restarted: its lease
        assert again._held["a"] == 1
        assert again.gather(listed[0], second)
        assert again._held["a"] == second.size
    assert "a" in cosigned_by(served_checkpoint(world), listed)


def test_a_witness_shown_another_history_is_an_alarm(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with honest_witnesses(world, tmp_path, "a", "b") as (a, b):
        # The log key signs another history, shown to both witnesses first: a of size 1,
        # b of a size this log never reaches.
        fork = TestLog(world.ledger.log.key, [crypto.sha256(b"x%d" % i) for i in range(500)])
        grow(world, 2)
        checkpoint = world.ledger.log.sign_checkpoint()
        with served_witness_of(a) as post_a, served_witness_of(b) as post_b:
            assert post_a(fork.request(0, 1)) == 200
            assert post_b(fork.request(0, 500)) == 200
        cosigner = Cosigner(world.ledger.store, world.ledger.log, [a, b])
        with caplog.at_level(logging.CRITICAL, logger="ledger.witnesses"):
            assert not cosigner.gather(a, checkpoint)
            assert not cosigner.gather(b, checkpoint)
    alarms = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALARM")]
    assert len(alarms) == 2
    assert "refused the checkpoint of size" in alarms[0] and "split view" in alarms[0]
    assert "holds size 500, larger than any checkpoint this log signed" in alarms[1]
    statuses = {s.witness: s for s in world.ledger.store.witness_statuses()}
    assert statuses["a"].error == "refused as inconsistent with size 1 (422)"
    assert statuses["b"].error == "holds size 500, which this log never signed"
    assert world.ledger.store.cosignatures(checkpoint.size) == []


@contextmanager
def served_witness_of(w: Witness) -> Iterator[Callable[[bytes], int]]:
    import httpx

    with httpx.Client() as http:
        yield lambda body: http.post(f"{w.url}/add-checkpoint", content=body).status_code


def _answering(text: str) -> Starlette:
    async def answer(request: object) -> PlainTextResponse:
        return PlainTextResponse(text)

    return Starlette(routes=[Route("/add-checkpoint", answer, methods=["POST"])])


def test_an_answer_that_is_not_the_witness_cosignature_is_not_kept(world: World) -> None:
    mine = crypto.generate_signing_key("w.test/w", crypto.COSIGNATURE_TYPE)
    other = crypto.generate_signing_key("w.test/w", crypto.COSIGNATURE_TYPE)
    grow(world)
    checkpoint = world.ledger.log.sign_checkpoint()
    body, _ = split_note(checkpoint.note)
    answers = {
        "garbage": "hello\n",
        "another key's": cosign(body, other, 1_790_000_000),
        "forged": cosign(body, mine, 1_790_000_000).replace("w.test/w A", "w.test/w B"),
    }
    for what, text in answers.items():
        with served(_answering(text)) as url:
            witness = Witness("w", mine.verify_key, url)
            assert not Cosigner(world.ledger.store, world.ledger.log, [witness]).gather(
                witness, checkpoint
            ), what
    assert world.ledger.store.cosignatures(checkpoint.size) == []
    (status,) = world.ledger.store.witness_statuses()
    assert status.cosigned_size is None and status.error is not None


def test_one_process_at_a_time_talks_to_a_witness(world: World) -> None:
    store: Store = world.ledger.store
    assert store.claim_witness("w", "one", 1_000, 31_000)
    assert store.claim_witness("w", "one", 2_000, 32_000)  # renewed by its holder
    assert not store.claim_witness("w", "two", 3_000, 33_000)
    assert store.claim_witness("w", "two", 32_001, 62_001)  # once it has expired


def test_cosignatures_and_statuses_are_kept_per_size_and_witness(world: World) -> None:
    store: Store = world.ledger.store
    store.add_cosignature("b", 5, "— b line1", "2026-01-01T00:00:00Z")
    store.add_cosignature("a", 5, "— a line", "2026-01-01T00:00:01Z")
    store.add_cosignature("b", 5, "— b line2", "2026-01-01T00:00:02Z")  # replaces line1
    store.add_cosignature("b", 6, "— b line3", "2026-01-01T00:00:03Z")
    assert store.cosignatures(5) == ["— a line", "— b line2"]
    store.witness_attempt("b", "2026-01-01T00:00:04Z", None, "unreachable: ConnectError")
    store.witness_attempt("c", "2026-01-01T00:00:05Z", 9, "answered 500")
    a, b, c = store.witness_statuses()
    assert (a.held, a.cosigned_size, a.error) == (5, 5, None)
    assert (b.held, b.cosigned_size, b.cosigned_at) == (6, 6, "2026-01-01T00:00:03Z")
    assert (b.attempted_at, b.error) == ("2026-01-01T00:00:04Z", "unreachable: ConnectError")
    assert (c.held, c.cosigned_size, c.error) == (9, None, "answered 500")


def test_a_witness_listed_with_a_note_key_stops_the_server_naming_it() -> None:
    note_key = crypto.generate_signing_key("w.test/w").verify_key.line()
    settings = Settings(witnesses=[WitnessSetting(name="ngo-w", key=note_key, url="http://x")])
    with pytest.raises(SystemExit, match="witness ngo-w: verifier key is not a cosignature/v1"):
        configured(settings)
