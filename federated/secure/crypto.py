"""The cryptographic primitives of the protocol, all from `cryptography` (OpenSSL):

- X25519 key agreement, with HKDF-SHA256 deriving one 256-bit key per (purpose, round) from the shared secret;
- AES-256-GCM for the encrypted Shamir shares, with (sender, receiver, round) bound as associated data;
- Ed25519 signatures for the consistency-check round (active-adversary variant) and for signed key adverts.

Key material is drawn from a `randbytes(n) -> bytes` callable: `os.urandom` by default; a seeded source only for
reproducible tests (`seeded_randbytes`), never for deployments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from collections.abc import Callable

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RandBytes = Callable[[int], bytes]
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()


def seeded_randbytes(seed) -> RandBytes:
    """A deterministic byte source (SHAKE-256 of the seed, then a numpy PCG64 stream): for tests only."""
    digest = hashlib.shake_256(repr(seed).encode()).digest(32)
    gen = np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))
    return lambda n: gen.bytes(n)


@dataclasses.dataclass(frozen=True)
class DHKeyPair:
    """An X25519 key pair; `public` is the 32 raw bytes sent to the peers."""

    private: X25519PrivateKey
    public: bytes

    @classmethod
    def generate(cls, randbytes: RandBytes = os.urandom) -> "DHKeyPair":
        return cls.from_private_bytes(randbytes(KEY_BYTES))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> "DHKeyPair":
        private = X25519PrivateKey.from_private_bytes(raw)
        return cls(private, private.public_key().public_bytes(_RAW, _RAW_PUB))

    def private_bytes(self) -> bytes:
        return self.private.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)


def public_from_private(raw: bytes) -> bytes:
    """The X25519 public key of 32 raw private bytes."""
    return DHKeyPair.from_private_bytes(raw).public


def agree(private: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """HKDF-SHA256(X25519(private, peer_public), info): a 32-byte key, symmetric in the two parties.

    Raises:
        ValueError: on a malformed or low-order peer key (the all-zero shared secret).
    """
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


_PROBE = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"tfx-ext/secagg/low-order-probe").digest())


def low_order_key(public: bytes) -> bool:
    """True for a public key that is not 32 bytes or lies in the small subgroup: X25519 clamps every private key
    to a multiple of 8, so such a key gives the all-zero shared secret with anyone (OpenSSL refuses it)."""
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(public))
        return False
    except ValueError:
        return True


def kdf_info(purpose: str, round_id: int) -> bytes:
    """Domain-separated HKDF `info`: protocol name, purpose and round."""
    return b"tfx-ext/secagg/" + purpose.encode() + struct.pack(">Q", round_id)


def share_ad(sender: int, receiver: int, round_id: int, session: bytes = b"") -> bytes:
    """Associated data of an encrypted share: binds sender, receiver, round and session."""
    return b"tfx-ext/secagg/share" + struct.pack(">QQQ", sender, receiver, round_id) + session


def encrypt(key: bytes, plaintext: bytes, ad: bytes, randbytes: RandBytes = os.urandom) -> bytes:
    """AES-256-GCM: returns `nonce || ciphertext || tag` (random 96-bit nonce)."""
    nonce = randbytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, ad)


def decrypt(key: bytes, blob: bytes, ad: bytes) -> bytes | None:
    """Inverse of `encrypt`; None when the tag, the key or the associated data do not match."""
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        return None
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)
    except InvalidTag:
        return None


@dataclasses.dataclass(frozen=True)
class SigningKey:
    """An Ed25519 signing key; `verify_key` (32 raw bytes) is what a PKI would publish."""

    private: Ed25519PrivateKey
    verify_key: bytes

    @classmethod
    def generate(cls, randbytes: RandBytes = os.urandom) -> "SigningKey":
        private = Ed25519PrivateKey.from_private_bytes(randbytes(KEY_BYTES))
        return cls(private, private.public_key().public_bytes(_RAW, _RAW_PUB))

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def verify(verify_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` under `verify_key`."""
    try:
        Ed25519PublicKey.from_public_bytes(verify_key).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


__all__ = [
    "DHKeyPair",
    "SigningKey",
    "agree",
    "decrypt",
    "encrypt",
    "kdf_info",
    "low_order_key",
    "public_from_private",
    "seeded_randbytes",
    "share_ad",
    "verify",
]
