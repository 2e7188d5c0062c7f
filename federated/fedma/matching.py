"""Matching of hidden units across clients: the PFNM / BBP-MAP cost solved with the Hungarian algorithm.

Yurochkin et al., "Bayesian Nonparametric Federated Learning of Neural Networks" (ICML 2019), as used layer by
layer in Wang et al., "Federated Learning with Matched Averaging" (ICLR 2020). Each client `j` brings `U_j` local
units ("atoms"), each a feature vector `w_jl` (its incoming weights and bias). Global atoms `theta_i` have the prior
`N(mu0, sigma0^2 I)`, local atoms are noisy copies `N(theta_i, sigma^2 I)`, and which global atoms a client uses
follows a Beta-Bernoulli (Indian buffet) process with mass `gamma`. In natural parameters (`G_i`: the prior mean
over `sigma0^2` plus the sum of the atoms matched to `i` over `sigma^2`; `S_i`: the posterior precision), the gain
of assigning local atom `l` of client `j` to

    existing atom i:  ||w_jl / s^2 + G_i||^2 / (S_i + 1/s^2) - ||G_i||^2 / S_i + log(m_i / (J - m_i))
    new atom t:       ||w_jl / s^2 + mu0 / s0^2||^2 / (1/s0^2 + 1/s^2) - ||mu0 / s0^2||^2 s0^2
                      + 2 log(gamma / J) - 2 log(t)                                  (t = 1, 2, ...)

(`m_i`: how many other clients use atom `i`). `scipy.optimize.linear_sum_assignment` maximizes the total gain
for one client given the others; the clients are visited in a seeded random order, first to build the global
atoms and then for `passes - 1` more rounds of remove-and-rematch. `max_units` caps how many global atoms may
exist (no new-atom columns beyond it), so the global layer grows at most to the cap.

When every global atom is used by the same number of clients (no growth, equal widths), the gain reduces to
`-||w_jl - theta_i||^2` up to constants per row, so `match_to_global` (client-side matching against a broadcast
global layer) minimizes the summed squared distance.

Everything here is plain NumPy over `(units, features)` arrays: no Keras, no I/O, inputs never modified.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from tfx_ext._validate import check_number, is_int
from scipy.optimize import linear_sum_assignment


@dataclasses.dataclass(frozen=True)
class MatchResult:
    """Outcome of matching one layer across clients.

    Attributes:
        assignments: one int array per client, `assignments[j][l]` = the global unit of client j's local unit l
            (distinct within a client).
        width: the number of global units.
        atoms: `(width, features)` posterior means of the global atoms.
        counts: `(width,)` how many clients use each global unit.
    """

    assignments: list
    width: int
    atoms: np.ndarray
    counts: np.ndarray


def _check_features(features):
    if not isinstance(features, (list, tuple)) or not features:
        raise ValueError(f"`features` must be a non-empty list of (units, features) arrays. Received: {features!r}")
    arrays = [np.asarray(f, np.float64) for f in features]
    dims = {a.shape[1] if a.ndim == 2 else None for a in arrays}
    if None in dims or len(dims) != 1:
        raise ValueError(
            "`features` must be 2-D arrays (units, features) with the same number of features. "
            f"Received: shapes={[a.shape for a in arrays]}"
        )
    if any(a.shape[0] == 0 for a in arrays):
        raise ValueError(f"Every client must have at least one unit. Received: shapes={[a.shape for a in arrays]}")
    return arrays



def match_units(
    features: Sequence[np.ndarray],
    *,
    sigma: float = 1.0,
    sigma0: float = 1.0,
    gamma: float = 1.0,
    passes: int = 3,
    max_units: int | None = None,
    prior_mean: np.ndarray | None = None,
    rng: np.random.Generator | int | None = 0,
) -> MatchResult:
    """Matches the units of one layer across clients with the BBP-MAP cost (PFNM).

    Args:
        features: one `(U_j, D)` array per client: row `l` is local unit `l`'s feature vector (incoming weights
            and bias, with the previous layer already in global order).
        sigma: standard deviation of local atoms around their global atom.
        sigma0: standard deviation of the prior over global atoms.
        gamma: Indian-buffet mass (larger: new global units are cheaper).
        passes: passes over the clients (the first builds the global atoms; each further pass removes and
            re-matches every client in a new random order).
        max_units: cap on the number of global units (None: no cap). The widest client always fits.
        prior_mean: `(D,)` prior mean `mu0` (default: the mean of all local atoms, as in the FedMA code).
        rng: `numpy.random.Generator` or seed for the client orders.

    Returns:
        A `MatchResult`.

    Raises:
        ValueError: on malformed features or parameters.
    """
    arrays = _check_features(features)
    for name, value in (("sigma", sigma), ("sigma0", sigma0), ("gamma", gamma)):
        check_number(name, value, low=0, low_open=True)
    if not is_int(passes) or passes < 1:
        raise ValueError(f"`passes` must be an integer >= 1. Received: passes={passes!r}")
    if max_units is not None and (not is_int(max_units)
                                  or max_units < 1):
        raise ValueError(f"`max_units` must be None or a positive integer. Received: max_units={max_units!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    num_clients = len(arrays)
    dim = arrays[0].shape[1]
    s_inv = 1.0 / float(sigma) ** 2
    p_inv = 1.0 / float(sigma0) ** 2
    mu0 = np.mean(np.concatenate(arrays), axis=0) if prior_mean is None else np.asarray(prior_mean, np.float64)
    if mu0.shape != (dim,):
        raise ValueError(f"`prior_mean` must have shape ({dim},). Received: shape={mu0.shape}")
    mu0n = mu0 * p_inv
    prior_norm = float(mu0n @ mu0n) / p_inv
    natural = [a * s_inv for a in arrays]
    cap = None if max_units is None else max(int(max_units), max(a.shape[0] for a in arrays))

    g_sum = np.zeros((0, dim))  # natural parameters of the global atoms
    g_prec = np.zeros((0,))  # their precisions
    counts = np.zeros((0,), np.int64)
    assignments: list = [None] * num_clients

    def assign(j, g_sum, g_prec, counts):
        w = natural[j]
        num_local = w.shape[0]
        num_global = g_sum.shape[0]
        cost_cols = []
        if num_global:
            cross = (w @ g_sum.T) * 2.0 + np.sum(w * w, axis=1)[:, None] + np.sum(g_sum * g_sum, axis=1)[None, :]
            match = cross / (g_prec + s_inv)[None, :] - (np.sum(g_sum * g_sum, axis=1) / g_prec)[None, :]
            popularity = np.log(counts / np.maximum(num_clients - counts, 1.0))
            cost_cols.append(match + popularity[None, :])
        new_max = num_local if cap is None else min(num_local, max(cap - num_global, 0))
        new_max = max(new_max, num_local - num_global)  # every local unit must find a column
        if new_max:
            base = np.sum((w + mu0n) ** 2, axis=1) / (p_inv + s_inv) - prior_norm
            new = base[:, None] + 2.0 * np.log(gamma / num_clients) - 2.0 * np.log(np.arange(1, new_max + 1))[None]
            cost_cols.append(new)
        gain = np.hstack(cost_cols)
        rows, cols = linear_sum_assignment(-gain)
        assignment = np.empty(num_local, np.int64)
        order = np.argsort(cols, kind="stable")  # new atoms get ids in column order
        next_id = num_global
        add_sum, add_prec = [], []
        counts = counts.copy()
        g_sum = g_sum.copy()
        g_prec = g_prec.copy()
        for r, c in zip(rows[order], cols[order]):
            if c < num_global:
                assignment[r] = c
                g_sum[c] += w[r]
                g_prec[c] += s_inv
                counts[c] += 1
            else:
                assignment[r] = next_id
                next_id += 1
                add_sum.append(mu0n + w[r])
                add_prec.append(p_inv + s_inv)
        if add_sum:
            g_sum = np.vstack([g_sum, np.asarray(add_sum)])
            g_prec = np.concatenate([g_prec, np.asarray(add_prec)])
            counts = np.concatenate([counts, np.ones(len(add_sum), np.int64)])
        return assignment, g_sum, g_prec, counts

    for j in rng.permutation(num_clients):
        assignments[j], g_sum, g_prec, counts = assign(j, g_sum, g_prec, counts)
    for _ in range(passes - 1):
        for j in rng.permutation(num_clients):
            # Remove client j from the global atoms; atoms no other client uses disappear.
            g_sum = g_sum.copy()
            g_prec = g_prec.copy()
            counts = counts.copy()
            for l, i in enumerate(assignments[j]):
                g_sum[i] -= natural[j][l]
                g_prec[i] -= s_inv
                counts[i] -= 1
            keep = counts > 0
            remap = np.cumsum(keep) - 1
            for k in range(num_clients):
                if k != j:
                    assignments[k] = remap[assignments[k]]
            g_sum, g_prec, counts = g_sum[keep], g_prec[keep], counts[keep]
            assignments[j], g_sum, g_prec, counts = assign(j, g_sum, g_prec, counts)
    return MatchResult([np.asarray(a) for a in assignments], int(g_sum.shape[0]), g_sum / g_prec[:, None],
                       counts.copy())


def match_to_global(local: np.ndarray, global_: np.ndarray) -> np.ndarray:
    """Client-side matching: the assignment of local units to global units minimizing `Σ ||w_l - theta_π(l)||^2`.

    This is the PFNM gain when every global unit has the same popularity and no unit may be added (see the module
    docstring), so a client can align itself to a broadcast global layer without the server seeing its weights.

    Args:
        local: `(U, D)` the client's unit features (previous layers already aligned to the global model).
        global_: `(L, D)` the global layer's unit features, `L >= U`.

    Returns:
        int array `(U,)`: the global unit of each local unit (distinct).

    Raises:
        ValueError: when the shapes do not fit.
    """
    local = np.asarray(local, np.float64)
    global_ = np.asarray(global_, np.float64)
    if local.ndim != 2 or global_.ndim != 2 or local.shape[1] != global_.shape[1] or local.shape[0] > global_.shape[0]:
        raise ValueError(
            "`local` and `global_` must be (U, D) and (L, D) arrays with U <= L. "
            f"Received: local.shape={local.shape}, global_.shape={global_.shape}"
        )
    dist = (np.sum(local * local, axis=1)[:, None] - 2.0 * local @ global_.T
            + np.sum(global_ * global_, axis=1)[None, :])
    rows, cols = linear_sum_assignment(dist)
    out = np.empty(local.shape[0], np.int64)
    out[rows] = cols
    return out


__all__ = ["MatchResult", "match_units", "match_to_global"]
