"""Concurrent writes inside one ledger process: group commit shares transactions, and a
submission that lost a race is decided again on the new state instead of being refused."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from ledger.contract import crypto
from ledger.storage.base import ConflictError
from tests.conftest import CONSENT_ATTRS, OPENED_ATTRS, World


def run_together(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Start every job at once (a barrier) and return their results in order."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = jobs[i]()
        except BaseException as exc:  # reported by the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_many_writers_on_one_case_all_land_with_consecutive_versions(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    principal = world.ledger.authenticate(ngo.auth()["Authorization"].split()[1])
    bodies = [
        json.dumps(
            ngo.body(
                "service.delivered",
                case_id,
                {"referral_id": None},
                {"component": "housing"},
                {"notes": f"visit {i}"},
            )
        ).encode()
        for i in range(16)
    ]
    results = run_together([lambda b=b: world.ledger.submit(principal, b) for b in bodies])

    assert all(not isinstance(r, BaseException) for r in results), results
    assert [status for status, _ in results] == [201] * 16
    assert sorted(answer["case_version"] for _, answer in results) == list(range(2, 18))
    indexes = sorted(answer["index"] for _, answer in results)
    assert len(set(indexes)) == 16
    assert world.ledger.store.log_size() == indexes[-1] + 1
    # Every event is in the log exactly once, at the index its answer gave.
    for _, answer in results:
        found = world.ledger.store.find_event(answer["event_id"])
        assert found is not None and found.position == answer["index"]


def test_identical_submissions_racing_get_one_201_and_the_same_answer_as_200(
    world: World,
) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    principal = world.ledger.authenticate(ngo.auth()["Authorization"].split()[1])
    body = json.dumps(
        ngo.body("service.delivered", case_id, {"referral_id": None}, {"component": "housing"})
    ).encode()
    size = world.ledger.store.log_size()
    results = run_together([lambda: world.ledger.submit(principal, body) for _ in range(8)])

    assert all(not isinstance(r, BaseException) for r in results), results
    assert sorted(status for status, _ in results) == [200] * 7 + [201]
    assert len({json.dumps(answer, sort_keys=True) for _, answer in results}) == 1
    assert world.ledger.store.log_size() == size + 1


def test_a_write_conflict_that_keeps_recurring_is_a_409_write_conflict(world: World) -> None:
    """After the ledger's own attempts the caller gets a 409 it can resend unchanged."""
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    store = world.ledger.store
    real_append = store.append
    attempts = []

    def always_conflicting(commit: Any) -> list[int]:
        attempts.append(commit)
        raise ConflictError("the case changed")

    store.append = always_conflicting  # type: ignore[method-assign]
    try:
        response = ngo.submit(
            "service.delivered", case_id, {"referral_id": None}, {"component": "housing"}
        )
    finally:
        store.append = real_append  # type: ignore[method-assign]
    assert response.status_code == 409
    assert response.json()["error"] == "write_conflict"
    assert len(attempts) > 1
    assert store.find_event(json.loads(response.request.content)["envelope"]["event_id"]) is None


def batch(world: World, agency: Any, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = world.http.post("/v1/events:batch", headers=agency.auth(), json={"events": bodies})
    assert r.status_code == 200, r.text
    return list(r.json()["results"])


def test_a_batch_can_build_a_case_whose_later_events_depend_on_earlier_ones(
    world: World, monkeypatch: Any
) -> None:
    """Items are decided on the state earlier items left, before any of them is committed:
    a child's guardian consent exempt from assent needs the age band sealed in the same batch,
    and the share needs that consent."""
    import uuid

    from tests.conftest import CONSENT_ATTRS, OPENED_ATTRS

    ngo = world.agency("ngo-a")
    world.agency("clinic")
    case_id, consent = str(uuid.uuid4()), str(uuid.uuid4())
    bodies = [
        ngo.body("case.opened", case_id, {"minor": True}, OPENED_ATTRS | {"age_band": "0-5"}),
        ngo.body(
            "consent.granted",
            case_id,
            {
                "consent_id": consent,
                "purposes": ["data_sharing"],
                "recipients": ["clinic"],
                "categories": ["identity"],
                "expires_at": None,
                "given_by": "guardian",
                "child_assent": None,
                "assent_exempt": True,
            },
            CONSENT_ATTRS,
        ),
        ngo.body(
            "data.shared",
            case_id,
            {
                "share_id": str(uuid.uuid4()),
                "recipient": "clinic",
                "consent_id": consent,
                "purpose": "data_sharing",
                "categories": ["identity"],
            },
            {},
        ),
    ]
    size = world.ledger.store.log_size()
    store, groups = world.ledger.store, []
    real = store.append_group

    def recorded(commits: Any) -> Any:
        outcomes = real(commits)
        groups.append(outcomes)
        return outcomes

    monkeypatch.setattr(store, "append_group", recorded)
    results = batch(world, ngo, bodies)
    assert [r["status"] for r in results] == [201, 201, 201], results
    assert len(groups) == 1 and all(isinstance(o, list) for o in groups[0])  # one transaction
    assert [r["body"]["case_version"] for r in results] == [1, 2, 3]
    assert [r["body"]["index"] for r in results] == [size, size + 1, size + 2]
    assert world.http.get(f"/v1/cases/{case_id}", headers=world.agency("clinic").auth()).json()


def test_a_batch_item_that_loses_a_race_is_decided_again_after_the_winner(
    world: World, monkeypatch: Any
) -> None:
    """A withdrawal commits between the batch's decisions and its commit: the share it
    would have allowed (and the next item of that case) are decided again and refused; the
    other case's item commits; nothing is left behind and the case's stream has no gap."""
    ngo, _ = world.agency("ngo-a"), world.agency("clinic")
    racing, other = ngo.open_case(), ngo.open_case()
    consent = ngo.grant(racing, ["clinic"])
    withdrawal = ngo.body(
        "consent.withdrawn", racing, {"consent_id": consent}, {"reason": "survivor_request"}
    )

    def share(case_id: str) -> dict[str, Any]:
        import uuid

        facts = {
            "share_id": str(uuid.uuid4()),
            "recipient": "clinic",
            "consent_id": consent,
            "purpose": "data_sharing",
            "categories": ["identity"],
        }
        return ngo.body("data.shared", case_id, facts, {})

    closing = ngo.body("case.closed", other, {}, {"reason": "other"})
    store = world.ledger.store
    real, fired = store.append_group, []

    def withdraw_first(commits: Any) -> Any:
        if not fired:
            fired.append(ngo.post(withdrawal).status_code)
            outcomes = real(commits)
            fired.append([type(o).__name__ for o in outcomes])
            return outcomes
        return real(commits)

    monkeypatch.setattr(store, "append_group", withdraw_first)
    results = batch(world, ngo, [share(racing), closing, share(racing)])

    # The batch's commit refused both shares (the case moved on), kept the other case's item.
    assert fired == [201, ["ConflictError", "list", "ConflictError"]]
    assert [r["status"] for r in results] == [403, 201, 403], results
    case = world.ledger.cases.load(racing)
    assert case is not None
    versions = [e.originator_version for e in store.recorder.select_events(case.id)]
    assert versions == list(range(1, case.version + 1))  # no gap, nothing of the refused shares


@pytest.mark.parametrize("path", ["single", "batch"])
def test_a_store_failure_leaves_the_case_id_free_for_the_resend(
    world: World, monkeypatch: Any, path: str
) -> None:
    """The store fails while committing a new case (an outage): the answer is 500, nothing
    is in the log, and resending the same submission opens the case with the key the failed
    attempt left unconfirmed (taken over, never a second key)."""
    import uuid

    from tests.conftest import OPENED_ATTRS

    ngo = world.agency("ngo-a")
    case_id = str(uuid.uuid4())
    body = ngo.body("case.opened", case_id, {"minor": False}, OPENED_ATTRS)
    store = world.ledger.store

    def outage(commits: Any) -> Any:
        raise OSError("the database went away")

    monkeypatch.setattr(store, "append_group", outage)
    monkeypatch.setattr(store, "append", outage)

    def send() -> Any:
        if path == "single":
            return ngo.post(body)
        return world.http.post("/v1/events:batch", headers=ngo.auth(), json={"events": [body]})

    size = store.log_size()
    assert send().status_code == 500
    assert store.log_size() == size and world.ledger.cases.load(case_id) is None
    monkeypatch.undo()
    again = send()
    assert again.status_code in (200, 201), again.text
    assert world.ledger.cases.load(case_id) is not None
    table = world.ledger.keys.table
    assert table.pending(case_id) is None and table.get(case_id) is not None  # confirmed
    assert world.ledger.recover(orphan_age_s=0) == 0  # nothing left over to sweep


def test_a_batch_opening_a_case_whose_key_a_crash_left_behind_takes_that_key_over(
    world: World,
) -> None:
    """A batch stores its new cases' keys together before its commit. A case whose
    `case.opened` crashed before committing has an unconfirmed key already: its items are
    decided again one by one (taking the key over), the other case's items commit with the
    batch, and every event of both cases unseals afterwards with the key that is stored."""
    import uuid

    from tests.conftest import OPENED_ATTRS

    ngo = world.agency("ngo-a")
    crashed, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    world.ledger.keys.create(crashed)  # the leftover of a case.opened that never committed

    def case_events(case_id: str) -> list[dict[str, Any]]:
        return [
            ngo.body(
                "case.opened", case_id, {"minor": False}, OPENED_ATTRS, {"identity": {"name": "A"}}
            ),
            ngo.body(
                "service.delivered",
                case_id,
                {"referral_id": None},
                {"component": "housing"},
                {"notes": "n"},
            ),
        ]

    results = batch(world, ngo, [*case_events(crashed), *case_events(fresh)])
    assert [r["status"] for r in results] == [201] * 4, results
    assert [r["body"]["case_version"] for r in results] == [1, 2, 1, 2]
    for case_id in (crashed, fresh):
        read = ngo.read(case_id)
        assert read.status_code == 200, read.text
        assert read.json()["payload"]["identity"] == {"name": "A"}  # unsealed: the right key
        assert read.json()["payload"]["notes"] == "n"
    assert world.ledger.keys.table.unconfirmed("9999-12-31T00:00:00Z") == []  # all confirmed


def test_a_refused_erasure_in_a_batch_leaves_the_earlier_items_answers_as_they_were(
    world: World,
) -> None:
    """The items before a `case.erased` commit first; if the erasure is then refused, they
    must not be committed (or answered) again: the items are 201, 404, 201 in order."""
    import uuid

    from tests.conftest import OPENED_ATTRS

    ngo = world.agency("ngo-a")
    case_id, unknown = str(uuid.uuid4()), str(uuid.uuid4())
    bodies = [
        ngo.body("case.opened", case_id, {"minor": False}, OPENED_ATTRS),
        ngo.body("case.erased", unknown, {"request_event_id": str(uuid.uuid4())}, {}),
        ngo.body("case.closed", case_id, {}, {"reason": "other"}),
    ]
    size = world.ledger.store.log_size()
    results = batch(world, ngo, bodies)
    assert [r["status"] for r in results] == [201, 404, 201], results
    assert [r["body"]["case_version"] for r in (results[0], results[2])] == [1, 2]
    assert world.ledger.store.log_size() == size + 2


def test_single_submissions_queued_together_are_one_batch_with_each_answer_its_own(
    world: World,
) -> None:
    """Concurrent `POST /v1/events` in one process are decided and committed as one batch
    (`Ingest.group`): callers of different agencies and roles, refusals, an identical
    retry and an item that builds on an earlier one each get the answer they would have had
    one after another, in queue order."""
    from ledger.errors import LedgerError

    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_a, case_c = ngo.open_case(), str(uuid.uuid4())

    def principal(agency: Any, role: str = "caseworker") -> Any:
        return world.ledger.authenticate(agency.auth(role)["Authorization"].split()[1])

    def delivered(case_id: str, note: str) -> dict[str, Any]:
        return ngo.body(
            "service.delivered", case_id, {"referral_id": None}, {"component": "housing"},
            {"notes": note},
        )  # fmt: skip

    first = delivered(case_a, "first")
    forged = delivered(case_a, "forged")
    forged["signature"] = crypto.b64(bytes(64))
    consent = {
        "consent_id": str(uuid.uuid4()), "purposes": ["data_sharing"], "recipients": ["clinic"],
        "categories": ["identity"], "expires_at": None, "given_by": "survivor",
        "child_assent": None, "assent_exempt": False,
    }  # fmt: skip
    queue = [
        (principal(ngo), first),
        (principal(clinic), delivered(case_a, "unrelated")),
        (principal(ngo), first),  # an identical retry of the first
        (principal(ngo), ngo.body("case.opened", case_c, {"minor": False}, OPENED_ATTRS)),
        (principal(ngo), ngo.body("consent.granted", case_c, consent, CONSENT_ATTRS)),
        (principal(ngo), forged),
        (principal(ngo, "auditor"), delivered(case_a, "auditor")),
        (principal(ngo), delivered(case_a, "second")),
    ]
    group = world.ledger.ingest.group
    answers: list[Any] = [None] * len(queue)

    def submit(i: int) -> None:
        who, body = queue[i]
        try:
            answers[i] = world.ledger.submit(who, json.dumps(body).encode())
        except LedgerError as exc:
            answers[i] = exc

    batches = group.batches
    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(queue))]
    with group._leader:  # as if a batch were running: everything queues behind it, in order
        for i, t in enumerate(threads):
            t.start()
            while len(group._queue) < i + 1:
                time.sleep(0.001)
    for t in threads:
        t.join(30)

    assert group.batches == batches + 1  # one batch decided and committed all eight
    statuses = [a.status if isinstance(a, LedgerError) else a[0] for a in answers]
    assert statuses == [201, 404, 200, 201, 201, 422, 403, 201]
    assert answers[2][1] == answers[0][1]
    assert [answers[i][1]["case_version"] for i in (0, 3, 4, 7)] == [2, 1, 2, 3]
    for i in (0, 3, 4, 7):
        found = world.ledger.store.find_event(answers[i][1]["event_id"])
        assert found is not None and found.position == answers[i][1]["index"]
    assert world.ledger.keys.get(case_c) is not None  # the new case's key was kept


def second_key(world: World, agency: Any) -> Any:
    """The agency with a second registered key (its tokens shared): items signed with the
    first can be refused at commit, by revoking it in between, while the second's stand."""
    from tests.conftest import Agency

    key = crypto.generate_signing_key(agency.id)
    r = world.http.post(
        f"/v1/agencies/{agency.id}/keys", json=agency.key_change(key), headers=world.admin_auth
    )
    assert r.status_code == 201, r.text
    return Agency(world, agency.id, key, agency.tokens)


def revoke_during_commit(world: World, key: crypto.SigningKey) -> None:
    """The key is revoked (a concurrent admin request) between the batch's decisions and
    its commit: the commit refuses the items signed with it, and they are decided again."""
    store, admin = world.ledger.store, world.ledger.authenticate(world.admin)
    real = store.append_group

    def racing(commits: Any) -> Any:
        store.append_group = real  # type: ignore[method-assign]
        world.ledger.revoke_key(admin, key.name, key.verify_key.key_id, None)
        return real(commits)

    store.append_group = racing  # type: ignore[method-assign]


def grouped(world: World, agency: Any, bodies: list[dict[str, Any]]) -> list[Any]:
    from ledger.services.submissions import Incoming

    who = world.ledger.authenticate(agency.tokens["caseworker"])
    return world.ledger.submit_many([Incoming(who, json.dumps(b).encode()) for b in bodies])


def test_a_refusal_that_leaned_on_an_item_refused_at_commit_is_decided_again(
    world: World,
) -> None:
    """Found in review: a share refused because an earlier item of its group withdrew the
    consent must not stay refused when that withdrawal is itself refused at commit (its key
    revoked meanwhile): one after another, in either order, the share is recorded."""
    from ledger.errors import LedgerError

    ngo, _ = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    other_key = second_key(world, ngo)
    withdraw = ngo.body(
        "consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "survivor_request"}
    )
    share = other_key.body("data.shared", case_id, {
        "share_id": str(uuid.uuid4()), "recipient": "clinic", "consent_id": consent,
        "purpose": "data_sharing", "categories": ["identity"],
    }, {})  # fmt: skip
    revoke_during_commit(world, ngo.key)
    refused, shared = grouped(world, ngo, [withdraw, share])

    assert isinstance(refused, LedgerError) and refused.status == 422
    assert world.ledger.store.find_event(withdraw["envelope"]["event_id"]) is None
    assert not isinstance(shared, BaseException), shared
    assert shared[0] == 201 and shared[1]["case_version"] == 3


def test_a_case_is_cached_only_at_a_version_that_committed(world: World) -> None:
    """Found in review: the first of a case's two grouped items commits, the second is
    refused at commit. The cache must hold the case at the first's version (the store's),
    so the next event lands right after it, without a gap in the case's stream."""
    from ledger.errors import LedgerError

    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    other_key = second_key(world, ngo)

    def delivered(agency: Any, note: str) -> dict[str, Any]:
        return agency.body(
            "service.delivered", case_id, {"referral_id": None}, {"component": "housing"},
            {"notes": note},
        )  # fmt: skip

    revoke_during_commit(world, other_key.key)
    first, second = grouped(world, ngo, [delivered(ngo, "a"), delivered(other_key, "b")])
    assert first[0] == 201 and isinstance(second, LedgerError) and second.status == 422

    cache = world.ledger.cases.repository.cache
    assert cache is not None and cache.get(uuid.UUID(case_id)).version == 2
    (after,) = grouped(world, ngo, [delivered(ngo, "c")])
    assert after[0] == 201 and after[1]["case_version"] == 3
    stored = world.ledger.store.events_after([(case_id, 0)])
    assert [e.originator_version for e in stored] == [1, 2, 3]


def test_an_item_failing_in_a_group_fails_alone_and_its_case_is_decided_afresh(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a refusal (a bug, say) for one item: that caller gets the failure (a 500), the
    group's other items are recorded, the later items of its case are decided on their own
    after the commit, and nothing of the failed item reaches the store or the cache."""
    ngo = world.agency("ngo-a")
    case_a, case_b = ngo.open_case(), ngo.open_case()

    def delivered(case_id: str, note: str) -> dict[str, Any]:
        return ngo.body(
            "service.delivered", case_id, {"referral_id": None}, {"component": "housing"},
            {"notes": note},
        )  # fmt: skip

    bodies = [delivered(case_a, "ok"), delivered(case_a, "poison"), delivered(case_a, "after"),
              delivered(case_b, "other")]  # fmt: skip
    poison = bodies[1]["envelope"]["event_id"]
    ledger = world.ledger
    real_plan = ledger.ingest._plan

    def plan(principal: Any, sub: Any, case: Any, now: Any, pending: Any) -> Any:
        planned = real_plan(principal, sub, case, now, pending)
        if sub.event_id == poison:  # fails after it moved the batch's working copy on
            raise RuntimeError("a bug")
        return planned

    monkeypatch.setattr(ledger.ingest, "_plan", plan)
    answers = grouped(world, ngo, bodies)

    assert isinstance(answers[1], RuntimeError)
    assert [answers[i][0] for i in (0, 2, 3)] == [201, 201, 201]
    assert [answers[i][1]["case_version"] for i in (0, 2, 3)] == [2, 3, 2]
    assert ledger.store.find_event(poison) is None
    stored = ledger.store.events_after([(case_a, 0)])
    assert [e.originator_version for e in stored] == [1, 2, 3]
    loaded = ledger.cases.load(case_a)
    assert loaded is not None and loaded.version == 3


@pytest.mark.regression("recorded_at went backwards when a later decision committed first")
def test_a_server_behind_another_records_at_the_logs_latest_time(world: World) -> None:
    """Two server processes, one clock 30 s behind the other: the log's times never go
    backwards. The slow one's commit is refused for its time (StaleTime), decided again at
    the log's latest time, and recorded; reads and registry changes follow the same rule;
    the audit (which fails a log whose times go back) passes."""
    from datetime import timedelta

    from ledger.deploy import open_ledger
    from tests.test_audit import run_audit

    ngo = world.agency("ngo-a")
    world.agency("clinic")
    case_id = ngo.open_case(payload={"identity": {"n": 1}})
    behind = open_ledger(world.settings)  # another process on the same store
    behind.clock = lambda: world.clock.now - timedelta(seconds=30)  # type: ignore[method-assign]
    seen: list[str] = []
    real_saw = behind.time.saw
    behind.time.saw = lambda latest: seen.append(latest) or real_saw(latest)  # type: ignore[method-assign]
    try:
        principal = behind.authenticate(ngo.tokens["caseworker"])
        body = ngo.body("service.delivered", case_id, {"referral_id": None},
                        {"component": "housing"}, signed_at=world.clock.now)  # fmt: skip
        status, answer = behind.submit(principal, json.dumps(body).encode())
        assert status == 201, answer
        assert seen  # refused once for its time, then recorded at the log's latest
        assert answer["entry"]["recorded_at"] == seen[-1]
        assert behind.read_case(principal, case_id)["payload"] == {"identity": {"n": 1}}
        admin = behind.authenticate(world.admin)
        assert behind.revoke_key(admin, "clinic", world.agencies["clinic"].key.verify_key.key_id,
                                 None)["index"] > 0  # fmt: skip
    finally:
        behind.store.close()
        behind.keys.table.close()
    times = [json.loads(e)["recorded_at"]
             for _, e in world.ledger.store.entries(0, world.ledger.store.log_size())]  # fmt: skip
    assert times == sorted(times)
    assert run_audit(world).ok, [str(f) for f in run_audit(world).failures]
