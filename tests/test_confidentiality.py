"""No personal or descriptive data in plaintext at rest or in logs, on both backends."""

from __future__ import annotations

import base64
import logging
import secrets
from pathlib import Path

import psycopg
import pytest

from tests.conftest import CONSENT_ATTRS, World


def markers() -> dict[str, str]:
    tag = secrets.token_hex(6).upper()
    return {name: f"MRK{name.upper()}{tag}" for name in ("attr", "identity", "location", "notes")}


def files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except (PermissionError, FileNotFoundError):  # files that vanish while scanning
            continue
        hits += [f"{path}: {n.decode(errors='replace')}" for n in needles if n in data]
    return hits


def write_marked_case(world: World, mark: dict[str, str]) -> str:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case(
        payload={
            "identity": {"name": mark["identity"]},
            "location": {"shelter": mark["location"]},
            "notes": mark["notes"],
        }
    )
    consent = ngo.grant(case_id, ["clinic"], categories=["identity", "location"])
    ngo.ok(
        "consent.granted",
        case_id,
        {
            "consent_id": "00000000-0000-4000-8000-" + secrets.token_hex(6),
            "purposes": ["assistance"],
            "recipients": ["clinic"],
            "categories": ["notes"],
            "expires_at": None,
            "given_by": "survivor",
            "child_assent": None,
            "assent_exempt": False,
        },
        CONSENT_ATTRS | {"notice_version": mark["attr"]},
    )
    assert ngo.share(case_id, "clinic", consent, ["identity", "location"]).status_code == 201
    view = clinic.read(case_id).json()
    assert view["payload"]["identity"]["name"] == mark["identity"]  # the markers were stored
    return case_id


def test_markers_appear_in_no_file_and_no_log_line(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    mark = markers()
    needles = [m.encode() for m in mark.values()]
    with caplog.at_level(logging.DEBUG):
        write_marked_case(world, mark)
        # A webhook endpoint's secret is stored sealed: in no form at rest or in a log line.
        hook = world.http.post(
            "/v1/agencies/clinic/webhooks",
            json={"url": "https://93.184.216.34/hooks"},
            headers=world.agencies["clinic"].auth("supervisor"),
        )
        assert hook.status_code == 201, hook.text
    secret = hook.json()["secret"]
    raw = base64.b64decode(secret.removeprefix("whsec_"))
    needles += [secret.encode(), secret.removeprefix("whsec_").encode(), raw]
    log_text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert caplog.records, "the server logged nothing: the log check would be empty"
    assert not [m for m in [*mark.values(), secret] if m in log_text]

    # Bearer tokens are stored hashed: none of them is anywhere at rest (but the initial admin
    # token's own 0600 file under the keys folder), nor in a log line.
    tokens = [t for a in world.agencies.values() for t in a.tokens.values()]
    assert len(tokens) >= 2
    assert not [t for t in [world.admin, *tokens] if t in log_text]
    needles += [t.encode() for t in tokens]

    hits = files_containing(world.settings.keys, needles)
    needles.append(world.admin.encode())
    if world.settings.is_postgres:
        url = world.settings.database_url or ""
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            row = conn.execute("SHOW data_directory").fetchone()
        assert row is not None
        data_dir = Path(row[0])
        assert (data_dir / "pg_wal").is_dir()
        hits += files_containing(data_dir, needles)
    else:
        home = world.settings.home
        assert list(home.glob("*-wal")), "expected SQLite WAL files to scan"
        hits += files_containing(home, needles)
    assert hits == []


@pytest.mark.regression("repr of a batch's pending state held plaintext and raw case keys")
def test_the_batch_state_and_its_plans_never_show_plaintext_or_keys_in_repr(world: World) -> None:
    import json

    from ledger.services.lookups import BatchLookups

    mark = markers()
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case(payload={"identity": {"name": mark["identity"]}})
    body = ngo.body("service.delivered", case_id, {"referral_id": None},
                    {"component": "housing"}, {"notes": mark["notes"]})  # fmt: skip
    principal = world.ledger.authenticate(ngo.tokens["caseworker"])
    sub = world.ledger.parse(json.dumps(body).encode())
    pending = world.ledger.ingest._look_up([(principal, sub)])  # type: ignore[list-item]
    plan = world.ledger.ingest._decide(principal, sub, pending)  # type: ignore[arg-type]
    pending.add(0, principal, plan)  # type: ignore[arg-type]
    key = world.ledger.keys.get(case_id)
    assert isinstance(pending, BatchLookups) and key is not None
    for text in (repr(pending), str(pending), repr(plan), repr(sub)):
        assert mark["notes"] not in text and mark["identity"] not in text
        assert repr(key) not in text and key.hex() not in text
