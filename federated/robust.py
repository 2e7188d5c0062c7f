"""Byzantine-robust aggregation: pure NumPy functions over client updates, behind the `Aggregator` interface.

An update is a client's `w_k - w` as a list of arrays (positional, like the weights). The functions below take
`updates = [update_1, ..., update_n]` and return one combined update; they hold no state and never modify their
inputs. Every client counts once (no example weighting): a Byzantine client could lie about its example count.

- `coordinate_median`: the median of each coordinate over the clients (Yin et al. 2018).
- `trimmed_mean`: per coordinate, drop the `floor(beta n)` smallest and largest values and average the rest.
- `geometric_median`: `argmin_z sum_i ||z - u_i||` by smoothed Weiszfeld iterations (Pillutla et al. 2022, RFA).
- `krum_scores` / `krum`: Blanchard et al. 2017. Client i's score is the sum of squared distances to its
  `n - f - 2` nearest other updates; Krum picks the lowest score, Multi-Krum averages the `m` lowest.
- `bulyan`: El Mhamdi et al. 2018. Krum selects `n - 2f` updates one at a time; per coordinate, the mean of the
  `n - 4f` selected values closest to their median. Needs `n >= 4f + 3`.
- `centered_clip`: Karimireddy, He and Jaggi 2021 ("Learning from History for Byzantine Robust Optimization"):
  `v <- v + mean_i clip_tau(u_i - v)`, from the last round's aggregate (the history), `iterations` times.
- `cohort_attackers_bound`: how many of a sampled cohort may be malicious (the hypergeometric quantile), to size
  `f` and the trim of the rules above for the worst cohort rather than the expected one.

The aggregators (`Median`, `TrimmedMean`, `GeometricMedian`, `Krum`, `MultiKrum`, `Bulyan`, `CenteredClipping`)
need each client's update at the server (`needs_individual_updates = True`), so secure aggregation refuses them
by name; each takes `pre_clip=` (`clip_to_bound` before the rule: a boosted update keeps only its direction). `NormBounding` (Sun et al. 2019,
"Can you really backdoor federated learning?") is sum-based: each client clips its own update's L2 norm in
`client_payload`, then FedAvg sums, so it composes with `SecAgg`.

The combined update goes through a server optimizer like FedAvg's (`ServerSGD(1.0)` by default: `w + delta`);
with `ServerMomentum` the rules keep a history, which is what holds them within 3 pt of the attack-free run under
25% attackers in bench/README.md's `## privacy` (on digits, no rule does without it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tfx_ext._validate import check_int, check_number
from tfx_ext.errors import FederatedError
from tfx_ext.federated.aggregate import update_norm
from tfx_ext.federated.aggregators import AGGREGATORS, Aggregator, FedAvg, ServerSGD, ClientResult
from tfx_ext.federated.payload import Payload


def _stacked(updates: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Per layer, the clients' arrays stacked on a new first axis (float64)."""
    if not updates:
        raise ValueError("`updates` must hold at least one client update. Received: updates=[]")
    return [np.stack([np.asarray(u[i], np.float64) for u in updates]) for i in range(len(updates[0]))]


def coordinate_median(updates: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """The coordinate-wise median of the clients' updates (mean of the two middle values for even n)."""
    return [np.median(s, axis=0) for s in _stacked(updates)]


def trimmed_mean(updates: Sequence[Sequence[np.ndarray]], beta: float) -> list[np.ndarray]:
    """Coordinate-wise beta-trimmed mean: drops the `floor(beta * n)` smallest and largest values of each coordinate
    (beta < 0.5 always leaves at least one).

    Raises:
        ValueError: `beta` outside [0, 0.5), or no updates.
    """
    check_number("beta", beta, low=0, high=0.5, high_open=True)
    stacked = _stacked(updates)
    n = len(updates)
    k = int(np.floor(beta * n))
    return [np.mean(np.sort(s, axis=0)[k:n - k], axis=0) for s in stacked]


def _flat(updates) -> np.ndarray:
    return np.stack([np.concatenate([np.asarray(a, np.float64).ravel() for a in u]) for u in updates])


def krum_scores(updates: Sequence[Sequence[np.ndarray]], f: int) -> np.ndarray:
    """Krum scores: for each client, the sum of squared L2 distances to its `n - f - 2` nearest other updates.

    Raises:
        ValueError: `f` negative, or `n - f - 2 < 1` (no neighbour to score against).
    """
    check_int("f", f, minimum=0)
    n = len(updates)
    if n - f - 2 < 1:
        raise ValueError(f"Krum needs n - f - 2 >= 1 clients (n={n}); lower `f` or sample more clients. "
                         f"Received: f={f}")
    x = _flat(updates)
    sq = np.sum(x * x, axis=1)
    d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    np.fill_diagonal(d, np.inf)  # a client is not its own neighbour
    return np.sum(np.sort(d, axis=1)[:, : n - f - 2], axis=1)


def krum(updates: Sequence[Sequence[np.ndarray]], f: int, m: int = 1) -> tuple[list[np.ndarray], np.ndarray]:
    """(Multi-)Krum: the mean of the `m` updates of lowest Krum score, and their indices (best first).

    Raises:
        ValueError: as `krum_scores`, or `m` not in [1, n].
    """
    scores = krum_scores(updates, f)
    check_int("m", m, minimum=1, maximum=len(updates))
    chosen = np.argsort(scores, kind="stable")[:m]
    return [np.mean(s[chosen], axis=0) for s in _stacked(updates)], chosen


def geometric_median(updates: Sequence[Sequence[np.ndarray]], *, eps: float = 1e-8, tol: float = 1e-10,
                     max_iter: int = 200) -> tuple[list[np.ndarray], int]:
    """The geometric median `argmin_z sum_i ||z - u_i||` of the updates (over all layers at once) by the smoothed
    Weiszfeld iteration of Pillutla et al. 2022 (RFA): `z <- sum_i u_i / max(eps, ||u_i - z||)` normalised, from the
    mean, until a step is below `tol * max(1, ||z||)`. Returns the median and the iterations used."""
    check_number("eps", eps, low=0, low_open=True)
    check_int("max_iter", max_iter, minimum=1)
    x = _flat(updates)
    z = x.mean(axis=0)
    for it in range(1, max_iter + 1):
        w = 1.0 / np.maximum(eps, np.linalg.norm(x - z, axis=1))
        new = w @ x / np.sum(w)
        done = np.linalg.norm(new - z) <= tol * max(1.0, float(np.linalg.norm(z)))
        z = new
        if done:
            break
    return _unflat(z, updates[0]), it


def _unflat(z: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The flat vector `z` cut back into arrays shaped like `like`."""
    out, start = [], 0
    for a in like:
        size = np.size(a)
        out.append(z[start:start + size].reshape(np.shape(a)))
        start += size
    return out


def bulyan(updates: Sequence[Sequence[np.ndarray]], f: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Bulyan (El Mhamdi, Guerraoui and Rouault 2018): Krum, re-scored on the remaining updates each time, selects
    `theta = n - 2f` updates; then per coordinate the mean of the `beta = theta - 2f` selected values closest to the
    coordinate's median over the selection. Returns the aggregate and the selected indices (in selection order).

    Raises:
        ValueError: `f` negative, or `n < 4f + 3` (the paper's condition; lower `f` or sample more clients).
    """
    check_int("f", f, minimum=0)
    n = len(updates)
    if n < 4 * f + 3:
        raise ValueError(f"Bulyan needs n >= 4f + 3 clients per round (n={n}); lower `f` (at most {max(0, (n - 3) // 4)}"
                         f") or sample more clients. Received: f={f}")
    remaining, selected = list(range(n)), []
    for _ in range(n - 2 * f):
        # Krum over what is left; f stays the same, as in the paper (needs len(remaining) - f - 2 >= 1 neighbours)
        if len(remaining) < 3:  # only with f = 0, where every update is selected anyway
            selected.append(remaining.pop(0))
            continue
        scores = krum_scores([updates[i] for i in remaining], min(f, len(remaining) - 3))
        selected.append(remaining.pop(int(np.argmin(scores))))
    beta = n - 4 * f
    out = []
    for s in _stacked(updates):
        sel = s[selected]
        order = np.argsort(np.abs(sel - np.median(sel, axis=0)), axis=0, kind="stable")[:beta]
        out.append(np.mean(np.take_along_axis(sel, order, axis=0), axis=0))
    return out, np.asarray(selected)


def centered_clip(updates: Sequence[Sequence[np.ndarray]], center: Sequence[np.ndarray], tau: float | None = None,
                  iterations: int = 1) -> tuple[list[np.ndarray], float, int]:
    """Centered clipping (Karimireddy, He and Jaggi 2021, Alg. 2): from `center` (the previous aggregate),
    `iterations` times `v <- v + (1/n) sum_i (u_i - v) min(1, tau / ||u_i - v||)` (global L2 norm over the layers).

    A Byzantine update moves `v` by at most `tau / n` however large it is. `tau=None` takes the median of the
    first iteration's distances `||u_i - center||` (an honest client's distance while fewer than half attack), so
    the radius follows the scale of the updates. Returns `(v, tau used, clients clipped in the last iteration)`.

    Raises:
        ValueError: `tau` not > 0, `iterations` < 1, or no updates.
    """
    check_number("tau", tau, low=0, low_open=True, allow_none=True)
    check_int("iterations", iterations, minimum=1)
    x = _flat(updates)
    v = np.concatenate([np.asarray(c, np.float64).ravel() for c in center])
    if v.shape != x.shape[1:]:
        raise ValueError(f"`center` must have the updates' {x.shape[1]} values. Received: {v.size} values")
    clipped = 0
    for it in range(iterations):
        dist = np.linalg.norm(x - v, axis=1)
        if tau is None:
            tau = float(np.median(dist))
        if tau <= 0:  # every update equals the center: nothing to move
            break
        scale = np.minimum(1.0, tau / np.maximum(dist, 1e-300))
        clipped = int(np.sum(scale < 1.0))
        v = v + np.mean((x - v) * scale[:, None], axis=0)
    return _unflat(v, updates[0]), float(tau), clipped


def cohort_attackers_bound(population: int, malicious: int, cohort: int, confidence: float = 0.99) -> int:
    """The smallest `k` with `P(X <= k) >= confidence` for `X ~ Hypergeometric(population, malicious, cohort)`: the
    malicious clients in a cohort sampled without replacement, at that confidence (a defence sized for the
    expected `cohort * malicious / population` fails in the rounds that draw more).

    Raises:
        ValueError: counts out of range, or `confidence` outside (0, 1].
    """
    check_int("population", population, minimum=1)
    check_int("malicious", malicious, minimum=0, maximum=population)
    check_int("cohort", cohort, minimum=1, maximum=population)
    check_number("confidence", confidence, low=0, high=1, low_open=True)
    total, cdf = math.comb(population, cohort), 0
    for k in range(min(malicious, cohort) + 1):
        cdf += math.comb(malicious, k) * math.comb(population - malicious, cohort - k)
        if cdf >= confidence * total:  # exact integers: no rounding at confidence=1
            return k
    return min(malicious, cohort)


def clip_update_norm(update: Sequence[np.ndarray], bound: float) -> tuple[list[np.ndarray], bool]:
    """`update * min(1, bound / ||update||)` (global L2 norm over the layers), and whether it was clipped."""
    norm = update_norm(update)
    if norm <= bound:
        return [np.asarray(a, np.float64) for a in update], False
    return [np.asarray(a, np.float64) * (bound / norm) for a in update], True


def clip_to_bound(updates: Sequence[Sequence[np.ndarray]], bound) -> tuple[list[list[np.ndarray]], dict]:
    """Each update clipped to L2 norm `bound` (`clip_update_norm`); `bound="median"` takes the median of the round's
    update norms (Sun et al. 2019's norm bounding, sized by the cohort), so a boosted update keeps only its
    direction. Returns the clipped updates and `{"clip_bound", "clipped"}`."""
    if bound == "median":
        bound = float(np.median([update_norm(u) for u in updates]))
    out = [clip_update_norm(u, bound) for u in updates]
    return [u for u, _ in out], {"clip_bound": float(bound), "clipped": int(sum(c for _, c in out))}


# ----- aggregators ---------------------------------------------------------------------------------------------------
def _check_server_optimizer(server_optimizer):
    server_optimizer = ServerSGD() if server_optimizer is None else server_optimizer
    if not hasattr(server_optimizer, "step") or not hasattr(server_optimizer, "init_state"):
        raise TypeError("`server_optimizer` must be a ServerSGD, ServerMomentum, ServerAdam, ServerYogi or "
                        f"ServerAdagrad. Received: server_optimizer={server_optimizer!r}")
    return server_optimizer


class RobustAggregator(Aggregator):
    """Base of the aggregators that combine each client's update `w_k - w` with a robust statistic.

    Subclasses implement `combine(updates) -> (delta, metrics)`; `aggregate` applies the server optimizer.
    """

    needs_individual_updates = True
    secure_alternative = ("Use NormBounding (each client clips its own update, then a plain sum), which composes "
                          "with secure aggregation.")

    def __init__(self, *, server_optimizer=None, pre_clip=None):
        self.server_optimizer = _check_server_optimizer(server_optimizer)
        if pre_clip != "median":
            check_number("pre_clip", pre_clip, low=0, low_open=True, allow_none=True)
        self.pre_clip = pre_clip

    def init_state(self, weights):
        return self.server_optimizer.init_state(weights)

    def combine(self, updates) -> tuple[list[np.ndarray], dict]:
        raise NotImplementedError

    def combine_with_history(self, updates, history: dict) -> tuple[list[np.ndarray], dict, dict]:
        """`combine` for rules that keep server state of their own (`history`: their keys of the state, `cc_`
        prefixed); returns `(delta, metrics, new history)`. The default keeps none."""
        return (*self.combine(updates), {})

    def aggregate(self, global_weights, results: Sequence[ClientResult], state):
        if not results:
            raise FederatedError("No client results to aggregate.")
        g = [np.asarray(w, np.float64) for w in global_weights]
        updates = [[np.asarray(w, np.float64) - gi for w, gi in zip(r.weights, g)] for r in results]
        clip_metrics = {}
        if self.pre_clip is not None:
            updates, clip_metrics = clip_to_bound(updates, self.pre_clip)
        history = {k: v for k, v in state.items() if k.startswith("cc_")}
        delta, metrics, history = self.combine_with_history(updates, history)
        if "selected" in metrics:  # indices -> client ids, for the history
            metrics["selected"] = [str(results[int(i)].client_id) for i in metrics["selected"]]
        opt_state = {k: v for k, v in state.items() if not k.startswith("cc_")}
        weights, opt_state = self.server_optimizer.step(list(global_weights), delta, opt_state)
        return weights, {**opt_state, **history}, {"update_norm": update_norm(delta), **clip_metrics, **metrics}

    def _repr_args(self) -> str:
        return ""

    def __repr__(self):
        args = self._repr_args()
        clip = "" if self.pre_clip is None else f", pre_clip={self.pre_clip!r}"
        return (f"{type(self).__name__}({args}{', ' if args else ''}server_optimizer={self.server_optimizer!r}"
                f"{clip})")


class Median(RobustAggregator):
    """Coordinate-wise median of the client updates (`coordinate_median`)."""

    name = "median"
    individual_updates_reason = ("it needs each client's individual update at the server to take the coordinate-wise "
                                 "median")

    def combine(self, updates):
        return coordinate_median(updates), {}


class TrimmedMean(RobustAggregator):
    """Coordinate-wise trimmed mean (`trimmed_mean`): `beta` is the fraction trimmed on each side, in [0, 0.5)."""

    name = "trimmed_mean"
    individual_updates_reason = ("it needs each client's individual update at the server to sort and trim each "
                                 "coordinate")

    def __init__(self, *, beta: float = 0.1, server_optimizer=None, pre_clip=None):
        self.beta = check_number("beta", beta, low=0, high=0.5, high_open=True)
        super().__init__(server_optimizer=server_optimizer, pre_clip=pre_clip)

    def combine(self, updates):
        return trimmed_mean(updates, self.beta), {"trimmed_per_side": int(np.floor(self.beta * len(updates)))}

    def _repr_args(self):
        return f"beta={self.beta}"


class MultiKrum(RobustAggregator):
    """Multi-Krum (`krum`): the mean of the `m` updates with the lowest Krum scores, `f` the Byzantine clients
    assumed per round. Blanchard et al.'s guarantee needs `n > 2f + 2` clients; `n >= f + 3` is required. The
    chosen client ids are reported (`selected`)."""

    name = "multi_krum"
    individual_updates_reason = "it needs each client's individual update at the server to score pairwise distances"

    def __init__(self, *, f: int = 1, m: int = 1, server_optimizer=None, pre_clip=None):
        self.f = check_int("f", f, minimum=0)
        self.m = check_int("m", m, minimum=1)
        super().__init__(server_optimizer=server_optimizer, pre_clip=pre_clip)

    def combine(self, updates):
        if self.m > len(updates):
            raise FederatedError(f"Multi-Krum averages m={self.m} updates but the round has {len(updates)}; lower "
                                 "`m` or sample more clients.")
        delta, chosen = krum(updates, self.f, self.m)
        return delta, {"selected": [int(i) for i in chosen]}

    def _repr_args(self):
        return f"f={self.f}, m={self.m}"


class Krum(MultiKrum):
    """Krum: the single update with the lowest Krum score (`MultiKrum` with `m=1`)."""

    name = "krum"

    def __init__(self, *, f: int = 1, server_optimizer=None, pre_clip=None):
        super().__init__(f=f, m=1, server_optimizer=server_optimizer, pre_clip=pre_clip)

    def _repr_args(self):
        return f"f={self.f}"


class GeometricMedian(RobustAggregator):
    """The geometric median of the client updates (`geometric_median`, RFA's smoothed Weiszfeld): robust to a
    minority of arbitrary updates, like the coordinate-wise median, but rotation invariant."""

    name = "geometric_median"
    individual_updates_reason = ("it needs each client's individual update at the server for the Weiszfeld "
                                 "iterations")

    def combine(self, updates):
        median, iterations = geometric_median(updates)
        return median, {"weiszfeld_iterations": iterations}


class Bulyan(RobustAggregator):
    """Bulyan (`bulyan`): Krum selects `n - 2f` updates, then a coordinate-wise trimmed mean around the median of
    the selection; `f` the Byzantine clients assumed per round, `n >= 4f + 3` required. Reports `selected`."""

    name = "bulyan"
    individual_updates_reason = ("it needs each client's individual update at the server to run Krum and sort each "
                                 "coordinate")

    def __init__(self, *, f: int = 1, server_optimizer=None, pre_clip=None):
        self.f = check_int("f", f, minimum=0)
        super().__init__(server_optimizer=server_optimizer, pre_clip=pre_clip)

    def combine(self, updates):
        if len(updates) < 4 * self.f + 3:
            raise FederatedError(f"Bulyan with f={self.f} needs at least {4 * self.f + 3} clients per round but the "
                                 f"round has {len(updates)}; lower `f` or sample more clients.")
        delta, chosen = bulyan(updates, self.f)
        return delta, {"selected": [int(i) for i in chosen]}

    def _repr_args(self):
        return f"f={self.f}"


class CenteredClipping(RobustAggregator):
    """Centered clipping (`centered_clip`, Karimireddy et al. 2021): each round starts from the previous round's
    aggregate (kept in the server state as `cc_center`, so it is checkpointed), which moves the robust estimate
    along the history instead of re-deriving it from one cohort; compose with `ServerMomentum` for the paper's
    momentum. `tau=None` sizes the radius each round from the median distance to the center.

    Args:
        tau: clipping radius (> 0) or None (the median distance, per round).
        iterations: clipping iterations per round (the paper uses 1 to 3).
        server_optimizer: as in `FedAvg`.
    """

    name = "centered_clipping"
    individual_updates_reason = ("it needs each client's individual update at the server to clip its distance to "
                                 "the center")

    def __init__(self, *, tau: float | None = None, iterations: int = 3, server_optimizer=None, pre_clip=None):
        self.tau = check_number("tau", tau, low=0, low_open=True, allow_none=True)
        self.iterations = check_int("iterations", iterations, minimum=1)
        super().__init__(server_optimizer=server_optimizer, pre_clip=pre_clip)

    def init_state(self, weights):
        return {**self.server_optimizer.init_state(weights),
                "cc_center": [np.zeros(np.shape(w), np.float64) for w in weights]}

    def combine_with_history(self, updates, history):
        delta, tau, clipped = centered_clip(updates, history["cc_center"], self.tau, self.iterations)
        return delta, {"cc_tau": tau, "cc_clipped": clipped}, {"cc_center": delta}

    def _repr_args(self):
        return f"tau={self.tau}, iterations={self.iterations}"


class NormBounding(FedAvg):
    """FedAvg over updates whose L2 norm each client clips to `bound` (`clip_update_norm`) before weighting.

    The clipping happens in `client_payload` (the client's side), so the server needs only the sum: it composes
    with secure aggregation, unlike the median, trimmed mean and Krum. Every coordinate of a clipped update is
    within `bound`, so `SecAgg(clip=bound)` never clips one.

    Args:
        bound: the L2 norm bound of each client's update `w_k - w` (over all layers), > 0.
        server_optimizer: as in `FedAvg`.
    """

    name = "norm_bounding"

    def __init__(self, *, bound: float = 1.0, server_optimizer=None):
        self.bound = check_number("bound", bound, low=0, low_open=True)
        super().__init__(server_optimizer=server_optimizer)

    def client_payload(self, global_weights, result):
        update = [np.asarray(w, np.float64) - np.asarray(g, np.float64) for w, g in zip(result.weights, global_weights)]
        clipped, _ = clip_update_norm(update, self.bound)
        n = float(result.num_examples)
        return Payload([n * u for u in clipped], n)

    def __repr__(self):
        return f"NormBounding(bound={self.bound}, server_optimizer={self.server_optimizer!r})"


ROBUST_AGGREGATORS = {"median": Median, "trimmed_mean": TrimmedMean, "krum": Krum, "multi_krum": MultiKrum,
                      "norm_bounding": NormBounding, "geometric_median": GeometricMedian, "bulyan": Bulyan,
                      "centered_clipping": CenteredClipping}
AGGREGATORS.update(ROBUST_AGGREGATORS)  # so `aggregators.get("median")` and `simulate(aggregator="krum")` resolve

__all__ = ["Bulyan", "CenteredClipping", "GeometricMedian", "Krum", "Median", "MultiKrum", "NormBounding", "ROBUST_AGGREGATORS", "RobustAggregator", "TrimmedMean",
           "bulyan", "centered_clip", "clip_update_norm", "cohort_attackers_bound", "coordinate_median", "geometric_median", "krum", "krum_scores", "trimmed_mean"]
