"""Witness cosignatures of checkpoints, cosignature/v1 (c2sp.org/tlog-cosignature, Ed25519).

A cosignature is a witness's timestamped statement that, as of that time, the checkpoint is
the largest tree consistent with everything it saw of the log. It is a note signature line
on the checkpoint:

    — <witness name> base64(key id || timestamp || Ed25519 signature)

where the key id is SHA-256(name || 0x0A || 0x04 || 32-byte public key)[:4], the timestamp a
big-endian u64 of POSIX seconds (1 to 2^63 - 1), and the signature is over

    cosignature/v1
    time <timestamp>
    <the checkpoint's note text, extension lines included, ending in its newline>

The witness's verifier key line has signature type 0x04 (`crypto.COSIGNATURE_TYPE`): it can
never be taken for a note signer's key, nor the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ledger.contract import crypto
from ledger.contract.notes import (
    SIGNATURE_PREFIX,
    MalformedNote,
    NoteError,
    NoteSignature,
    is_key_name,
    split_note,
)
from ledger.log.checkpoint import Checkpoint

HEADER = "cosignature/v1"
MAX_TIMESTAMP = 2**63 - 1
_TIMESTAMP_BYTES = 8
_SIGNATURE_BYTES = 64


class CosignatureError(NoteError):
    """A cosignature line by a known witness key is malformed or does not verify."""


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: the witness key that made it, when, and its line as sent."""

    key: crypto.VerifyKey
    timestamp: int
    line: str  # without its newline


def signed_message(body: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signs: header line, time line, the checkpoint's text."""
    return f"{HEADER}\ntime {timestamp}\n{body}".encode()


def cosign(body: str, key: crypto.SigningKey, timestamp: int) -> str:
    """`key`'s cosignature of the checkpoint text `body` at `timestamp`: one signature line,
    ending in a newline, to append to the signed checkpoint."""
    if key.signature_type != crypto.COSIGNATURE_TYPE:
        raise CosignatureError("cosignatures are made with cosignature/v1 keys (type 0x04)")
    if not is_key_name(key.name):
        raise MalformedNote(f"invalid key name {key.name!r}")
    if not 0 < timestamp <= MAX_TIMESTAMP:
        raise CosignatureError("a cosignature/v1 timestamp is 1 to 2^63 - 1 POSIX seconds")
    Checkpoint.parse(body)  # only checkpoints are cosigned
    signature = crypto.sign(key, signed_message(body, timestamp))
    blob = key.verify_key.key_hash + timestamp.to_bytes(_TIMESTAMP_BYTES, "big") + signature
    return f"{SIGNATURE_PREFIX}{key.name} {crypto.b64(blob)}\n"


def verify_cosignature(body: str, line: NoteSignature, key: crypto.VerifyKey) -> Cosignature:
    """Check one signature line that names `key` over the checkpoint text `body`."""
    # 1. The line is by this witness key (its name and its 0x04 key id).
    if key.signature_type != crypto.COSIGNATURE_TYPE:
        raise CosignatureError("cosignatures are checked with cosignature/v1 keys (type 0x04)")
    if not line.by(key):
        raise CosignatureError(f"the line is not by {key.key_id}")
    # 2. Its blob is a timestamped_signature: u64 timestamp then 64 signature bytes.
    raw = line.signature
    if len(raw) != _TIMESTAMP_BYTES + _SIGNATURE_BYTES:
        raise CosignatureError(f"the cosignature by {key.key_id} is not 4 + 8 + 64 bytes")
    timestamp = int.from_bytes(raw[:_TIMESTAMP_BYTES], "big")
    if not 0 < timestamp <= MAX_TIMESTAMP:
        raise CosignatureError(f"the cosignature by {key.key_id} has no valid timestamp")
    # 3. The Ed25519 signature over header, time line and checkpoint text.
    try:
        crypto.verify(key, signed_message(body, timestamp), raw[_TIMESTAMP_BYTES:])
    except crypto.BadSignature as exc:
        raise CosignatureError(f"the cosignature by {key.key_id} does not verify") from exc
    return Cosignature(key, timestamp, line.line)


def cosignatures(
    note: str, keys: Iterable[crypto.VerifyKey]
) -> tuple[str, dict[crypto.VerifyKey, Cosignature]]:
    """A signed checkpoint's text and its cosignatures by `keys` (the newest of each key's).

    Lines by other keys are ignored, as signed-note says; a line by one of `keys` that does
    not verify rejects the whole note (CosignatureError), never just that witness.
    """
    body, lines = split_note(note)
    Checkpoint.parse(body)
    known = {(key.name, key.key_hash): key for key in keys}
    found: dict[crypto.VerifyKey, Cosignature] = {}
    for line in lines:
        key = known.get((line.name, line.key_hash))
        if key is None:
            continue
        cosig = verify_cosignature(body, line, key)
        if key not in found or cosig.timestamp > found[key].timestamp:
            found[key] = cosig
    return body, found
