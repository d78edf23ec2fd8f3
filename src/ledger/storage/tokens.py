"""The tokens table both SQL backends share: one token per person, stored as a hash, with
its role, agency, label and times; revoked, never deleted."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

from ledger.storage.base import SQLDialect, Token, in_lists
from ledger.storage.schema import Cursor


class SQLTokens(SQLDialect):
    # A SELECT that must lock the agency row it reads until commit (see `SQLTables`).
    share_lock = ""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]: ...

    @abstractmethod
    def _write(self) -> AbstractContextManager[Cursor]: ...

    def add_token(self, token: Token, token_hash: bytes, created_at: str) -> bool:
        """One statement: the insert selects its row from the agency's, if that is still
        not removed, and (on PostgreSQL) locks it for share until commit, so it cannot
        interleave with `remove_agency`: a plain conditional insert under READ COMMITTED
        could read the agency as live while a removal is committing, and store its token
        after the removal's revocation."""
        with self._write() as cur:
            if token.agency is None:
                cur.execute(
                    self.sql(
                        "INSERT INTO {s}tokens"
                        " (id, hash, role, agency, label, created_at, expires_at)"
                        " VALUES (?, ?, ?, NULL, ?, ?, ?) RETURNING id"
                    ),
                    (token.id, token_hash, token.role, token.label, created_at, token.expires_at),
                )
            else:
                cur.execute(
                    self.sql(
                        "INSERT INTO {s}tokens"  # noqa: S608
                        " (id, hash, role, agency, label, created_at, expires_at)"
                        " SELECT ?, ?, ?, a.id, ?, ?, ? FROM {s}agencies a"
                        " WHERE a.id = ? AND a.removed_at IS NULL"
                        + self.share_lock
                        + " RETURNING id"
                    ),
                    (
                        token.id,
                        token_hash,
                        token.role,
                        token.label,
                        created_at,
                        token.expires_at,
                        token.agency,
                    ),
                )
            return cur.fetchone() is not None

    def revoke_tokens(
        self, *, token_id: str | None = None, agency: str | None = None, at: str
    ) -> int:
        column, value = ("id", token_id) if token_id is not None else ("agency", agency)
        with self._write() as cur:
            return self._revoke_tokens(cur, column, value, at)

    def _revoke_tokens(self, cur: Cursor, column: str, value: str | None, at: str) -> int:
        cur.execute(
            self.sql(
                f"UPDATE {{s}}tokens SET revoked_at = ? WHERE {column} = ?"  # noqa: S608
                " AND revoked_at IS NULL RETURNING id"
            ),
            (at, value),
        )
        return len(cur.fetchall())

    _TOKENS_BY_HASH = (
        "SELECT hash, id, role, agency, label, expires_at, revoked_at FROM {s}tokens WHERE hash IN "
    )

    def token_by_hash(self, token_hash: bytes) -> Token | None:
        return self.tokens_by_hash([token_hash]).get(token_hash)

    def tokens_by_hash(self, token_hashes: Sequence[bytes]) -> dict[bytes, Token]:
        found: dict[bytes, Token] = {}
        with self._read() as cur:
            for chunk, in_list in in_lists(sorted(set(token_hashes))):
                cur.execute(self.sql(self._TOKENS_BY_HASH + in_list), chunk)
                for r in cur.fetchall():
                    found[bytes(r["hash"])] = self._token(r)
        return found

    def token(self, token_id: str) -> Token | None:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT id, role, agency, label, expires_at, revoked_at"
                    " FROM {s}tokens WHERE id = ?"
                ),
                (token_id,),
            )
            r = cur.fetchone()
        return None if r is None else self._token(r)

    def list_tokens(self, after: str | None, limit: int) -> list[Token]:
        tail = "" if after is None else " WHERE id > ?"
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT id, role, agency, label, created_at, expires_at, revoked_at"  # noqa: S608
                    " FROM {s}tokens" + tail + " ORDER BY id LIMIT ?"
                ),
                (limit,) if after is None else (after, limit),
            )
            return [
                replace(self._token(r), created_at=r["created_at"], revoked_at=r["revoked_at"])
                for r in cur.fetchall()
            ]

    @staticmethod
    def _token(r: Any) -> Token:
        return Token(
            r["id"],
            r["role"],
            r["agency"],
            r["label"],
            r["expires_at"],
            r["revoked_at"] is not None,
        )
