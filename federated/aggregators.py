"""Aggregation: pure functions over client results, and the small `Aggregator` interface the simulator calls.

Pure functions (no I/O, no globals, no Keras, inputs never modified) come first:

- `weighted_average(results)`: FedAvg's example-weighted mean of client weights, `results = [(weights, n), ...]`.
- `weighted_delta_sum(global_weights, results)`: the sum `Σ n_k (w_k - w)` and `Σ n_k`; what a sum-based
  aggregator needs, and what secure aggregation or a cross-replica all-reduce computes.
- Server optimizer steps of Reddi et al., "Adaptive Federated Optimization" (ICLR 2021), Algorithm 2. The server
  treats the negative average client update as a pseudo-gradient: with `delta = Σ n_k (w_k - w) / Σ n_k`,
    * SGD:      w <- w + lr * delta                           (lr = 1 is plain FedAvg)
    * FedAvgM:  v <- momentum * v + delta;  w <- w + lr * v
    * FedAdam:  m <- b1 m + (1 - b1) delta;  v <- b2 v + (1 - b2) delta^2;  w <- w + lr * m / (sqrt(v) + tau)
    * FedYogi:  m as Adam;  v <- v - (1 - b2) delta^2 sign(v - delta^2);  w <- w + lr * m / (sqrt(v) + tau)
  No bias correction (as in the paper); `v` starts at `tau^2` (the paper's `v_{-1} >= tau^2`), `m` at 0.

The `Aggregator` classes only convert client results, call these functions and return `(weights, state,
metrics)`. Sum-based aggregators split their work into `client_payload` (what each client sends: arrays that are
summed) and `finalize` (what the server does with the sum), so secure aggregation (`secure=`) and a
tf.distribute all-reduce can replace the plain sum without the aggregator knowing. Aggregators that need each
client's weights (FedMA's server-side matching) set `sum_based = False` and override `aggregate`; when the new
global weights have other shapes than the model (width growth) the simulator calls `rebuild_model`.

Weights are lists of arrays keyed by position (the model adapter's order), never by variable name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from tfx_ext.errors import FederatedError

Weights = list  # list[np.ndarray], positional


# ----- pure functions -------------------------------------------------------------------------------------------------
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


def server_sgd_step(weights, delta, *, learning_rate: float = 1.0) -> list[np.ndarray]:
    """`w + lr * delta` (lr = 1: plain FedAvg)."""
    return [np.asarray(w + learning_rate * d, dtype=np.asarray(w).dtype) for w, d in zip(weights, delta)]


def server_avgm_step(weights, delta, velocity, *, learning_rate: float = 1.0, momentum: float = 0.9):
    """FedAvgM: `v <- momentum v + delta; w <- w + lr v`. Returns `(weights, velocity)`."""
    velocity = [momentum * v + d for v, d in zip(velocity, delta)]
    weights = [np.asarray(w + learning_rate * v, dtype=np.asarray(w).dtype) for w, v in zip(weights, velocity)]
    return weights, velocity


def server_adam_step(weights, delta, m, v, *, learning_rate=1e-2, beta_1=0.9, beta_2=0.99, tau=1e-3):
    """FedAdam (Reddi et al. 2021, Alg. 2). Returns `(weights, m, v)`."""
    m = [beta_1 * mi + (1 - beta_1) * d for mi, d in zip(m, delta)]
    v = [beta_2 * vi + (1 - beta_2) * d * d for vi, d in zip(v, delta)]
    new = [np.asarray(w + learning_rate * mi / (np.sqrt(vi) + tau), dtype=np.asarray(w).dtype)
           for w, mi, vi in zip(weights, m, v)]
    return new, m, v


def server_yogi_step(weights, delta, m, v, *, learning_rate=1e-2, beta_1=0.9, beta_2=0.99, tau=1e-3):
    """FedYogi (Reddi et al. 2021, Alg. 2): `v <- v - (1 - b2) d^2 sign(v - d^2)`. Returns `(weights, m, v)`."""
    m = [beta_1 * mi + (1 - beta_1) * d for mi, d in zip(m, delta)]
    v = [vi - (1 - beta_2) * d * d * np.sign(vi - d * d) for vi, d in zip(v, delta)]
    new = [np.asarray(w + learning_rate * mi / (np.sqrt(vi) + tau), dtype=np.asarray(w).dtype)
           for w, mi, vi in zip(weights, m, v)]
    return new, m, v


# ----- server optimizers ----------------------------------------------------------------------------------------------
def _check_positive(name, value):
    if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")


def _check_unit(name, value):
    if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")


@dataclasses.dataclass(frozen=True)
class ServerSGD:
    """Server SGD on the pseudo-gradient: `w <- w + learning_rate * delta` (1.0 = FedAvg)."""

    learning_rate: float = 1.0

    def __post_init__(self):
        _check_positive("learning_rate", self.learning_rate)

    def init_state(self, weights) -> dict[str, list[np.ndarray]]:
        return {}

    def step(self, weights, delta, state):
        if self.learning_rate == 1.0:  # exact FedAvg: w + delta
            return [np.asarray(w + d, dtype=np.asarray(w).dtype) for w, d in zip(weights, delta)], state
        return server_sgd_step(weights, delta, learning_rate=self.learning_rate), state


@dataclasses.dataclass(frozen=True)
class ServerMomentum:
    """FedAvgM (Hsu et al. 2019): server momentum on the pseudo-gradient."""

    learning_rate: float = 1.0
    momentum: float = 0.9

    def __post_init__(self):
        _check_positive("learning_rate", self.learning_rate)
        _check_unit("momentum", self.momentum)

    def init_state(self, weights):
        return {"velocity": [np.zeros(np.shape(w), np.float64) for w in weights]}

    def step(self, weights, delta, state):
        w, vel = server_avgm_step(weights, delta, state["velocity"], learning_rate=self.learning_rate,
                                  momentum=self.momentum)
        return w, {"velocity": vel}


@dataclasses.dataclass(frozen=True)
class ServerAdam:
    """FedAdam (Reddi et al. 2021). `v` starts at `tau**2`."""

    learning_rate: float = 1e-2
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3

    _step_fn = staticmethod(server_adam_step)

    def __post_init__(self):
        _check_positive("learning_rate", self.learning_rate)
        _check_unit("beta_1", self.beta_1)
        _check_unit("beta_2", self.beta_2)
        _check_positive("tau", self.tau)

    def init_state(self, weights):
        return {"m": [np.zeros(np.shape(w), np.float64) for w in weights],
                "v": [np.full(np.shape(w), self.tau**2, np.float64) for w in weights]}

    def step(self, weights, delta, state):
        w, m, v = self._step_fn(weights, delta, state["m"], state["v"], learning_rate=self.learning_rate,
                                beta_1=self.beta_1, beta_2=self.beta_2, tau=self.tau)
        return w, {"m": m, "v": v}


@dataclasses.dataclass(frozen=True)
class ServerYogi(ServerAdam):
    """FedYogi (Reddi et al. 2021): Adam with Yogi's additive second-moment update."""

    _step_fn = staticmethod(server_yogi_step)


# ----- client results and the aggregator interface ------------------------------------------------------------------
@dataclasses.dataclass
class ClientResult:
    """What one client returns: its new weights (positional), its example count and local metrics."""

    client_id: Any
    weights: list
    num_examples: int
    metrics: dict = dataclasses.field(default_factory=dict)


class Aggregator:
    """Interface: client results in, new global weights (+ checkpointable state, metrics) out.

    Subclasses set:
        sum_based: True when the server only needs the sum of the clients' `client_payload`s (then secure
            aggregation and a cross-replica all-reduce can compute it); False when it needs each client's weights.
        proximal_mu: the FedProx coefficient clients add to their loss (0: none).
    """

    sum_based: bool = True
    proximal_mu: float = 0.0
    name: str = "aggregator"

    def init_state(self, weights) -> dict[str, list[np.ndarray]]:
        """Server state (dict of lists of arrays, saved in checkpoints) for initial global `weights`."""
        return {}

    def client_payload(self, global_weights, result: ClientResult) -> list[np.ndarray]:
        """Arrays a client sends when `sum_based` (the server only ever sees their sum over clients)."""
        raise NotImplementedError

    def finalize(self, global_weights, payload_sum, state) -> tuple[list[np.ndarray], dict, dict]:
        """New global weights from the summed payloads. Returns `(weights, state, metrics)`."""
        raise NotImplementedError

    def aggregate(self, global_weights, results: Sequence[ClientResult], state) -> tuple[list, dict, dict]:
        """New global weights from the client results (default: sum the payloads and finalize)."""
        if not results:
            raise FederatedError("No client results to aggregate.")
        payloads = [self.client_payload(global_weights, r) for r in results]
        return self.finalize(global_weights, sum_payloads(payloads), state)

    def rebuild_model(self, model_fn, weights):
        """Returns a model whose weights have the shapes of `weights` (for aggregators that change the width)."""
        raise FederatedError(
            f"{type(self).__name__} returned weights whose shapes differ from the model's and cannot rebuild it."
        )


def sum_payloads(payloads: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Elementwise sum over clients of their payload arrays (float64 accumulation)."""
    if not payloads:
        raise ValueError("`payloads` must hold at least one payload. Received: payloads=[]")
    out = [np.zeros(np.shape(a), np.float64) for a in payloads[0]]
    for p in payloads:
        for acc, a in zip(out, p):
            acc += a
    return out


class FedAvg(Aggregator):
    """Federated averaging: example-weighted mean of client updates, then a server optimizer step.

    Each client sends `[n_k (w_k - w) per layer..., n_k]`; the server divides the sum by `Σ n_k` to get the
    average update `delta` and applies `server_optimizer` (default `ServerSGD(1.0)`: `w + delta`, plain FedAvg).

    Args:
        server_optimizer: `ServerSGD`, `ServerMomentum`, `ServerAdam` or `ServerYogi`.
    """

    name = "fedavg"
    payload_kind = "weighted_delta"  # lets a tf.distribute all-reduce compute the payload sum in-graph

    def __init__(self, *, server_optimizer=None):
        server_optimizer = ServerSGD() if server_optimizer is None else server_optimizer
        if not hasattr(server_optimizer, "step") or not hasattr(server_optimizer, "init_state"):
            raise TypeError(
                "`server_optimizer` must be a ServerSGD, ServerMomentum, ServerAdam or ServerYogi. "
                f"Received: server_optimizer={server_optimizer!r}"
            )
        self.server_optimizer = server_optimizer

    def init_state(self, weights):
        return self.server_optimizer.init_state(weights)

    def client_payload(self, global_weights, result):
        n = float(result.num_examples)
        return [n * (np.asarray(w, np.float64) - np.asarray(g, np.float64))
                for w, g in zip(result.weights, global_weights)] + [np.array(n)]

    def finalize(self, global_weights, payload_sum, state):
        total = float(np.asarray(payload_sum[-1]))
        if not total > 0:
            raise FederatedError(f"The aggregated number of examples must be positive. Received: total={total}")
        delta = [np.asarray(s, np.float64) / total for s in payload_sum[:-1]]
        weights, state = self.server_optimizer.step(list(global_weights), delta, state)
        norm = float(np.sqrt(sum(float(np.sum(d * d)) for d in delta)))
        return weights, state, {"update_norm": norm}

    def __repr__(self):
        return f"{type(self).__name__}(server_optimizer={self.server_optimizer!r})"


class FedProx(FedAvg):
    """FedProx (Li et al. 2020): FedAvg aggregation; clients minimize `loss + mu/2 ||w - w_global||^2`.

    Args:
        mu: proximal coefficient (>= 0; 0 is FedAvg).
        server_optimizer: as in `FedAvg`.
    """

    name = "fedprox"

    def __init__(self, *, mu: float = 0.01, server_optimizer=None):
        if not isinstance(mu, (int, float, np.floating)) or isinstance(mu, bool) or mu < 0:
            raise ValueError(f"`mu` must be a non-negative number. Received: mu={mu!r}")
        super().__init__(server_optimizer=server_optimizer)
        self.proximal_mu = float(mu)

    def __repr__(self):
        return f"FedProx(mu={self.proximal_mu}, server_optimizer={self.server_optimizer!r})"


class FedAvgM(FedAvg):
    """FedAvg with server momentum (`ServerMomentum(learning_rate, momentum)`)."""

    name = "fedavgm"

    def __init__(self, *, learning_rate: float = 1.0, momentum: float = 0.9):
        super().__init__(server_optimizer=ServerMomentum(learning_rate=learning_rate, momentum=momentum))


class FedAdam(FedAvg):
    """FedAvg with an Adam server optimizer (`ServerAdam`), Reddi et al. 2021."""

    name = "fedadam"

    def __init__(self, *, learning_rate: float = 1e-2, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3):
        super().__init__(server_optimizer=ServerAdam(learning_rate, beta_1, beta_2, tau))


class FedYogi(FedAvg):
    """FedAvg with a Yogi server optimizer (`ServerYogi`), Reddi et al. 2021."""

    name = "fedyogi"

    def __init__(self, *, learning_rate: float = 1e-2, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3):
        super().__init__(server_optimizer=ServerYogi(learning_rate, beta_1, beta_2, tau))


AGGREGATORS = {"fedavg": FedAvg, "fedprox": FedProx, "fedavgm": FedAvgM, "fedadam": FedAdam, "fedyogi": FedYogi}


def get(identifier, **kwargs) -> Aggregator:
    """An aggregator from its name (`fedavg`, `fedprox`, `fedavgm`, `fedadam`, `fedyogi`) or instance."""
    if isinstance(identifier, Aggregator):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in AGGREGATORS:
        return AGGREGATORS[identifier.lower()](**kwargs)
    raise ValueError(f"`aggregator` must be one of {sorted(AGGREGATORS)} or an Aggregator. Received: {identifier!r}")


# ----- secure summation and postprocessors (the hooks SecAgg and DP plug into) -------------------------------------
class SecureSum(Protocol):
    """What `simulate(secure=...)` expects: computes the sum of the clients' payloads.

    `secure_sum(payloads, client_ids, rng)` returns `(sum, metrics)`; the server learns only the sum. It may drop
    clients (dropouts); it returns the sum over the survivors and reports them in `metrics["survivors"]`.
    """

    def secure_sum(self, payloads, client_ids, rng) -> tuple[list[np.ndarray], dict]: ...


class PlainSum:
    """Reference `SecureSum`: the plain (insecure) float64 sum, for tests and as a baseline."""

    def secure_sum(self, payloads, client_ids, rng):
        return sum_payloads(payloads), {"survivors": len(payloads)}


@dataclasses.dataclass(frozen=True)
class RoundContext:
    """Passed to postprocessor hooks: the round, the client (None on the server) and a seeded Generator."""

    round: int
    client_id: Any
    rng: np.random.Generator
    num_clients: int


class Postprocessor:
    """A transform with a client hook and a server hook (clipping, noise, quantization, masking...).

    The simulator runs `on_client` of each postprocessor in list order on each client's payload, and `on_server`
    in reverse order on the summed payload, so the last thing done on a client is the first undone on the server.
    Both return `(payload, metrics)`; the default is the identity.
    """

    def on_client(self, payload, ctx: RoundContext):
        return payload, {}

    def on_server(self, payload_sum, ctx: RoundContext):
        return payload_sum, {}


__all__ = [
    "weighted_average",
    "weighted_delta_sum",
    "sum_payloads",
    "server_sgd_step",
    "server_avgm_step",
    "server_adam_step",
    "server_yogi_step",
    "ServerSGD",
    "ServerMomentum",
    "ServerAdam",
    "ServerYogi",
    "ClientResult",
    "Aggregator",
    "FedAvg",
    "FedProx",
    "FedAvgM",
    "FedAdam",
    "FedYogi",
    "AGGREGATORS",
    "get",
    "SecureSum",
    "PlainSum",
    "RoundContext",
    "Postprocessor",
]
