"""Paging of the list endpoints: opaque cursors over keyset order.

Every list is read in one fixed order of keys that never change once an item exists (a
case's opening, a referral's making, a request's log position, an agency's id, a release's
period), and a page starts strictly after the key the previous page ended on. So a reader
that follows `next` sees every item that existed when it started exactly once, whatever is
written meanwhile: an item added while it reads is seen once or not at all, never twice,
and nothing shifts the items it has not read yet (an offset would).

A cursor is that key, named after its list, as unpadded base64url of its JSON: opaque to
clients (they send back what `next` said), checked when it comes back (400 for a cursor of
another list or one the ledger never wrote). It holds keys the caller's own list answers
already, nothing more; a forged one pages the caller's own list from elsewhere, no further.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ledger.errors import BadRequest

DEFAULT_LIMIT = 100  # items in a page unless `limit` says otherwise
MAX_LIMIT = 500  # the most a page holds
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,512}$"
LIMIT_DOC = f"at most this many items in the page (1 to {MAX_LIMIT}; default {DEFAULT_LIMIT})"
CURSOR_DOC = "the `next` of the previous page, as it was given (opaque); absent: the first page"
NEXT_DOC = (
    "the cursor of the page after this one, to send back as `cursor`; absent on the last"
    " page. A page may hold fewer than `limit` items (even none) and still have a `next`"
)

Key = tuple[int | str, ...]
T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    """Where a page starts (None: at the beginning) and how many items it may hold."""

    after: Key | None
    limit: int


def encode(kind: str, key: Key) -> str:
    """The opaque cursor of `key` in the list `kind`."""
    raw = json.dumps([kind, *key], separators=(",", ":"), ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def page_of(kind: str, shape: Sequence[type], cursor: str | None, limit: int) -> Page:
    """The page a request asks for: 400 for a limit out of range or a cursor that is not a
    cursor of this list (`shape`: the types of its key's members)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    if cursor is None:
        return Page(None, limit)
    wrong = BadRequest(
        "cursor is not one this list gave: send back the `next` of its previous page, or"
        " leave cursor out to start from the first page"
    )
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise wrong from None
    if not isinstance(decoded, list) or len(decoded) != len(shape) + 1 or decoded[0] != kind:
        raise wrong
    key = tuple(decoded[1:])
    for value, kind_of in zip(key, shape, strict=True):
        if type(value) is not kind_of:  # no bool for an int
            raise wrong
    return Page(key, limit)


def answer(kind: str, items: list[dict[str, Any]], name: str, last: Key | None) -> dict[str, Any]:
    """A page's answer: its items under `name`, and `next` when more may follow."""
    out: dict[str, Any] = {name: items}
    if last is not None:
        out["next"] = encode(kind, last)
    return out


def in_memory(
    kind: str, items: Iterable[T], key: Callable[[T], Key], page: Page, *, descending: bool = False
) -> tuple[list[T], Key | None]:
    """A page of a list small enough to read whole (agencies, releases): the items after
    the page's key in key order, and the key to continue from (None: nothing follows)."""
    ordered = sorted(items, key=key, reverse=descending)
    if page.after is not None:
        after = page.after
        ordered = [i for i in ordered if (key(i) < after if descending else key(i) > after)]
    shown = ordered[: page.limit]
    return shown, (key(shown[-1]) if len(ordered) > page.limit else None)


def filled(
    fetch: Callable[[Key | None, int], list[T]],
    build: Callable[[list[T]], list[tuple[Key, dict[str, Any] | None]]],
    page: Page,
) -> tuple[list[dict[str, Any]], Key | None]:
    """A page of a list whose items are decided after they are read (filters on what is
    unsealed, requests no longer pending): rows are fetched in key order `page.limit` at a
    time after the page's key and built (each row: its key, and its item or None when it is
    left out) until the page is full or the rows run out. The key to continue from is that
    of the last row looked at; None once the rows ran out."""
    items: list[dict[str, Any]] = []
    after = page.after
    while True:
        rows = fetch(after, page.limit)
        for key, item in build(rows):
            after = key
            if item is not None:
                items.append(item)
                if len(items) == page.limit:
                    return items, after
        if len(rows) < page.limit:
            return items, None
