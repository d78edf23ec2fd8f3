"""Fixtures: a real ledger on SQLite and on PostgreSQL, served through the real FastAPI app.

PostgreSQL comes from `LEDGER_TEST_DATABASE_URL` (set by `make test`, which starts a
throwaway server when none is reachable). Without it the PostgreSQL tests are skipped
locally and fail under `CI=true`.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from ledger.api.app import create_app
from ledger.contract import crypto
from ledger.contract.entries import key_change_message
from ledger.contract.envelope import build_submission
from ledger.contract.vocabulary import format_timestamp
from ledger.deploy import KeyPaths, init, open_ledger, open_readmodels
from ledger.ledger import Ledger
from ledger.services.readmodels import ReadModels
from ledger.settings import Settings

ORIGIN = "ledger.test/log"
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "vectors"
# The shared vectors beside the project when present, else the copy kept in tests/vectors.
VECTORS = _SHARED if _SHARED.is_dir() else Path(__file__).resolve().parent / "vectors"
BACKENDS = ["sqlite", "postgres"]


def postgres_url() -> str | None:
    url = os.environ.get("LEDGER_TEST_DATABASE_URL")
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true and LEDGER_TEST_DATABASE_URL is not set: run the suite via make test")
    return None


def require_postgres() -> str:
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL not configured (set LEDGER_TEST_DATABASE_URL or use make test)")
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at LEDGER_TEST_DATABASE_URL is not reachable: {exc}")
        pytest.skip("PostgreSQL not reachable")
    return url


def drop_schemas(url: str, schema: str) -> None:
    """A deployment's three schemas: the ledger's, its keys' and its read models'."""
    with psycopg.connect(url, autocommit=True) as conn:
        for suffix in ("", "_keys", "_views"):
            conn.execute(f"DROP SCHEMA IF EXISTS {schema}{suffix} CASCADE")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def deployment(backend: str, path: Path) -> Iterator[Settings]:
    """Settings for a fresh deployment on `backend` under `path` (a throwaway schema on
    PostgreSQL, dropped afterwards)."""
    if backend == "postgres":
        url = require_postgres()
        schema = f"t_{secrets.token_hex(6)}"
        yield Settings(home=path / "home", keys=path / "keys", database_url=url, pg_schema=schema)
        drop_schemas(url, schema)
    else:
        yield Settings(home=path / "home", keys=path / "keys", database_url=None)


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for a fresh deployment on the backend under test."""
    with deployment(backend, tmp_path) as fresh:
        yield fresh


class Clock:
    """A settable clock for the ledger (tests move time instead of sleeping)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Agency:
    """One agency in a test world: its key and one token per role."""

    world: World
    id: str
    key: crypto.SigningKey
    tokens: dict[str, str] = field(default_factory=dict)

    def body(
        self,
        type: str,
        case_id: str,
        facts: dict[str, Any],
        attrs: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        kw.setdefault("signed_at", self.world.clock.now)
        return build_submission(
            self.key,
            log=ORIGIN,
            case_id=case_id,
            type=type,
            facts=facts,
            attrs=attrs,
            payload=payload,
            **kw,
        )

    def post(self, body: dict[str, Any], role: str = "caseworker") -> Any:
        return self.world.http.post("/v1/events", json=body, headers=self.auth(role))

    def submit(
        self,
        type: str,
        case_id: str,
        facts: dict[str, Any],
        attrs: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
        role: str = "caseworker",
        **kw: Any,
    ) -> Any:
        return self.post(self.body(type, case_id, facts, attrs, payload, **kw), role)

    def ok(self, *args: Any, **kw: Any) -> dict[str, Any]:
        response = self.submit(*args, **kw)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def key_change(self, new: crypto.SigningKey) -> dict[str, Any]:
        """The body of POST /v1/agencies/{id}/keys adding `new`, signed by the current key
        and by `new` (ARCHITECTURE.md section 4)."""
        signed_at = format_timestamp(self.world.clock.now)
        message = key_change_message(ORIGIN, self.id, new.verify_key.line(), signed_at)
        signatures = [
            {
                "key": k.verify_key.key_id,
                "signed_at": signed_at,
                "signature": crypto.b64(crypto.sign(k, message)),
            }
            for k in (self.key, new)
        ]
        return {"verify_key": new.verify_key.line(), "signatures": signatures}

    def auth(self, role: str = "caseworker") -> dict[str, str]:
        if role not in self.tokens:
            self.tokens[role] = self.world.token(role, self.id)
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def read(self, case_id: str, role: str = "caseworker") -> Any:
        return self.world.http.get(f"/v1/cases/{case_id}", headers=self.auth(role))

    # -- scenario helpers --------------------------------------------------------------------

    def open_case(self, age_band: str = "adult", payload: dict[str, Any] | None = None) -> str:
        case_id = str(uuid.uuid4())
        self.ok(
            "case.opened",
            case_id,
            {"minor": age_band != "adult"},
            OPENED_ATTRS | {"age_band": age_band},
            payload,
        )
        return case_id

    def grant(self, case_id: str, recipients: list[str], **facts: Any) -> str:
        consent_id = str(uuid.uuid4())
        base = {
            "consent_id": consent_id,
            "purposes": ["referral", "data_sharing"],
            "recipients": recipients,
            "categories": ["identity", "health"],
            "expires_at": None,
            "given_by": "survivor",
            "child_assent": None,
            "assent_exempt": False,
        }
        self.ok("consent.granted", case_id, base | facts, CONSENT_ATTRS)
        return consent_id

    def share(
        self,
        case_id: str,
        recipient: str,
        consent_id: str,
        categories: list[str] | None = None,
        purpose: str = "data_sharing",
    ) -> Any:
        facts = {
            "share_id": str(uuid.uuid4()),
            "recipient": recipient,
            "consent_id": consent_id,
            "purpose": purpose,
            "categories": categories or ["identity"],
        }
        return self.submit("data.shared", case_id, facts, {})


OPENED_ATTRS = {
    "age_band": "adult",
    "gender": "female",
    "exploitation": ["labour"],
    "identified_at": "2026-11-01",
}
CONSENT_ATTRS = {"language": "es", "interpreter": True, "notice_version": "2026-1"}


@dataclass
class World:
    settings: Settings
    ledger: Ledger
    http: TestClient
    clock: Clock
    admin: str
    models: ReadModels
    agencies: dict[str, Agency] = field(default_factory=dict)

    @property
    def admin_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    def token(self, role: str, agency: str | None = None) -> str:
        r = self.http.post(
            "/v1/tokens",
            json={"agency": agency, "role": role, "label": f"{role} {secrets.token_hex(2)}"},
            headers=self.admin_auth,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def agency(self, agency_id: str) -> Agency:
        if agency_id not in self.agencies:
            key = crypto.generate_signing_key(agency_id)
            r = self.http.post(
                "/v1/agencies",
                headers=self.admin_auth,
                json={
                    "id": agency_id,
                    "name": agency_id.upper(),
                    "type": "ngo",
                    "verify_key": key.verify_key.line(),
                },
            )
            assert r.status_code == 201, r.text
            self.agencies[agency_id] = Agency(self, agency_id, key)
        return self.agencies[agency_id]


@contextmanager
def open_world(settings: Settings) -> Iterator[World]:
    """A fresh ledger served through the real app, with an admin token (`world` fixture;
    modules that build one scenario for many tests use it with a module-scoped deployment)."""
    init(settings, ORIGIN)
    ledger = open_ledger(settings)
    clock = Clock()
    ledger.clock = clock
    admin = KeyPaths(settings.keys).admin_token.read_text().strip()
    models = open_readmodels(settings, ledger)
    models.inline = True  # queries catch up first: tests read their writes on both backends
    try:
        with TestClient(
            create_app(ledger, models, follow=False, checkpoint_interval_s=0.2),
            raise_server_exceptions=False,
        ) as http:
            yield World(settings, ledger, http, clock, admin, models)
    finally:
        models.views.close()
        ledger.store.close()
        ledger.keys.table.close()


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    with open_world(settings) as fresh:
        yield fresh
