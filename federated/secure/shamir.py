"""Shamir t-of-n secret sharing over the prime field GF(2^31 - 1), with secrets split into chunks.

A secret of any length is cut into 3-byte chunks (24 bits, each below the field's prime `P = 2^31 - 1`), and each
chunk is shared with its own independent random polynomial of degree `t - 1`; a share is the vector of the chunk
polynomials evaluated at the holder's point `x` (an integer in `[1, P)`). Any `t` shares reconstruct the secret by
Lagrange interpolation at 0; fewer than `t` reveal nothing (perfect secrecy holds chunk by chunk, for any prime
field larger than the number of holders). The small field keeps every product below 2^62, so sharing and
reconstruction are vectorised int64 numpy (a 32-byte key to 1,000 holders with t = 500 takes milliseconds).
`split_many` shares many secrets in one Horner pass; `reconstruct_many` interpolates every secret held by the same
survivors in one pass, and Lagrange coefficients are cached per point set (a server rebuilds n secrets from one).

Random coefficients come from a caller-supplied `randbytes(n) -> bytes` (default `os.urandom`), rejection-sampled
so they are exactly uniform in the field.
"""

from __future__ import annotations

import functools
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


def share_field(values, threshold: int, xs: Sequence[int],
                randbytes: Callable[[int], bytes] = os.urandom) -> np.ndarray:
    """Shares every field element of `values` at once: `(len(xs), len(values))` int64, row i the shares at `xs[i]`.

    One random polynomial of degree `threshold - 1` per element, all evaluated by one vectorised Horner pass.
    """
    x = _check_points(xs)
    if not is_int(threshold) or not 1 <= threshold <= len(x):
        raise ValueError(f"`threshold` must be an integer in [1, {len(x)}]. Received: threshold={threshold!r}")
    v = np.asarray(values, np.int64).ravel()
    if np.any(v < 0) or np.any(v >= P):
        raise ValueError(f"Values to share must lie in [0, {P}). Received: an element outside")
    coeffs = _uniform_field(randbytes, (threshold, len(v)))
    coeffs[0] = v
    acc = np.zeros((len(x), len(v)), np.int64)
    for j in range(threshold - 1, -1, -1):  # Horner: acc < P and x < P keep acc * x below 2^62
        acc = (acc * x[:, None] + coeffs[j]) % P
    return acc


def split_many(secrets: Sequence[bytes], threshold: int, xs: Sequence[int],
               randbytes: Callable[[int], bytes] = os.urandom) -> list[dict[int, bytes]]:
    """`[split(s, threshold, xs) for s in secrets]` in one vectorised pass (secrets of equal length).

    Raises:
        ValueError: on secrets of different lengths, a bad threshold or bad points.
    """
    secrets = [bytes(s) for s in secrets]
    if len({len(s) for s in secrets}) > 1:
        raise ValueError(f"`split_many` needs secrets of one length. Received lengths {sorted({len(s) for s in secrets})}")
    if not secrets:
        return []
    c = num_chunks(len(secrets[0]))
    shares = share_field(np.concatenate([_chunks(s) for s in secrets]), threshold, xs, randbytes)
    rows = shares.astype("<u4").reshape(len(shares), len(secrets), c)
    points = [int(v) for v in xs]
    return [{p: rows[i, k].tobytes() for i, p in enumerate(points)} for k in range(len(secrets))]


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
    return split_many([secret], threshold, xs, randbytes)[0]


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


def _row_products(a: np.ndarray) -> np.ndarray:
    """Product mod P of each row of `a` (field elements), by pairwise halving: log2(columns) vector steps, and
    every partial product of two elements below P fits int64."""
    while a.shape[1] > 1:
        if a.shape[1] % 2:
            a = np.concatenate([a, np.ones((a.shape[0], 1), np.int64)], axis=1)
        a = a[:, 0::2] * a[:, 1::2] % P
    return a[:, 0]


@functools.lru_cache(maxsize=256)
def _lagrange(points: tuple[int, ...]) -> np.ndarray:
    """Cached per point set: a server rebuilds many secrets from the same survivors."""
    x = np.asarray(points, np.int64)
    diff = (x[None, :] - x[:, None]) % P  # diff[i, j] = x_j - x_i
    np.fill_diagonal(diff, 1)
    others = np.broadcast_to(x, (len(x), len(x))).copy()  # others[i, j] = x_j, with 1 at j == i
    np.fill_diagonal(others, 1)
    out = _row_products(others) * _pow_mod(_row_products(diff), P - 2) % P
    out.setflags(write=False)
    return out


def lagrange_at_zero(xs: Sequence[int]) -> np.ndarray:
    """Lagrange coefficients `l_i = prod_{j != i} x_j / (x_j - x_i)` mod P, so `f(0) = sum_i l_i f(x_i)`."""
    return _lagrange(tuple(int(v) for v in _check_points(xs)))


def interpolate_at_zero(points: Sequence[int], y) -> np.ndarray:
    """`f(0)` for every column of `y` (`(len(points), m)` field elements, row i the values at `points[i]`)."""
    lag = lagrange_at_zero(points)
    y = np.asarray(y, np.int64)
    if y.ndim != 2 or y.shape[0] != len(lag):
        raise ValueError(f"`y` must have one row per point ({len(lag)}). Received shape {y.shape}")
    return (lag[:, None] * y % P).sum(axis=0) % P  # each term < P: the sum fits int64 for any t < 2^32


def _share_rows(shares: Mapping[int, bytes], points, expected: int) -> np.ndarray:
    rows = []
    for p in points:
        s = shares[p]
        if len(s) != expected:
            raise SecureAggregationError(
                f"Share from point {p} has {len(s)} bytes, expected {expected}.")
        rows.append(np.frombuffer(s, "<u4"))
    y = np.stack(rows).astype(np.int64)
    if np.any(y >= P):
        bad = points[int(np.argmax(np.any(y >= P, axis=1)))]
        raise SecureAggregationError(f"Share from point {bad} holds a value outside the field.")
    return y


def reconstruct_many(share_sets: Sequence[Mapping[int, bytes]], threshold: int, secret_length: int) -> list[bytes]:
    """`[reconstruct(s, threshold, secret_length) for s in share_sets]`, one interpolation per distinct point set.

    Raises:
        SecureAggregationError: as `reconstruct`, for the first bad set.
    """
    expected = share_length(secret_length)
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, shares in enumerate(share_sets):
        if len(shares) < threshold:
            raise SecureAggregationError(
                f"Shamir reconstruction needs {threshold} shares, got {len(shares)}.")
        groups.setdefault(tuple(sorted(int(p) for p in shares)[:threshold]), []).append(k)
    out: list[bytes] = [b""] * len(share_sets)
    for points, members in groups.items():
        y = np.concatenate([_share_rows(share_sets[k], points, expected) for k in members], axis=1)
        values = interpolate_at_zero(points, y).reshape(len(members), -1)
        for k, v in zip(members, values):
            out[k] = _unchunks(v, secret_length)
    return out


def reconstruct(shares: Mapping[int, bytes], threshold: int, secret_length: int) -> bytes:
    """Rebuilds a secret from at least `threshold` shares `{x: share_bytes}` (uses the `threshold` lowest points).

    Raises:
        SecureAggregationError: with fewer than `threshold` shares, shares of the wrong length, or shares that do
            not come from one sharing (detected when a chunk falls outside its range).
    """
    return reconstruct_many([shares], threshold, secret_length)[0]


__all__ = ["P", "split", "split_many", "share_field", "reconstruct", "reconstruct_many", "interpolate_at_zero",
           "lagrange_at_zero", "share_length", "num_chunks"]
