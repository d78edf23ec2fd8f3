"""The only module that touches PyNaCl: signing, sealing, key types and C2SP key lines.

Everything else in the ledger calls `sign`, `verify`, `seal`, `unseal`, `wrap`, `unwrap`
with the ledger's own key types. Nonces are never chosen by a caller.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.signing
import nacl.utils

ED25519_TYPE = b"\x01"  # C2SP signed-note signature type for Ed25519
# Timestamped Ed25519 checkpoint cosignatures (c2sp.org/tlog-cosignature, cosignature/v1):
# the same Ed25519 keys, with their own key ids (a witness's key is never a note signer's).
COSIGNATURE_TYPE = b"\x04"
SIGNATURE_TYPES = {
    ED25519_TYPE: "an Ed25519 note key (type 0x01, 32 bytes)",
    COSIGNATURE_TYPE: "a cosignature/v1 key (type 0x04, 32 bytes)",
}
DATA_KEY_BYTES = 32
_NONCE_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_NAME_RE = re.compile(r"[^\s+]+")


class CryptoError(Exception):
    """Base for every cryptographic failure."""


class BadSignature(CryptoError):
    """An Ed25519 signature did not verify."""


class BadKeyLine(CryptoError):
    """A C2SP verifier or signer key line could not be parsed."""


class SealBroken(CryptoError):
    """A sealed box did not open: wrong key, wrong associated data or tampered bytes."""


def b64(data: bytes) -> str:
    """Standard base64 (RFC 4648 section 4) with padding."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str) -> bytes:
    """Decode canonical RFC 4648 section 4 base64 with padding, or raise ValueError."""
    if not isinstance(text, str) or len(text) % 4 != 0:
        raise ValueError("not canonical base64")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not canonical base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")  # non-zero padding bits
    return raw


def random_bytes(n: int) -> bytes:
    return nacl.utils.random(n)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- signing keys -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key with the C2SP name it is known by, and the signature type its
    key id commits to (0x01 signed notes, 0x04 cosignatures)."""

    name: str
    raw: bytes
    signature_type: bytes = ED25519_TYPE

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.raw, self.signature_type)

    @property
    def key_id(self) -> str:
        """`<name>+<8 hex>`: the id events and notes name the key by."""
        return f"{self.name}+{self.key_hash.hex()}"

    def line(self) -> str:
        """The C2SP verifier key line `<name>+<hash>+<base64(type || key)>`."""
        return f"{self.key_id}+{b64(self.signature_type + self.raw)}"


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key (its 32-byte seed) with its C2SP name and signature type."""

    name: str
    seed: bytes
    signature_type: bytes = ED25519_TYPE

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(name={self.name!r})"

    @property
    def verify_key(self) -> VerifyKey:
        raw = bytes(nacl.signing.SigningKey(self.seed).verify_key)
        return VerifyKey(self.name, raw, self.signature_type)

    def line(self) -> str:
        """The signer key line `PRIVATE+KEY+<name>+<hash>+<base64(type || seed)>`."""
        vk = self.verify_key
        return f"PRIVATE+KEY+{vk.key_id}+{b64(self.signature_type + self.seed)}"


def derived_mac(key: SigningKey, purpose: str, message: bytes) -> bytes:
    """HMAC-SHA256 of `message` under a secret derived from a signing key's seed for one
    purpose (domain-separated, so the MAC says nothing about the key's signatures)."""
    secret = hmac.new(key.seed, b"ledger-derived-v1\n" + purpose.encode(), hashlib.sha256)
    return hmac.new(secret.digest(), message, hashlib.sha256).digest()


def key_hash(name: str, raw: bytes, signature_type: bytes = ED25519_TYPE) -> bytes:
    """C2SP signed-note key hash: the first 4 bytes of SHA-256(name || 0x0A || type || key)."""
    return sha256(name.encode() + b"\n" + signature_type + raw)[:4]


def generate_signing_key(name: str, signature_type: bytes = ED25519_TYPE) -> SigningKey:
    if not _NAME_RE.fullmatch(name):
        raise BadKeyLine("key names are non-empty and hold no spaces or '+'")
    if signature_type not in SIGNATURE_TYPES:
        raise BadKeyLine("keys are Ed25519 note keys (0x01) or cosignature/v1 keys (0x04)")
    return SigningKey(name, random_bytes(32), signature_type)


def signing_key_from_seed(
    name: str, seed: bytes, signature_type: bytes = ED25519_TYPE
) -> SigningKey:
    if len(seed) != 32:
        raise BadKeyLine("an Ed25519 seed is 32 bytes")
    return SigningKey(name, seed, signature_type)


def parse_verify_key(line: str, signature_type: bytes = ED25519_TYPE) -> VerifyKey:
    """Parse a C2SP verifier key line of `signature_type` (an Ed25519 note key unless told:
    a cosigner's 0x04 key is refused where a note signer's is expected, and the other way
    round); the hash must match the name and key."""
    parts = line.strip().split("+", 2)
    if len(parts) != 3:
        raise BadKeyLine("a verifier key line is <name>+<hash>+<key>")
    name, hash_hex, key_b64 = parts
    if not _NAME_RE.fullmatch(name) or not re.fullmatch(r"[0-9a-f]{8}", hash_hex):
        raise BadKeyLine("malformed name or key hash in verifier key line")
    try:
        blob = b64decode_strict(key_b64)
    except ValueError as exc:
        raise BadKeyLine("verifier key is not canonical base64") from exc
    if len(blob) != 33 or blob[:1] != signature_type:
        raise BadKeyLine(f"verifier key is not {SIGNATURE_TYPES[signature_type]}")
    vk = VerifyKey(name, blob[1:], signature_type)
    if vk.key_hash.hex() != hash_hex:
        raise BadKeyLine("key hash does not match the key's name and bytes")
    return vk


def parse_signing_key(line: str, signature_type: bytes = ED25519_TYPE) -> SigningKey:
    """Parse a `PRIVATE+KEY+<name>+<hash>+<key>` signer key line of `signature_type`."""
    parts = line.strip().split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise BadKeyLine("a signer key line is PRIVATE+KEY+<name>+<hash>+<key>")
    name, hash_hex, key_b64 = parts[2:]
    try:
        blob = b64decode_strict(key_b64)
    except ValueError as exc:
        raise BadKeyLine("signer key is not canonical base64") from exc
    if len(blob) != 33 or blob[:1] != signature_type:
        raise BadKeyLine(f"signer key is not {SIGNATURE_TYPES[signature_type]}")
    sk = SigningKey(name, blob[1:], signature_type)
    if sk.verify_key.key_hash.hex() != hash_hex:
        raise BadKeyLine("key hash does not match the key's name and bytes")
    return sk


def sign(key: SigningKey, message: bytes) -> bytes:
    """Ed25519 signature (RFC 8032) of `message`."""
    return nacl.signing.SigningKey(key.seed).sign(message).signature


def verify(key: VerifyKey, message: bytes, signature: bytes) -> None:
    """Verify an Ed25519 signature strictly (libsodium); raise BadSignature if it fails."""
    if len(signature) != 64:
        raise BadSignature("an Ed25519 signature is 64 bytes")
    try:
        nacl.signing.VerifyKey(key.raw).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
        raise BadSignature("signature does not verify") from exc


# --- sealing ----------------------------------------------------------------------------------


def new_data_key() -> bytes:
    """A fresh random 32-byte data key (one per case)."""
    return random_bytes(DATA_KEY_BYTES)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """XChaCha20-Poly1305 with a random nonce; returns nonce || ciphertext."""
    nonce = random_bytes(_NONCE_BYTES)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, associated, nonce, key)
    return nonce + ct


def unseal(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """Open a box made by `seal`; raise SealBroken if anything does not match."""
    nonce, ct = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    try:
        return bytes(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, associated, nonce, key)
        )
    except nacl.exceptions.CryptoError as exc:
        raise SealBroken("sealed data did not open") from exc
