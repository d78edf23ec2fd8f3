"""`GET /v1/tokens` (admin, what `ledger tokens list` shows): every token once across its
pages, revoked ones with their time, and never a token's secret or hash."""

from __future__ import annotations

from tests.conftest import World


def test_the_admin_lists_every_token_once_and_never_a_secret(world: World) -> None:
    world.agency("ngo-a")
    made = [
        world.http.post(
            "/v1/tokens",
            json={"agency": "ngo-a", "role": "caseworker", "label": f"person {i}"},
            headers=world.admin_auth,
        ).json()
        for i in range(5)
    ]
    revoked = made[2]["id"]
    assert world.http.delete(f"/v1/tokens/{revoked}", headers=world.admin_auth).status_code == 204
    seen: list[dict[str, object]] = []
    cursor: str | None = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = world.http.get("/v1/tokens", params=params, headers=world.admin_auth)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["tokens"]) <= 2
        seen += body["tokens"]
        world.http.post(  # written while the list is read: seen once or not at all
            "/v1/tokens", json={"role": "auditor", "label": "meanwhile"}, headers=world.admin_auth
        )
        cursor = body.get("next")
        if cursor is None:
            break
    ids = [t["id"] for t in seen]
    assert len(ids) == len(set(ids))
    assert {m["id"] for m in made} <= set(ids)
    by_id = {t["id"]: t for t in seen}
    assert by_id[revoked]["revoked_at"] is not None
    assert by_id[made[0]["id"]] == by_id[made[0]["id"]] | {
        "role": "caseworker", "agency": "ngo-a", "label": "person 0", "revoked_at": None
    }  # fmt: skip
    text = str(seen)
    assert not [m for m in made if m["token"] in text] and world.admin not in text
    assert set(seen[0]) == {"id", "role", "agency", "label", "created_at", "expires_at",
                            "revoked_at"}  # fmt: skip


def test_only_an_admin_lists_tokens(world: World) -> None:
    ngo = world.agency("ngo-a")
    r = world.http.get("/v1/tokens", headers=ngo.auth("supervisor"))
    assert r.status_code == 403 and "admin" in r.json()["message"]
