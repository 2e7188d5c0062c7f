"""Who shares with whom: the complete graph (SecAgg) or a sparse random graph of logarithmic degree (SecAgg+).

SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, "Secure Single-Server Aggregation with (Poly)Logarithmic
Overhead", CCS 2020) replaces the complete graph of Bonawitz et al. (CCS 2017) by a random graph of degree
`k = O(log n)`: each client exchanges masks and Shamir shares with its `k` neighbours only, with a `t`-of-`k`
threshold. We use a Harary graph `H(k, n)` (each client linked to the `k/2` nearest on each side of a ring) over a
random permutation of the clients: a regular graph, so every client has exactly `k` neighbours (Bell et al. analyse
random graphs of that degree; the conditions below are stated for this one).

The graph is fixed by the invitation, before any key exists, so dropping clients cannot choose it: the ring
order sorts the invited ids by `SHA-256(seed || id)` (8-byte big-endian id), with
`seed = SHA-256("tfx-ext/secagg/graph-v2" || round || public seed || every invited id in order)`. Clients that
drop out keep their place on the ring (their neighbours just have fewer live peers). The public seed must be a
value the server cannot choose after it knows whom it corrupts: a public randomness beacon (e.g. drand) read
after the invitations are fixed. Hashing and sorting make the graph portable: it depends on SHA-256 only, not on a
numpy random stream.

Parameter formula (our union-bound instantiation of the conditions in Bell et al. 2020; not the paper's exact
constants). With `n` clients, tolerated dropout rate `delta`, fraction of clients colluding with the server
`gamma`, statistical security parameter `sigma` (default 40) and correctness parameter `eta` (default 20), and
`B(k, p)` a binomial count of neighbours (each independently dropped with probability `delta`, corrupt with `gamma`):

  * correctness: every secret can be rebuilt, P[B(k, delta) > k - t] <= 2^-eta / n;
  * privacy of each client's secrets: the corrupt neighbours alone cannot rebuild them,
    P[B(k, gamma) >= t] <= 2^-sigma / n;
  * no partial sums: the honest survivors stay connected; in `H(k, n)` that needs `k/2` consecutive bad clients on
    the ring, n (delta + gamma)^(k/2) <= 2^-sigma;
  * honest majority of shares: t > k / 2.

SecAgg+ takes the smallest even `k` (then the smallest `t`) meeting all four; each bound carries a `1/n` union
factor, which is where `k = O(log n)` comes from (e.g. delta = gamma = 0.1: k = 46, t = 26 at n = 100; k = 50 at
n = 1,000; k = 64 at n = 10^6). SecAgg uses the complete graph, `k = n - 1`, with the smallest `t > k/2` that
meets the privacy bound; its correctness bound is reported (`correctness_failure`) rather than enforced, since `k`
cannot grow. When `k` would reach `n - 1`, SecAgg+ is the complete graph. When the privacy and the correctness
bounds conflict, correctness wins (a round that fails helps no one). When `n` is too small to meet the correctness
bound at all (tens of clients), `t` balances the two failure probabilities: the `t` in `(k/2, k]` minimising

  max(P[B(k, delta) > k - t], P[B(k, gamma) >= t]),

and both achieved bounds are reported (`correctness_failure`, `privacy_failure`).

Active threat model (`threat_model="active"`). A server that forks the survivor view (tells some holders of
client u's shares that u survived and others that u dropped) collects both u's self-mask share and its neighbours'
mask-key shares when enough holders answer in each fork. Holders answer only with `t` signatures over their own
view from their own neighbours, and an honest client signs one view, so two forks of one neighbourhood of `k` need
`2t - k` corrupt signers. The active mode therefore needs, besides the privacy bound,

  * SecAgg+: P[B(k, gamma) >= 2t - k] <= 2^-sigma / n;
  * SecAgg (complete graph, Bonawitz et al. 2017): t >= floor(2n/3) + 1,

and `choose_parameters(threat_model="active")` grows `t` (then `k`) until they hold; `RoundConfig` refuses weaker
settings with the formula in the message (`active_problem`).

Round-failure probability. A round fails when some client's secrets cannot be rebuilt, i.e. more than `k - t` of
its `k` neighbours dropped out by the unmasking stage. With each client dropping (at some stage) independently with
probability `delta`, the union bound over the `n` clients gives

  P[round fails] <= n * P[B(k, delta) >= k - t + 1] = n * sum_{i = k - t + 1}^{k} C(k, i) delta^i (1 - delta)^(k - i),

the `correctness_failure` reported. Example: n = 20 (complete graph, k = 19), delta = gamma = 0.1: tolerating only
the expected `ceil(delta k) = 2` dropouts (t = 17) failed about one round in four (25 of 100 measured); the balanced
threshold t = 10 tolerates 9 and bounds the failure at 20 * P[B(19, 0.1) >= 10] ~ 1e-4 (0 of 100 measured,
`tests/federated/secure/test_failure_rate.py`), with the same bound on the privacy side.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import struct
from collections.abc import Sequence

import numpy as np
from scipy import stats

from tfx_ext._validate import check_number, is_int

VARIANTS = ("secagg", "secagg+")
THREAT_MODELS = ("semi-malicious", "active")


def _binom_tail_ge(k: int, p: float, t: int) -> float:
    """P[Binomial(k, p) >= t]."""
    if t <= 0:
        return 1.0
    if t > k or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    return float(stats.binom.sf(t - 1, k, p))


@dataclasses.dataclass(frozen=True)
class GraphParameters:
    """Degree `k`, threshold `t` and the failure bounds they achieve (see module docstring)."""

    num_clients: int
    degree: int
    threshold: int
    correctness_failure: float  # union bound on P[some secret cannot be rebuilt] at the stated dropout rate
    privacy_failure: float  # union bound on P[corrupt neighbours alone can rebuild some client's secrets]

    @property
    def tolerated_dropouts(self) -> int:
        """Dropped neighbours a client's secrets survive: `k - t`."""
        return self.degree - self.threshold



def _fork_bound(n: int, k: int, t: int, corrupt_fraction: float) -> float:
    """Probability bound that corrupt signers let a server fork some neighbourhood: `n P[B(k, gamma) >= 2t - k]`."""
    return min(1.0, n * _binom_tail_ge(k, corrupt_fraction, 2 * t - k))


def active_problem(num_clients: int, degree: int, threshold: int, *, corrupt_fraction: float = 0.1,
                   security: int = 40) -> str | None:
    """Why `(degree, threshold)` is too weak for the active threat model (module docstring), or None."""
    n, k, t = int(num_clients), int(degree), int(threshold)
    if k >= n - 1:
        need = 2 * n // 3 + 1
        if t < need:
            return (f"the active threat model on the complete graph needs t >= floor(2n/3) + 1 = {need} for n={n} "
                    f"(Bonawitz et al. 2017); got t={t}" + ("" if need <= k else
                                                           f", and t cannot exceed k={k}: invite at least 4 clients"))
        return None
    bound = 2.0**-security
    fork = _fork_bound(n, k, t, corrupt_fraction)
    if fork > bound:
        return (f"the active threat model needs n * P[Binomial(k, gamma) >= 2t - k] <= 2^-sigma (no forked "
                f"survivor views); got {fork:.3g} > {bound:.3g} for n={n}, k={k}, t={t}, gamma={corrupt_fraction}, "
                f"sigma={security}: raise t or k (choose_parameters(..., threat_model='active') picks them)")
    return None


def choose_parameters(num_clients: int, *, variant: str = "secagg+", dropout_rate: float = 0.1,
                      corrupt_fraction: float = 0.1, security: int = 40, correctness: int = 20,
                      threshold: int | float | None = None, degree: int | None = None,
                      threat_model: str = "semi-malicious") -> GraphParameters:
    """Degree and threshold from `n`, the tolerated dropout rate and the security parameter (module docstring).

    Args:
        num_clients: `n` (>= 2).
        variant: "secagg" (complete graph) or "secagg+" (logarithmic degree).
        dropout_rate: tolerated fraction of dropouts `delta` in [0, 0.5).
        corrupt_fraction: fraction `gamma` of clients assumed to collude with the server, in [0, 0.5).
        security: `sigma`, bits of statistical security.
        correctness: `eta`, bits of correctness (failure probability <= 2^-eta).
        threshold: override `t`: an integer, or a fraction of the degree in (0, 1] (rounded up); must exceed k/2.
        degree: override `k` (SecAgg+ only; rounded up to even, capped at n - 1).
        threat_model: "semi-malicious" or "active": the active model also sizes `(k, t)` against forked views
            (`active_problem`), growing `t`, then `k`.

    Raises:
        ValueError: on bad arguments, an override threshold <= k/2 or > k, or overrides too weak for the active
            model.
    """
    if not is_int(num_clients) or num_clients < 2:
        raise ValueError(f"`num_clients` must be an integer >= 2. Received: num_clients={num_clients!r}")
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")
    check_number("dropout_rate", dropout_rate, low=0, high=0.5, high_open=True)
    check_number("corrupt_fraction", corrupt_fraction, low=0, high=0.5, high_open=True)
    if threat_model not in THREAT_MODELS:
        raise ValueError(f"`threat_model` must be one of {THREAT_MODELS}. Received: threat_model={threat_model!r}")
    active = threat_model == "active"
    n = int(num_clients)
    eps_c = 2.0**-correctness / n
    eps_s = 2.0**-security / n

    def privacy(k, t):
        return _binom_tail_ge(k, corrupt_fraction, t) if corrupt_fraction > 0 else 0.0

    def secure_enough(k, t):
        return privacy(k, t) <= eps_s and not (active and active_problem(n, k, t, corrupt_fraction=corrupt_fraction,
                                                                           security=security))

    def min_threshold(k):
        t = k // 2 + 1
        while t < k and not secure_enough(k, t):
            t += 1
        return t

    def default_threshold(k):
        t_priv = min_threshold(k)
        t_corr = next((t for t in range(k, k // 2, -1) if _binom_tail_ge(k, dropout_rate, k - t + 1) <= eps_c), None)
        if t_corr is None:  # too few clients for the bound: balance the two failure probabilities
            return min(range(k // 2 + 1, k + 1),
                       key=lambda t: (max(_binom_tail_ge(k, dropout_rate, k - t + 1), privacy(k, t)), -t))
        return t_priv if t_priv <= t_corr else t_corr

    def resolve_threshold(k):
        if threshold is None:
            return default_threshold(k)
        t = math.ceil(threshold * k) if isinstance(threshold, float) else int(threshold)
        if isinstance(threshold, float) and not 0 < threshold <= 1:
            raise ValueError(f"A fractional `threshold` must be in (0, 1]. Received: threshold={threshold!r}")
        if not k // 2 < t <= k:
            raise ValueError(
                f"`threshold` must exceed half the degree and not exceed it ({k // 2 + 1}..{k} for degree {k}). "
                f"Received: threshold={threshold!r}"
            )
        return t

    full = n - 1
    if variant == "secagg":
        k = full
    elif degree is not None:
        if not is_int(degree) or degree < 2:
            raise ValueError(f"`degree` must be an integer >= 2. Received: degree={degree!r}")
        k = min(full, int(degree) + int(degree) % 2)
    else:
        k = full
        for cand in range(2, full, 2):
            t = min_threshold(cand)
            connected = n * (dropout_rate + corrupt_fraction) ** (cand / 2) <= 2.0**-security
            if connected and secure_enough(cand, t) and _binom_tail_ge(cand, dropout_rate, cand - t + 1) <= eps_c:
                k = cand
                break
    t = resolve_threshold(k)
    if active:
        t = max(t, min_threshold(k)) if threshold is None else t
        problem = active_problem(n, k, t, corrupt_fraction=corrupt_fraction, security=security)
        if problem:
            raise ValueError(f"No secure parameters for n={n}: {problem}.")
    return GraphParameters(
        num_clients=n, degree=k, threshold=t,
        correctness_failure=min(1.0, n * _binom_tail_ge(k, dropout_rate, k - t + 1)),
        privacy_failure=min(1.0, n * privacy(k, t)),
    )


def graph_seed(round_id: int, public_seed: bytes, client_ids: Sequence[int]) -> bytes:
    """`SHA-256(domain, round, public seed, every invited id in order)`: fixed before any key is advertised."""
    ids = sorted(int(i) for i in client_ids)
    h = hashlib.sha256(b"tfx-ext/secagg/graph-v2" + struct.pack(">QI", round_id, len(public_seed)) + public_seed)
    h.update(struct.pack(f">Q{len(ids)}Q", len(ids), *ids))
    return h.digest()


@functools.lru_cache(maxsize=16)
def _ring(ids: tuple, seed: bytes) -> tuple:
    """The invited ids sorted by `SHA-256(seed || id)`: every client derives the same ring from public values."""
    return tuple(sorted(ids, key=lambda i: hashlib.sha256(seed + struct.pack(">Q", i)).digest()))


def neighbours(ids: Sequence[int], degree: int, seed: bytes) -> dict[int, tuple[int, ...]]:
    """Each client's neighbours: complete graph when `degree >= len(ids) - 1`, else Harary `H(degree, n)` over a
    permutation of `ids` drawn from `seed` (symmetric; every client has exactly `degree` neighbours)."""
    ids = sorted(int(i) for i in ids)
    n = len(ids)
    if degree >= n - 1:
        return {u: tuple(v for v in ids if v != u) for u in ids}
    perm, half = np.asarray(_ring(tuple(ids), seed), np.int64), degree // 2
    offsets = [d for d in range(1, half + 1)] + [-d for d in range(1, half + 1)]
    table = np.sort(np.stack([np.roll(perm, -d) for d in offsets], axis=1), axis=1)
    return {int(u): tuple(row) for u, row in zip(perm.tolist(), table.tolist())}


def neighbours_of(client: int, ids: Sequence[int], degree: int, seed: bytes) -> tuple[int, ...]:
    """`neighbours(ids, degree, seed)[client]` in O(n), for a client that only needs its own row."""
    n = len(ids)
    if degree >= n - 1:
        return tuple(sorted(int(v) for v in ids if int(v) != client))
    perm, half = _ring(tuple(sorted(int(i) for i in ids)), seed), degree // 2
    pos = perm.index(client)
    picks = [(pos + d) % n for d in range(1, half + 1)] + [(pos - d) % n for d in range(1, half + 1)]
    return tuple(sorted(int(perm[i]) for i in picks))


__all__ = ["GraphParameters", "THREAT_MODELS", "VARIANTS", "active_problem", "choose_parameters", "graph_seed",
           "neighbours", "neighbours_of"]
