"""`check_receipt`: an erasure receipt checked against the log's entries."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ledger.audit.report import AuditFailure
from ledger.contract import crypto
from ledger.log import merkle


def check_receipt(
    text: str, receipt_key: crypto.VerifyKey, entries: Sequence[bytes]
) -> list[AuditFailure]:
    """An erasure receipt: signed by the receipt key, naming a `case.erased` of its case at
    its position, under a checkpoint whose root the entries reproduce."""
    from ledger.contract.receipts import ReceiptError, verify_receipt

    # 1. The receipt key's signature.
    try:
        receipt = verify_receipt(text, receipt_key)
    except ReceiptError as exc:
        return [AuditFailure("receipt signature", str(exc))]
    # 2. The entry at its position erased its case.
    if receipt.index >= len(entries):
        return [AuditFailure("receipt", "the receipt names a position beyond the log")]
    try:
        entry = json.loads(entries[receipt.index])
        env = entry["envelope"]
        erased = env["type"] == "case.erased" and env["case_id"] == receipt.case_id
    except (ValueError, KeyError, TypeError):
        erased = False
    if not erased:
        return [
            AuditFailure(
                "receipt",
                "the entry at the receipt's position is not the erasure of its case",
                receipt.index,
            )
        ]
    # 3. The checkpoint it names is the root of the log's first entries.
    if receipt.checkpoint_size > len(entries):
        return [AuditFailure("receipt", "the receipt's checkpoint is beyond the log")]
    tree = merkle.MemoryTree()
    tree.append([merkle.leaf_hash(e) for e in entries[: receipt.checkpoint_size]])
    if tree.root() != receipt.checkpoint_root:
        return [AuditFailure("receipt", "the receipt's checkpoint root does not match the log")]
    return []
