"""A second implementation of cosignature/v1, written by the tests from the specifications'
wording, sharing no code with `ledger` (not even its Ed25519: RFC 8032's own algorithm, in
pure Python, slow and fine for tests). The code under test must agree with it byte for byte.

c2sp.org/tlog-cosignature, "Format" and "Ed25519 signed message":

- key ID = SHA-256(<name> || "\\n" || 0x04 || 32-byte Ed25519 public key)[:4];
- a note signature line `— <key name> base64(32-bit key ID || signature)`, where the
  signature is a timestamped_signature: u64 timestamp, big-endian, then 64 Ed25519 bytes;
- the signed message: the line `cosignature/v1`, the line `time <timestamp>` (ASCII decimal,
  no leading zeroes), then the whole note body of the checkpoint with its final newline;
- c2sp.org/signed-note: a verifier key is `<name>+hex(key ID)+base64(type || public key)`.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

EM_DASH = "\u2014"
TYPE = b"\x04"  # signed-note's signature type of timestamped Ed25519 cosignatures

# --- RFC 8032 section 6, Ed25519 ---------------------------------------------------------------

P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _inv(x: int) -> int:
    return pow(x, P - 2, P)


def _add(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    big_a = (a[1] - a[0]) * (b[1] - b[0]) % P
    big_b = (a[1] + a[0]) * (b[1] + b[0]) % P
    c = 2 * a[3] * b[3] * D % P
    d = 2 * a[2] * b[2] % P
    e, f, g, h = big_b - big_a, d - c, d + c, big_b + big_a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(s: int, point: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    out = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            out = _add(out, point)
        point = _add(point, point)
        s >>= 1
    return out


def _equal(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= P:
        return None
    x2 = (y * y - 1) * _inv(D * y * y + 1)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


_GY = 4 * _inv(5) % P
_GX = _recover_x(_GY, 0)
assert _GX is not None
G = (_GX, _GY, 1, _GX * _GY % P)


def _compress(point: tuple[int, int, int, int]) -> bytes:
    zinv = _inv(point[2])
    x, y = point[0] * zinv % P, point[1] * zinv % P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _decompress(s: bytes) -> tuple[int, int, int, int] | None:
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


def _h(data: bytes) -> int:
    return int.from_bytes(hashlib.sha512(data).digest(), "little") % Q


def _expand(secret: bytes) -> tuple[int, bytes]:
    h = hashlib.sha512(secret).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def public_key(secret: bytes) -> bytes:
    return _compress(_mul(_expand(secret)[0], G))


def ed25519_sign(secret: bytes, message: bytes) -> bytes:
    a, prefix = _expand(secret)
    public = _compress(_mul(a, G))
    r = _h(prefix + message)
    big_r = _compress(_mul(r, G))
    s = (r + _h(big_r + public + message) * a) % Q
    return big_r + int.to_bytes(s, 32, "little")


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    a = _decompress(public)
    r = _decompress(signature[:32])
    if a is None or r is None or len(signature) != 64:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= Q:
        return False
    k = _h(signature[:32] + public + message)
    return _equal(_mul(s, G), _add(r, _mul(k, a)))


# --- cosignature/v1 ----------------------------------------------------------------------------


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + TYPE + public).digest()[:4]


def vkey(name: str, public: bytes) -> str:
    return f"{name}+{key_id(name, public).hex()}+{base64.b64encode(TYPE + public).decode()}"


def message(checkpoint_body: str, timestamp: int) -> bytes:
    return (
        b"cosignature/v1\n" + b"time " + str(timestamp).encode() + b"\n" + checkpoint_body.encode()
    )


def cosignature_line(name: str, secret: bytes, checkpoint_body: str, timestamp: int) -> str:
    signature = ed25519_sign(secret, message(checkpoint_body, timestamp))
    blob = key_id(name, public_key(secret)) + timestamp.to_bytes(8, "big") + signature
    return f"{EM_DASH} {name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class Read:
    name: str
    key_id: bytes
    timestamp: int
    signature: bytes


def read_line(line: str) -> Read:
    assert line.startswith(EM_DASH + " ") and line.endswith("\n")
    name, blob = line[2:-1].split(" ")
    raw = base64.b64decode(blob, validate=True)
    assert len(raw) == 4 + 8 + 64
    return Read(name, raw[:4], int.from_bytes(raw[4:12], "big"), raw[12:])


def verify_line(line: str, name: str, public: bytes, checkpoint_body: str) -> int:
    """The timestamp of a valid cosignature line by (name, public) on the checkpoint body."""
    read = read_line(line)
    assert read.name == name and read.key_id == key_id(name, public)
    assert 0 < read.timestamp <= 2**63 - 1
    assert ed25519_verify(public, message(checkpoint_body, read.timestamp), read.signature)
    return read.timestamp
