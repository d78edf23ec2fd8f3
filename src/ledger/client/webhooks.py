"""For an agency's webhook receiver: check that a notice came from the ledger, and drop the
repeats that at-least-once delivery sends.

    receiver = NoticeReceiver(secret)           # the `whsec_...` the ledger showed once
    notice = receiver.receive(body, headers)    # the raw body bytes, the request headers
    if notice is not None:                      # None: a repeat of one already received
        handle(notice["data"])                  # kind, case_id, position, ask; nothing personal

A delivery is signed per the Standard Webhooks specification (HMAC-SHA256 over
`webhook-id.webhook-timestamp.body`, with a five-minute tolerance on the timestamp);
`standardwebhooks` checks it. After a secret rotation the ledger signs with both secrets for
a day: pass both (`NoticeReceiver(new, old)`) while switching.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["NoticeReceiver", "NoticeRejected", "verify_notice"]


class NoticeRejected(Exception):
    """The request is not a notice signed by the ledger (or it is too old or too new)."""


def verify_notice(secret: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """The notice, if `body` and `headers` carry a valid signature by `secret`."""
    try:
        found = Webhook(secret).verify(body, dict(headers))
    except WebhookVerificationError as exc:
        raise NoticeRejected(str(exc)) from None
    if not isinstance(found, dict):
        raise NoticeRejected("the body is not a notice")
    return found


class NoticeReceiver:
    """Verifies deliveries and remembers the last `remember` notice ids (`webhook-id`, the
    same on every attempt at one notice) to drop repeats."""

    def __init__(self, *secrets: str, remember: int = 100_000) -> None:
        if not secrets:
            raise ValueError("give the endpoint's secret")
        self.secrets, self.remember = secrets, remember
        self._seen: OrderedDict[str, None] = OrderedDict()

    def receive(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any] | None:
        """The notice if new, None if already received; NoticeRejected if not genuine."""
        last: NoticeRejected | None = None
        for secret in self.secrets:
            try:
                notice = verify_notice(secret, body, headers)
                break
            except NoticeRejected as exc:
                last = exc
        else:
            assert last is not None
            raise last
        msg_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
        if msg_id in self._seen:
            return None
        self._seen[msg_id] = None
        if len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        return notice
