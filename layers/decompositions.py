"""Small NumPy tensor decompositions used to initialise factorized layers from trained dense weights.

Everything here is plain NumPy (float64 inside), stateless and deterministic given its `seed`:

* `unfold` / `fold` / `mode_dot`: mode-n matricization and mode-n product (Kolda & Bader 2009 conventions).
* `cp_to_tensor`, `tucker_to_tensor`, `tt_to_tensor`: rebuild a full tensor from its factors.
* `hosvd` (truncated higher-order SVD, with optional HOOI refinement), `tt_svd` (Oseledets 2011) and `cp_als`
  (alternating least squares, SVD-initialised; exact SVD when the tensor is a matrix).
* `cp_rank`, `tucker_ranks`, `tt_ranks`: resolve a user rank (int, fraction of full rank, or per-mode tuple).

The formats are the ones the tensor layers store:

* CP: `factors[k]` has shape `(shape[k], rank)`; the tensor is `sum_r prod_k factors[k][:, r]` (weights absorbed).
* Tucker: `core` has shape `ranks`, `factors[k]` has shape `(shape[k], ranks[k])`.
* TT: `cores[k]` has shape `(r_{k-1}, shape[k], r_k)` with `r_0 = r_N = 1`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tfx_ext._validate import is_int, is_number

__all__ = [
    "unfold",
    "fold",
    "mode_dot",
    "cp_to_tensor",
    "tucker_to_tensor",
    "tt_to_tensor",
    "hosvd",
    "tt_svd",
    "cp_als",
    "check_rank",
    "cp_rank",
    "tucker_ranks",
    "tt_ranks",
    "relative_error",
]


def unfold(tensor: np.ndarray, mode: int) -> np.ndarray:
    """Mode-`mode` matricization: shape `(shape[mode], prod(other dims))`, other dims in increasing order."""
    return np.moveaxis(tensor, mode, 0).reshape(tensor.shape[mode], -1)


def fold(matrix: np.ndarray, mode: int, shape: Sequence[int]) -> np.ndarray:
    """Inverse of `unfold`."""
    shape = list(shape)
    moved = [shape[mode]] + shape[:mode] + shape[mode + 1:]
    return np.moveaxis(np.reshape(matrix, moved), 0, mode)


def mode_dot(tensor: np.ndarray, matrix: np.ndarray, mode: int) -> np.ndarray:
    """Mode-`mode` product `tensor x_mode matrix`, with `matrix` of shape `(new_dim, tensor.shape[mode])`."""
    return np.moveaxis(np.tensordot(matrix, tensor, axes=([1], [mode])), 0, mode)


def cp_to_tensor(factors: Sequence[np.ndarray]) -> np.ndarray:
    """Full tensor `sum_r prod_k factors[k][:, r]` from CP factors of shape `(dim_k, rank)`."""
    rank = factors[0].shape[1]
    out = np.ones((1, rank))
    for f in factors:
        out = (out[:, None, :] * f[None, :, :]).reshape(-1, rank)
    return out.sum(axis=1).reshape([f.shape[0] for f in factors])


def tucker_to_tensor(core: np.ndarray, factors: Sequence[np.ndarray]) -> np.ndarray:
    """Full tensor `core x_1 U_1 ... x_N U_N` from a Tucker core and factors of shape `(dim_k, rank_k)`."""
    out = core
    for k, f in enumerate(factors):
        out = mode_dot(out, f, k)
    return out


def tt_to_tensor(cores: Sequence[np.ndarray]) -> np.ndarray:
    """Full tensor from TT cores of shape `(r_{k-1}, dim_k, r_k)` with `r_0 = r_N = 1`."""
    out = cores[0]
    for core in cores[1:]:
        out = np.tensordot(out, core, axes=([-1], [0]))
    return out.reshape(out.shape[1:-1])


def relative_error(approx: np.ndarray, tensor: np.ndarray) -> float:
    """`||approx - tensor||_F / ||tensor||_F` (0 for an all-zero tensor reproduced exactly)."""
    norm = np.linalg.norm(tensor)
    diff = np.linalg.norm(np.asarray(approx, np.float64) - np.asarray(tensor, np.float64))
    return float(diff / norm) if norm > 0 else float(diff)


# ----------------------------------------------------------------------------------------------------------------
# Rank resolution.


def check_rank(rank, name: str = "rank") -> int | float:
    """A rank as a Python `int` >= 1 or a Python `float` fraction in (0, 1].

    Numpy scalars are normalised here, once: `np.float32(0.5)` is the fraction 0.5 (callers test `isinstance(r,
    float)`, which a numpy float32 fails: it used to fall through to `int(0.5) == 0`, a mode of size zero).
    """
    if is_int(rank):
        if rank < 1:
            raise ValueError(f"An int `{name}` must be >= 1. Received: {name}={rank!r}")
        return int(rank)
    if is_number(rank):
        if not 0.0 < rank <= 1.0:
            raise ValueError(f"A float `{name}` is a fraction of full rank and must be in (0, 1]. "
                             f"Received: {name}={rank!r}")
        return float(rank)
    raise TypeError(f"`{name}` must be an int >= 1 or a float in (0, 1]. Received: {name}={rank!r}")


def cp_rank(shape: Sequence[int], rank) -> int:
    """CP rank: an int is taken as is; a float f in (0, 1] keeps a fraction f of the full tensor's parameters,
    `max(1, round(f * prod(shape) / sum(shape)))` (the TensorLy convention, since CP has no finite "full rank")."""
    rank = check_rank(rank)
    if isinstance(rank, float):
        return max(1, int(round(rank * math.prod(shape) / sum(shape))))
    return rank


def tucker_ranks(shape: Sequence[int], rank) -> tuple[int, ...]:
    """Tucker ranks, one per mode: an int or a fraction (of each mode's size) for all modes, or a tuple with one
    entry per mode. Ranks above a mode's size are clipped to it (the extra rank adds parameters, not expressivity)."""
    n = len(shape)
    ranks = tuple(rank) if isinstance(rank, (tuple, list)) else (rank,) * n
    if len(ranks) != n:
        raise ValueError(f"A per-mode Tucker `rank` needs one entry per mode ({n} modes, shape {tuple(shape)}). "
                         f"Received: rank={rank!r}")
    out = []
    for r, d in zip(ranks, shape):
        r = check_rank(r)
        r = max(1, int(round(r * d))) if isinstance(r, float) else r
        out.append(min(r, d))
    return tuple(out)


def tt_ranks(shape: Sequence[int], rank) -> tuple[int, ...]:
    """Internal TT ranks `(r_1, ..., r_{N-1})`: an int or a fraction (of the maximal rank at each link,
    `min(prod(shape[:k]), prod(shape[k:]))`) for all links, or a tuple with one entry per link. Ranks above the
    maximal rank are clipped to it."""
    n = len(shape)
    ranks = tuple(rank) if isinstance(rank, (tuple, list)) else (rank,) * (n - 1)
    if len(ranks) != n - 1:
        raise ValueError(f"A per-link TT `rank` needs one entry per internal rank ({n - 1} for {n} modes, shape "
                         f"{tuple(shape)}). Received: rank={rank!r}")
    out = []
    for k, r in enumerate(ranks, start=1):
        r = check_rank(r)
        full = min(math.prod(shape[:k]), math.prod(shape[k:]))
        r = max(1, int(round(r * full))) if isinstance(r, float) else r
        out.append(min(r, full))
    return tuple(out)


# ----------------------------------------------------------------------------------------------------------------
# Decompositions.


def _leading_left_singular_vectors(matrix: np.ndarray, rank: int) -> np.ndarray:
    u, _, _ = np.linalg.svd(matrix, full_matrices=False)
    return u[:, :rank]


def hosvd(tensor: np.ndarray, ranks: Sequence[int], n_iter: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Truncated higher-order SVD, optionally refined by `n_iter` HOOI sweeps.

    Args:
        tensor: the array to decompose.
        ranks: one rank per mode, each at most the mode's size.
        n_iter: HOOI (higher-order orthogonal iteration) sweeps after the HOSVD initialisation.

    Returns:
        `(core, factors)` with orthonormal factors of shape `(dim_k, rank_k)`; exact when `ranks == tensor.shape`.
    """
    tensor = np.asarray(tensor, np.float64)
    factors = [_leading_left_singular_vectors(unfold(tensor, k), r) for k, r in enumerate(ranks)]
    for _ in range(n_iter):
        for k in range(tensor.ndim):
            proj = tensor
            for j, f in enumerate(factors):
                if j != k:
                    proj = mode_dot(proj, f.T, j)
            factors[k] = _leading_left_singular_vectors(unfold(proj, k), ranks[k])
    core = tensor
    for k, f in enumerate(factors):
        core = mode_dot(core, f.T, k)
    return core, factors


def tt_svd(tensor: np.ndarray, ranks: Sequence[int]) -> list[np.ndarray]:
    """TT-SVD (Oseledets 2011): sequential truncated SVDs of the remaining unfolding.

    Args:
        tensor: the array to decompose (order N >= 2).
        ranks: the N-1 internal ranks; exact when each is the maximal rank at its link.

    Returns:
        The list of N cores of shape `(r_{k-1}, dim_k, r_k)`.
    """
    tensor = np.asarray(tensor, np.float64)
    shape = tensor.shape
    cores, r_prev, rest = [], 1, tensor
    for k, r in enumerate(ranks):
        mat = rest.reshape(r_prev * shape[k], -1)
        u, s, vt = np.linalg.svd(mat, full_matrices=False)
        r = min(r, s.size)
        cores.append(u[:, :r].reshape(r_prev, shape[k], r))
        rest = s[:r, None] * vt[:r]
        r_prev = r
    cores.append(rest.reshape(r_prev, shape[-1], 1))
    return cores


def cp_als(tensor: np.ndarray, rank: int, n_iter: int = 200, tol: float = 1e-10, seed: int = 0) -> list[np.ndarray]:
    """CP decomposition by alternating least squares.

    A matrix (order 2) is decomposed exactly by its truncated SVD. Higher orders start from the leading singular
    vectors of each unfolding (random columns beyond a mode's size, from `numpy.random.default_rng(seed)`), then
    alternate least-squares updates until the relative fit changes by less than `tol`.

    Args:
        tensor: the array to decompose.
        rank: the number of rank-one components.
        n_iter: maximum ALS sweeps.
        tol: stopping tolerance on the change of relative error.
        seed: seed of the random columns of the initialisation.

    Returns:
        The factors, `factors[k]` of shape `(dim_k, rank)`, with the component norms spread evenly over the modes.
    """
    tensor = np.asarray(tensor, np.float64)
    n = tensor.ndim
    if n == 2:
        u, s, vt = np.linalg.svd(tensor, full_matrices=False)
        k = min(rank, s.size)
        a = np.zeros((tensor.shape[0], rank))
        b = np.zeros((tensor.shape[1], rank))
        a[:, :k] = u[:, :k] * np.sqrt(s[:k])
        b[:, :k] = vt[:k].T * np.sqrt(s[:k])
        return [a, b]
    rng = np.random.default_rng(seed)
    factors = []
    for k in range(n):
        u = _leading_left_singular_vectors(unfold(tensor, k), rank)
        if u.shape[1] < rank:
            u = np.concatenate([u, rng.normal(size=(tensor.shape[k], rank - u.shape[1]))], axis=1)
        factors.append(u)
    norm = np.linalg.norm(tensor)
    prev = np.inf
    for _ in range(n_iter):
        for k in range(n):
            gram = np.ones((rank, rank))
            for j in range(n):
                if j != k:
                    gram *= factors[j].T @ factors[j]
            others = [factors[j] for j in range(n) if j != k]
            kr = others[0]
            for f in others[1:]:
                kr = (kr[:, None, :] * f[None, :, :]).reshape(-1, rank)
            mttkrp = unfold(tensor, k) @ kr
            factors[k] = np.linalg.lstsq(gram.T, mttkrp.T, rcond=None)[0].T
        err = np.linalg.norm(cp_to_tensor(factors) - tensor) / (norm if norm > 0 else 1.0)
        if abs(prev - err) < tol:
            break
        prev = err
    # Spread each component's norm evenly so no factor is tiny while another is huge.
    norms = np.stack([np.linalg.norm(f, axis=0) for f in factors])  # (n, rank)
    total = np.prod(norms, axis=0)
    safe = np.where(norms > 0, norms, 1.0)
    return [f / safe[k] * np.where(total > 0, total, 0.0) ** (1.0 / n) for k, f in enumerate(factors)]
