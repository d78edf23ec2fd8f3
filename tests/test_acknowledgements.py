"""`notice.acknowledged`: the agencies a withdrawal or an erasure told confirm, in the log,
what they did; nobody else can (403 at submission, flagged by the audit when injected), each
once; the holder sees per recipient told / delivered / acknowledged, also once the case is
erased; `audit verify` lists the notices still unacknowledged after N days."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from ledger import audit
from ledger.cli import app as cli
from tests.conftest import Agency, World
from tests.test_audit import inject_event, run_audit
from tests.test_client_verification import cli_env
from tests.test_erasure import erase
from tests.test_readmodels import refer


def ack(agency: Agency, case_id: str, position: int, kind: str, action: str = "deleted",
        legal_basis: str | None = None) -> Any:  # fmt: skip
    facts = {"position": position, "kind": kind, "action": action, "legal_basis": legal_basis}
    return agency.submit("notice.acknowledged", case_id, facts, {})


def scenario(world: World) -> tuple[str, int]:
    """ngo-a holds a case; clinic was referred and accepted, legal sent data, school only
    named; then the consent is withdrawn. Returns the case and the withdrawal's position."""
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    world.agency("legal")
    world.agency("school")
    case_id = ngo.open_case()
    consent = ngo.grant(case_id, ["clinic", "legal", "school"])
    referral = refer(world, case_id, consent, "clinic", "housing")
    clinic.ok("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    assert ngo.share(case_id, "legal", consent).status_code == 201
    withdrawn = ngo.ok(
        "consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "survivor_request"}
    )
    return case_id, withdrawn["index"]


def notices_of(world: World, case_id: str) -> dict[str, Any]:
    r = world.http.get(f"/v1/cases/{case_id}/notices", headers=world.agencies["ngo-a"].auth())
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_only_the_agencies_told_acknowledge_and_each_once(world: World) -> None:
    case_id, withdrawal = scenario(world)
    a = world.agencies
    before = world.ledger.store.log_size()
    # Not told: the holder itself, an agency only named, a position that is no withdrawal.
    for agency, position in ((a["ngo-a"], withdrawal), (a["school"], withdrawal),
                             (a["clinic"], withdrawal - 1)):  # fmt: skip
        r = ack(agency, case_id, position, "consent.withdrawn")
        assert r.status_code == 403, r.text
        assert "was not told" in r.json()["message"]
    assert ack(a["clinic"], case_id, withdrawal, "case.erased").status_code == 403  # wrong kind
    # The facts must fit: a legal basis exactly when data is kept.
    legal = a["legal"]
    kept_without = ack(legal, case_id, withdrawal, "consent.withdrawn", "kept_legal_obligation")
    assert kept_without.status_code == 422
    deleted_with = ack(legal, case_id, withdrawal, "consent.withdrawn", "deleted", "court_order")
    assert deleted_with.status_code == 422
    assert world.ledger.store.log_size() == before  # every refusal left nothing
    assert ack(a["clinic"], case_id, withdrawal, "consent.withdrawn").status_code == 201
    again = ack(a["clinic"], case_id, withdrawal, "consent.withdrawn", "had_none")
    assert again.status_code == 409, again.text
    kept = ack(a["legal"], case_id, withdrawal, "consent.withdrawn", "kept_legal_obligation",
               "criminal_proceedings")  # fmt: skip
    assert kept.status_code == 201, kept.text
    shown = notices_of(world, case_id)
    withdrawals = {n["agency"]: n for n in shown["notices"] if n["kind"] == "consent.withdrawn"}
    assert withdrawals["clinic"]["acknowledged"] == "deleted"
    assert withdrawals["legal"]["acknowledged"] == "kept_legal_obligation"
    assert all(n["delivered_at"] is None for n in shown["notices"])  # no endpoint: the inbox
    by_agency = {r["agency"]: r for r in shown["recipients"]}
    assert by_agency["clinic"] == {"agency": "clinic", "told": 2, "delivered": 0,
                                   "acknowledged": 1, "awaiting": []}  # fmt: skip
    report = run_audit(world)
    assert report.ok, [str(f) for f in report.failures]
    assert report.unacknowledged == []


def test_an_erasure_is_acknowledged_on_the_erased_case_and_the_audit_lists_who_has_not(
    world: World,
) -> None:
    case_id, withdrawal = scenario(world)
    a = world.agencies
    assert ack(a["clinic"], case_id, withdrawal, "consent.withdrawn").status_code == 201
    erased = erase(world, case_id)
    assert erased.status_code == 201, erased.text
    position = erased.json()["index"]
    assert a["clinic"].read(case_id).status_code == 410  # the case is gone ...
    r = ack(a["clinic"], case_id, position, "case.erased")
    assert r.status_code == 201, r.text  # ... and still takes its recipients' answers
    assert ack(a["ngo-a"], case_id, position, "case.erased").status_code == 403  # it erased
    other = a["ngo-a"].submit("case.closed", case_id, {}, {"reason": "goals_met"})
    assert other.status_code == 410  # nothing else
    shown = notices_of(world, case_id)  # the holder's view of an erased case's notices
    by_agency = {r["agency"]: r for r in shown["recipients"]}
    assert by_agency["clinic"]["awaiting"] == []
    assert by_agency["legal"]["awaiting"] == [withdrawal, position]
    assert by_agency["school"]["awaiting"] == [position]  # named: told of the erasure only
    report = run_audit(world)
    assert report.ok, [str(f) for f in report.failures]
    assert report.unacknowledged == []  # told today: within the 7 days
    later = audit_at(world, datetime.now(UTC) + timedelta(days=8))
    assert [(u.agency, u.kind, u.position) for u in later.unacknowledged] == [
        ("legal", "consent.withdrawn", withdrawal),
        ("legal", "case.erased", position),
        ("school", "case.erased", position),
    ]


def audit_at(world: World, now: datetime) -> audit.AuditReport:
    from ledger.contract import crypto

    note = world.ledger.log.sign_checkpoint().note
    entries = [e for _, e in world.ledger.store.entries(0, audit.checkpoint_size(note))]
    log_key = crypto.parse_verify_key((world.settings.keys / "log.vkey").read_text())
    keys = {x.id: x.key.verify_key for x in world.agencies.values()}
    return audit.verify(note, entries, log_key, keys, None, now=now)


def test_an_acknowledgement_injected_for_an_agency_never_told_is_flagged(world: World) -> None:
    case_id, withdrawal = scenario(world)
    school = world.agencies["school"]
    facts = {"position": withdrawal, "kind": "consent.withdrawn", "action": "deleted",
             "legal_basis": None}  # fmt: skip
    body = school.body("notice.acknowledged", case_id, facts, {})
    injected = inject_event(world, body, "tok_school", "caseworker")
    twice = world.agencies["clinic"].body("notice.acknowledged", case_id, facts, {})
    world.agencies["clinic"].post(twice)  # accepted: clinic was told
    replay = world.agencies["clinic"].body("notice.acknowledged", case_id, facts, {})
    replayed = inject_event(world, replay, "tok_clinic", "caseworker")
    report = run_audit(world)
    found = {(f.position, f.check): f.message for f in report.failures}
    assert "which that consent.withdrawn did not tell" in found[injected, "acknowledgements"]
    assert "twice" in found[replayed, "acknowledgements"]


def test_audit_verify_lists_the_unacknowledged_notices_after_ack_days(
    world: World, tmp_path: Path
) -> None:
    case_id, withdrawal = scenario(world)
    assert (
        ack(world.agencies["clinic"], case_id, withdrawal, "consent.withdrawn").status_code == 201
    )
    note = world.ledger.log.sign_checkpoint().note
    size = world.ledger.store.log_size()
    bundle = tmp_path / "bundle.json"
    audit.write_bundle(bundle, note, [e for _, e in world.ledger.store.entries(0, size)])
    lines = "".join(a.key.verify_key.line() + "\n" for a in world.agencies.values())
    (tmp_path / "agency-keys").write_text(lines)
    args = ["audit", "verify", "--bundle", str(bundle),
            "--log-key", str(world.settings.keys / "log.vkey"),
            "--agency-keys", str(tmp_path / "agency-keys")]  # fmt: skip
    within = CliRunner().invoke(cli, args, env=cli_env(world.settings))
    assert within.exit_code == 0, within.output
    assert "unacknowledged" not in within.output  # told today: within the default 7 days
    late = CliRunner().invoke(cli, [*args, "--ack-days", "0"], env=cli_env(world.settings))
    assert late.exit_code == 0, late.output  # a finding to act on, not a broken log
    (line,) = [x for x in late.output.splitlines() if "unacknowledged" in x]
    assert f"position {withdrawal}: consent.withdrawn of case {case_id}, told to legal" in line
    report = CliRunner().invoke(
        cli, [*args, "--ack-days", "0", "--json"], env=cli_env(world.settings)
    )
    (missing,) = json.loads(report.output)["unacknowledged"]
    assert (missing["agency"], missing["position"]) == ("legal", withdrawal)
