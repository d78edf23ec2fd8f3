"""Paging of every list endpoint (issue 21): an opaque cursor (`?cursor=&limit=`) and `next`,
in keyset order, so a reader following `next` sees each item that existed when it started
exactly once while others write; malformed or foreign cursors are 400."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from ledger.services import paging
from tests.conftest import Agency, World


def follow(
    world: World,
    path: str,
    name: str,
    headers: dict[str, str],
    limit: int,
    between: Callable[[int], None] = lambda _: None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Every item of a list, `limit` a page, calling `between(n)` after page n (writes)."""
    items: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": limit, **params}
    for n in range(1000):
        r = world.http.get(path, params=query, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) <= {name, "next", "case_id", "id"}, body.keys()
        items += body[name]
        between(n)
        if "next" not in body:
            return items
        assert isinstance(body["next"], str) and body["next"]
        query["cursor"] = body["next"]
    raise AssertionError("the pages never ended")


def referral(ngo: Agency, case_id: str, consent: str, to: str = "clinic") -> str:
    referral_id = str(uuid.uuid4())
    facts = {"referral_id": referral_id, "to": to, "consent_id": consent, "categories": ["health"]}
    attrs = {"component": "housing", "due_by": None, "urgency": "routine"}
    ngo.ok("referral.made", case_id, facts, attrs)
    return referral_id


def test_every_case_comes_once_across_pages_while_cases_are_opened(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    before = [ngo.open_case() for _ in range(23)]
    consent = ngo.grant(before[0], ["clinic"])
    added: list[str] = []

    def write(n: int) -> None:  # new cases, and changes to cases already listed and not yet
        added.append(ngo.open_case())
        world.clock.advance(seconds=1)
        ngo.ok("service.delivered", before[n], {"referral_id": None}, {"component": "housing"})
        if n == 1:
            referral(ngo, before[0], consent)

    listed = follow(world, "/v1/cases", "cases", ngo.auth(), 4, write)
    ids = [c["case_id"] for c in listed]
    assert len(ids) == len(set(ids)), "a case came twice"
    assert set(before) <= set(ids), "a case that was there from the start was missed"
    assert set(ids) <= set(before) | set(added)
    # The first page is the newest cases; a full read is the one-page answer, in order.
    whole = world.http.get("/v1/cases", params={"limit": 500}, headers=ngo.auth()).json()
    assert "next" not in whole and [c["case_id"] for c in whole["cases"]][-23:] == before[::-1]
    # The recipient's list pages too; and one case alone by id.
    assert [c["case_id"] for c in follow(world, "/v1/cases", "cases", clinic.auth(), 1)] == [
        before[0]
    ]
    one = world.http.get("/v1/cases", params={"case_id": before[5]}, headers=ngo.auth()).json()
    assert [c["case_id"] for c in one["cases"]] == [before[5]] and "next" not in one
    none = world.http.get("/v1/cases", params={"case_id": before[5]}, headers=clinic.auth())
    assert none.json() == {"cases": []}  # not the clinic's: as unknown as any other id


def test_every_referral_comes_once_across_filtered_pages_while_referrals_are_made(
    world: World,
) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    world.agency("legal")
    cases = [ngo.open_case() for _ in range(4)]
    consents = {c: ngo.grant(c, ["clinic", "legal"]) for c in cases}
    made = []
    for i in range(13):
        case_id = cases[i % 4]
        made.append(referral(ngo, case_id, consents[case_id], "clinic" if i % 3 else "legal"))
        if i % 4 == 3:
            world.clock.advance(seconds=1)
    to_clinic = [r for i, r in enumerate(made) if i % 3]

    def write(n: int) -> None:
        case_id = cases[n % 4]
        referral(ngo, case_id, consents[case_id])
        world.clock.advance(seconds=1)

    for params, expected in (({}, made), ({"to": "clinic"}, to_clinic)):
        got = [r["referral_id"] for r in follow(world, "/v1/referrals", "referrals", ngo.auth(),
                                                 3, write, **params)]  # fmt: skip
        assert len(got) == len(set(got)) and set(expected) <= set(got)
    # A filter decided on what is unsealed: pages may be short, none repeats or is lost.
    pending = follow(world, "/v1/referrals", "referrals", clinic.auth(), 2, status="pending")
    ids = [r["referral_id"] for r in pending]
    assert len(ids) == len(set(ids)) and set(to_clinic) <= set(ids)
    assert all(r["to"] == "clinic" and r["status"] == "pending" for r in pending)


def test_agencies_erasure_requests_disclosures_and_dead_letters_page(world: World) -> None:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    for i in range(5):
        world.agency(f"agency-{i}")
    registered = sorted(world.agencies)

    def register(n: int) -> None:
        world.agency(f"zz-late-{n}")
        world.agency(f"aa-late-{n}")  # before the cursor: never seen by this reader

    got = [a["id"] for a in follow(world, "/v1/agencies", "agencies", clinic.auth(), 2, register)]
    assert got == sorted(got) and len(got) == len(set(got)) and set(registered) <= set(got)
    # Erasure requests, oldest first; one confirmed meanwhile drops out, none repeats.
    cases = [ngo.open_case() for _ in range(5)]
    requests = [
        ngo.ok("erasure.requested", c, {}, {"reason": "survivor_request"}, role="supervisor")
        for c in cases
    ]
    second = {"Authorization": f"Bearer {world.token('supervisor', 'ngo-a')}"}

    def confirm(n: int) -> None:
        if n == 0:  # the last one, not read yet, is erased: it is no longer pending
            body = ngo.body("case.erased", cases[4], {"request_event_id": requests[4]["event_id"]})
            assert world.http.post("/v1/events", json=body, headers=second).status_code == 201

    waiting = follow(world, "/v1/erasure-requests", "requests", second, 2, confirm)
    assert [r["case_id"] for r in waiting] == cases[:4]
    # A case's disclosure register grows with every read: it pages in log order.
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    assert ngo.share(case_id, "clinic", consent).status_code == 201
    for _ in range(4):
        assert clinic.read(case_id).status_code == 200
    path = f"/v1/cases/{case_id}/disclosures"
    reads = follow(world, path, "disclosures", ngo.auth(), 2, lambda _: clinic.read(case_id))
    positions = [d["position"] for d in reads]
    assert positions == sorted(set(positions)) and len(positions) >= 5
    hooks = "/v1/agencies/clinic/webhooks"
    made = world.http.post(
        hooks, json={"url": "https://93.184.216.34/hooks"}, headers=clinic.auth("supervisor")
    )
    dead = world.http.get(
        f"{hooks}/{made.json()['id']}/dead-letters", params={"limit": 1},
        headers=clinic.auth("supervisor"),
    )  # fmt: skip
    assert dead.status_code == 200 and dead.json() == {"id": made.json()["id"], "dead": []}


def test_statistics_releases_page_newest_first(world: World) -> None:
    ngo = world.agency("ngo-a")
    world.clock.now = world.clock.now.replace(year=2027, month=6, day=15)
    ngo.ok(
        "case.opened", str(uuid.uuid4()), {"minor": False},
        {"age_band": "adult", "gender": "female", "exploitation": ["labour"],
         "identified_at": "2027-01-10"},
    )  # fmt: skip
    monitor = {"Authorization": f"Bearer {world.token('monitor')}"}
    for month in ("2027-01", "2027-02", "2027-03", "2027-04"):
        r = world.http.post("/v1/stats/releases", json={"period": month}, headers=monitor)
        assert r.status_code == 201, r.text
    got = [r["period"] for r in follow(world, "/v1/stats/releases", "releases", monitor, 3)]
    assert got == ["2027-04", "2027-03", "2027-02", "2027-01"]


def cursor_of(*members: Any) -> str:
    raw = json.dumps(list(members)).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "query",
    [
        {"cursor": "not!a!cursor"},
        {"cursor": "bm90IGpzb24"},  # base64 of something that is not JSON
        {"cursor": cursor_of("referrals", "a", "b", "c")},  # another list's cursor
        {"cursor": cursor_of("cases", "12")},  # a key of the wrong type
        {"cursor": cursor_of("cases", True)},
        {"cursor": cursor_of("cases", 1, 2)},
        {"cursor": "A" * 600},
        {"limit": 0},
        {"limit": paging.MAX_LIMIT + 1},
        {"limit": "ten"},
    ],
)
def test_a_cursor_or_limit_the_list_never_gave_is_400(world: World, query: dict[str, Any]) -> None:
    ngo = world.agency("ngo-a")
    ngo.open_case()
    size = world.ledger.store.log_size()
    r = world.http.get("/v1/cases", params=query, headers=ngo.auth())
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "bad_request"
    assert world.ledger.store.log_size() == size


def test_the_sdk_and_the_cursor_agree(world: World) -> None:
    """The SDK's lists follow the pages; a cursor holds a key of the caller's own list."""
    from ledger.client import LedgerClient

    ngo = world.agency("ngo-a")
    opened = [ngo.open_case() for _ in range(paging.DEFAULT_LIMIT + 2)]
    client = LedgerClient("http://testserver", ngo.tokens["caseworker"], pool=world.http)
    listed = [c["case_id"] for c in client.case_list()]
    assert sorted(listed) == sorted(opened) and len(listed) == len(opened)
    first = client.case_page(limit=paging.DEFAULT_LIMIT)
    assert len(first.items) == paging.DEFAULT_LIMIT and first.next is not None
    assert client.case_page(first.next).next is None
    assert client.case_summary(opened[0])["case_id"] == opened[0]  # type: ignore[index]
    assert client.case_summary(str(uuid.uuid4())) is None


def test_notices_keep_their_feed_cursor(world: World) -> None:
    """`/v1/notices` is a feed: `after`/`limit`, and a `next` always there to keep and poll
    from later (documented beside the lists' cursors)."""
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic"])
    for _ in range(3):
        referral(ngo, case_id, consent)
    first = world.http.get("/v1/notices", params={"limit": 2}, headers=clinic.auth()).json()
    rest = world.http.get(
        "/v1/notices", params={"after": first["next"]}, headers=clinic.auth()
    ).json()
    assert len(first["notices"]) == 2 and len(rest["notices"]) == 1
    end = world.http.get("/v1/notices", params={"after": rest["next"]}, headers=clinic.auth())
    assert end.json() == {"notices": [], "next": rest["next"]}
