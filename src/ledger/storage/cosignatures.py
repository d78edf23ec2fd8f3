"""The witnesses' tables in SQL on both backends (`storage.witnesses` is their contract)."""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager

from ledger.storage.base import SQLDialect
from ledger.storage.schema import Cursor
from ledger.storage.witnesses import WitnessStatus

_STATUS = (
    "SELECT witness, held, cosigned_size, cosigned_at, attempted_at, error"
    " FROM {s}witness_status ORDER BY witness"
)


class SQLCosignatures(SQLDialect):
    @abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]: ...

    @abstractmethod
    def _write(self) -> AbstractContextManager[Cursor]: ...

    def add_cosignature(self, witness: str, size: int, line: str, at: str) -> None:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "INSERT INTO {s}cosignatures (size, witness, line, cosigned_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (size, witness) DO UPDATE"
                    " SET line = excluded.line, cosigned_at = excluded.cosigned_at"
                ),
                (size, witness, line, at),
            )
            cur.execute(
                self.sql(
                    "INSERT INTO {s}witness_status (witness, held, cosigned_size, cosigned_at,"
                    " attempted_at, error) VALUES (?, ?, ?, ?, ?, NULL)"
                    " ON CONFLICT (witness) DO UPDATE SET held = excluded.held,"
                    " cosigned_size = excluded.cosigned_size,"
                    " cosigned_at = excluded.cosigned_at, attempted_at = excluded.attempted_at,"
                    " error = NULL"
                ),
                (witness, size, size, at, at),
            )

    def cosignatures(self, size: int) -> list[str]:
        with self._read() as cur:
            cur.execute(
                self.sql("SELECT line FROM {s}cosignatures WHERE size = ? ORDER BY witness"),
                (size,),
            )
            return [str(r["line"]) for r in cur.fetchall()]

    def witness_attempt(self, witness: str, at: str, held: int | None, error: str | None) -> None:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "INSERT INTO {s}witness_status AS w (witness, held, attempted_at, error)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (witness) DO UPDATE"
                    " SET held = COALESCE(excluded.held, w.held),"
                    " attempted_at = excluded.attempted_at, error = excluded.error"
                ),
                (witness, held, at, error),
            )

    def witness_statuses(self) -> list[WitnessStatus]:
        with self._read() as cur:
            cur.execute(self.sql(_STATUS))
            return [
                WitnessStatus(
                    r["witness"],
                    None if r["held"] is None else int(r["held"]),
                    None if r["cosigned_size"] is None else int(r["cosigned_size"]),
                    r["cosigned_at"],
                    r["attempted_at"],
                    r["error"],
                )
                for r in cur.fetchall()
            ]

    def claim_witness(self, witness: str, owner: str, now_ms: int, until_ms: int) -> bool:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "INSERT INTO {s}witness_status (witness) VALUES (?)"
                    " ON CONFLICT (witness) DO NOTHING"
                ),
                (witness,),
            )
            cur.execute(
                self.sql(
                    "UPDATE {s}witness_status SET lease_owner = ?, lease_until_ms = ?"
                    " WHERE witness = ? AND (lease_owner IS NULL OR lease_owner = ?"
                    " OR lease_until_ms < ?) RETURNING witness"
                ),
                (owner, until_ms, witness, owner, now_ms),
            )
            return bool(cur.fetchall())
