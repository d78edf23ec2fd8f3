"""The logs a witness witnesses: one line each, its origin and a verifier key line of its own
(`#` starts a comment). A log may have several keys (while it rotates one), one line each."""

from __future__ import annotations

from ledger.contract import crypto


class ConfigError(ValueError):
    """A logs file that does not say which logs to trust; names the line."""


def parse_logs(text: str) -> dict[str, tuple[crypto.VerifyKey, ...]]:
    """`<origin> <verifier key line>` per line, into the trusted keys of each origin."""
    logs: dict[str, tuple[crypto.VerifyKey, ...]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        items = raw.split("#", 1)[0].split()
        if not items:
            continue
        if len(items) != 2:
            raise ConfigError(f"logs line {number}: a line is <origin> <verifier key line>")
        origin, line = items
        try:
            key = crypto.parse_verify_key(line)
        except crypto.BadKeyLine as exc:
            raise ConfigError(f"logs line {number}: {exc}") from exc
        if key in logs.get(origin, ()):
            raise ConfigError(f"logs line {number}: the key is listed twice for {origin}")
        logs[origin] = (*logs.get(origin, ()), key)
    if not logs:
        raise ConfigError("the logs file names no log: a witness witnesses at least one")
    return logs
