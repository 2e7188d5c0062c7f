"""Shamir t-of-n secret sharing over the prime field GF(2^31 - 1), with secrets split into chunks.

A secret of any length is cut into 3-byte chunks (24 bits, each below the field's prime `P = 2^31 - 1`), and each
chunk is shared with its own independent random polynomial of degree `t - 1`; a share is the vector of the chunk
polynomials evaluated at the holder's point `x` (an integer in `[1, P)`). Any `t` shares reconstruct the secret by
Lagrange interpolation at 0; fewer than `t` reveal nothing (perfect secrecy holds chunk by chunk, for any prime
field larger than the number of holders). The small field keeps every product below 2^62, so sharing and
reconstruction are vectorised int64 numpy (a 32-byte key to 1,000 holders with t = 500 takes milliseconds).

Random coefficients come from a caller-supplied `randbytes(n) -> bytes` (default `os.urandom`), rejection-sampled
so they are exactly uniform in the field.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tfx_ext._validate import is_int
from tfx_ext.errors import SecureAggregationError

P = (1 << 31) - 1  # the Mersenne prime 2^31 - 1
CHUNK_BYTES = 3  # 24-bit chunks, below P


def num_chunks(secret_length: int) -> int:
    """Number of field elements a secret of `secret_length` bytes is split into."""
    return -(-secret_length // CHUNK_BYTES)


def share_length(secret_length: int) -> int:
    """Bytes of one share of a `secret_length`-byte secret (4 bytes per chunk)."""
    return 4 * num_chunks(secret_length)


def _chunks(secret: bytes) -> np.ndarray:
    c = num_chunks(len(secret))
    padded = secret + bytes(c * CHUNK_BYTES - len(secret))
    b = np.frombuffer(padded, np.uint8).reshape(c, CHUNK_BYTES).astype(np.int64)
    return (b[:, 0] << 16) | (b[:, 1] << 8) | b[:, 2]


def _unchunks(values: np.ndarray, length: int) -> bytes:
    v = np.asarray(values, np.int64)
    if np.any(v >= (1 << (8 * CHUNK_BYTES))) or np.any(v < 0):
        raise SecureAggregationError("Shamir reconstruction gave an out-of-range chunk: the shares are inconsistent.")
    b = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=1).astype(np.uint8)
    return b.tobytes()[:length]


def _uniform_field(randbytes: Callable[[int], bytes], shape) -> np.ndarray:
    """Exactly uniform elements of GF(P): 31 random bits, redrawn where they equal P."""
    count = int(np.prod(shape))
    out = np.frombuffer(randbytes(4 * count), np.uint32).astype(np.int64) & P
    bad = out == P
    while np.any(bad):
        out[bad] = np.frombuffer(randbytes(4 * int(bad.sum())), np.uint32).astype(np.int64) & P
        bad = out == P
    return out.reshape(shape)


def _check_points(xs) -> np.ndarray:
    x = np.asarray(list(xs), np.int64)
    if x.ndim != 1 or np.any(x <= 0) or np.any(x >= P) or len(np.unique(x)) != len(x):
        raise ValueError(f"Share points must be distinct integers in [1, {P}). Received: xs={list(xs)[:10]}...")
    return x


def split(secret: bytes, threshold: int, xs: Sequence[int],
          randbytes: Callable[[int], bytes] = os.urandom) -> dict[int, bytes]:
    """Shares `secret` so that any `threshold` of the shares at points `xs` reconstruct it.

    Args:
        secret: the bytes to share (any length; split into 3-byte chunks).
        threshold: shares needed to reconstruct (`1 <= threshold <= len(xs)`).
        xs: distinct evaluation points in `[1, 2^31 - 1)`, one per holder.
        randbytes: source of random bytes for the polynomial coefficients.

    Returns:
        `{x: share_bytes}`, each share `share_length(len(secret))` bytes long.

    Raises:
        ValueError: on a bad threshold or bad points.
    """
    x = _check_points(xs)
    if not is_int(threshold) or not 1 <= threshold <= len(x):
        raise ValueError(f"`threshold` must be an integer in [1, {len(x)}]. Received: threshold={threshold!r}")
    secret_chunks = _chunks(bytes(secret))
    coeffs = _uniform_field(randbytes, (threshold, len(secret_chunks)))
    coeffs[0] = secret_chunks
    acc = np.zeros((len(x), len(secret_chunks)), np.int64)
    for j in range(threshold - 1, -1, -1):  # Horner: acc < P and x < P keep acc * x below 2^62
        acc = (acc * x[:, None] + coeffs[j]) % P
    return {int(xi): acc[i].astype("<u4").tobytes() for i, xi in enumerate(x)}


def _pow_mod(base: np.ndarray, exponent: int) -> np.ndarray:
    result = np.ones_like(base)
    b = base % P
    e = exponent
    while e:
        if e & 1:
            result = result * b % P
        b = b * b % P
        e >>= 1
    return result


def lagrange_at_zero(xs: Sequence[int]) -> np.ndarray:
    """Lagrange coefficients `l_i = prod_{j != i} x_j / (x_j - x_i)` mod P, so `f(0) = sum_i l_i f(x_i)`."""
    x = _check_points(xs)
    if len(x) <= 128:  # small sets: Python integers beat per-element numpy calls
        pts = [int(v) for v in x]
        out = []
        for i, xi in enumerate(pts):
            num = den = 1
            for j, xj in enumerate(pts):
                if j != i:
                    num = num * xj % P
                    den = den * (xj - xi) % P
            out.append(num * pow(den, P - 2, P) % P)
        return np.asarray(out, np.int64)
    num = np.ones(len(x), np.int64)
    den = np.ones(len(x), np.int64)
    idx = np.arange(len(x))
    for j in range(len(x)):
        mine = idx == j
        num = np.where(mine, num, num * x[j] % P)
        den = np.where(mine, den, den * ((x[j] - x) % P) % P)
    return num * _pow_mod(den, P - 2) % P


def reconstruct(shares: Mapping[int, bytes], threshold: int, secret_length: int) -> bytes:
    """Rebuilds a secret from at least `threshold` shares `{x: share_bytes}` (uses the `threshold` lowest points).

    Raises:
        SecureAggregationError: with fewer than `threshold` shares, shares of the wrong length, or shares that do
            not come from one sharing (detected when a chunk falls outside its range).
    """
    if len(shares) < threshold:
        raise SecureAggregationError(
            f"Shamir reconstruction needs {threshold} shares, got {len(shares)}.")
    points = sorted(int(k) for k in shares)[:threshold]
    expected = share_length(secret_length)
    rows = []
    for p in points:
        s = shares[p]
        if len(s) != expected:
            raise SecureAggregationError(
                f"Share from point {p} has {len(s)} bytes, expected {expected}.")
        row = np.frombuffer(s, "<u4").astype(np.int64)
        if np.any(row >= P):
            raise SecureAggregationError(f"Share from point {p} holds a value outside the field.")
        rows.append(row)
    y = np.stack(rows)
    lag = lagrange_at_zero(points)
    values = (lag[:, None] * y % P).sum(axis=0) % P
    return _unchunks(values, secret_length)


__all__ = ["P", "split", "reconstruct", "lagrange_at_zero", "share_length", "num_chunks"]
