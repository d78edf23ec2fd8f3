"""Erasure receipts: signed notes by the receipt key (never the log key).

A receipt names the case, the log position of its `case.erased` event, the erasure time and
the checkpoint (size and root) that covers it, so the survivor or an auditor can later prove
the erasure was recorded in the verifiable history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.contract import crypto
from ledger.contract.notes import NoteError, open_note, sign_note
from ledger.contract.vocabulary import is_uuid4, parse_timestamp

HEADER = "ledger erasure receipt v1"
_LINE = re.compile(r"([a-z_]+) (.+)")


class ReceiptError(Exception):
    """The receipt is malformed or not signed by the receipt key."""


@dataclass(frozen=True)
class ErasureReceipt:
    origin: str
    case_id: str
    index: int
    erased_at: str
    checkpoint_size: int
    checkpoint_root: bytes

    def body(self) -> str:
        return (
            f"{HEADER}\n"
            f"origin {self.origin}\n"
            f"case {self.case_id}\n"
            f"index {self.index}\n"
            f"erased_at {self.erased_at}\n"
            f"checkpoint {self.checkpoint_size} {crypto.b64(self.checkpoint_root)}\n"
        )

    def sign(self, key: crypto.SigningKey) -> str:
        return sign_note(self.body(), key)

    @classmethod
    def parse(cls, body: str) -> ErasureReceipt:
        lines = body.split("\n")
        if lines[0] != HEADER or lines[-1] != "" or len(lines) != 7:
            raise ReceiptError("not an erasure receipt")
        fields: dict[str, str] = {}
        for line in lines[1:-1]:
            match = _LINE.fullmatch(line)
            if match is None:
                raise ReceiptError("malformed receipt line")
            fields[match[1]] = match[2]
        try:
            size, root = fields["checkpoint"].split(" ")
            receipt = cls(
                origin=fields["origin"],
                case_id=fields["case"],
                index=int(fields["index"]),
                erased_at=fields["erased_at"],
                checkpoint_size=int(size),
                checkpoint_root=crypto.b64decode_strict(root),
            )
            parse_timestamp(receipt.erased_at)
        except (KeyError, ValueError) as exc:
            raise ReceiptError("malformed receipt fields") from exc
        if not is_uuid4(receipt.case_id) or receipt.index >= receipt.checkpoint_size:
            raise ReceiptError("the receipt's case id or checkpoint is not valid")
        if receipt.body() != body:
            raise ReceiptError("the receipt is not in canonical form")
        return receipt


def verify_receipt(text: str, key: crypto.VerifyKey) -> ErasureReceipt:
    """Check the receipt key's signature and parse the receipt."""
    try:
        body = open_note(text, key)
    except NoteError as exc:
        raise ReceiptError(f"the receipt is not signed by the receipt key: {exc}") from exc
    return ErasureReceipt.parse(body)
