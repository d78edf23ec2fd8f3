"""The checkpoint an auditor verified last time, kept in the `--state` file."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ledger.contract import crypto


@dataclass(frozen=True)
class SavedState:
    """The checkpoint an auditor verified last time (`--state` file)."""

    origin: str
    size: int
    root: bytes

    def to_json(self) -> str:
        return json.dumps({"origin": self.origin, "size": self.size, "root": crypto.b64(self.root)})

    @classmethod
    def from_json(cls, text: str) -> SavedState:
        data = json.loads(text)
        return cls(str(data["origin"]), int(data["size"]), crypto.b64decode_strict(data["root"]))
