"""An auditor without one agency's key line, or with another key for it: the audit says so
once, naming the agency and what to do, and reports none of that agency's events (nor the
events of others that name it) as other failures."""

from __future__ import annotations

import json
import uuid

import pytest

from ledger import audit
from ledger.contract import crypto
from tests.conftest import World
from tests.test_audit import agency_keys, history, run_audit  # noqa: F401 (the fixture)

pytestmark = pytest.mark.usefixtures("history")  # a realistic history of two agencies


def registration(world: World, agency: str) -> int:
    note = world.ledger.log.sign_checkpoint().note
    for position, raw in world.ledger.store.entries(0, audit.checkpoint_size(note)):
        entry = json.loads(raw)
        if entry["kind"] == "registry" and entry["agency"] == agency:
            return position
    raise AssertionError(f"{agency} is not registered")


def events_by(world: World, agency: str) -> int:
    size = world.ledger.store.log_size()
    entries = (json.loads(raw) for _, raw in world.ledger.store.entries(0, size))
    return sum(1 for e in entries if e["kind"] == "event" and e["envelope"]["agency"] == agency)


def test_a_missing_agency_line_is_one_failure_naming_the_agency(world: World) -> None:
    keys = agency_keys(world)
    del keys["clinic"]  # the clinic accepted a referral, was shared data, read the case
    report = run_audit(world, keys=keys)
    assert [(f.position, f.check) for f in report.failures] == [
        (registration(world, "clinic"), "agency keys")
    ]
    message = report.failures[0].message
    assert "agency clinic's verifier key line is missing" in message
    assert f"its {events_by(world, 'clinic')} events' signatures were not checked" in message
    assert "ledger agency vkey" in message  # what to do
    # The others' events were checked as usual; the clinic's were not counted as verified.
    assert report.signatures == report.events - events_by(world, "clinic")


def test_another_key_for_an_agency_is_one_failure_and_no_signature_failures(world: World) -> None:
    keys = agency_keys(world) | {"ngo-a": crypto.generate_signing_key("ngo-a").verify_key}
    report = run_audit(world, keys=keys)
    assert [(f.position, f.check) for f in report.failures] == [
        (registration(world, "ngo-a"), "agency keys")
    ]
    assert "registered with a key other than the auditor's copy" in report.failures[0].message


def test_with_every_line_the_same_history_verifies(world: World) -> None:
    report = run_audit(world)
    assert report.ok, report.failures
    assert report.signatures == report.events


def test_events_of_an_agency_the_log_never_registered_fail_each_time(world: World) -> None:
    """Not a missing line: an agency absent from the registry signs only in a forged log, and
    each forged event is named."""
    from tests.test_audit import inject_event

    stranger = crypto.generate_signing_key("stranger")
    positions = []
    for _ in range(2):
        body = world.agencies["ngo-a"].body("case.opened", str(uuid.uuid4()), {"minor": False})
        body["envelope"] |= {"agency": "stranger", "key": stranger.verify_key.key_id}
        positions.append(inject_event(world, body, "tok_x", "caseworker"))
    report = run_audit(world)
    found = [(f.position, f.check) for f in report.failures if f.check == "agency keys"]
    assert found == [(p, "agency keys") for p in positions]
