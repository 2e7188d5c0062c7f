"""Byzantine-robust aggregation: pure NumPy functions over client updates, behind the `Aggregator` interface.

An update is a client's `w_k - w` as a list of arrays (positional, like the weights). The functions below take
`updates = [update_1, ..., update_n]` and return one combined update; they hold no state and never modify their
inputs. Every client counts once (no example weighting): a Byzantine client could lie about its example count.

- `coordinate_median`: the median of each coordinate over the clients (Yin et al. 2018).
- `trimmed_mean`: per coordinate, drop the `floor(beta n)` smallest and largest values and average the rest.
- `geometric_median`: `argmin_z sum_i ||z - u_i||` by smoothed Weiszfeld iterations (Pillutla et al. 2022, RFA).
- `krum_scores` / `krum`: Blanchard et al. 2017. Client i's score is the sum of squared distances to its
  `n - f - 2` nearest other updates; Krum picks the lowest score, Multi-Krum averages the `m` lowest.

The aggregators (`Median`, `TrimmedMean`, `GeometricMedian`, `Krum`, `MultiKrum`) need each client's update at the server
(`needs_individual_updates = True`), so secure aggregation refuses them by name. `NormBounding` (Sun et al. 2019,
"Can you really backdoor federated learning?") is sum-based: each client clips its own update's L2 norm in
`client_payload`, then FedAvg sums, so it composes with `SecAgg`.

The combined update goes through a server optimizer like FedAvg's (`ServerSGD(1.0)` by default: `w + delta`).
"""

from __future__ import annotations

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
    out, start = [], 0
    for a in updates[0]:
        size = np.size(a)
        out.append(z[start:start + size].reshape(np.shape(a)))
        start += size
    return out, it


def clip_update_norm(update: Sequence[np.ndarray], bound: float) -> tuple[list[np.ndarray], bool]:
    """`update * min(1, bound / ||update||)` (global L2 norm over the layers), and whether it was clipped."""
    norm = update_norm(update)
    if norm <= bound:
        return [np.asarray(a, np.float64) for a in update], False
    return [np.asarray(a, np.float64) * (bound / norm) for a in update], True


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

    def __init__(self, *, server_optimizer=None):
        self.server_optimizer = _check_server_optimizer(server_optimizer)

    def init_state(self, weights):
        return self.server_optimizer.init_state(weights)

    def combine(self, updates) -> tuple[list[np.ndarray], dict]:
        raise NotImplementedError

    def aggregate(self, global_weights, results: Sequence[ClientResult], state):
        if not results:
            raise FederatedError("No client results to aggregate.")
        g = [np.asarray(w, np.float64) for w in global_weights]
        updates = [[np.asarray(w, np.float64) - gi for w, gi in zip(r.weights, g)] for r in results]
        delta, metrics = self.combine(updates)
        if "selected" in metrics:  # indices -> client ids, for the history
            metrics["selected"] = [str(results[int(i)].client_id) for i in metrics["selected"]]
        weights, state = self.server_optimizer.step(list(global_weights), delta, state)
        return weights, state, {"update_norm": update_norm(delta), **metrics}

    def _repr_args(self) -> str:
        return ""

    def __repr__(self):
        args = self._repr_args()
        return f"{type(self).__name__}({args}{', ' if args else ''}server_optimizer={self.server_optimizer!r})"


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

    def __init__(self, *, beta: float = 0.1, server_optimizer=None):
        self.beta = check_number("beta", beta, low=0, high=0.5, high_open=True)
        super().__init__(server_optimizer=server_optimizer)

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

    def __init__(self, *, f: int = 1, m: int = 1, server_optimizer=None):
        self.f = check_int("f", f, minimum=0)
        self.m = check_int("m", m, minimum=1)
        super().__init__(server_optimizer=server_optimizer)

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

    def __init__(self, *, f: int = 1, server_optimizer=None):
        super().__init__(f=f, m=1, server_optimizer=server_optimizer)

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
                      "norm_bounding": NormBounding, "geometric_median": GeometricMedian}
AGGREGATORS.update(ROBUST_AGGREGATORS)  # so `aggregators.get("median")` and `simulate(aggregator="krum")` resolve

__all__ = ["GeometricMedian", "Krum", "Median", "MultiKrum", "NormBounding", "ROBUST_AGGREGATORS", "RobustAggregator", "TrimmedMean",
           "clip_update_norm", "coordinate_median", "geometric_median", "krum", "krum_scores", "trimmed_mean"]
