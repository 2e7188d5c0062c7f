"""Aggregation maths as pure functions: no Keras, no I/O, no globals, inputs never modified.

- `weighted_average(results)`: FedAvg's example-weighted mean of client weights, `results = [(weights, n), ...]`.
- `weighted_delta_sum(global_weights, results)`: the sum `Σ n_k (w_k - w)` and `Σ n_k`; what a sum-based
  aggregator needs, and what secure aggregation or a cross-replica all-reduce computes.
- `mean_update(arrays, weight)`: `delta = Σ n_k (w_k - w) / Σ n_k` from such a sum.
- Server optimizer steps of Reddi et al., "Adaptive Federated Optimization" (ICLR 2021), Algorithm 2, each
  `(weights, delta, state, **hyperparameters) -> (weights, state)`. The server treats the negative average client
  update as a pseudo-gradient:
    * SGD:      w <- w + lr * delta                           (lr = 1 is plain FedAvg)
    * FedAvgM:  v <- momentum * v + delta;  w <- w + lr * v
    * FedAdam:  m <- b1 m + (1 - b1) delta;  v <- b2 v + (1 - b2) delta^2;  w <- w + lr * m / (sqrt(v) + tau)
    * FedYogi:  m as Adam;  v <- v - (1 - b2) delta^2 sign(v - delta^2);  w <- w + lr * m / (sqrt(v) + tau)
  No bias correction (as in the paper); `v` starts at `tau^2` (the paper's `v_{-1} >= tau^2`), `m` at 0.

Weights are lists of arrays keyed by position (the model adapter's order), never by variable name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Weights = list  # list[np.ndarray], positional


def weighted_average(results: Sequence[tuple[Sequence[np.ndarray], int]]) -> list[np.ndarray]:
    """Example-weighted average of client weights (FedAvg, McMahan et al. 2017).

    Args:
        results: `[(weights, num_examples), ...]`; every `weights` is a list of arrays of the same shapes.

    Returns:
        `[Σ_k n_k w_k[i] / Σ_k n_k for each layer i]` (float64 accumulation, cast back to the weights' dtype).

    Raises:
        ValueError: on no results or a non-positive total of examples.
    """
    if not results:
        raise ValueError("`results` must hold at least one client result. Received: results=[]")
    total = float(sum(n for _, n in results))
    if total <= 0:
        raise ValueError(f"The total number of examples must be positive. Received: total={total}")
    out = []
    for i, ref in enumerate(results[0][0]):
        acc = np.zeros(np.shape(ref), np.float64)
        for weights, n in results:
            acc += float(n) * np.asarray(weights[i], np.float64)
        out.append((acc / total).astype(np.asarray(ref).dtype))
    return out


def weighted_delta_sum(
    global_weights: Sequence[np.ndarray], results: Sequence[tuple[Sequence[np.ndarray], int]]
) -> tuple[list[np.ndarray], float]:
    """`(Σ_k n_k (w_k - w), Σ_k n_k)`: the summable part of FedAvg.

    Args:
        global_weights: the weights `w` the clients started from.
        results: `[(weights, num_examples), ...]`.

    Returns:
        The per-layer sums (float64) and the total number of examples.
    """
    sums = [np.zeros(np.shape(g), np.float64) for g in global_weights]
    total = 0.0
    for weights, n in results:
        for s, w, g in zip(sums, weights, global_weights):
            s += float(n) * (np.asarray(w, np.float64) - np.asarray(g, np.float64))
        total += float(n)
    return sums, total


def mean_update(arrays: Sequence[np.ndarray], weight: float) -> list[np.ndarray]:
    """`[a / weight for a in arrays]` (float64): the average update from a weighted sum and its total weight."""
    return [np.asarray(a, np.float64) / float(weight) for a in arrays]


def _apply(weights, step):
    """`w + step` per layer, in each weight's own dtype."""
    return [np.asarray(w + s, dtype=np.asarray(w).dtype) for w, s in zip(weights, step)]


def server_sgd_step(weights, delta, state=None, *, learning_rate: float = 1.0):
    """`w + lr * delta` (lr = 1: plain FedAvg). Returns `(weights, state)`; SGD has no state."""
    return _apply(weights, [learning_rate * d for d in delta]), dict(state or {})


def server_avgm_step(weights, delta, state, *, learning_rate: float = 1.0, momentum: float = 0.9):
    """FedAvgM: `v <- momentum v + delta; w <- w + lr v`. Returns `(weights, {"velocity": v})`."""
    velocity = [momentum * v + d for v, d in zip(state["velocity"], delta)]
    return _apply(weights, [learning_rate * v for v in velocity]), {"velocity": velocity}


def _adaptive_step(weights, m, v, learning_rate, tau):
    return _apply(weights, [learning_rate * mi / (np.sqrt(vi) + tau) for mi, vi in zip(m, v)]), {"m": m, "v": v}


def server_adam_step(weights, delta, state, *, learning_rate=1e-2, beta_1=0.9, beta_2=0.99, tau=1e-3):
    """FedAdam (Reddi et al. 2021, Alg. 2). Returns `(weights, {"m": m, "v": v})`."""
    m = [beta_1 * mi + (1 - beta_1) * d for mi, d in zip(state["m"], delta)]
    v = [beta_2 * vi + (1 - beta_2) * d * d for vi, d in zip(state["v"], delta)]
    return _adaptive_step(weights, m, v, learning_rate, tau)


def server_yogi_step(weights, delta, state, *, learning_rate=1e-2, beta_1=0.9, beta_2=0.99, tau=1e-3):
    """FedYogi (Reddi et al. 2021, Alg. 2): `v <- v - (1 - b2) d^2 sign(v - d^2)`. Returns `(weights, state)`."""
    m = [beta_1 * mi + (1 - beta_1) * d for mi, d in zip(state["m"], delta)]
    v = [vi - (1 - beta_2) * d * d * np.sign(vi - d * d) for vi, d in zip(state["v"], delta)]
    return _adaptive_step(weights, m, v, learning_rate, tau)


def server_adagrad_step(weights, delta, state, *, learning_rate=1e-2, beta_1=0.0, tau=1e-3):
    """FedAdagrad (Reddi et al. 2021, Alg. 2): `v <- v + d^2`. Returns `(weights, {"m": m, "v": v})`."""
    m = [beta_1 * mi + (1 - beta_1) * d for mi, d in zip(state["m"], delta)]
    v = [vi + d * d for vi, d in zip(state["v"], delta)]
    return _adaptive_step(weights, m, v, learning_rate, tau)


def update_norm(delta: Sequence[np.ndarray]) -> float:
    """The global L2 norm of an update."""
    return float(np.sqrt(sum(float(np.sum(np.square(d))) for d in delta)))


__all__ = [
    "mean_update",
    "server_adagrad_step",
    "server_adam_step",
    "server_avgm_step",
    "server_sgd_step",
    "server_yogi_step",
    "update_norm",
    "weighted_average",
    "weighted_delta_sum",
]
