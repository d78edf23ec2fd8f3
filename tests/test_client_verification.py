"""The agency SDK trusts the ledger for nothing it can check, on both backends.

`submit_body` rebuilds the log entry of the event it sent and refuses an answer whose leaf is
not that entry's; `verify_inclusion` proves that leaf, never the server's word, under a
checkpoint signed by the log key, and every checkpoint the client sees must extend the last
one it verified. The attacks are replayed by the real app behind a transport that answers
falsely where told (`Liar`), with checkpoints signed by the real log key: what a misbehaving
operator could do. At the end: the files the CLI writes are its owner's only.
"""

from __future__ import annotations

import json
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from ledger import audit
from ledger.cli import app as cli
from ledger.client import (
    LedgerClient,
    LedgerHTTPError,
    LogMisbehaviour,
    NotCovered,
    NotIncluded,
    new_id,
)
from ledger.contract import crypto
from ledger.contract.canonical import jcs
from ledger.contract.notes import sign_note
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint
from ledger.settings import Settings
from tests.conftest import OPENED_ATTRS, ORIGIN, World

Rewrite = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


class Liar(httpx.BaseTransport):
    """The real app's transport, answering falsely where told: a submission's answer
    rewritten by `forge(sent, answer)` (with `withhold`, the app never sees the submission
    and `answer` is `{}`), `note` served as the checkpoint, and proofs computed from `leaves`
    (a tree of the liar's choosing) instead of the log's."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.forge: Rewrite | None = None
        self.withhold = False
        self.note: str | None = None
        self.leaves: list[bytes] | None = None
        self.requests: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        self.requests.append(path)
        if path == "/v1/events" and request.method == "POST" and self.forge is not None:
            sent = json.loads(request.read())
            status, answer = 201, {}
            if not self.withhold:
                response = self.inner.handle_request(request)
                response.read()
                status, answer = response.status_code, response.json()
            return httpx.Response(status, json=self.forge(sent, answer))
        if path == "/v1/log/checkpoint" and self.note is not None:
            return httpx.Response(200, text=self.note)
        if path == "/v1/log/proof/consistency" and self.leaves is not None:
            m, n = int(params["from"]), int(params["to"])
            proof = merkle.reference_consistency(m, self.leaves[:n])
            return httpx.Response(200, json={"from": m, "to": n, "proof": b64s(proof)})
        if path == "/v1/log/proof/inclusion" and self.leaves is not None:
            i, n = int(params["index"]), int(params["size"])
            proof = merkle.reference_inclusion(i, self.leaves[:n])
            return httpx.Response(200, json={"index": i, "size": n, "proof": b64s(proof)})
        return self.inner.handle_request(request)


def b64s(hashes: list[bytes]) -> list[str]:
    return [crypto.b64(h) for h in hashes]


def sdk(world: World, agency: str, transport: httpx.BaseTransport | None = None,
        **kw: Any) -> LedgerClient:  # fmt: skip
    """A LedgerClient of an agency of the test world, over the real app (or a liar)."""
    a = world.agency(agency)
    token = a.auth()["Authorization"].split()[1]
    client = LedgerClient(
        "http://testserver", token, a.key, transport=transport or world.http._transport, **kw
    )
    client._origin = ORIGIN
    return client


def log_key(world: World) -> crypto.VerifyKey:
    return crypto.parse_verify_key((world.settings.keys / "log.vkey").read_text())


def opened(client: LedgerClient, case_id: str | None = None) -> dict[str, Any]:
    return client.build("case.opened", case_id or new_id(), {"minor": False}, OPENED_ATTRS)


def leaves(world: World) -> list[bytes]:
    size = world.ledger.store.log_size()
    return [merkle.leaf_hash(e) for _, e in world.ledger.store.entries(0, size)]


def signed_tree(world: World, tree: list[bytes]) -> str:
    """A checkpoint of `tree`, signed by the real log key (a log that lies signs its lies)."""
    head = Checkpoint(ORIGIN, len(tree), merkle.reference_root(tree))
    return sign_note(head.body(), world.ledger.log.key)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the honest path ----------------------------------------------------------------------------


def test_an_honest_answer_is_rebuilt_and_proved_under_consistent_checkpoints(world: World) -> None:
    spy = Liar(world.http._transport)  # tells no lie: counts the requests
    client = sdk(world, "ngo-a", spy)
    body = opened(client)
    answer = client.submit_body(body)
    ((_, stored),) = world.ledger.store.entries(answer.index, answer.index + 1)
    assert answer.status == 201
    assert answer.entry == stored and answer.leaf_hash == merkle.leaf_hash(stored)
    # A new event waits for the log's next scheduled checkpoint (every 0.2 s in tests).
    size = client.verify_inclusion(answer, log_key(world))
    assert size > answer.index and client.known_checkpoint is not None
    assert client.known_checkpoint[0] == size
    later = client.submit("case.closed", body["envelope"]["case_id"], {}, {"reason": "other"})
    assert later.index >= size
    assert client.verify_inclusion(later, log_key(world)) > later.index
    assert "/v1/log/proof/consistency" in spy.requests  # the newer one extends the first
    again = client.submit_body(body)  # an identical retry: the original answer, rebuilt too
    assert (again.status, again.index, again.entry) == (200, answer.index, answer.entry)


# -- answers that do not name the submitted event -----------------------------------------------


@pytest.mark.regression("an answer with another entry's index and leaf proved an unrecorded event")
def test_an_answer_reusing_another_entrys_index_and_leaf_is_refused(world: World) -> None:
    ngo = world.agency("ngo-a")
    recorded = ngo.ok("case.opened", str(uuid.uuid4()), {"minor": False}, OPENED_ATTRS)
    liar = Liar(world.http._transport)
    liar.withhold = True  # the event is never recorded; the answer is another entry's
    liar.forge = lambda sent, _: (
        recorded
        | {
            "event_id": sent["envelope"]["event_id"],
            "case_id": sent["envelope"]["case_id"],
        }
    )
    client = sdk(world, "ngo-a", liar)
    body = opened(client)
    with pytest.raises(LedgerHTTPError) as refused:
        client.submit_body(body)
    assert (refused.value.status, refused.value.error) == (502, "bad_answer")
    assert "leaf_hash" in str(refused.value)
    assert world.ledger.store.find_event(body["envelope"]["event_id"]) is None


def test_a_withheld_event_with_a_self_consistent_answer_is_not_included(world: World) -> None:
    """The liar computes the right leaf for the event it withholds, but can only point at
    an index where something else is (or beyond the log): the proof cannot verify."""
    ngo = world.agency("ngo-a")
    other = ngo.ok("case.opened", str(uuid.uuid4()), {"minor": False}, OPENED_ATTRS)
    added = other["entry"]

    def made_up(sent: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
        entry = jcs({"kind": "event", "envelope": sent["envelope"],
                     "signature": sent["signature"], **added})  # fmt: skip
        return other | {
            "event_id": sent["envelope"]["event_id"],
            "case_id": sent["envelope"]["case_id"],
            "leaf_hash": crypto.b64(merkle.leaf_hash(entry)),
        }

    liar = Liar(world.http._transport)
    liar.withhold, liar.forge = True, made_up
    client = sdk(world, "ngo-a", liar)
    answer = client.submit_body(opened(client))  # nothing to refuse in the answer itself
    liar.note = signed_tree(world, leaves(world))  # the log as it is, signed
    with pytest.raises(NotIncluded) as caught:
        client.verify_inclusion(answer, log_key(world))
    assert (caught.value.index, caught.value.size) == (other["index"], len(leaves(world)))


@pytest.mark.regression("an answer naming another case was accepted")
def test_an_answer_naming_another_case_is_refused(world: World) -> None:
    liar = Liar(world.http._transport)
    liar.forge = lambda _, answer: answer | {"case_id": str(uuid.uuid4())}
    client = sdk(world, "ngo-a", liar)
    with pytest.raises(LedgerHTTPError) as refused:
        client.submit_body(opened(client))
    assert refused.value.error == "bad_answer" and "case" in str(refused.value)


@pytest.mark.parametrize(
    "lie",
    [
        pytest.param(lambda a: {k: v for k, v in a.items() if k != "entry"}, id="no entry"),
        pytest.param(lambda a: a | {"entry": a["entry"] | {"role": 7}}, id="role not a string"),
        pytest.param(lambda a: a | {"entry": a["entry"] | {"actor": None}}, id="actor null"),
        pytest.param(
            lambda a: a | {"entry": a["entry"] | {"recorded_at": "yesterday"}}, id="recorded_at"
        ),
        pytest.param(lambda a: a | {"entry": a["entry"] | {"extra": "x"}}, id="unknown member"),
        pytest.param(lambda a: a | {"entry": a["entry"] | {"role": "admin"}}, id="other role"),
        pytest.param(lambda a: a | {"index": -1}, id="negative index"),
        pytest.param(lambda a: a | {"leaf_hash": "not base64"}, id="leaf not base64"),
    ],
)
def test_an_answer_whose_entry_does_not_rebuild_is_refused(
    world: World, lie: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    liar = Liar(world.http._transport)
    liar.forge = lambda _, answer: lie(answer)
    client = sdk(world, "ngo-a", liar)
    with pytest.raises(LedgerHTTPError) as refused:
        client.submit_body(opened(client))
    assert (refused.value.status, refused.value.error) == (502, "bad_answer")


# -- checkpoints that contradict the verified one -----------------------------------------------


@pytest.mark.regression("a forked checkpoint signed by the log key went unnoticed")
def test_a_forked_checkpoint_signed_by_the_log_key_is_log_misbehaviour(world: World) -> None:
    liar = Liar(world.http._transport)
    client = sdk(world, "ngo-a", liar)
    first = client.submit_body(opened(client))
    known = client.verify_inclusion(first, log_key(world))
    world.agency("ngo-b").open_case()
    later = client.submit_body(opened(client))
    # Shown to this agency only: a history where an entry it already verified differs, that
    # holds its new event, with proofs computed from that history.
    forked = leaves(world)
    forked[0] = merkle.leaf_hash(b'{"kind":"registry","note":"rewritten"}')
    liar.leaves, liar.note = forked, signed_tree(world, forked)
    with pytest.raises(LogMisbehaviour) as caught:
        client.verify_inclusion(later, log_key(world))
    misbehaviour = caught.value
    assert misbehaviour.check == "consistency"
    assert (misbehaviour.known_size, misbehaviour.new_size) == (known, len(forked))
    assert f"size {len(forked)}" in str(misbehaviour) and f"size {known}" in str(misbehaviour)
    assert client.known_checkpoint is not None and client.known_checkpoint[0] == known


@pytest.mark.regression("a shrunk checkpoint signed by the log key went unnoticed")
def test_a_checkpoint_smaller_than_the_verified_one_is_log_misbehaviour(world: World) -> None:
    liar = Liar(world.http._transport)
    client = sdk(world, "ngo-a", liar)
    first = client.submit_body(opened(client))
    small = client.verify_inclusion(first, log_key(world))
    prefix = leaves(world)[:small]
    later = client.submit_body(opened(client))
    large = client.verify_inclusion(later, log_key(world))
    liar.note = signed_tree(world, prefix)  # a real, older tree head, signed again
    with pytest.raises(LogMisbehaviour) as caught:
        client.verify_inclusion(first, log_key(world))  # covered by the small one
    assert caught.value.check == "checkpoint size"
    assert (caught.value.known_size, caught.value.new_size) == (large, small)


def test_the_verified_checkpoint_survives_the_client_in_a_private_state_file(
    world: World, tmp_path: Path
) -> None:
    state = tmp_path / "log-state.json"
    client = sdk(world, "ngo-a", state=state)
    answer = client.submit_body(opened(client))
    size = client.verify_inclusion(answer, log_key(world))
    assert mode(state) == 0o600
    saved = audit.SavedState.from_json(state.read_text())  # the audit CLI's --state format
    assert (saved.origin, saved.size) == (ORIGIN, size)
    state.chmod(0o644)  # widened since: the next write replaces it, owner only again
    later = client.submit_body(opened(client))
    assert client.verify_inclusion(later, log_key(world)) > size
    assert mode(state) == 0o600 and audit.SavedState.from_json(state.read_text()).size > size
    # Another run of the agency's system, from the state file: a shrunk log is still caught.
    liar = Liar(world.http._transport)
    liar.note = signed_tree(world, leaves(world)[:size])
    rerun = sdk(world, "ngo-a", liar, state=state)
    with pytest.raises(LogMisbehaviour) as caught:
        rerun.verify_inclusion(answer, log_key(world))
    assert caught.value.check == "checkpoint size" and caught.value.new_size == size


def test_a_state_file_of_another_log_is_refused(world: World, tmp_path: Path) -> None:
    state = tmp_path / "log-state.json"
    state.write_text(audit.SavedState("other.example/log", 3, bytes(32)).to_json())
    client = sdk(world, "ngo-a", state=state)
    answer = client.submit_body(opened(client))
    with pytest.raises(ValueError, match="its own state file"):
        client.verify_inclusion(answer, log_key(world))
    assert audit.SavedState.from_json(state.read_text()).origin == "other.example/log"


def test_an_event_no_checkpoint_covers_in_time_is_not_covered(world: World) -> None:
    liar = Liar(world.http._transport)
    client = sdk(world, "ngo-a", liar)
    answer = client.submit_body(opened(client))
    liar.note = signed_tree(world, leaves(world)[: answer.index])  # the log stops signing
    started = time.monotonic()
    with pytest.raises(NotCovered) as caught:
        client.verify_inclusion(answer, log_key(world), timeout_s=0.6)
    assert time.monotonic() - started >= 0.6
    assert (caught.value.index, caught.value.size) == (answer.index, answer.index)
    assert f"entry {answer.index}" in str(caught.value)
    assert 3 <= liar.requests.count("/v1/log/checkpoint") <= 10  # polled, with backoff
    liar.note = None  # the log signs again: the event is covered and proved
    assert client.verify_inclusion(answer, log_key(world)) > answer.index


# -- files the CLI writes are its owner's only --------------------------------------------------


def cli_env(settings: Settings) -> dict[str, str]:
    env = {"LEDGER_HOME": str(settings.home), "LEDGER_KEYS": str(settings.keys)}
    env["LEDGER_DATABASE_URL"] = settings.database_url or ""
    if settings.database_url:
        env["LEDGER_PG_SCHEMA"] = settings.pg_schema
    return env


@pytest.mark.regression("ledger audit verify --state kept a wider file's mode")
def test_audit_verify_writes_its_state_file_owner_only(world: World, tmp_path: Path) -> None:
    ngo = world.agency("ngo-a")
    ngo.open_case()
    note = world.ledger.log.sign_checkpoint().note
    size = world.ledger.store.log_size()
    bundle = tmp_path / "bundle.json"
    audit.write_bundle(bundle, note, [e for _, e in world.ledger.store.entries(0, size)])
    (tmp_path / "agency-keys").write_text(ngo.key.verify_key.line() + "\n")
    state = tmp_path / "state.json"
    args = ["audit", "verify", "--bundle", str(bundle), "--state", str(state),
            "--log-key", str(world.settings.keys / "log.vkey"),
            "--agency-keys", str(tmp_path / "agency-keys")]  # fmt: skip
    for _ in range(2):  # a new file, then one widened since (or written by an older version)
        result = CliRunner().invoke(cli, args, env=cli_env(world.settings))
        assert result.exit_code == 0, result.output
        assert mode(state) == 0o600
        assert audit.SavedState.from_json(state.read_text()).size == size
        state.chmod(0o644)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


@pytest.mark.regression("ledger export htcds --out kept a wider file's mode")
def test_export_htcds_writes_its_csv_owner_only(world: World, tmp_path: Path) -> None:
    ngo = world.agency("ngo-a")
    year = world.ledger.clock().year - 1
    ngo.ok("case.opened", str(uuid.uuid4()), {"minor": False},
           OPENED_ATTRS | {"identified_at": f"{year}-03-01"})  # fmt: skip
    out = tmp_path / "htcds.csv"
    out.write_text("an older export\n")
    out.chmod(0o644)
    args = ["export", "htcds", "--year", str(year), "--out", str(out),
            "--report", str(tmp_path / "report.json")]  # fmt: skip
    result = CliRunner().invoke(cli, args, env=cli_env(world.settings))
    assert result.exit_code == 0, result.output
    assert mode(out) == 0o600 and out.read_text() != "an older export\n"
    fresh = tmp_path / "fresh.csv"
    again = CliRunner().invoke(cli, [*args[:4], "--out", str(fresh)], env=cli_env(world.settings))
    assert again.exit_code == 0, again.output
    assert mode(fresh) == 0o600 and fresh.read_text() == out.read_text()
