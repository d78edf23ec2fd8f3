"""Case snapshots: a long case loads from its latest snapshot, to exactly the state a full
replay gives, and reads still see every record."""

from __future__ import annotations

import json
import uuid
from contextlib import suppress
from datetime import timedelta

import pytest

import ledger.contract.case
from ledger.contract.gates import CaseState
from ledger.contract.vocabulary import format_timestamp
from tests.conftest import World


def full_replay(world: World, case_id: str) -> CaseState:
    """The state folded from every stored record, without snapshots."""
    events = world.ledger.cases.events.get(uuid.UUID(case_id))
    state = CaseState(case_id=case_id)
    for e in events:
        record = e.record  # type: ignore[attr-defined]
        state.apply(record["envelope"], record["actor"], record["recorded_at"])
    return state


def test_a_long_case_loads_from_snapshots_to_the_state_a_full_replay_gives(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = 10  # the production interval is 100: the mechanism is the same, the test shorter
    monkeypatch.setattr(ledger.contract.case, "SNAPSHOT_EVERY", every)
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    world.agency("shelter")
    case_id = ngo.open_case(payload={"identity": {"name": "first record"}})
    expiring = ngo.grant(
        case_id, ["clinic"], expires_at=format_timestamp(world.clock.now + timedelta(days=30))
    )
    withdrawn = ngo.grant(case_id, ["shelter"])
    referral = str(uuid.uuid4())
    ngo.ok(
        "referral.made",
        case_id,
        {"referral_id": referral, "to": "clinic", "consent_id": expiring, "categories": ["health"]},
        {
            "component": "health_psychosocial",
            "due_by": format_timestamp(world.clock.now),
            "urgency": "urgent",
        },
    )
    clinic.ok("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    ngo.ok("consent.withdrawn", case_id, {"consent_id": withdrawn}, {"reason": "survivor_request"})
    while (version := world.ledger.cases.load(case_id).version) < 2 * every + 7:  # type: ignore[union-attr]
        ngo.ok(
            "service.delivered",
            case_id,
            {"referral_id": None},
            {"component": "housing"},
            {"notes": f"visit {version}"},
        )

    snapshots = world.ledger.store.snapshots.select_events(uuid.UUID(case_id))
    assert [s.originator_version for s in snapshots] == [every, 2 * every]
    loaded = world.ledger.cases.load(case_id)
    assert loaded is not None and loaded.version == 2 * every + 7
    assert loaded.state == full_replay(world, case_id)
    assert loaded.state.consents[withdrawn].withdrawn
    assert loaded.state.referrals[referral].status == "accepted"
    assert loaded.state.holder == "ngo-a"  # accepting a referral makes no holder
    assert loaded.state.disclosed["clinic"] == {expiring: {"health"}}
    # Reads still reach the first record, which no snapshot repeats.
    read = ngo.read(case_id)
    assert read.status_code == 200, read.text
    assert read.json()["payload"]["identity"] == {"name": "first record"}
    assert len(world.ledger.cases.records(loaded)) == loaded.version


def test_case_state_survives_its_json_form_unchanged() -> None:
    state = CaseState(case_id=str(uuid.uuid4()))
    envelopes = [
        ("case.opened", "ngo-a", {"minor": True}),
        (
            "consent.granted",
            "ngo-a",
            {
                "consent_id": "c1",
                "purposes": ["referral", "data_sharing"],
                "recipients": ["clinic", "shelter"],
                "categories": ["identity", "health"],
                "expires_at": "0999-01-01T00:00:00Z",  # four digits, though strftime gives 3
                "given_by": "guardian",
                "child_assent": True,
                "assent_exempt": False,
            },
        ),
        ("consent.withdrawn", "ngo-a", {"consent_id": "c1"}),
        (
            "referral.made",
            "ngo-a",
            {"referral_id": "r1", "to": "clinic", "consent_id": "c1", "categories": ["health"]},
        ),
        ("referral.accepted", "clinic", {"referral_id": "r1"}),
        (
            "data.shared",
            "ngo-a",
            {
                "share_id": "s1",
                "recipient": "shelter",
                "consent_id": "c1",
                "purpose": "data_sharing",
                "categories": ["identity"],
            },
        ),  # fmt: skip
        ("plan.goal_set", "ngo-a", {"goal_id": "g1", "referral_id": "r1"}),
        ("plan.goal_set", "ngo-a", {"goal_id": "g2", "referral_id": None}),
        ("erasure.requested", "ngo-a", {}),
        ("case.erased", "ngo-a", {}),
    ]
    for i, (etype, agency, facts) in enumerate(envelopes):
        envelope = {"type": etype, "agency": agency, "facts": facts, "event_id": f"e{i}"}
        state.apply(envelope, "tok_1", "2026-11-29T00:00:00Z")
    assert CaseState.from_json(state.to_json()) == state
    assert state.erased and state.referrals["r1"].status == "accepted"
    assert state.holder == "ngo-a"
    assert state.disclosed == {"clinic": {"c1": {"health"}}, "shelter": {"c1": {"identity"}}}
    assert state.goals == {"g1": "r1", "g2": None}


def test_load_many_gives_what_load_gives_for_cached_uncached_and_unknown_cases(
    world: World,
) -> None:
    """A batch's look-up: cases cached in this process are brought up to date with what
    another process committed since (one query for all), others load as `load` does, and
    each caller gets its own copy."""
    from ledger.deploy import open_ledger

    ngo = world.agency("ngo-a")
    cached, uncached = ngo.open_case(), ngo.open_case()
    unknown = str(uuid.uuid4())
    cases = world.ledger.cases
    assert cases.load(cached) is not None  # now in this process's cache, at version 1
    other = open_ledger(world.settings)  # another server process on the same store
    try:
        principal = other.authenticate(ngo.tokens["caseworker"])
        for case_id, note in ((cached, "one"), (cached, "two"), (uncached, "three")):
            body = ngo.body(
                "service.delivered", case_id, {"referral_id": None}, {"component": "housing"},
                {"notes": note},
            )  # fmt: skip
            assert other.submit(principal, json.dumps(body).encode())[0] == 201
    finally:
        other.store.close()
        other.keys.table.close()

    assert cases.repository.cache is not None
    with suppress(KeyError):  # not cached in this process (as after a restart)
        cases.repository.cache.get(uuid.UUID(uncached), evict=True)
    versions = world.ledger.store.case_versions([cached, uncached, unknown])
    assert versions == {cached: 3, uncached: 2}
    queries: list[object] = []
    real = cases._events_after
    cases._events_after = lambda pairs: queries.append(pairs) or real(pairs)  # type: ignore[method-assign]
    loaded = cases.load_many(versions)
    assert queries == [[(cached, 1)]]  # one query, for the cached case that was behind
    for case_id, version in ((cached, 3), (uncached, 2)):
        case = loaded[case_id]
        assert case is not None and case.version == version
        assert case.state == full_replay(world, case_id)
    again = cases.load_many({cached: 3})[cached]
    assert queries == [[(cached, 1)]]  # the cache is current now: no query
    assert again is not loaded[cached] and again.state == loaded[cached].state
