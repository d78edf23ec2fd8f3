"""LedgerClient: an agency's HTTP session with the ledger, requests resent under a RetryPolicy."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ledger.audit.policy import Policy
from ledger.client.errors import LedgerHTTPError
from ledger.client.verification import Answer, LogVerifier, checked_answer
from ledger.contract import crypto
from ledger.contract.envelope import build_submission
from ledger.log.checkpoint import Checkpoint

# Answers worth sending the identical request again for: a write conflict (409 with the code
# `write_conflict`, never the final 409 of an event_id in use), too many requests, and the
# server or a proxy in front of it being briefly unavailable.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long the client sends an unanswered or transiently refused request again.

    Exponential backoff with full jitter, at most `attempts` tries in all, and never a new try
    later than `budget_s` after the first: a submission is resent byte for byte (same
    event_id, same signature), and the ledger checks `signed_at` freshness (300 s by default)
    on a submission it has not recorded yet, so the budget stays well inside that window.
    """

    attempts: int = 10
    base_s: float = 0.05
    cap_s: float = 2.0
    budget_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy makes at least one attempt")

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before try number `attempt + 1` (`attempt` counts from 0)."""
        ceiling = min(self.cap_s, self.base_s * 2**attempt)
        wait = rng.uniform(0, ceiling)
        return wait if retry_after is None else max(wait, min(retry_after, self.cap_s))


@dataclass(frozen=True)
class Page:
    """One page of a list: its items, the cursor of the next page (None: the last), and
    the whole answer (for members beside the list)."""

    items: list[dict[str, Any]]
    next: str | None
    answer: dict[str, Any]


def is_transient(status: int, body: dict[str, Any]) -> bool:
    """Whether an error answer may succeed when the identical request is sent again."""
    return status in TRANSIENT_STATUSES or (status == 409 and body.get("error") == "write_conflict")


def load_signing_key(path: Path) -> crypto.SigningKey:
    """Read a `PRIVATE+KEY+...` signer key file."""
    return crypto.parse_signing_key(path.read_text())


def new_id() -> str:
    return str(uuid.uuid4())


class LedgerClient:
    """One agency's (or one person's) connection to the ledger."""

    def __init__(
        self,
        url: str,
        token: str,
        key: crypto.SigningKey | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        state: Path | None = None,
        origin: str | None = None,
        pool: httpx.Client | None = None,
    ) -> None:
        """`state`: a file keeping the last checkpoint this client verified across runs (the
        format of `ledger audit verify --state`, written 0600); without it, the client
        remembers it for its own lifetime only. `origin`: the log's origin, if the caller
        knows it already (one making a client per request asks once, not every time).
        `pool`: an HTTP client (base URL set) whose connections this client borrows and
        leaves open at `close` — a console acting for many people keeps one pool."""
        self.key = key
        self.retry = retry or RetryPolicy()
        self.retried = 0  # how many times a request was sent again (all requests together)
        self._rng = random.Random()
        self._auth = {"Authorization": f"Bearer {token}"}
        self._owns_http = pool is None
        self.http = pool or httpx.Client(base_url=url, transport=transport, timeout=timeout)
        self._origin = origin
        self.verifier = LogVerifier(self, state)

    @property
    def known_checkpoint(self) -> tuple[int, bytes] | None:
        """Size and root of the last checkpoint this client verified (None: none yet)."""
        return self.verifier.known_checkpoint

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _json(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = {"error": "not_json", "message": response.text[:200]}
        if response.status_code >= 400:
            raise LedgerHTTPError(response.status_code, body)
        return body

    @property
    def known_origin(self) -> str | None:
        """The log's origin if this client has learnt it (None: not asked yet)."""
        return self._origin

    @property
    def origin(self) -> str:
        """The log origin every event must name (from GET /v1/health)."""
        if self._origin is None:
            response = self._send("GET", "/v1/health")  # a 503 (a check failing) names it too
            body = response.json() if response.status_code == 503 else self._json(response)
            self._origin = str(body["log"])
        return self._origin

    def build(
        self,
        type: str,
        case_id: str,
        facts: dict[str, Any],
        attrs: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """A signed submission body for this agency's key."""
        if self.key is None:
            raise ValueError("this client has no signing key")
        return build_submission(
            self.key,
            log=self.origin,
            case_id=case_id,
            type=type,
            facts=facts,
            attrs=attrs,
            payload=payload,
            event_id=event_id or new_id(),
        )

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request under the retry policy: the identical request again after a transport
        error (no answer, so it may or may not have been processed) or a transient refusal.
        Only for requests that are safe to repeat: reads, and event submissions (the ledger
        records an event_id once and answers an identical retry with the original answer).
        Raises the last transport error when the policy is exhausted without any answer."""
        policy, started = self.retry, time.monotonic()
        for attempt in range(policy.attempts):
            last = attempt == policy.attempts - 1
            retry_after: float | None = None
            try:
                response = self._request(method, path, **kw)
            except httpx.TransportError:
                if last or time.monotonic() - started >= policy.budget_s:
                    raise
            else:
                if response.status_code < 400 or last:
                    return response
                try:
                    body = response.json()
                except ValueError:
                    body = {}
                if not isinstance(body, dict) or not is_transient(response.status_code, body):
                    return response
                if time.monotonic() - started >= policy.budget_s:
                    return response
                header = response.headers.get("retry-after", "")
                retry_after = float(header) if header.isdigit() else None
            self.retried += 1
            time.sleep(policy.delay(attempt, self._rng, retry_after))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request, with this client's token."""
        return self.http.request(method, path, headers=self._auth, **kw)

    def submit_body(self, body: dict[str, Any]) -> Answer:
        """POST a built body; send it again, byte for byte, on write conflicts, transient
        answers and transport errors (see RetryPolicy). 201: recorded now; 200: an earlier
        try had recorded it, and this is its original answer.

        The answer is checked against what was sent, and refused (502 `bad_answer`) unless
        it names the submitted event and case and its leaf hash is the one this client
        rebuilds from the submitted envelope and signature and the members the ledger added.
        """
        response = self._send("POST", "/v1/events", json=body)
        return checked_answer(body, response.status_code, self._json(response))

    def submit(
        self,
        type: str,
        case_id: str,
        facts: dict[str, Any],
        attrs: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> Answer:
        """Build, sign and submit one event."""
        return self.submit_body(self.build(type, case_id, facts, attrs, payload, event_id=event_id))

    def read_case(self, case_id: str) -> dict[str, Any]:
        """The case as this agency may see it, unsealed: the ledger logs the read."""
        return dict(self._json(self._send("GET", f"/v1/cases/{case_id}")))

    def consent_register(self, case_id: str, *, details: bool = True) -> dict[str, Any]:
        """The case's consents, what each allows now, and who may receive what. `details`:
        with each consent's sealed language and interpreter (the ledger logs the read)."""
        params = {"details": "true" if details else "false"}
        return dict(self._json(self._send("GET", f"/v1/cases/{case_id}/consents", params=params)))

    def consent_receipt(self, case_id: str, consent_id: str, format: str = "html") -> bytes:
        """The survivor's consent receipt (`html` or `pdf` printout, or the signed `note`)."""
        response = self._send(
            "GET", f"/v1/cases/{case_id}/consents/{consent_id}/receipt", params={"format": format}
        )
        if response.status_code >= 400:
            self._json(response)  # raises LedgerHTTPError with the ledger's answer
        return response.content

    # -- lists, a page at a time ------------------------------------------------------------

    def page(
        self,
        path: str,
        name: str,
        cursor: str | None = None,
        limit: int | None = None,
        **params: Any,
    ) -> Page:
        """One page of a list endpoint (`name`: the member holding its items): the page
        after `cursor` (the `next` of the previous page; None: the first)."""
        query = {k: v for k, v in params.items() if v is not None}
        if cursor is not None:
            query["cursor"] = cursor
        if limit is not None:
            query["limit"] = limit
        body = self._json(self._send("GET", path, params=query))
        return Page(list(body[name]), body.get("next"), body)

    def every(self, path: str, name: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, following its pages to the last (one request a
        page): each item there when it started comes once, whatever is written meanwhile."""
        cursor: str | None = None
        while True:
            page = self.page(path, name, cursor, **params)
            yield from page.items
            if page.next is None:
                return
            cursor = page.next

    def referrals(self, **filters: Any) -> list[dict[str, Any]]:
        """The referrals this agency made or received, with their due times (`filters`:
        status, overdue, to, component), every page."""
        return list(self.every("/v1/referrals", "referrals", **filters))

    def disclosures(self, case_id: str) -> dict[str, Any]:
        """Who has seen or received the case's data: shares, referrals and reads (every
        page of the register)."""
        path = f"/v1/cases/{case_id}/disclosures"
        return {"case_id": case_id, "disclosures": list(self.every(path, "disclosures"))}

    def notices(self, after: int = 0, limit: int = 100) -> dict[str, Any]:
        """This agency's notices after `after` (a `seq`), oldest first, and the `next` cursor."""
        params = {"after": after, "limit": limit}
        return dict(self._json(self._send("GET", "/v1/notices", params=params)))

    def case_notices(self, case_id: str) -> dict[str, Any]:
        """The holder: whom the case's notices told, and which were delivered and
        acknowledged (`recipients` sums it up per agency)."""
        return dict(self._json(self._send("GET", f"/v1/cases/{case_id}/notices")))

    def register_webhook(self, agency: str, url: str, replay: bool = False) -> dict[str, Any]:
        """A supervisor: an endpoint for the agency's notices; the answer's `secret` is
        shown once (give it to `ledger.client.webhooks.NoticeReceiver`)."""
        body = {"url": url, "replay": replay}
        return dict(self._json(self._request("POST", f"/v1/agencies/{agency}/webhooks", json=body)))

    def webhooks(self, agency: str) -> list[dict[str, Any]]:
        """A supervisor: the agency's endpoints and how their deliveries stand."""
        return list(self._json(self._send("GET", f"/v1/agencies/{agency}/webhooks"))["webhooks"])

    def rotate_webhook_secret(self, agency: str, hook_id: str) -> dict[str, Any]:
        path = f"/v1/agencies/{agency}/webhooks/{hook_id}/rotate-secret"
        return dict(self._json(self._request("POST", path)))

    def remove_webhook(self, agency: str, hook_id: str) -> None:
        response = self._request("DELETE", f"/v1/agencies/{agency}/webhooks/{hook_id}")
        if response.status_code >= 400:
            self._json(response)

    def dead_letters(self, agency: str, hook_id: str) -> list[dict[str, Any]]:
        """Notices the endpoint never took within the retry period."""
        path = f"/v1/agencies/{agency}/webhooks/{hook_id}/dead-letters"
        return list(self.every(path, "dead"))

    def indicators(
        self,
        agency: str,
        start: str | None = None,
        end: str | None = None,
        component: str | None = None,
        direction: str = "made",
    ) -> dict[str, Any]:
        """A supervisor: the agency's guideline indicators over the months start..end
        (YYYY-MM), counts only."""
        query = {"from": start, "to": end, "component": component, "direction": direction}
        params = {k: v for k, v in query.items() if v is not None}
        path = f"/v1/agencies/{agency}/indicators"
        return dict(self._json(self._send("GET", path, params=params)))

    def erasure_requests(self) -> list[dict[str, Any]]:
        """A supervisor: the agency's erasure requests waiting for a second supervisor, each
        with who requested it and the agencies the erasure would tell (`notify`)."""
        return list(self.every("/v1/erasure-requests", "requests"))

    def erasure_receipt(self, case_id: str) -> str:
        """An erased case's erasure receipt: a note signed by the ledger's receipt key."""
        response = self._send("GET", f"/v1/cases/{case_id}/erasure-receipt")
        if response.status_code >= 400:
            self._json(response)  # raises LedgerHTTPError with the ledger's answer
        return response.text

    def releases(self) -> list[dict[str, str]]:
        """A monitor: the frozen statistics releases (period, when frozen), newest first."""
        return list(self.every("/v1/stats/releases", "releases"))

    def release(self, period: str) -> dict[str, Any]:
        """A monitor: the frozen release of a month (YYYY-MM)."""
        return dict(self._json(self._send("GET", f"/v1/stats/releases/{period}")))

    def freeze_release(self, period: str) -> dict[str, Any]:
        """A monitor: freeze the release of a month that has ended (once; again: the same)."""
        response = self._request("POST", "/v1/stats/releases", json={"period": period})
        return dict(self._json(response))

    def htcds_export(self, year: int) -> str:
        """A monitor: the frozen HTCDS CSV of a year that has ended."""
        response = self._request("POST", "/v1/stats/htcds", json={"year": year})
        if response.status_code != 200:
            self._json(response)  # raises LedgerHTTPError with the ledger's answer
        return response.text

    def case_list(self) -> list[dict[str, Any]]:
        """This agency's cases, newest first, every page (cleartext facts only: nothing is
        unsealed). For a long list, `case_page` reads one page at a time."""
        return list(self.every("/v1/cases", "cases"))

    def case_page(self, cursor: str | None = None, limit: int | None = None) -> Page:
        """A page of this agency's cases, newest first (`cursor`: the previous page's
        `next`)."""
        return self.page("/v1/cases", "cases", cursor, limit)

    def case_summary(self, case_id: str) -> dict[str, Any] | None:
        """One of this agency's cases as the case list shows it (None: not one of them, or
        erased). Nothing is unsealed."""
        items = self.page("/v1/cases", "cases", case_id=case_id).items
        return items[0] if items else None

    # -- the log -----------------------------------------------------------------------------

    def checkpoint(self) -> str:
        response = self._send("GET", "/v1/log/checkpoint")
        if response.status_code >= 400:
            self._json(response)
        return response.text

    def entries(self, start: int, end: int) -> list[bytes]:
        """Entries [start, end) as their canonical bytes, page by page, up to any gap."""
        out: list[bytes] = []
        while start + len(out) < end:
            page = self._json(
                self._send("GET", "/v1/log/entries", params={"start": start + len(out), "end": end})
            )["entries"]
            if not page:
                break
            for item in page:
                if item["index"] != start + len(out):
                    return out  # a gap: the auditor reports the entries that are missing
                out.append(crypto.b64decode_strict(item["leaf"]))
        return out

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        data = self._json(
            self._send("GET", "/v1/log/proof/inclusion", params={"index": index, "size": size})
        )
        return [crypto.b64decode_strict(p) for p in data["proof"]]

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        data = self._json(
            self._send("GET", "/v1/log/proof/consistency", params={"from": first, "to": second})
        )
        return [crypto.b64decode_strict(p) for p in data["proof"]]

    def verified_checkpoint(self, log_key: crypto.VerifyKey) -> Checkpoint:
        """The log's newest checkpoint, signed by `log_key` and proved to extend the last one
        this client verified (LogVerifier.verified_checkpoint)."""
        return self.verifier.verified_checkpoint(log_key)

    def verify_inclusion(
        self,
        answer: Answer,
        log_key: crypto.VerifyKey,
        *,
        timeout_s: float = 30.0,
        policy: Policy | None = None,
    ) -> int:
        """Check that the submitted event is in the log under a checkpoint signed by `log_key`
        and, with a witness `policy` (`ledger.audit.policy.parse_policy`), cosigned by its
        quorum (LogVerifier.verify_inclusion): the size of that checkpoint."""
        return self.verifier.verify_inclusion(answer, log_key, timeout_s=timeout_s, policy=policy)

    # -- admin -------------------------------------------------------------------------------

    def register_agency(
        self, agency_id: str, name: str, kind: str, verify_key: str
    ) -> dict[str, Any]:
        body = {"id": agency_id, "name": name, "type": kind, "verify_key": verify_key}
        return dict(self._json(self._request("POST", "/v1/agencies", json=body)))

    def add_key(
        self, agency: str, current: crypto.SigningKey, new: crypto.SigningKey
    ) -> dict[str, Any]:
        """Register `new` for `agency`, signed by its current key and by the new key."""
        from ledger.contract.entries import key_change_message
        from ledger.contract.vocabulary import format_timestamp

        signed_at = format_timestamp(datetime.now(UTC))
        message = key_change_message(self.origin, agency, new.verify_key.line(), signed_at)
        signatures = [
            {
                "key": k.verify_key.key_id,
                "signed_at": signed_at,
                "signature": crypto.b64(crypto.sign(k, message)),
            }
            for k in (current, new)
        ]
        body = {"verify_key": new.verify_key.line(), "signatures": signatures}
        return dict(self._json(self._request("POST", f"/v1/agencies/{agency}/keys", json=body)))

    def revoke_key(
        self, agency: str, key_id: str, compromised_since: int | None = None
    ) -> dict[str, Any]:
        body = {"compromised_since": compromised_since}
        return dict(
            self._json(
                self._request("POST", f"/v1/agencies/{agency}/keys/{key_id}/revoke", json=body)
            )
        )

    def create_token(
        self, role: str, label: str, agency: str | None = None, expires_at: str | None = None
    ) -> dict[str, Any]:
        """Admin: a token for one person (`expires_at`: YYYY-MM-DDTHH:MM:SSZ); its secret is
        in this answer only."""
        body = {"agency": agency, "role": role, "label": label}
        if expires_at is not None:
            body["expires_at"] = expires_at
        return dict(self._json(self._request("POST", "/v1/tokens", json=body)))

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token: an admin any, a supervisor its own agency's staff tokens."""
        response = self._request("DELETE", f"/v1/tokens/{token_id}")
        if response.status_code >= 400:
            self._json(response)

    def whoami(self) -> dict[str, Any]:
        """This client's token as the ledger knows it: id, role and agency."""
        return dict(self._json(self._send("GET", "/v1/tokens/self")))

    def agencies(self) -> list[dict[str, Any]]:
        """The registered agencies: id, name, type, and whether they may be named now."""
        return list(self.every("/v1/agencies", "agencies"))


def consistency_proofs(url: str, token: str) -> Callable[[int, int], list[bytes]]:
    """The log's consistency proofs, each asked for on a connection of its own: for a check
    that may need one, such as fork evidence (only the log can clear itself with a proof)."""

    def proof(first: int, second: int) -> list[bytes]:
        with LedgerClient(url, token) as client:
            return client.consistency_proof(first, second)

    return proof
