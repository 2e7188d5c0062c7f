"""Cryptographic pseudo-random generator for masks: AES-256 in counter mode keyed by a 256-bit seed.

`expand(seed, length, bits)` returns `length` words that are uniform modulo `2^bits` (the key stream read as
little-endian uint32 for `bits <= 32`, uint64 above, then reduced mod `2^bits`). Each seed is a fresh 256-bit key
derived per round and purpose (HKDF in `crypto.py`), so the all-zero counter block is never reused under one key.
Masking arithmetic runs in the word dtype (uint32/uint64 wrap around modulo 2^32/2^64, multiples of 2^bits) and is
reduced modulo `2^bits` once at the end.
"""

from __future__ import annotations

import threading

import numpy as np

from tfx_ext._validate import is_int
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_ZERO_NONCE = bytes(16)
_BUFFERS = threading.local()  # per-thread reusable (zeros, output) buffers for `add_into`


def _buffers(nbytes: int):
    cached = getattr(_BUFFERS, "pair", None)
    if cached is None or len(cached[0]) != nbytes:
        cached = (bytes(nbytes), bytearray(nbytes + 16))
        _BUFFERS.pair = cached
    return cached


def word_dtype(bits: int) -> np.dtype:
    """uint32 for moduli up to 2^32, uint64 up to 2^64."""
    if not is_int(bits) or not 2 <= bits <= 64:
        raise ValueError(f"`bits` must be an integer in [2, 64]. Received: bits={bits!r}")
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


def reduce(vector: np.ndarray, bits: int) -> np.ndarray:
    """`vector mod 2^bits` (a no-op when `bits` is the word width)."""
    dtype = word_dtype(bits)
    if bits == 8 * dtype.itemsize:
        return vector
    return vector & dtype.type((1 << bits) - 1)


def _keystream(seed: bytes, nbytes: int) -> bytes:
    if len(seed) != 32:
        raise ValueError(f"PRG seeds are 32 bytes. Received: {len(seed)} bytes")
    enc = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_NONCE)).encryptor()
    return enc.update(bytes(nbytes)) + enc.finalize()


def expand(seed: bytes, length: int, bits: int) -> np.ndarray:
    """`length` pseudo-random words uniform modulo `2^bits`, from a 32-byte seed."""
    dtype = word_dtype(bits)
    words = np.frombuffer(_keystream(seed, length * dtype.itemsize), dtype.newbyteorder("<")).astype(dtype)
    return reduce(words, bits)


def add_into(acc: np.ndarray, seed: bytes, sign: int = 1) -> None:
    """`acc += sign * expand(seed)` in place, modulo the word size (reduce mod 2^bits afterwards).

    Encrypts into a reused per-thread buffer (`update_into`), so a mask costs no allocation.
    """
    if len(seed) != 32:
        raise ValueError(f"PRG seeds are 32 bytes. Received: {len(seed)} bytes")
    zeros, out = _buffers(acc.nbytes)
    enc = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_NONCE)).encryptor()
    enc.update_into(zeros, out)
    stream = np.frombuffer(out, acc.dtype.newbyteorder("<"), acc.size)
    if sign >= 0:
        np.add(acc, stream, out=acc)
    else:
        np.subtract(acc, stream, out=acc)


__all__ = ["expand", "add_into", "reduce", "word_dtype"]
