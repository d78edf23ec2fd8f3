"""`ledger audit verify` against tampering, on both backends.

Each test replays one attack by a compromised server or database on a real history and
expects the verifier to name the check (and position) that catches it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from ledger import audit
from ledger.contract import crypto
from ledger.contract.canonical import jcs
from ledger.log import merkle
from ledger.storage.base import Commit, NewEntry
from tests.conftest import World


def new() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def history(world: World) -> dict[str, Any]:
    """A realistic history: intake, consent, share, referral, reads, withdrawal, erasure."""
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case(payload={"identity": {"n": 1}, "health": {"h": 2}})
    consent = ngo.grant(case_id, ["clinic"])
    share = ngo.share(case_id, "clinic", consent).json()
    referral = new()
    ngo.ok(
        "referral.made",
        case_id,
        {"referral_id": referral, "to": "clinic", "consent_id": consent, "categories": ["health"]},
        {"component": "health_psychosocial", "due_by": "2030-01-01T00:00:00Z", "urgency": "urgent"},
    )
    clinic.ok("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    assert clinic.read(case_id).status_code == 200
    withdrawn = ngo.ok(
        "consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "survivor_request"}
    )
    other = ngo.open_case()
    request = ngo.ok(
        "erasure.requested", other, {}, {"reason": "survivor_request"}, role="supervisor"
    )
    second = world.token("supervisor", "ngo-a")
    body = ngo.body("case.erased", other, {"request_event_id": request["event_id"]}, {})
    r = world.http.post("/v1/events", json=body, headers={"Authorization": f"Bearer {second}"})
    assert r.status_code == 201
    return {
        "case": case_id,
        "consent": consent,
        "share": share,
        "withdrawn": withdrawn,
        "erased_case": other,
        "request": request,
    }


def agency_keys(world: World) -> dict[str, crypto.VerifyKey]:
    return {a.id: a.key.verify_key for a in world.agencies.values()}


def run_audit(
    world: World,
    saved: audit.SavedState | None = None,
    keys: dict[str, crypto.VerifyKey] | None = None,
) -> audit.AuditReport:
    note = world.ledger.log.sign_checkpoint().note
    size = audit.checkpoint_size(note)
    entries = [e for _, e in world.ledger.store.entries(0, size)]
    log_key = crypto.parse_verify_key((world.settings.keys / "log.vkey").read_text())
    return audit.verify(note, entries, log_key, keys or agency_keys(world), saved)


def checks(report: audit.AuditReport) -> set[str]:
    return {f.check for f in report.failures}


# --- direct database access, as a compromised server would have ---------------------------


def sql(world: World, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    store = world.ledger.store
    with store._write() as cur:  # type: ignore[attr-defined]
        cur.execute(store.sql(statement), params)  # type: ignore[attr-defined]
        try:
            return list(cur.fetchall())
        except Exception:
            return []


def entry_at(world: World, position: int) -> bytes:
    ((_, raw),) = world.ledger.store.entries(position, position + 1)
    return raw


def set_entry(world: World, position: int, raw: bytes) -> None:
    sql(
        world,
        "UPDATE {s}log_entries SET entry = ?, leaf_hash = ? WHERE position = ?",
        (raw, merkle.leaf_hash(raw), position),
    )


def rebuild_tree_and_resign(world: World) -> None:
    """Recompute every stored node from the (tampered) entries and sign a new checkpoint."""
    size = world.ledger.store.log_size()
    entries = [e for _, e in world.ledger.store.entries(0, size)]
    tree = merkle.MemoryTree()
    nodes = tree.append([merkle.leaf_hash(e) for e in entries])
    sql(world, "DELETE FROM {s}tree_nodes")
    sql(world, "DELETE FROM {s}checkpoints")
    for level, index, node in nodes:
        sql(
            world,
            "INSERT INTO {s}tree_nodes (level, idx, hash) VALUES (?, ?, ?)",
            (level, index, node),
        )


def inject_event(world: World, body: dict[str, Any], actor: str, role: str) -> int:
    """Append an event entry straight into the log, bypassing every check."""
    entry = jcs(
        {
            "kind": "event",
            "envelope": body["envelope"],
            "signature": body["signature"],
            "sealed_digest": crypto.b64(bytes(32)),
            "actor": actor,
            "role": role,
            "recorded_at": body["envelope"]["signed_at"],
        }
    )
    (position,) = world.ledger.store.append(
        Commit(entries=[NewEntry("event", entry, merkle.leaf_hash(entry))])
    )
    return position


def event_positions(world: World) -> list[int]:
    rows = world.ledger.store.entries(0, world.ledger.store.log_size())
    return [p for p, e in rows if json.loads(e)["kind"] == "event"]


# --- the tests ---------------------------------------------------------------------------


def test_an_honest_history_verifies(world: World, history: dict[str, Any]) -> None:
    report = run_audit(world)
    assert report.ok, [str(f) for f in report.failures]
    assert report.events == 9 and report.signatures == 9  # 2 registry, 1 access entries
    assert report.size == world.ledger.store.log_size()


def test_a_byte_changed_in_a_stored_envelope_is_detected(
    world: World, history: dict[str, Any]
) -> None:
    world.ledger.log.sign_checkpoint()
    position = event_positions(world)[2]
    raw = entry_at(world, position)
    tampered = raw.replace(b'"purpose":"data_sharing"', b'"purpose":"data_sharinG"')
    assert tampered != raw
    set_entry(world, position, tampered)
    report = run_audit(world)
    assert report.first_failure is not None and report.first_failure.position == position
    assert {"event signature", "root"} <= checks(report)


def test_a_deleted_entry_is_detected(world: World, history: dict[str, Any]) -> None:
    world.ledger.log.sign_checkpoint()
    sql(world, "DELETE FROM {s}log_entries WHERE position = ?", (3,))
    report = run_audit(world)
    assert "completeness" in checks(report)
    assert "root" in checks(report) or report.first_failure is not None


def test_two_swapped_entries_are_detected(world: World, history: dict[str, Any]) -> None:
    world.ledger.log.sign_checkpoint()
    first, second = event_positions(world)[1:3]
    a, b = entry_at(world, first), entry_at(world, second)
    set_entry(world, first, b)
    set_entry(world, second, a)
    report = run_audit(world)
    assert "root" in checks(report)
    assert "gates" in checks(report)  # the share now precedes its consent


def test_an_entry_inserted_in_the_database_is_detected(
    world: World, history: dict[str, Any]
) -> None:
    ngo = world.agencies["ngo-a"]
    forger = crypto.signing_key_from_seed("ngo-a", bytes(32))
    body = ngo.body("case.closed", history["case"], {}, {"reason": "other"})
    body["signature"] = crypto.b64(
        crypto.sign(forger, b"ledger-event-v1\n" + jcs(body["envelope"]))
    )
    position = inject_event(world, body, "tok_forged", "caseworker")
    report = run_audit(world)
    assert report.first_failure is not None
    assert report.first_failure.position == position
    assert report.first_failure.check == "event signature"


def test_a_non_canonical_entry_is_detected(world: World, history: dict[str, Any]) -> None:
    world.ledger.log.sign_checkpoint()
    raw = entry_at(world, 4)
    set_entry(world, 4, raw.replace(b'{"', b'{ "', 1))
    report = run_audit(world)
    assert report.first_failure is not None
    assert (report.first_failure.position, report.first_failure.check) == (4, "canonical bytes")


def test_a_forked_history_is_detected_against_the_saved_checkpoint(
    world: World, history: dict[str, Any]
) -> None:
    first = run_audit(world)
    assert first.ok
    saved = audit.SavedState(first.origin, first.size, crypto.b64decode_strict(first.root))
    # Rewrite an access entry (it carries no signature) and rebuild the tree: a fork that
    # every other check accepts.
    rows = world.ledger.store.entries(0, world.ledger.store.log_size())
    position, raw = next((p, e) for p, e in rows if json.loads(e)["kind"] == "access")
    entry = json.loads(raw)
    entry["actor"] = "tok_someone_else"  # who read the case
    set_entry(world, position, jcs(entry))
    rebuild_tree_and_resign(world)
    assert run_audit(world).ok  # without the saved checkpoint the fork is invisible
    report = run_audit(world, saved)
    assert checks(report) == {"consistency with saved checkpoint"}


def test_a_key_replaced_without_the_old_keys_signature_is_detected(
    world: World, history: dict[str, Any]
) -> None:
    ngo = world.agencies["ngo-a"]
    stolen = crypto.generate_signing_key("ngo-a")
    registry = jcs(
        {
            "kind": "registry",
            "action": "key.added",
            "agency": "ngo-a",
            "key": stolen.verify_key.line(),
            "signatures": [],
            "actor": "tok_x",
            "recorded_at": "2026-01-01T00:00:00Z",
        }
    )
    (reg_position,) = world.ledger.store.append(
        Commit(entries=[NewEntry("registry", registry, merkle.leaf_hash(registry))])
    )
    body = ngo.body("case.closed", history["case"], {}, {"reason": "other"})
    body["envelope"]["key"] = stolen.verify_key.key_id
    body["signature"] = crypto.b64(
        crypto.sign(stolen, b"ledger-event-v1\n" + jcs(body["envelope"]))
    )
    event_position = inject_event(world, body, "tok_x", "caseworker")
    report = run_audit(world)
    failures = {(f.position, f.check) for f in report.failures}
    assert (reg_position, "key change signatures") in failures
    assert (event_position, "signing key") in failures


def test_an_event_signed_by_a_revoked_key_is_refused_and_detected(
    world: World, history: dict[str, Any]
) -> None:
    ngo = world.agencies["ngo-a"]
    initial_keys = agency_keys(world)  # what the auditor obtained from the agencies
    new_key = crypto.generate_signing_key("ngo-a")
    from ledger.client import LedgerClient

    admin = LedgerClient("http://testserver", world.admin, transport=world.http._transport)
    admin.add_key("ngo-a", ngo.key, new_key)
    admin.revoke_key("ngo-a", ngo.key.verify_key.key_id, compromised_since=None)
    old_body = ngo.body("case.closed", history["case"], {}, {"reason": "other"})
    assert ngo.post(old_body).status_code == 422  # refused by the server
    position = inject_event(world, old_body, "tok_x", "caseworker")
    ngo.key = new_key
    assert ngo.submit("case.closed", history["case"], {}, {"reason": "other"}).status_code == 201
    report = run_audit(world, keys=initial_keys)
    assert [(f.position, f.check) for f in report.failures] == [(position, "signing key")]


def test_a_share_under_a_withdrawn_consent_inserted_directly_is_detected(
    world: World, history: dict[str, Any]
) -> None:
    ngo = world.agencies["ngo-a"]
    facts = {
        "share_id": new(),
        "recipient": "clinic",
        "consent_id": history["consent"],
        "purpose": "data_sharing",
        "categories": ["identity"],
    }
    body = ngo.body("data.shared", history["case"], facts, {})
    assert ngo.post(body).status_code == 403
    position = inject_event(world, body, "tok_x", "caseworker")
    report = run_audit(world)
    assert [(f.position, f.check) for f in report.failures] == [(position, "gates")]
    assert "withdrawn" in report.failures[0].message


def test_an_erasure_by_the_requesting_supervisor_is_detected(
    world: World, history: dict[str, Any]
) -> None:
    ngo = world.agencies["ngo-a"]
    case_id = ngo.open_case()
    request = ngo.ok("erasure.requested", case_id, {}, {"reason": "legal_order"}, role="supervisor")
    body = ngo.body("case.erased", case_id, {"request_event_id": request["event_id"]}, {})
    assert ngo.post(body, role="supervisor").status_code == 403
    requester = json.loads(entry_at(world, request["index"]))["actor"]
    position = inject_event(world, body, requester, "supervisor")
    report = run_audit(world)
    assert [(f.position, f.check) for f in report.failures] == [(position, "two-supervisor rule")]


def test_an_agency_missing_from_the_auditors_keys_fails(
    world: World, history: dict[str, Any]
) -> None:
    note = world.ledger.log.sign_checkpoint().note
    entries = [e for _, e in world.ledger.store.entries(0, audit.checkpoint_size(note))]
    log_key = crypto.parse_verify_key((world.settings.keys / "log.vkey").read_text())
    keys = agency_keys(world)
    del keys["clinic"]
    report = audit.verify(note, entries, log_key, keys)
    assert "agency keys" in checks(report)


def test_a_checkpoint_signed_by_another_key_fails(world: World, history: dict[str, Any]) -> None:
    note = world.ledger.log.sign_checkpoint().note
    entries = [e for _, e in world.ledger.store.entries(0, audit.checkpoint_size(note))]
    impostor = crypto.generate_signing_key(world.ledger.origin).verify_key
    report = audit.verify(note, entries, impostor, agency_keys(world))
    assert checks(report) == {"checkpoint signature"}


def test_a_back_dated_recording_time_is_detected(world: World, history: dict[str, Any]) -> None:
    ngo = world.agencies["ngo-a"]
    body = ngo.body("case.closed", history["case"], {}, {"reason": "other"})
    entry = jcs(
        {
            "kind": "event",
            "envelope": body["envelope"],
            "signature": body["signature"],
            "sealed_digest": crypto.b64(bytes(32)),
            "actor": "tok_x",
            "role": "caseworker",
            "recorded_at": "2020-01-01T00:00:00Z",
        }
    )
    (position,) = world.ledger.store.append(
        Commit(entries=[NewEntry("event", entry, merkle.leaf_hash(entry))])
    )
    report = run_audit(world)
    assert (position, "recorded time") in {(f.position, f.check) for f in report.failures}


def test_a_malformed_entry_is_reported_not_a_crash(world: World, history: dict[str, Any]) -> None:
    ngo = world.agencies["ngo-a"]
    body = ngo.body("case.closed", history["case"], {}, {"reason": "other"})
    body["envelope"]["facts"] = ["not", "an", "object"]
    position = inject_event(world, body, "tok_x", "caseworker")
    report = run_audit(world)
    assert report.first_failure is not None and report.first_failure.position == position


def test_a_referral_accepted_after_its_consent_was_withdrawn_is_detected(
    world: World, history: dict[str, Any]
) -> None:
    ngo, clinic = world.agencies["ngo-a"], world.agencies["clinic"]
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    referral = new()
    ngo.ok(
        "referral.made",
        case_id,
        {"referral_id": referral, "to": "clinic", "consent_id": consent, "categories": ["health"]},
        {"component": "health_psychosocial", "due_by": "2030-01-01T00:00:00Z", "urgency": "urgent"},
    )
    ngo.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "other"})
    body = clinic.body("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    assert clinic.post(body).status_code == 403
    position = inject_event(world, body, "tok_x", "caseworker")
    report = run_audit(world)
    assert [(f.position, f.check) for f in report.failures] == [(position, "gates")]


def registered_synthetic_log(
    events: int,
) -> tuple[str, list[bytes], crypto.VerifyKey, dict[str, crypto.VerifyKey]]:
    """The bench's synthetic log (its consents' recipient registered too), under a
    checkpoint signed by a log key of our own."""
    from ledger.bench.audit import synthetic_log
    from ledger.contract.notes import sign_note
    from ledger.log.checkpoint import Checkpoint

    _, entries, bench_key, keys = synthetic_log(events)
    assert "peer" in keys  # the audit requires every recipient to be a registered agency
    log_key = crypto.generate_signing_key(bench_key.name)
    tree = merkle.MemoryTree()
    tree.append([merkle.leaf_hash(e) for e in entries])
    note = sign_note(Checkpoint(log_key.name, len(entries), tree.root()).body(), log_key)
    return note, entries, log_key.verify_key, keys


def test_a_log_checked_on_worker_processes_names_each_failure_at_its_position() -> None:
    """Past 4,096 entries the canonical-bytes and signature checks run on worker processes:
    their findings still carry the right positions, in log order."""
    note, entries, log_key, keys = registered_synthetic_log(6000)
    assert audit.verify(note, entries, log_key, keys, workers=2).ok
    tampered = list(entries)
    forged = json.loads(tampered[4500])
    forged["signature"] = crypto.b64(bytes(64))  # well-formed, wrong
    tampered[4500] = jcs(forged)
    tampered[4700] = tampered[4700].replace(b'{"', b'{ "', 1)  # same JSON, not canonical
    tampered[5900] = b'{"kind":"event",' + tampered[5900][1:]  # a duplicate member name

    report = audit.verify(note, tampered, log_key, keys, workers=2)

    found = {(f.position, f.check) for f in report.failures}
    assert {
        (4500, "event signature"),
        (4700, "canonical bytes"),
        (5900, "canonical bytes"),
    } <= found
    assert report.first_failure is not None
    assert (report.first_failure.position, report.first_failure.check) == (4500, "event signature")
    assert report.signatures == 6000
