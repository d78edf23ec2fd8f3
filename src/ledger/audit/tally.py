"""What the verifier counts as it runs, for the auditor's report: counters only, so the
report never reads or verifies the log a second time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Tally:
    """Entries by kind and by day recorded; events re-checked by the gates, by type."""

    read: int = 0  # entries read, up to the checkpoint's size
    kinds: dict[str, int] = field(default_factory=dict)  # entries of a known kind
    days: dict[str, int] = field(default_factory=dict)  # by the day of recorded_at
    checked: dict[str, int] = field(default_factory=dict)  # events the gates re-checked
    refused: dict[str, int] = field(default_factory=dict)  # of those, the ones they refuse
    last_refused: int = -1  # the position counted last: an event is refused once

    def entry(self, entry: dict[str, Any]) -> None:
        """One entry of a known kind (its recording time may still be malformed)."""
        kind = entry["kind"]
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        at = entry["recorded_at"]
        day = at[:10] if isinstance(at, str) else ""
        self.days[day] = self.days.get(day, 0) + 1

    def gate(self, etype: object) -> None:
        """An event whose gates are re-checked."""
        name = str(etype)
        self.checked[name] = self.checked.get(name, 0) + 1

    def refuse(self, etype: object, position: int) -> None:
        """The event at `position`, which the gates, re-checked, would have refused."""
        if position == self.last_refused:
            return
        self.last_refused = position
        name = str(etype)
        self.refused[name] = self.refused.get(name, 0) + 1
