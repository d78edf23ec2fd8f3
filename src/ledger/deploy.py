"""Set up and open a deployment: key material, stores, origin and the admin token."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.contract import crypto
from ledger.ledger import Ledger
from ledger.log.watermark import RolledBack, Watermark
from ledger.private_files import write_secret
from ledger.services import releases
from ledger.services.keystore import KeyStore, create_kek
from ledger.services.outbound import OutboundPolicy
from ledger.services.tokens import hash_token
from ledger.settings import Settings
from ledger.storage import open_store

if TYPE_CHECKING:
    from ledger.concurrency import Background
    from ledger.services.cosigning import Witness
    from ledger.services.readmodels import ReadModels

DEFAULT_ORIGIN = "ledger.localhost/log"


def key_paths(settings: Settings) -> KeyPaths:
    """The deployment's key files, the KEK where the settings put it."""
    return KeyPaths(settings.keys, settings.kek_file)


@dataclass(frozen=True)
class KeyPaths:
    root: Path
    kek_file: Path | None = None  # LEDGER_KEK_FILE: the KEK elsewhere than among the keys

    @property
    def kek(self) -> Path:
        return self.kek_file or self.root / "kek.key"

    @property
    def log_key(self) -> Path:
        return self.root / "log.key"

    @property
    def log_vkey(self) -> Path:
        return self.root / "log.vkey"

    @property
    def receipt_key(self) -> Path:
        return self.root / "receipt.key"

    @property
    def receipt_vkey(self) -> Path:
        return self.root / "receipt.vkey"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin.token"

    @property
    def watermark(self) -> Path:
        """The newest checkpoint signed (`log/watermark.py`): never in a backup."""
        return self.root / "latest-checkpoint"


class NoDeployment(Exception):
    """No initialised deployment where the settings point (`missing` names what is not there)."""

    def __init__(self, where: Path, missing: str) -> None:
        super().__init__(f"no deployment at {where} (no {missing}): check LEDGER_KEYS, LEDGER_HOME")
        self.where, self.missing = where, missing


def _signing_key(private: Path, public: Path, name: str) -> crypto.SigningKey:
    """Load a signer key file, creating it (0600) and its verifier key line if missing."""
    if private.exists():
        key = crypto.parse_signing_key(private.read_text())
    else:
        key = crypto.generate_signing_key(name)
        write_secret(private, (key.line() + "\n").encode())
    if not public.exists():
        public.write_text(key.verify_key.line() + "\n")
    return key


def init(settings: Settings, origin: str | None = None) -> str:
    """Idempotent: key material, stores, the log origin and an admin token. Returns the origin."""
    paths = key_paths(settings)
    settings.keys.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.keys, 0o700)
    if not settings.is_postgres:
        settings.home.mkdir(parents=True, exist_ok=True)
    paths.kek.parent.mkdir(parents=True, exist_ok=True)  # LEDGER_KEK_FILE's own folder
    create_kek(paths.kek)
    store, table = open_store(settings)
    try:
        store.setup()
        table.setup()
        current = store.get_meta("origin")
        if current is not None and origin is not None and origin != current:
            raise SystemExit(f"this ledger's origin is already {current!r}; it cannot change")
        chosen = current or origin or DEFAULT_ORIGIN
        if not chosen or any(ch.isspace() or ch == "+" for ch in chosen):
            raise SystemExit("the origin must be non-empty, without spaces or '+'")
        store.set_meta("origin", chosen)
        log_key = _signing_key(paths.log_key, paths.log_vkey, chosen)
        _signing_key(paths.receipt_key, paths.receipt_vkey, chosen + "/receipts")
        ledger = Ledger(store, KeyStore(table, paths.kek), log_key)
        existing = paths.admin_token.read_text().strip() if paths.admin_token.exists() else None
        if existing is None or store.token_by_hash(hash_token(existing)) is None:
            secret, _ = ledger.issue_token("admin", None, "initial admin")
            if paths.admin_token.exists():
                paths.admin_token.unlink()
            write_secret(paths.admin_token, (secret + "\n").encode())
        return chosen
    finally:
        store.close()
        table.close()


def open_ledger(settings: Settings, *, rollback_ok: bool = False) -> Ledger:
    """Open an initialised deployment; RolledBack if its log does not extend the newest
    checkpoint it signed (unless `rollback_ok`: `ledger restore` accepting one)."""
    paths = key_paths(settings)
    if not paths.kek.exists():
        raise NoDeployment(settings.keys, paths.kek.name)
    if not settings.is_postgres and not (settings.home / "ledger.db").exists():
        raise NoDeployment(settings.home, "ledger.db")
    store, table = open_store(settings)
    log_key = crypto.parse_signing_key(paths.log_key.read_text())
    receipt_key = crypto.parse_signing_key(paths.receipt_key.read_text())
    ledger = Ledger(
        store,
        KeyStore(table, paths.kek),
        log_key,
        receipt_key,
        freshness_s=settings.freshness_s,
        outbound=outbound_policy(settings),
    )
    watermark = Watermark(paths.watermark)
    try:
        if not rollback_ok:
            watermark.check(ledger.log)
    except RolledBack:
        store.close()
        table.close()
        raise
    ledger.log.on_signed(lambda: _remember(watermark, ledger))
    ledger.recover()
    return ledger


def check(settings: Settings) -> None:
    """What `ledger serve` checks before it starts: a deployment is there, and its log
    extends the newest checkpoint it signed (NoDeployment, RolledBack)."""
    ledger = open_ledger(settings)
    ledger.store.close()
    ledger.keys.table.close()


def _remember(watermark: Watermark, ledger: Ledger) -> None:
    """After each checkpoint signed; a keys folder that cannot be written is logged, and
    stops neither the signer nor the callbacks after this one (the witnesses' cosigner)."""
    latest = ledger.store.latest_checkpoint()
    try:
        if latest is not None:
            watermark.remember(latest)
    except OSError as exc:
        logging.getLogger("ledger.log").error(
            "cannot keep the latest checkpoint in %s (%s): a restore could not tell a rollback",
            watermark.path,
            exc.strerror,
        )


def outbound_policy(settings: Settings) -> OutboundPolicy:
    """What webhooks may reach (`services/outbound.py`), from the settings."""
    return OutboundPolicy(
        allow_http_loopback=settings.webhook_allow_http_loopback,
        allowed_networks=tuple(settings.webhook_allowed_networks),
        connect_timeout_s=settings.webhook_connect_timeout_s,
        read_timeout_s=settings.webhook_read_timeout_s,
    )


def notice_loops(settings: Settings, ledger: Ledger) -> list[Background]:
    """The loops that tell agencies: webhook delivery, and the time-based notices."""
    from ledger.services.delivery import Deliverer, Retries
    from ledger.services.notices import TimerLoop

    retries = Retries(
        period_s=settings.webhook_retry_period_s,
        base_s=settings.webhook_retry_base_s,
        max_s=settings.webhook_retry_max_s,
        lease_s=settings.webhook_lease_s,
    )
    deliverer = Deliverer(
        ledger.store,
        ledger.webhook_secrets,
        outbound_policy(settings),
        ledger.origin,
        retries=retries,
        concurrency=settings.webhook_concurrency,
        poll_s=settings.webhook_poll_s,
    )
    return [deliverer, TimerLoop(ledger.timers, settings.timers_interval_s)]


def witnesses(settings: Settings) -> list[Witness]:
    """The ledger's witnesses, from the settings (a key that is not a cosignature/v1 verifier
    key line stops the server at start-up, naming the witness)."""
    from ledger.services.cosigning import Witness

    out = []
    for w in settings.witnesses:
        try:
            key = crypto.parse_verify_key(w.key, crypto.COSIGNATURE_TYPE)
        except crypto.BadKeyLine as exc:
            raise SystemExit(f"witness {w.name}: {exc} (LEDGER_WITNESSES)") from exc
        out.append(Witness(w.name, key, w.url))
    return out


def witness_loops(settings: Settings, ledger: Ledger) -> list[Background]:
    """The cosigner, when the ledger has witnesses: it runs in every API process (a lease per
    witness keeps it to one at a time), woken by the checkpoints that process signs."""
    from ledger.services.cosigning import Cosigner

    listed = witnesses(settings)
    if not listed:
        return []
    return [
        Cosigner(
            ledger.store,
            ledger.log,
            listed,
            timeout_s=settings.witness_timeout_s,
            retry_max_s=settings.witness_retry_max_s,
        )
    ]


def open_readmodels(settings: Settings, ledger: Ledger) -> ReadModels:
    """The read models beside an open ledger; projections set up, not yet caught up."""
    from ledger.services.readmodels import ReadModels
    from ledger.storage import open_views
    from projections import all_projections
    from projections.runner import ProjectionRunner

    views = open_views(settings)
    runner = ProjectionRunner(ledger.store, views, all_projections(), schema=releases.SCHEMA)
    runner.setup()
    return ReadModels(ledger.access, views, runner, inline=settings.projections_in_api)
