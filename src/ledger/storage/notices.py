"""The notices table both SQL backends share (the transactional outbox: rows are written by
the append engine in the event's own transaction, `append.py`); here, reading them."""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager
from typing import Any

from ledger.storage.base import SQLDialect, StoredNotice
from ledger.storage.schema import Cursor


class SQLNotices(SQLDialect):
    @abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]: ...

    _NOTICES = (
        "SELECT seq, agency, kind, case_id, subject, position, created_at FROM {s}notices WHERE "
    )

    def notices(self, agency: str, after: int = 0, limit: int = 100) -> list[StoredNotice]:
        with self._read() as cur:
            cur.execute(
                self.sql(self._NOTICES + "agency = ? AND seq > ? ORDER BY seq LIMIT ?"),
                (agency, after, limit),
            )
            return [self._notice(r) for r in cur.fetchall()]

    def case_notices(self, case_id: str) -> list[StoredNotice]:
        with self._read() as cur:
            cur.execute(self.sql(self._NOTICES + "case_id = ? ORDER BY seq"), (case_id,))
            return [self._notice(r) for r in cur.fetchall()]

    @staticmethod
    def _notice(r: Any) -> StoredNotice:
        return StoredNotice(
            int(r["seq"]),
            r["agency"],
            r["kind"],
            r["case_id"],
            r["subject"],
            int(r["position"]),
            r["created_at"],
        )
