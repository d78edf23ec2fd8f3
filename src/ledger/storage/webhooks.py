"""Webhook endpoints and their deliveries, in SQL on both backends. An endpoint's lease keeps
its deliveries in log order and one at a time even when several workers run."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from ledger.storage.base import SQLDialect
from ledger.storage.notices import notice_of
from ledger.storage.outbox import Delivery, Outcome, Webhook
from ledger.storage.schema import Cursor

_HOOK = (
    "SELECT id, agency, url, secret, old_secret, old_until_ms, created_at, through_seq, attempts,"
    " next_ms, failing_since, last_error FROM {s}webhooks w WHERE removed_at IS NULL AND "
)
_DELIVERY = (
    "SELECT d.endpoint, d.outcome, d.attempts, d.at, d.error, n.seq, n.agency, n.kind,"
    " n.case_id, n.subject, n.position, n.created_at, NULL AS acknowledged,"
    " NULL AS acknowledged_at"
    " FROM {s}deliveries d JOIN {s}notices n ON n.seq = d.seq WHERE "
)

_DUE = (
    "(next_ms IS NULL OR next_ms <= ?)"
    " AND (lease_owner IS NULL OR lease_owner = ? OR lease_until_ms < ?)"
    " AND EXISTS (SELECT 1 FROM {s}notices n"
    " WHERE n.agency = w.agency AND n.seq > w.through_seq) ORDER BY next_ms, id"
)


def _hook(r: Any) -> Webhook:
    return Webhook(
        r["id"],
        r["agency"],
        r["url"],
        bytes(r["secret"]),
        None if r["old_secret"] is None else bytes(r["old_secret"]),
        r["old_until_ms"],
        r["created_at"],
        int(r["through_seq"]),
        int(r["attempts"]),
        r["next_ms"],
        r["failing_since"],
        r["last_error"],
    )


def _delivery(r: Any) -> Delivery:
    return Delivery(
        r["endpoint"], notice_of(r), r["outcome"], int(r["attempts"]), r["at"], r["error"]
    )


class SQLWebhooks(SQLDialect):
    @abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]: ...

    @abstractmethod
    def _write(self) -> AbstractContextManager[Cursor]: ...

    def add_webhook(self, hook: Webhook) -> None:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "INSERT INTO {s}webhooks (id, agency, url, secret, created_at, through_seq,"
                    " attempts) VALUES (?, ?, ?, ?, ?, ?, 0)"
                ),
                (hook.id, hook.agency, hook.url, hook.secret, hook.created_at, hook.cursor),
            )

    def webhook(self, hook_id: str) -> Webhook | None:
        with self._read() as cur:
            cur.execute(self.sql(_HOOK + "id = ?"), (hook_id,))
            row = cur.fetchone()
            return None if row is None else _hook(row)

    def webhooks(self, agency: str) -> list[Webhook]:
        with self._read() as cur:
            cur.execute(self.sql(_HOOK + "agency = ? ORDER BY created_at, id"), (agency,))
            return [_hook(r) for r in cur.fetchall()]

    def remove_webhook(self, hook_id: str, at: str) -> bool:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "UPDATE {s}webhooks SET removed_at = ? WHERE id = ? AND removed_at IS NULL"
                    " RETURNING id"
                ),
                (at, hook_id),
            )
            return bool(cur.fetchall())

    def set_webhook_secret(
        self, hook_id: str, secret: bytes, old_secret: bytes | None, old_until_ms: int | None
    ) -> None:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "UPDATE {s}webhooks SET secret = ?, old_secret = ?, old_until_ms = ?"
                    " WHERE id = ?"
                ),
                (secret, old_secret, old_until_ms, hook_id),
            )

    # -- delivery --------------------------------------------------------------------------

    def due_webhooks(self, now_ms: int, owner: str) -> list[Webhook]:
        with self._read() as cur:
            cur.execute(
                self.sql(_HOOK + _DUE),
                (now_ms, owner, now_ms),
            )
            return [_hook(r) for r in cur.fetchall()]

    def claim_webhook(self, hook_id: str, owner: str, now_ms: int, until_ms: int) -> bool:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "UPDATE {s}webhooks SET lease_owner = ?, lease_until_ms = ? WHERE id = ?"
                    " AND (lease_owner IS NULL OR lease_owner = ? OR lease_until_ms < ?)"
                    " RETURNING id"
                ),
                (owner, until_ms, hook_id, owner, now_ms),
            )
            return bool(cur.fetchall())

    def release_webhook(self, hook_id: str, owner: str) -> None:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "UPDATE {s}webhooks SET lease_owner = NULL, lease_until_ms = NULL"
                    " WHERE id = ? AND lease_owner = ?"
                ),
                (hook_id, owner),
            )

    def record_deliveries(
        self, hook_id: str, owner: str, done: Sequence[Outcome], lease_until_ms: int
    ) -> bool:
        if not done:
            return True
        last = done[-1]
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "UPDATE {s}webhooks SET through_seq = ?, attempts = 0, next_ms = NULL,"
                    " failing_since = NULL, last_error = ?, lease_until_ms = ?"
                    " WHERE id = ? AND lease_owner = ? AND through_seq < ? RETURNING id"
                ),
                (last.seq, last.error, lease_until_ms, hook_id, owner, done[0].seq),
            )
            if not cur.fetchall():
                return False
            cur.executemany(
                self.sql(
                    "INSERT INTO {s}deliveries (endpoint, seq, outcome, attempts, at, error)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
                ),
                [(hook_id, d.seq, d.outcome, d.attempts, d.at, d.error) for d in done],
            )
            return True

    def record_failure(
        self, hook_id: str, owner: str, attempts: int, next_ms: int, error: str, since: str
    ) -> None:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "UPDATE {s}webhooks SET attempts = ?, next_ms = ?, last_error = ?,"
                    " failing_since = COALESCE(failing_since, ?), lease_owner = NULL,"
                    " lease_until_ms = NULL WHERE id = ? AND lease_owner = ?"
                ),
                (attempts, next_ms, error, since, hook_id, owner),
            )

    def dead_letters(self, hook_id: str, limit: int = 100, after: int = 0) -> list[Delivery]:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    _DELIVERY + "d.endpoint = ? AND d.outcome = 'dead' AND d.seq > ?"
                    " ORDER BY d.seq LIMIT ?"
                ),
                (hook_id, after, limit),
            )
            return [_delivery(r) for r in cur.fetchall()]

    def delivery_backlog(self) -> tuple[int, int, int]:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT (SELECT COUNT(*) FROM {s}webhooks w JOIN {s}notices n"
                    " ON n.agency = w.agency AND n.seq > w.through_seq"
                    " WHERE w.removed_at IS NULL) AS pending,"
                    " (SELECT COUNT(*) FROM {s}webhooks WHERE removed_at IS NULL"
                    " AND attempts > 0) AS failing,"
                    " (SELECT COUNT(*) FROM {s}deliveries WHERE outcome = 'dead') AS dead"
                )
            )
            row = cur.fetchone()
            return int(row["pending"]), int(row["failing"]), int(row["dead"])

    def case_deliveries(self, case_id: str) -> list[Delivery]:
        with self._read() as cur:
            cur.execute(self.sql(_DELIVERY + "n.case_id = ? ORDER BY d.seq"), (case_id,))
            return [_delivery(r) for r in cur.fetchall()]
