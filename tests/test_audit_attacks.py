"""`ledger audit verify` against a dishonest server that holds the log key (issue 15).

Such a server can write any entry it likes into the log and sign checkpoints over it; it
cannot forge an agency's signature. Each test replays one of the review's attacks on a real
history, on both backends, and expects the verifier to name the check and the position that
catch it; the honest histories beside them still verify.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger import audit
from ledger.contract import crypto
from ledger.contract.canonical import jcs
from ledger.contract.vocabulary import format_timestamp
from ledger.log import merkle
from ledger.storage.base import Commit, NewEntry
from tests.conftest import Agency, World
from tests.test_audit import agency_keys, entry_at, inject_event, run_audit


def new() -> str:
    return str(uuid.uuid4())


def append_raw(world: World, kind: str, raw: bytes) -> int:
    """Append entry bytes straight into the log, as the server holding the log key can."""
    (position,) = world.ledger.store.append(
        Commit(entries=[NewEntry(kind, raw, merkle.leaf_hash(raw))])
    )
    return position


def found(report: audit.AuditReport) -> list[tuple[int | None, str]]:
    return [(f.position, f.check) for f in report.failures]


def add_key(world: World, agency: Agency, key: crypto.SigningKey) -> int:
    """Register `key` for `agency` through the API (signed by its current key and `key`)."""
    r = world.http.post(
        f"/v1/agencies/{agency.id}/keys", json=agency.key_change(key), headers=world.admin_auth
    )
    assert r.status_code == 201, r.text
    return int(r.json()["index"])


def revoke_key(world: World, agency: str, key_id: str, compromised_since: int | None) -> int:
    r = world.http.post(
        f"/v1/agencies/{agency}/keys/{key_id}/revoke",
        json={"compromised_since": compromised_since},
        headers=world.admin_auth,
    )
    assert r.status_code == 200, r.text
    return int(r.json()["index"])


@pytest.fixture
def case(world: World) -> dict[str, Any]:
    """Two agencies and a case of the first with a consent naming the second."""
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    case_id = ngo.open_case(payload={"identity": {"n": 1}})
    return {"case": case_id, "consent": ngo.grant(case_id, ["clinic"])}


def share_facts(recipient: str, consent_id: str) -> dict[str, Any]:
    return {
        "share_id": new(),
        "recipient": recipient,
        "consent_id": consent_id,
        "purpose": "data_sharing",
        "categories": ["identity"],
    }


# --- 1. a revoked key brought back ---------------------------------------------------------


@pytest.mark.regression("revoked key re-registered by replaying its key.added")
def test_a_revoked_key_brought_back_by_replaying_its_key_added_is_detected(
    world: World, case: dict[str, Any]
) -> None:
    ngo = world.agencies["ngo-a"]
    initial_keys = agency_keys(world)  # what the auditor obtained from the agencies
    original, stolen = ngo.key, crypto.generate_signing_key("ngo-a")
    added = add_key(world, ngo, stolen)
    ngo.key = stolen
    suspect = ngo.ok(
        "service.delivered", case["case"], {"referral_id": None}, {"component": "housing"}
    )
    ngo.key = original
    revoke_key(world, "ngo-a", stolen.verify_key.key_id, compromised_since=suspect["index"])
    # The server re-appends the key's original, validly signed key.added, then records what
    # the thief signs with it.
    replay = append_raw(world, "registry", entry_at(world, added))
    body = ngo.body("case.closed", case["case"], {}, {"reason": "other"})
    body["envelope"]["key"] = stolen.verify_key.key_id
    body["signature"] = crypto.b64(
        crypto.sign(stolen, b"ledger-event-v1\n" + jcs(body["envelope"]))
    )
    stolen_event = inject_event(world, body, "tok_x", "caseworker")

    report = run_audit(world, keys=initial_keys)

    assert found(report) == [(replay, "key registry"), (stolen_event, "signing key")]
    assert "cannot be registered twice" in report.failures[0].message
    # The revocation's compromise report still stands, whatever came after it.
    assert [(f.position, f.check) for f in report.flags] == [(suspect["index"], "compromised key")]


@pytest.mark.regression("compromised key never flagged")
def test_events_signed_from_a_keys_reported_compromise_on_are_flagged(
    world: World, case: dict[str, Any]
) -> None:
    """`compromised_since` points back from the revocation: the events signed with the key
    from there until the revocation stay in the log, flagged."""
    ngo = world.agencies["ngo-a"]
    initial_keys = agency_keys(world)
    original, leaked = ngo.key, crypto.generate_signing_key("ngo-a")
    add_key(world, ngo, leaked)
    ngo.key = leaked
    signed = [
        ngo.ok("service.delivered", case["case"], {"referral_id": None}, {"component": "housing"})
        for _ in range(3)
    ]
    ngo.key = original
    revoke_key(world, "ngo-a", leaked.verify_key.key_id, compromised_since=signed[1]["index"])
    ngo.ok("case.closed", case["case"], {}, {"reason": "other"})

    report = run_audit(world, keys=initial_keys)

    assert report.ok, [str(f) for f in report.failures]
    assert [(f.position, f.check) for f in report.flags] == [
        (signed[1]["index"], "compromised key"),
        (signed[2]["index"], "compromised key"),
    ]


def test_an_agency_registration_replayed_is_detected(world: World, case: dict[str, Any]) -> None:
    ngo = world.agencies["ngo-a"]
    revoke_key(world, "ngo-a", ngo.key.verify_key.key_id, compromised_since=None)
    registration = next(
        p
        for p, raw in world.ledger.store.entries(0, world.ledger.store.log_size())
        if json.loads(raw).get("action") == "agency.registered"
        and json.loads(raw)["agency"] == "ngo-a"
    )
    replay = append_raw(world, "registry", entry_at(world, registration))
    report = run_audit(world)
    assert found(report) == [(replay, "key registry")]
    assert "cannot be registered twice" in report.failures[0].message


@pytest.mark.regression("key change recorded long after it was signed")
def test_a_key_change_recorded_long_after_it_was_signed_is_detected(
    world: World, case: dict[str, Any]
) -> None:
    """Signatures of a key change the server kept back (or an old key change of another
    moment): recorded an hour after signing, outside the freshness window."""
    ngo = world.agencies["ngo-a"]
    newer = crypto.generate_signing_key("ngo-a")
    change = ngo.key_change(newer)
    world.clock.advance(hours=1)
    r = world.http.post("/v1/agencies/ngo-a/keys", json=change, headers=world.admin_auth)
    assert r.status_code == 422  # the server refuses it
    entry = {
        "kind": "registry",
        "action": "key.added",
        "agency": "ngo-a",
        "key": newer.verify_key.line(),
        "signatures": change["signatures"],
        "actor": "tok_x",
        "recorded_at": format_timestamp(world.clock.now),
    }
    position = append_raw(world, "registry", jcs(entry))
    report = run_audit(world)
    assert found(report) == [(position, "key change signatures")]
    assert "freshness" in report.failures[0].message


# --- 2. the same event recorded again; recording times going back ---------------------------


@pytest.mark.regression("the same signed event accepted three times in one log")
def test_the_same_signed_share_recorded_three_times_is_detected(
    world: World, case: dict[str, Any]
) -> None:
    ngo = world.agencies["ngo-a"]
    share = ngo.share(case["case"], "clinic", case["consent"])
    assert share.status_code == 201
    raw = entry_at(world, share.json()["index"])
    again = [append_raw(world, "event", raw), append_raw(world, "event", raw)]
    report = run_audit(world)
    assert found(report) == [(again[0], "event ids"), (again[1], "event ids")]
    assert "recorded earlier" in report.failures[0].message


@pytest.mark.regression("recorded_at earlier than the previous entry's")
@pytest.mark.parametrize("kind", ["event", "registry", "access"])
def test_an_entry_recorded_earlier_than_the_one_before_it_is_detected(
    world: World, case: dict[str, Any], kind: str
) -> None:
    """Each entry written in afterwards is fresh and well signed by itself, but claims a
    time before the entry that precedes it in the log."""
    ngo = world.agencies["ngo-a"]
    earlier = format_timestamp(world.clock.now)
    if kind == "event":
        body = ngo.body("case.closed", case["case"], {}, {"reason": "other"})
    elif kind == "registry":
        change = ngo.key_change(crypto.generate_signing_key("ngo-a"))
    else:
        assert ngo.read(case["case"]).status_code == 200
        access = json.loads(entry_at(world, world.ledger.store.log_size() - 1))
        assert access["kind"] == "access"
    world.clock.advance(minutes=10)
    ngo.ok("service.delivered", case["case"], {"referral_id": None}, {"component": "housing"})
    if kind == "event":
        position = inject_event(world, body, "tok_x", "caseworker")  # recorded at signed_at
    elif kind == "registry":
        entry = {
            "kind": "registry",
            "action": "key.added",
            "agency": "ngo-a",
            "key": change["verify_key"],
            "signatures": change["signatures"],
            "actor": "tok_x",
            "recorded_at": earlier,
        }
        position = append_raw(world, "registry", jcs(entry))
    else:
        position = append_raw(world, "access", jcs(access | {"recorded_at": earlier}))
    report = run_audit(world)
    assert found(report) == [(position, "recorded time")]


# --- 3. recipients that are not registered agencies ----------------------------------------


@pytest.mark.regression("recipient not a registered agency")
def test_a_consent_referral_and_share_to_a_typo_agency_are_detected(
    world: World, case: dict[str, Any]
) -> None:
    """`clinic-nort` for `clinic`: whoever registers that id afterwards would read the case."""
    ngo = world.agencies["ngo-a"]
    consent = new()
    granted = ngo.body(
        "consent.granted",
        case["case"],
        {
            "consent_id": consent,
            "purposes": ["referral", "data_sharing"],
            "recipients": ["clinic", "clinic-nort"],
            "categories": ["identity", "health"],
            "expires_at": None,
            "given_by": "survivor",
            "child_assent": None,
            "assent_exempt": False,
        },
        {"language": "es", "interpreter": False, "notice_version": "2026-1"},
    )
    referral = ngo.body(
        "referral.made",
        case["case"],
        {
            "referral_id": new(),
            "to": "clinic-nort",
            "consent_id": consent,
            "categories": ["health"],
        },
        {"component": "health_psychosocial", "due_by": "2030-01-01T00:00:00Z", "urgency": "urgent"},
    )
    shared = ngo.body("data.shared", case["case"], share_facts("clinic-nort", consent), {})
    positions = [inject_event(world, b, "tok_x", "caseworker") for b in (granted, referral, shared)]
    world.agency("clinic-nort")  # registered afterwards, by whoever holds the typo

    report = run_audit(world)

    assert found(report) == [(p, "gates") for p in positions]
    for failure, fact in zip(
        report.failures, ("facts.recipients", "facts.to", "facts.recipient"), strict=True
    ):
        assert fact in failure.message and "not a registered agency" in failure.message


@pytest.mark.regression("recipient removed: every key revoked")
def test_a_share_to_an_agency_whose_every_key_is_revoked_is_detected(
    world: World, case: dict[str, Any]
) -> None:
    ngo, clinic = world.agencies["ngo-a"], world.agencies["clinic"]
    revoke_key(world, "clinic", clinic.key.verify_key.key_id, compromised_since=None)
    body = ngo.body("data.shared", case["case"], share_facts("clinic", case["consent"]), {})
    position = inject_event(world, body, "tok_x", "caseworker")
    report = run_audit(world)
    assert found(report) == [(position, "gates")]
    assert "facts.recipient names clinic, not a registered agency" in report.failures[0].message


# --- honest histories ------------------------------------------------------------------------


def test_an_honest_history_with_key_rotation_and_moving_time_verifies(world: World) -> None:
    """A real ledger through the API: agencies registered, keys rotated and revoked, consent,
    shares and a referral between registered agencies, reads, time passing between entries."""
    ngo, clinic, shelter = world.agency("ngo-a"), world.agency("clinic"), world.agency("shelter")
    initial_keys = agency_keys(world)
    case_id = ngo.open_case(payload={"identity": {"n": 1}, "health": {"h": 2}})
    consent = ngo.grant(case_id, ["clinic", "shelter"])
    world.clock.advance(minutes=5)
    rotated = crypto.generate_signing_key("ngo-a")
    add_key(world, ngo, rotated)
    revoke_key(world, "ngo-a", ngo.key.verify_key.key_id, compromised_since=None)
    ngo.key = rotated
    assert ngo.share(case_id, "clinic", consent).status_code == 201
    world.clock.advance(seconds=30)
    referral = new()
    ngo.ok(
        "referral.made",
        case_id,
        {"referral_id": referral, "to": "shelter", "consent_id": consent, "categories": ["health"]},
        {"component": "housing", "due_by": "2030-01-01T00:00:00Z", "urgency": "routine"},
    )
    shelter.ok("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    assert clinic.read(case_id).status_code == 200
    world.clock.advance(hours=2)
    assert shelter.read(case_id).status_code == 200
    clinic_new = crypto.generate_signing_key("clinic")
    add_key(world, clinic, clinic_new)

    report = run_audit(world, keys=initial_keys)

    assert report.ok, [str(f) for f in report.failures]
    assert report.flags == []
    assert report.events == 5


# --- 4. the bundle file -------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a plain write leaves a file readable by everyone."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.regression("audit bundle written world-readable")
@pytest.mark.parametrize("existing", [None, 0o644, 0o666])
def test_an_audit_bundle_is_readable_by_its_owner_only(
    tmp_path: Path, umask_022: None, existing: int | None
) -> None:
    path = tmp_path / "bundle.json"
    if existing is not None:
        path.write_text("an older bundle")
        path.chmod(existing)
    entries = [b'{"kind":"access"}', b'{"kind":"event"}']

    audit.write_bundle(path, "checkpoint note\n", entries)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert audit.read_bundle(path) == ("checkpoint note\n", entries)
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.json"]  # no temporary file left


def test_a_bundle_that_fails_to_write_leaves_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    audit.write_bundle(path, "first\n", [b"{}"])
    with pytest.raises(TypeError):
        audit.write_bundle(path, object(), [b"{}"])  # type: ignore[arg-type]
    assert audit.read_bundle(path) == ("first\n", [b"{}"])
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.json"]
