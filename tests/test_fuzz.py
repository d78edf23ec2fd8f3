"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis), as an
admin and as a caseworker (issue 7): no 5xx; every answer conforms to the schema (its status
is documented, its content type is the declared one, its body and headers match the declared
schemas); and a refused request (4xx) leaves no stored trace: every table of the ledger, the
key store and the read models is byte for byte what it was before it. Bounded and seeded in
`make test`; `make fuzz` runs the same with many more examples. Both backends: a refused
request must leave no trace in PostgreSQL either."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import schemathesis
from hypothesis import HealthCheck, given, settings
from psycopg import sql
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core import NOT_SET

from ledger.contract import crypto
from ledger.interop.consent_receipt import verify_consent_receipt
from tests.conftest import World
from tests.test_erasure import receipt_key

EXAMPLES = int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "10"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Signed checkpoints are written by a background thread on its own schedule, whatever the
# requests; nothing a request sends reaches them.
NOT_A_TRACE = frozenset({"checkpoints"})


class SQLiteState:
    """A digest of every row of every table in every database of the deployment, recomputed
    only when a database has seen a commit since the last one (SQLite's data_version)."""

    def __init__(self, world: World) -> None:
        self.world = world
        paths = [*world.settings.home.glob("*.db"), *world.settings.keys.glob("*.db")]
        self.connections = {
            path.name: sqlite3.connect(f"file:{path}?mode=ro", uri=True) for path in sorted(paths)
        }
        assert len(self.connections) == 3, sorted(self.connections)  # ledger, keys, views
        self.versions: dict[str, int] = {}
        self.digests: dict[str, str] = {}

    def __call__(self) -> dict[str, str]:
        self.world.models.runner.catch_up()  # views current: only a request may change them
        for name, conn in self.connections.items():
            (version,) = conn.execute("PRAGMA data_version").fetchone()
            if self.versions.get(name) == version:
                continue
            self.versions[name] = version
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            for (table,) in tables.fetchall():
                if table in NOT_A_TRACE:
                    continue
                digest = hashlib.sha256()
                for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY 1'):  # noqa: S608
                    digest.update(repr(row).encode())
                self.digests[f"{name}:{table}"] = digest.hexdigest()
        return dict(self.digests)

    def close(self) -> None:
        for conn in self.connections.values():
            conn.close()


class PostgresState:
    """A digest of every table of the deployment's three schemas (the ledger's, its keys',
    its read models'), each computed by PostgreSQL in one query for all tables."""

    def __init__(self, world: World) -> None:
        self.world = world
        url = world.settings.database_url
        assert url is not None
        self.conn = psycopg.connect(url, autocommit=True)
        base = world.settings.pg_schema
        schemas = [base, f"{base}_keys", f"{base}_views"]
        rows = self.conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY(%s) ORDER BY 1, 2",
            (schemas,),
        ).fetchall()
        assert {schema for schema, _ in rows} == set(schemas), rows
        parts = [
            sql.SQL(
                "SELECT {name}, md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
                " FROM {table} AS t"
            ).format(name=sql.Literal(f"{schema}:{table}"), table=sql.Identifier(schema, table))
            for schema, table in rows
            if table not in NOT_A_TRACE
        ]
        self.query = sql.SQL(" UNION ALL ").join(parts)
        self.digests: dict[str, str] = {}

    def __call__(self) -> dict[str, str]:
        self.world.models.runner.catch_up()  # views current: only a request may change them
        self.digests = dict(self.conn.execute(self.query).fetchall())
        return dict(self.digests)

    def close(self) -> None:
        self.conn.close()


def stored_state(world: World) -> SQLiteState | PostgresState:
    return PostgresState(world) if world.settings.is_postgres else SQLiteState(world)


def no_store(response: Any) -> None:
    """Every /v1 answer tells caches to keep nothing (issue 15, item 13)."""
    assert response.headers.get("cache-control") == ["no-store"], response.headers


def test_no_generated_request_fails_breaks_the_schema_or_leaves_a_trace(world: World) -> None:
    ngo = world.agency("fuzz-ngo")
    state = stored_state(world)
    before = state()
    ngo.open_case()
    assert state() != before  # the digests do see a commit
    world.http.app.state.rate_limiter.rate = 0  # type: ignore[attr-defined]
    tokens = [world.admin, ngo.tokens["caseworker"]]
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.http.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    refused = []

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            for token in tokens:
                before = state()
                response = case.call(headers={"Authorization": f"Bearer {token}"})
                case.validate_response(response, checks=CHECKS)
                no_store(response)
                if 400 <= response.status_code < 500:
                    refused.append(response.status_code)
                    after = state()
                    changed = sorted(name for name in after if after[name] != before.get(name))
                    assert not changed, (
                        f"{case.method} {case.formatted_path} refused with "
                        f"{response.status_code} but changed {changed}"
                    )

        fuzz()
    state.close()
    assert len(refused) >= len(operations)  # the trace check did run
    assert len(state.digests) >= 15


RECEIPT = "/v1/cases/{case_id}/consents/{consent_id}/receipt"
FHIR = "/v1/cases/{case_id}/consents/{consent_id}/fhir"
RECEIPT_TYPES = {"note": "text/plain", "html": "text/html", "pdf": "application/pdf"}


def test_answers_with_real_data_match_the_schema(world: World) -> None:
    """Generated ids rarely name anything, so the success answers are checked here too, on
    real data: every operation's 2xx answer, as the caller it is for."""
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    case_id = ngo.open_case(payload={"identity": {"name": "A"}})
    consent = ngo.grant(case_id, ["clinic"])
    assert ngo.share(case_id, "clinic", consent).status_code == 201
    referral = str(uuid.uuid4())
    ngo.ok(
        "referral.made",
        case_id,
        {"referral_id": referral, "to": "clinic", "consent_id": consent, "categories": ["health"]},
        {"component": "health_psychosocial", "due_by": "2026-01-01T00:00:00Z", "urgency": "urgent"},
    )
    assert clinic.read(case_id).status_code == 200
    receipt = f"/v1/cases/{case_id}/consents/{consent}/receipt"
    note = world.http.get(receipt, headers=ngo.auth())
    assert note.status_code == 200, note.text
    code = verify_consent_receipt(note.text, receipt_key(world))["record_header"]["receipt_code"]
    erased = ngo.open_case()
    request = ngo.ok("erasure.requested", erased, {}, {"reason": "legal_order"}, role="supervisor")
    body = ngo.body("case.erased", erased, {"request_event_id": request["event_id"]}, {})
    second = {"Authorization": f"Bearer {world.token('supervisor', 'ngo-a')}"}
    assert world.http.post("/v1/events", json=body, headers=second).status_code == 201
    ngo.ok("erasure.requested", case_id, {}, {"reason": "survivor_request"}, role="supervisor")
    world.http.app.state.rate_limiter.rate = 0  # type: ignore[attr-defined]
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.http.app)
    monitor, auditor = world.token("monitor"), world.token("auditor")
    size = world.ledger.store.log_size()
    period = (world.clock.now.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    new_key = crypto.generate_signing_key("clinic")
    key_body = clinic.key_change(new_key)
    spare = world.agency("spare")
    clinic.auth("supervisor")
    hooks = "/v1/agencies/clinic/webhooks"
    webhook = {"body": {"url": "https://93.184.216.34/hooks"}, "agency_id": "clinic"}
    made = world.http.post(hooks, json=webhook["body"], headers=clinic.auth("supervisor"))
    hook_id = made.json()["id"]
    spare_token = world.http.post(
        "/v1/tokens", headers=world.admin_auth, json={"role": "auditor", "label": "x"}
    ).json()["id"]
    ids = {"case_id": case_id, "consent_id": consent}
    event = ngo.body("service.delivered", case_id, {"referral_id": None}, {"component": "housing"})
    calls: list[tuple[str, str, str, dict[str, Any]]] = [
        ("GET", "/v1/health", world.admin, {}),
        ("POST", "/v1/events", ngo.tokens["caseworker"], {"body": event}),
        ("POST", "/v1/events", ngo.tokens["caseworker"], {"body": event}),  # a retry: 200
        ("POST", "/v1/events:batch", ngo.tokens["caseworker"], {"body": {"events": [event]}}),
        ("GET", "/v1/cases", ngo.tokens["caseworker"], {}),
        ("GET", "/v1/cases", clinic.tokens["caseworker"], {}),
        ("GET", "/v1/erasure-requests", ngo.tokens["supervisor"], {}),  # one pending
        ("GET", "/v1/cases/{case_id}", ngo.tokens["caseworker"], {"case_id": case_id}),
        ("GET", "/v1/cases/{case_id}", clinic.tokens["caseworker"], {"case_id": case_id}),
        ("GET", "/v1/cases/{case_id}/consents", ngo.tokens["caseworker"], {"case_id": case_id}),
        ("GET", "/v1/cases/{case_id}/consents", clinic.tokens["caseworker"], {"case_id": case_id}),
        ("GET", "/v1/cases/{case_id}/disclosures", ngo.tokens["caseworker"], {"case_id": case_id}),
        ("GET", "/v1/cases/{case_id}/notices", ngo.tokens["caseworker"], {"case_id": case_id}),
        ("GET", "/v1/notices", clinic.tokens["caseworker"], {"query": {"after": 0}}),
        ("GET", "/v1/agencies", clinic.tokens["caseworker"], {}),
        ("GET", "/v1/tokens/self", clinic.tokens["caseworker"], {}),
        ("GET", "/v1/tokens", world.admin, {}),
        *[
            ("GET", RECEIPT, token, {**ids, "query": {"format": fmt}})
            for fmt in ("note", "html", "pdf")
            for token in (ngo.tokens["caseworker"], clinic.tokens["caseworker"])
        ],
        ("GET", RECEIPT, ngo.tokens["caseworker"], {**ids, "query": {"event": "granted"}}),
        ("GET", FHIR, ngo.tokens["caseworker"], ids),
        ("GET", FHIR, clinic.tokens["caseworker"], ids),
        ("GET", "/v1/consent-receipts/{code}", ngo.tokens["caseworker"], {"code": code}),
        ("GET", "/v1/consent-receipts/{code}", clinic.tokens["caseworker"], {"code": code}),
        ("GET", "/v1/cases/{case_id}/erasure-receipt", world.admin, {"case_id": erased}),
        ("GET", "/v1/cases/{case_id}", ngo.tokens["caseworker"], {"case_id": erased}),  # 410
        ("GET", "/v1/referrals", ngo.tokens["caseworker"], {}),
        ("GET", "/v1/referrals", clinic.tokens["caseworker"], {}),
        ("POST", "/v1/stats/releases", monitor, {"body": {"period": period}}),
        ("POST", "/v1/stats/releases", monitor, {"body": {"period": period}}),  # again: 200
        ("GET", "/v1/stats/releases/{period}", monitor, {"period": period}),
        ("GET", "/v1/stats/releases", monitor, {}),
        ("POST", "/v1/stats/htcds", monitor, {"body": {"year": world.clock.now.year - 1}}),
        ("GET", "/v1/log/checkpoint", auditor, {}),
        ("GET", "/v1/log/key", auditor, {}),
        ("GET", "/v1/log/entries", auditor, {"query": {"start": 0, "end": size}}),
        ("GET", "/v1/log/proof/inclusion", auditor, {"query": {"index": 1, "size": size}}),
        ("GET", "/v1/log/proof/consistency", auditor, {"query": {"from": 2, "to": size}}),
        (
            "POST",
            "/v1/agencies",
            world.admin,
            {
                "body": {
                    "id": "new",
                    "name": "N",
                    "type": "ngo",
                    "verify_key": crypto.generate_signing_key("new").verify_key.line(),
                }
            },
        ),
        (
            "POST",
            "/v1/agencies/{agency_id}/keys",
            world.admin,
            {"agency_id": "clinic", "body": key_body},
        ),
        (
            "POST",
            "/v1/agencies/{agency_id}/keys/{key_id}/revoke",
            world.admin,
            {
                "agency_id": "clinic",
                "key_id": new_key.verify_key.key_id,
                "body": {"compromised_since": None},
            },
        ),
        ("DELETE", "/v1/agencies/{agency_id}", world.admin, {"agency_id": spare.id}),
        ("POST", "/v1/tokens", world.admin, {"body": {"role": "monitor", "label": "m"}}),
        ("DELETE", "/v1/tokens/{token_id}", world.admin, {"token_id": spare_token}),
        ("POST", "/v1/agencies/{agency_id}/webhooks", clinic.tokens["supervisor"], webhook),
        ("GET", "/v1/agencies/{agency_id}/webhooks", clinic.tokens["supervisor"],
         {"agency_id": "clinic"}),
        ("GET", "/v1/agencies/{agency_id}/indicators", clinic.tokens["supervisor"],
         {"agency_id": "clinic"}),
        ("POST", "/v1/agencies/{agency_id}/webhooks/{hook_id}/rotate-secret",
         clinic.tokens["supervisor"], {"agency_id": "clinic", "hook_id": hook_id}),
        ("GET", "/v1/agencies/{agency_id}/webhooks/{hook_id}/dead-letters",
         clinic.tokens["supervisor"], {"agency_id": "clinic", "hook_id": hook_id}),
        ("DELETE", "/v1/agencies/{agency_id}/webhooks/{hook_id}", clinic.tokens["supervisor"],
         {"agency_id": "clinic", "hook_id": hook_id}),
    ]  # fmt: skip
    statuses = []
    for method, path, token, spec in calls:
        params = {k: v for k, v in spec.items() if k not in ("body", "query")}
        case = schema[path][method].Case(
            path_parameters=params or None,
            query=spec.get("query"),
            body=spec.get("body", NOT_SET),
            media_type="application/json" if "body" in spec else None,
        )
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        case.validate_response(response, checks=CHECKS)
        no_store(response)
        statuses.append(response.status_code)
        if path == RECEIPT:  # each format in its own declared type, not merely a declared one
            fmt = spec.get("query", {}).get("format", "note")
            (media_type,) = response.headers["content-type"]
            assert media_type.startswith(RECEIPT_TYPES[fmt]), (fmt, media_type)
    assert statuses.count(410) == 1 and 500 not in statuses
    assert all(s < 300 for s in statuses if s != 410), statuses
    covered = {(method, path) for method, path, _, _ in calls}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert covered == {(op.method.upper(), op.path) for op in operations}
    declared = {
        path: set(schema[path]["GET"].definition.raw["responses"]["200"]["content"])
        for path in (RECEIPT, FHIR)
    }
    assert declared == {RECEIPT: set(RECEIPT_TYPES.values()), FHIR: {"application/fhir+json"}}
