"""Tensor dropout (Kolbeinsson, Kossaifi et al., "Tensor Dropout for Robust Learning", IEEE JSTSP 2021).

Bernoulli masks on the rank components of a factorized weight. This module holds the pieces shared by the tensor
layers: argument checks, the exact keep probability and the mask sampler.

A rank of size `R` gets a mask whose entries are kept when `u_r < 1 - rate` (with `u ~ U(0, 1)` i.i.d.) or when
`u_r` is among the `min_keep` smallest values, so at least `min_keep` components always survive ("never drop
everything"). Every component is then kept with the same probability

    q = E[max(X, k)] / R,   X ~ Binomial(R, 1 - rate),  k = min(min_keep, R),

which equals `1 - rate` whenever `min_keep` cannot bind (`min_keep = 0`) and is slightly larger otherwise. Kept
components are rescaled by `1 / q` (i.e. `1 / (1 - rate)` in the paper's setting), so that the expected weight
under dropout is exactly the deterministic weight, for any `min_keep`. Ranks of size `<= min_dim`, or with
`min_keep >= R`, are never dropped.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from tfx_ext._validate import check_int, check_number

__all__ = ["keep_probability", "sample_keep_mask", "check_dropout_args"]


def keep_probability(rank: int, rate: float, min_keep: int) -> float:
    """Marginal probability that one of `rank` components survives tensor dropout (see the module docstring).

    Args:
        rank: number of components `R` (>= 1).
        rate: drop probability `p` in [0, 1).
        min_keep: number of components that are always kept.

    Returns:
        `E[max(X, k)] / R` with `X ~ Binomial(R, 1 - p)` and `k = min(min_keep, R)`.
    """
    k = min(int(min_keep), int(rank))
    q = 1.0 - rate
    expected = rank * q
    for j in range(k):
        expected += (k - j) * math.comb(rank, j) * q**j * (1.0 - q) ** (rank - j)
    return expected / rank


def sample_keep_mask(seed_generator, batch, rank: int, rate: float, min_keep: int, dtype="float32"):
    """Draws a `(batch, rank)` 0/1 mask: kept if `u < 1 - rate` or `u` is among the `min_keep` smallest of its row.

    Args:
        seed_generator: a `keras.random.SeedGenerator`.
        batch: number of independent rows (1 for a per-batch mask; a tensor for per-sample masks).
        rank: number of components.
        rate: drop probability.
        min_keep: components always kept per row.
        dtype: dtype of the returned mask.

    Returns:
        A `(batch, rank)` tensor of zeros and ones (not rescaled).
    """
    u = keras.random.uniform((batch, rank), seed=seed_generator)
    keep = ops.less(u, 1.0 - rate)
    k = min(int(min_keep), int(rank))
    if k > 0:
        kth_smallest = -ops.top_k(-u, k, sorted=True)[0][:, k - 1:k]
        keep = ops.logical_or(keep, ops.less_equal(u, kth_smallest))
    return ops.cast(keep, dtype)


def check_dropout_args(rank_dropout, min_dim, min_keep, mask_per_sample, drop_at_inference, seed
                       ) -> tuple[float, int, int, int | None]:
    """Validates the tensor-dropout constructor arguments shared by the tensor layers.

    Returns:
        `(rank_dropout, min_dim, min_keep, seed)` as Python numbers (numpy scalars accepted), ready for the config.
    """
    rank_dropout = check_number("rank_dropout", rank_dropout, low=0.0, high=1.0, high_open=True)
    min_dim = check_int("min_dim", min_dim, minimum=0)
    min_keep = check_int("min_keep", min_keep, minimum=0)
    if not isinstance(mask_per_sample, bool):
        raise TypeError(f"`mask_per_sample` must be a bool. Received: mask_per_sample={mask_per_sample!r}")
    if not isinstance(drop_at_inference, bool):
        raise TypeError(f"`drop_at_inference` must be a bool. Received: drop_at_inference={drop_at_inference!r}")
    seed = check_int("seed", seed, allow_none=True, error=TypeError)
    return rank_dropout, min_dim, min_keep, seed
