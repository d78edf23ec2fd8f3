"""The roles a token can have, defined once (docs/contract.md, authentication)."""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["caseworker", "supervisor", "auditor", "monitor", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
AGENCY_ROLES = frozenset({"caseworker", "supervisor"})  # an agency's staff: append and read
LOG_READERS = frozenset({"auditor", "admin"})  # read every entry of the log
