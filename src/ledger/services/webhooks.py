"""Webhook endpoints an agency's supervisor registers for the agency (`/v1/agencies/{id}/
webhooks`): the URL is checked against the outbound rules (`outbound.py`), a secret per
endpoint is made by the ledger, shown once, stored sealed under `keys/webhooks.key`, and
rotatable (the old secret still signs beside the new one for a day, so a receiver can switch
without losing a notice). Deliveries are signed per the Standard Webhooks specification."""

from __future__ import annotations

import base64
import contextlib
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook as Signer

from ledger.contract import crypto
from ledger.contract.vocabulary import format_timestamp
from ledger.errors import Forbidden, Invalid, NotFound
from ledger.services import paging
from ledger.services.keystore import create_kek, load_kek
from ledger.services.notices import epoch_ms
from ledger.services.outbound import OutboundPolicy, Refused
from ledger.services.paging import Page
from ledger.services.tokens import Principal
from ledger.storage.base import Store
from ledger.storage.outbox import Delivery, Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 (the Standard Webhooks spelling, not a secret)
ROTATION_OVERLAP = timedelta(hours=24)  # the old secret keeps signing this long
_DOMAIN = b"ledger-webhook-secret-v1\n"


class WebhookSecrets:
    """Endpoint secrets sealed at rest with a key file beside the key-encryption key."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            with contextlib.suppress(FileExistsError):  # another process made it first
                create_kek(path)
        self._key = load_kek(path)[1]

    def seal(self, hook_id: str, secret: bytes) -> bytes:
        return crypto.seal(self._key, secret, _DOMAIN + hook_id.encode())

    def unseal(self, hook_id: str, sealed: bytes) -> bytes:
        return crypto.unseal(self._key, sealed, _DOMAIN + hook_id.encode())

    def signers(self, hook: Webhook, now: datetime) -> list[Signer]:
        """The secrets that sign a delivery to the endpoint now: the current one, and the one
        before a rotation until its overlap ends."""
        keys = [self.unseal(hook.id, hook.secret)]
        if hook.old_secret is not None and (hook.old_until_ms or 0) > epoch_ms(now):
            keys.append(self.unseal(hook.id, hook.old_secret))
        return [Signer(k) for k in keys]


def shown_secret(secret: bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(secret).decode()


def sign(signers: list[Signer], msg_id: str, at: datetime, body: bytes) -> str:
    """The `webhook-signature` header: a `v1,` signature per secret, space-separated."""
    return " ".join(s.sign(msg_id, at, body) for s in signers)


def shown_hook(hook: Webhook, last_seq: int) -> dict[str, Any]:
    return {
        "id": hook.id,
        "url": hook.url,
        "created_at": hook.created_at,
        "delivered_through": hook.cursor,
        "pending": max(0, last_seq - hook.cursor),
        "failing_since": hook.failing_since,
        "last_error": hook.last_error,
        "attempts": hook.attempts,
        "next_attempt_ms": hook.next_ms,
        "previous_secret_valid": hook.old_secret is not None,
    }


def shown_dead(dead: Delivery) -> dict[str, Any]:
    n = dead.notice
    return {
        "seq": n.seq,
        "kind": n.kind,
        "case_id": n.case_id,
        "position": n.position,
        "attempts": dead.attempts,
        "error": dead.error,
        "dead_at": dead.at,
    }


class Webhooks:
    """Registration, rotation, removal and the state of an agency's endpoints."""

    def __init__(
        self,
        store: Store,
        secrets_: WebhookSecrets,
        policy: OutboundPolicy,
        now: Callable[[], datetime],
    ) -> None:
        self.store, self.secrets, self.policy, self.now = store, secrets_, policy, now

    def _supervisor(self, principal: Principal, agency_id: str) -> None:
        if principal.role != "supervisor" or principal.agency != agency_id:
            raise Forbidden("an agency's webhooks are managed by its own supervisors")
        agency = self.store.agency(agency_id)
        if agency is None or agency.removed_at is not None:
            raise NotFound("no such agency")

    def _hook(self, agency_id: str, hook_id: str) -> Webhook:
        hook = self.store.webhook(hook_id)
        if hook is None or hook.agency != agency_id:
            raise NotFound("no such webhook for this agency")
        return hook

    def register(
        self, principal: Principal, agency_id: str, url: str, replay: bool = False
    ) -> dict[str, Any]:
        """A new endpoint; its secret is in this answer only. It receives the notices made
        from now on (`replay`: the agency's earlier notices too, oldest first)."""
        self._supervisor(principal, agency_id)
        try:
            self.policy.check(url)
        except Refused as exc:
            raise Invalid(str(exc)) from None
        hook_id = str(uuid.uuid4())
        secret = secrets.token_bytes(32)
        cursor = 0 if replay else self.store.last_notice_seq(agency_id)
        created = format_timestamp(self.now())
        hook = Webhook(
            hook_id, agency_id, url, self.secrets.seal(hook_id, secret), None, None, created, cursor
        )
        self.store.add_webhook(hook)
        return {**shown_hook(hook, cursor), "secret": shown_secret(secret)}

    def list(self, principal: Principal, agency_id: str) -> dict[str, Any]:
        self._supervisor(principal, agency_id)
        last = self.store.last_notice_seq(agency_id)
        return {"webhooks": [shown_hook(h, last) for h in self.store.webhooks(agency_id)]}

    def rotate(self, principal: Principal, agency_id: str, hook_id: str) -> dict[str, Any]:
        """A new secret; the one before keeps signing beside it for `ROTATION_OVERLAP`."""
        self._supervisor(principal, agency_id)
        hook = self._hook(agency_id, hook_id)
        secret = secrets.token_bytes(32)
        until = self.now() + ROTATION_OVERLAP
        self.store.set_webhook_secret(
            hook_id, self.secrets.seal(hook_id, secret), hook.secret, epoch_ms(until)
        )
        return {
            "id": hook_id,
            "secret": shown_secret(secret),
            "previous_valid_until": format_timestamp(until),
        }

    def remove(self, principal: Principal, agency_id: str, hook_id: str) -> None:
        self._supervisor(principal, agency_id)
        self._hook(agency_id, hook_id)
        self.store.remove_webhook(hook_id, format_timestamp(self.now()))

    def dead_letters(
        self, principal: Principal, agency_id: str, hook_id: str, page: Page | None = None
    ) -> dict[str, Any]:
        """A page of the notices given up on after the retry period, oldest first: read them
        from `GET /v1/notices`."""
        self._supervisor(principal, agency_id)
        self._hook(agency_id, hook_id)
        page = page or Page(None, paging.DEFAULT_LIMIT)
        after = 0 if page.after is None else int(page.after[0])
        dead = self.store.dead_letters(hook_id, page.limit + 1, after)
        last = (dead[page.limit - 1].notice.seq,) if len(dead) > page.limit else None
        shown = [shown_dead(d) for d in dead[: page.limit]]
        return {"id": hook_id, **paging.answer("dead-letters", shown, "dead", last)}
