"""The notices table both SQL backends share (the transactional outbox: rows are written by
the append engine in the event's own transaction, `append.py`), and the timers that make the
time-based notices later, under the same log lock."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from ledger.storage.base import SQLDialect
from ledger.storage.outbox import NoticeRow, StoredNotice, Timer
from ledger.storage.schema import Cursor


def notice_of(r: Any) -> StoredNotice:
    return StoredNotice(
        int(r["seq"]),
        r["agency"],
        r["kind"],
        r["case_id"],
        r["subject"],
        int(r["position"]),
        r["created_at"],
        r["acknowledged"],
        r["acknowledged_at"],
    )


class SQLNotices(SQLDialect):
    @abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]: ...

    @abstractmethod
    def _write(self) -> AbstractContextManager[Cursor]: ...

    _NOTICES = (
        "SELECT n.seq, n.agency, n.kind, n.case_id, n.subject, n.position, n.created_at,"
        " a.action AS acknowledged, a.at AS acknowledged_at FROM {s}notices n"
        " LEFT JOIN {s}acknowledgements a"
        " ON a.position = n.position AND a.agency = n.agency AND a.kind = n.kind WHERE "
    )

    def notices(self, agency: str, after: int = 0, limit: int = 100) -> list[StoredNotice]:
        with self._read() as cur:
            cur.execute(
                self.sql(self._NOTICES + "n.agency = ? AND n.seq > ? ORDER BY n.seq LIMIT ?"),
                (agency, after, limit),
            )
            return [notice_of(r) for r in cur.fetchall()]

    def case_notices(self, case_id: str) -> list[StoredNotice]:
        with self._read() as cur:
            cur.execute(self.sql(self._NOTICES + "n.case_id = ? ORDER BY n.seq"), (case_id,))
            return [notice_of(r) for r in cur.fetchall()]

    def was_told(self, case_id: str, position: int, agency: str, kind: str) -> bool:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT 1 AS told FROM {s}notices WHERE position = ? AND agency = ?"
                    " AND kind = ? AND case_id = ?"
                ),
                (position, agency, kind, case_id),
            )
            return cur.fetchone() is not None

    def last_notice_seq(self, agency: str) -> int:
        with self._read() as cur:
            cur.execute(
                self.sql("SELECT MAX(seq) AS seq FROM {s}notices WHERE agency = ?"), (agency,)
            )
            row = cur.fetchone()
            return int(row["seq"] or 0)

    # -- timers ----------------------------------------------------------------------------

    def due_timers(self, now_ms: int, limit: int = 100) -> list[Timer]:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT kind, case_id, subject, position, due_ms FROM {s}timers"
                    " WHERE due_ms <= ? ORDER BY due_ms, position LIMIT ?"
                ),
                (now_ms, limit),
            )
            return [
                Timer(r["kind"], r["case_id"], r["subject"], int(r["position"]), int(r["due_ms"]))
                for r in cur.fetchall()
            ]

    def fire_timer(self, timer: Timer, notices: Sequence[NoticeRow], created_at: str) -> int:
        with self._write() as cur:
            # The log's lock, as every append takes it: `seq` keeps following commit order.
            cur.execute(self.sql("UPDATE {s}log_head SET size = size WHERE id = 1"))
            new = 0
            for n in notices:
                cur.execute(
                    self.sql(
                        "INSERT INTO {s}notices (agency, kind, case_id, subject, position,"
                        " created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
                        " RETURNING seq"
                    ),
                    (n.agency, n.kind, n.case_id, n.subject, timer.position, created_at),
                )
                new += len(cur.fetchall())
            cur.execute(
                self.sql("DELETE FROM {s}timers WHERE kind = ? AND case_id = ? AND subject = ?"),
                (timer.kind, timer.case_id, timer.subject),
            )
            return new
