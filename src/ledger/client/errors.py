"""The ledger's refusals as LedgerHTTPError, and the answers the client refuses to believe."""

from __future__ import annotations

from typing import Any


class LedgerHTTPError(Exception):
    """The ledger refused a request; `status` and `error` are the server's answer."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        self.error = str(body.get("error", ""))
        super().__init__(f"{status} {self.error}: {body.get('message', '')}")


def bad_answer(message: str) -> LedgerHTTPError:
    """An answer the client refuses to believe, as if a proxy had answered 502."""
    return LedgerHTTPError(502, {"error": "bad_answer", "message": message})
