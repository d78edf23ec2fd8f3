"""Consent receipts for survivors, on both backends: the signed record verifies and a tampered
one fails, the printout is safe to carry in the consent's language, the code is stable and
staff can look it up, and the endpoints follow the consent register's access rules."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.cli import app as cli
from ledger.deploy import KeyPaths
from ledger.interop.consent_receipt import (
    SECTIONS,
    ConsentReceiptError,
    receipt_record,
    sign_receipt,
    verify_consent_receipt,
)
from ledger.interop.printout import render_html, render_pdf
from ledger.interop.record import ConsentEvent, ConsentRecord
from tests.conftest import World
from tests.test_audit import run_audit
from tests.test_erasure import erase, receipt_key

RISKY = ("prosecution", "health", "immigration", "legal_", "trafficking", "salud", "fiscal")


def receipt_url(case_id: str, consent_id: str) -> str:
    return f"/v1/cases/{case_id}/consents/{consent_id}/receipt"


def scenario(world: World) -> tuple[str, str]:
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    case_id = ngo.open_case()
    consent = ngo.grant(
        case_id,
        ["clinic"],
        purposes=["referral", "data_sharing", "prosecution"],
        categories=["identity", "health", "immigration"],
        expires_at="2030-01-01T00:00:00Z",
    )
    assert ngo.share(case_id, "clinic", consent, ["health"]).status_code == 201  # clinic reads
    return case_id, consent


def test_consent_receipt_verifies_and_tampering_fails(world: World) -> None:
    case_id, consent = scenario(world)
    ngo = world.agencies["ngo-a"]
    size = world.ledger.store.log_size()
    r = world.http.get(receipt_url(case_id, consent), headers=ngo.auth())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert world.ledger.store.log_size() == size + 1  # attrs were unsealed: an access entry
    record = verify_consent_receipt(r.text, receipt_key(world))
    assert set(record) == set(SECTIONS)
    header = record["record_header"]
    assert (header["case_id"], header["consent_id"]) == (case_id, consent)
    assert header["state"] == "active" and header["issued_for"] == "granted"
    assert header["notice"] == {"version": "2026-1", "language": "es", "interpreter": True}
    assert record["processing"]["purposes"] == ["referral", "data_sharing", "prosecution"]
    assert record["personal_data_categories"] == ["identity", "health", "immigration"]
    assert [p["role"] for p in record["parties"]] == ["controller", "recipient"]
    assert [e["type"] for e in record["events"]] == ["granted"]
    again = world.http.get(receipt_url(case_id, consent), headers=ngo.auth()).text
    assert again == r.text  # stable: same code, same bytes, on every fetch

    # The attacks: a changed purpose, a changed code, a signature by another key, a forged
    # re-encoding of the same record (not canonical).
    for tampered in (
        r.text.replace('"prosecution"', '"statistics"'),
        r.text.replace(header["receipt_code"], "AAAA-BBBB-CCCC"),
        sign_receipt(record, world.ledger.log.key),
    ):
        with pytest.raises(ConsentReceiptError):
            verify_consent_receipt(tampered, receipt_key(world))
    spaced = "ledger consent receipt v1\n" + json.dumps(record) + "\n"
    with pytest.raises(ConsentReceiptError, match="canonical"):
        verify_consent_receipt(sign_receipt_body(world, spaced), receipt_key(world))


def sign_receipt_body(world: World, body: str) -> str:
    from ledger.contract.notes import sign_note

    assert world.ledger.receipt_key is not None
    return sign_note(body, world.ledger.receipt_key)


def test_withdrawal_gets_its_own_receipt_with_both_events(world: World) -> None:
    case_id, consent = scenario(world)
    ngo = world.agencies["ngo-a"]
    first = world.http.get(receipt_url(case_id, consent), headers=ngo.auth()).text
    url = receipt_url(case_id, consent)
    none_yet = world.http.get(url + "?event=withdrawn", headers=ngo.auth())
    assert none_yet.status_code == 404
    ngo.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "survivor_request"})
    latest = world.http.get(receipt_url(case_id, consent), headers=ngo.auth()).text
    record = verify_consent_receipt(latest, receipt_key(world))
    assert record["record_header"]["state"] == "withdrawn"
    assert [e["type"] for e in record["events"]] == ["granted", "withdrawn"]
    assert record["events"][1]["reason"] == "survivor_request"
    granted = world.http.get(receipt_url(case_id, consent) + "?event=granted", headers=ngo.auth())
    assert granted.text == first  # the grant's receipt never changes
    codes = {e["receipt_code"] for e in record["events"]}
    assert len(codes) == 2 and case_id not in latest.split("\n")[0]


def test_cli_verifies_a_receipt_and_rejects_a_tampered_one(world: World, tmp_path: Path) -> None:
    case_id, consent = scenario(world)
    note = world.http.get(receipt_url(case_id, consent), headers=world.agencies["ngo-a"].auth())
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(note.text)
    bad.write_text(note.text.replace('"identity"', '"contact"'))
    key = str(KeyPaths(world.settings.keys).receipt_vkey)
    ok = CliRunner().invoke(cli, ["receipt", "verify", str(good), "--receipt-key", key])
    assert ok.exit_code == 0 and "verified: consent receipt" in ok.output
    failed = CliRunner().invoke(cli, ["receipt", "verify", str(bad), "--receipt-key", key])
    assert failed.exit_code == 1 and "FAILED" in failed.output


def test_printouts_are_safe_to_carry(world: World) -> None:
    case_id, consent = scenario(world)
    ngo = world.agencies["ngo-a"]
    record = verify_consent_receipt(
        world.http.get(receipt_url(case_id, consent), headers=ngo.auth()).text,
        receipt_key(world),
    )
    code = record["record_header"]["receipt_code"]
    html = world.http.get(receipt_url(case_id, consent) + "?format=html", headers=ngo.auth())
    pdf = world.http.get(receipt_url(case_id, consent) + "?format=pdf", headers=ngo.auth())
    assert html.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in html.headers["content-security-policy"]
    assert html.headers["cache-control"] == pdf.headers["cache-control"] == "no-store"
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    for text in (html.text, pdf.content.decode("latin-1")):
        assert code in text
        assert case_id not in text and consent not in text
        assert not [word for word in RISKY if word in text.lower()]
    assert "Comprobante de consentimiento" in html.text and 'lang="es"' in html.text
    # prosecution and immigration, in words safe to carry
    assert "<dd>servicios de apoyo, asistencia legal</dd>" in html.text
    assert "<dd>datos personales, información sobre los servicios recibidos," in html.text
    assert "2030-01-01" in html.text  # until when


def _record(language: str, name: str = "Clinic") -> tuple[ConsentRecord, ConsentEvent]:
    event = ConsentEvent("granted", "e1", 3, "2026-11-02T10:00:00Z", "ngo-a", "ABCD-EFGH-JKMN")
    record = ConsentRecord(
        origin="ledger.test/log", case_id="case-id-not-printed", consent_id="consent-id",
        purposes=("assistance", "prosecution"), recipients=("clinic",),
        categories=("health", "legal"), expires_at=None, given_by="survivor",
        child_assent=None, assent_exempt=False, minor=False, language=language,
        interpreter=False, notice_version="1", granted=event, withdrawn=None,
        withdrawal_reason=None, agency_names={"ngo-a": "NGO A", "clinic": name},
        subject="s",
    )  # fmt: skip
    return record, event


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("es-MX", ["Comprobante de consentimiento"]),
        ("en", ["Consent receipt"]),
        ("pt-BR", ["Comprovante de consentimento", "assistência jurídica"]),
        ("fr", ["Reçu de consentement", "assistance juridique"]),
        ("qu", ["Comprobante de consentimiento", "Consent receipt", "(qu)"]),
    ],
)
def test_printout_speaks_the_consents_language_or_falls_back(
    language: str, expected: list[str]
) -> None:
    record, event = _record(language)
    html = render_html(record, event)
    pdf = render_pdf(record, event).decode("latin-1")
    for phrase in expected:
        assert phrase in html
    assert ("Consent receipt" in html) == (language.startswith(("en", "qu")))
    assert ("not available in your language" in html) == (language == "qu")
    assert "case-id-not-printed" not in html + pdf and "ABCD-EFGH-JKMN" in pdf


def test_printout_escapes_what_it_prints() -> None:
    record, event = _record("en", name="<script>alert(1)</script>")
    html = render_html(record, event)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert receipt_record(dataclasses.replace(record), event)["parties"][1]["name"].startswith("<")


def test_receipt_endpoints_follow_the_consent_registers_rules(world: World) -> None:
    case_id, consent = scenario(world)
    ngo, clinic = world.agencies["ngo-a"], world.agencies["clinic"]
    legal, other = world.agency("legal"), world.agency("other")
    solo = ngo.grant(case_id, ["legal"])  # names legal only
    assert world.http.get(receipt_url(case_id, solo), headers=legal.auth()).status_code == 403
    assert ngo.share(case_id, "legal", solo).status_code == 201  # now legal may read something
    url = receipt_url(case_id, consent)
    assert world.http.get(url, headers=clinic.auth()).status_code == 200  # named, sent, counts
    assert world.http.get(receipt_url(case_id, solo), headers=clinic.auth()).status_code == 404
    assert world.http.get(url, headers=legal.auth()).status_code == 404  # not named in it
    assert world.http.get(url, headers=other.auth()).status_code == 404  # unrelated
    auditor = {"Authorization": f"Bearer {world.token('auditor')}"}
    assert world.http.get(url, headers=auditor).status_code == 403
    ngo.ok("consent.withdrawn", case_id, {"consent_id": solo}, {"reason": "other"})
    assert world.http.get(receipt_url(case_id, solo), headers=legal.auth()).status_code == 403
    report = run_audit(world)  # the access entries of these reads pass the audit's rules
    assert report.ok, [str(f) for f in report.failures]
    assert world.http.get(url + "?format=doc", headers=ngo.auth()).status_code == 400
    assert erase(world, case_id).status_code == 201
    assert world.http.get(url, headers=ngo.auth()).status_code == 410
    assert world.http.get(url, headers=other.auth()).status_code == 404


def test_staff_look_up_a_printed_code_and_erasure_kills_it(world: World, tmp_path: Path) -> None:
    case_id, consent = scenario(world)
    ngo, clinic, other = world.agencies["ngo-a"], world.agencies["clinic"], world.agency("other")
    note = world.http.get(receipt_url(case_id, consent), headers=ngo.auth()).text
    code = verify_consent_receipt(note, receipt_key(world))["record_header"]["receipt_code"]
    typed = code.lower().replace("-", " ")
    found = world.http.get(f"/v1/consent-receipts/{typed}", headers=ngo.auth())
    assert found.json() == {"case_id": case_id, "consent_id": consent, "event": "granted"}
    assert world.http.get(f"/v1/consent-receipts/{code}", headers=clinic.auth()).status_code == 200
    assert world.http.get(f"/v1/consent-receipts/{code}", headers=other.auth()).status_code == 404
    ngo.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "other"})
    assert world.http.get(f"/v1/consent-receipts/{code}", headers=clinic.auth()).status_code == 404
    assert world.http.get(f"/v1/consent-receipts/{code}", headers=ngo.auth()).status_code == 200
    # The withdrawal's own receipt has a code of its own, found as the withdrawal.
    url = receipt_url(case_id, consent) + "?event=withdrawn"
    note = world.http.get(url, headers=ngo.auth()).text
    withdrawn = verify_consent_receipt(note, receipt_key(world))["record_header"]["receipt_code"]
    assert withdrawn != code
    found = world.http.get(f"/v1/consent-receipts/{withdrawn}", headers=ngo.auth())
    assert found.json() == {"case_id": case_id, "consent_id": consent, "event": "withdrawn"}
    erased = erase(world, case_id)
    assert erased.status_code == 201
    for printed in (code, withdrawn):
        gone = world.http.get(f"/v1/consent-receipts/{printed}", headers=ngo.auth())
        assert gone.status_code == 404
    # the same command checks the erasure receipt the survivor is given then
    (tmp_path / "erasure.txt").write_text(erased.json()["receipt"])
    key = str(KeyPaths(world.settings.keys).receipt_vkey)
    args = ["receipt", "verify", str(tmp_path / "erasure.txt"), "--receipt-key", key]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and "erasure receipt" in result.output


def test_a_code_printed_a_moment_ago_is_found_while_a_worker_runs_the_projections(
    world: World,
) -> None:
    """With the projections left to a separate worker (PostgreSQL deployments), a consent
    recorded a moment ago, not yet projected, is found by the code just printed: codes are
    indexed as they are printed, not by a read model."""
    world.models.inline = False  # as in a deployment with `ledger worker`
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    case_id = ngo.open_case()
    world.models.runner.catch_up()  # the worker has seen the case, not the consent yet
    consent = ngo.grant(case_id, ["clinic"])
    note = world.http.get(receipt_url(case_id, consent), headers=ngo.auth()).text
    code = verify_consent_receipt(note, receipt_key(world))["record_header"]["receipt_code"]
    found = world.http.get(f"/v1/consent-receipts/{code}", headers=ngo.auth())
    assert found.status_code == 200, found.text
    assert found.json() == {"case_id": case_id, "consent_id": consent, "event": "granted"}


@pytest.mark.regression("the receipt-code look-up unwrapped every key of the agency's cases")
def test_a_code_look_up_is_one_indexed_read_whatever_the_number_of_cases(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ngo = world.agency("ngo-a")
    world.agency("clinic")
    cases = [ngo.open_case() for _ in range(20)]
    consents = [ngo.grant(case_id, ["clinic"]) for case_id in cases]
    notes = [world.http.get(receipt_url(c, k), headers=ngo.auth()).text
             for c, k in zip(cases, consents, strict=True)]  # fmt: skip
    code = verify_consent_receipt(notes[7], receipt_key(world))["record_header"]["receipt_code"]
    unwrapped: list[int] = []
    keys = world.ledger.keys
    for name in ("get", "get_many"):
        real = getattr(keys, name)
        monkeypatch.setattr(keys, name, lambda *a, _real=real, **kw: (
            unwrapped.append(1), _real(*a, **kw))[1])  # fmt: skip
    found = world.http.get(f"/v1/consent-receipts/{code}", headers=ngo.auth())
    assert found.json()["case_id"] == cases[7]
    assert unwrapped == []  # no case key unwrapped: the code is found by its index
    never = world.http.get("/v1/consent-receipts/ABCD-EFGH-JKMN", headers=ngo.auth())
    assert never.status_code == 404 and unwrapped == []
    # The index holds MACs of codes, never a code: a dump does not lead from paper to case.
    with world.ledger.store._read() as cur:  # type: ignore[attr-defined]
        cur.execute(world.ledger.store.sql("SELECT code_mac FROM {s}receipt_codes"))  # type: ignore[attr-defined]
        macs = [bytes(r["code_mac"]) for r in cur.fetchall()]
    assert len(macs) == 20 and all(code.encode() not in m for m in macs)
