"""Aggregators: thin orchestration of the pure maths in `aggregate` over the `Payload` wire format.

The `Aggregator` classes only turn client results into `Payload`s, call the functions of
`tfx_ext.federated.aggregate` and return `(weights, state, metrics)`. An aggregator splits its work into
`client_payload` (what each client sends: a `Payload` whose fields are summed) and `finalize` (what the server does
with the sum), so secure aggregation (`secure=`) and a tf.distribute all-reduce can replace the plain sum without
the aggregator knowing. One capability flag, `needs_individual_updates`, says when that split does not apply:
such an aggregator (FedMA's server-side matching) overrides `aggregate` and sees each client's weights, and
secure aggregation refuses it by name. When the new global weights have other shapes than the model (width
growth) the simulator calls `rebuild_model`.

Weights are lists of arrays keyed by position (the model adapter's order), never by variable name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from tfx_ext._validate import check_number
from tfx_ext.errors import FederatedError
from tfx_ext.federated.aggregate import (
    mean_update,
    server_adagrad_step,
    server_adam_step,
    server_avgm_step,
    server_sgd_step,
    server_yogi_step,
    update_norm,
    weighted_average,
    weighted_delta_sum,
)
from tfx_ext.federated.payload import Payload, sum_payloads


@dataclasses.dataclass(frozen=True)
class ServerSGD:
    """Server SGD on the pseudo-gradient: `w <- w + learning_rate * delta` (1.0 = FedAvg)."""

    learning_rate: float = 1.0

    def __post_init__(self):
        check_number("learning_rate", self.learning_rate, low=0, low_open=True)

    def init_state(self, weights) -> dict[str, list[np.ndarray]]:
        return {}

    def step(self, weights, delta, state):
        return server_sgd_step(weights, delta, state, learning_rate=self.learning_rate)


@dataclasses.dataclass(frozen=True)
class ServerMomentum:
    """FedAvgM (Hsu et al. 2019): server momentum on the pseudo-gradient."""

    learning_rate: float = 1.0
    momentum: float = 0.9

    def __post_init__(self):
        check_number("learning_rate", self.learning_rate, low=0, low_open=True)
        check_number("momentum", self.momentum, low=0, high=1, high_open=True)

    def init_state(self, weights):
        return {"velocity": [np.zeros(np.shape(w), np.float64) for w in weights]}

    def step(self, weights, delta, state):
        return server_avgm_step(weights, delta, state, learning_rate=self.learning_rate, momentum=self.momentum)


@dataclasses.dataclass(frozen=True)
class ServerAdam:
    """FedAdam (Reddi et al. 2021). `v` starts at `tau**2`."""

    learning_rate: float = 1e-2
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3

    _step_fn = staticmethod(server_adam_step)

    def __post_init__(self):
        check_number("learning_rate", self.learning_rate, low=0, low_open=True)
        check_number("beta_1", self.beta_1, low=0, high=1, high_open=True)
        check_number("beta_2", self.beta_2, low=0, high=1, high_open=True)
        check_number("tau", self.tau, low=0, low_open=True)

    def init_state(self, weights):
        return {"m": [np.zeros(np.shape(w), np.float64) for w in weights],
                "v": [np.full(np.shape(w), self.tau**2, np.float64) for w in weights]}

    def step(self, weights, delta, state):
        return self._step_fn(weights, delta, state, learning_rate=self.learning_rate, beta_1=self.beta_1,
                             beta_2=self.beta_2, tau=self.tau)


@dataclasses.dataclass(frozen=True)
class ServerYogi(ServerAdam):
    """FedYogi (Reddi et al. 2021): Adam with Yogi's additive second-moment update."""

    _step_fn = staticmethod(server_yogi_step)


@dataclasses.dataclass(frozen=True)
class ServerAdagrad:
    """FedAdagrad (Reddi et al. 2021): `v` accumulates every squared update (no decay). `v` starts at `tau**2`;
    `beta_1` is the momentum of the update (0: none, as in Adagrad)."""

    learning_rate: float = 1e-2
    beta_1: float = 0.0
    tau: float = 1e-3

    def __post_init__(self):
        check_number("learning_rate", self.learning_rate, low=0, low_open=True)
        check_number("beta_1", self.beta_1, low=0, high=1, high_open=True)
        check_number("tau", self.tau, low=0, low_open=True)

    def init_state(self, weights):
        return ServerAdam.init_state(self, weights)

    def step(self, weights, delta, state):
        return server_adagrad_step(weights, delta, state, learning_rate=self.learning_rate, beta_1=self.beta_1,
                                   tau=self.tau)


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
        needs_individual_updates: False (the default) when the server only needs the sum of the clients'
            `client_payload`s, so secure aggregation, postprocessors and a cross-replica all-reduce can compute
            it; True when it needs each client's weights (then it overrides `aggregate`, and secure aggregation
            refuses it).
        proximal_mu: the FedProx coefficient clients add to their loss (0: none).
        changes_shapes: True when the new global weights may have other shapes than the model's (width growth:
            the aggregator overrides `rebuild_model`); a resumed checkpoint may then hold other shapes.
        individual_updates_reason, secure_alternative: with `needs_individual_updates`, why the server needs each
            client's update and what composes with secure aggregation instead (its refusal message says both).
    """

    needs_individual_updates: bool = False
    individual_updates_reason: str = "it needs each client's individual weights at the server"
    secure_alternative: str = "Use a sum-based aggregator (FedAvg family)."
    changes_shapes: bool = False
    proximal_mu: float = 0.0
    name: str = "aggregator"

    def init_state(self, weights) -> dict[str, list[np.ndarray]]:
        """Server state (dict of lists of arrays, saved in checkpoints) for initial global `weights`."""
        return {}

    def client_payload(self, global_weights, result: ClientResult) -> Payload:
        """The `Payload` a client sends (the server only ever sees the sum over clients)."""
        raise NotImplementedError

    def finalize(self, global_weights, payload_sum: Payload, state) -> tuple[list[np.ndarray], dict, dict]:
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


def check_positive_total(total: float) -> float:
    """`total` when the summed weight is > 0; a `FederatedError` otherwise (no client contributed)."""
    if not total > 0:
        raise FederatedError(f"The aggregated number of examples must be positive. Received: total={total}")
    return total


class FedAvg(Aggregator):
    """Federated averaging: example-weighted mean of client updates, then a server optimizer step.

    Each client sends `Payload(arrays=[n_k (w_k - w) per layer], weight=n_k)`; the server divides the summed
    arrays by the summed weight `Σ n_k` to get the average update `delta` and applies `server_optimizer` (default
    `ServerSGD(1.0)`: `w + delta`, plain FedAvg).

    Args:
        server_optimizer: `ServerSGD`, `ServerMomentum`, `ServerAdam`, `ServerYogi` or `ServerAdagrad`.
    """

    name = "fedavg"

    def __init__(self, *, server_optimizer=None):
        server_optimizer = ServerSGD() if server_optimizer is None else server_optimizer
        if not hasattr(server_optimizer, "step") or not hasattr(server_optimizer, "init_state"):
            raise TypeError(
                "`server_optimizer` must be a ServerSGD, ServerMomentum, ServerAdam, ServerYogi or ServerAdagrad. "
                f"Received: server_optimizer={server_optimizer!r}"
            )
        self.server_optimizer = server_optimizer

    def init_state(self, weights):
        return self.server_optimizer.init_state(weights)

    def client_payload(self, global_weights, result):
        sums, total = weighted_delta_sum(global_weights, [(result.weights, result.num_examples)])
        return Payload(sums, total)

    def finalize(self, global_weights, payload_sum, state):
        delta = mean_update(payload_sum.arrays, check_positive_total(payload_sum.weight))
        weights, state = self.server_optimizer.step(list(global_weights), delta, state)
        return weights, state, {"update_norm": update_norm(delta)}

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
        mu = check_number("mu", mu, low=0)
        super().__init__(server_optimizer=server_optimizer)
        self.proximal_mu = mu

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


class FedAdagrad(FedAvg):
    """FedAvg with an Adagrad server optimizer (`ServerAdagrad`), Reddi et al. 2021."""

    name = "fedadagrad"

    def __init__(self, *, learning_rate: float = 1e-2, beta_1: float = 0.0, tau: float = 1e-3):
        super().__init__(server_optimizer=ServerAdagrad(learning_rate, beta_1, tau))


AGGREGATORS = {"fedavg": FedAvg, "fedprox": FedProx, "fedavgm": FedAvgM, "fedadam": FedAdam, "fedyogi": FedYogi,
               "fedadagrad": FedAdagrad}


def get(identifier, **kwargs) -> Aggregator:
    """An aggregator from its name (`fedavg`, `fedprox`, `fedavgm`, `fedadam`, `fedyogi`, `fedadagrad`; the robust
    `median`, `trimmed_mean`, `geometric_median`, `krum`, `multi_krum`, `norm_bounding` register from
    `tfx_ext.federated.robust`) or instance."""
    if isinstance(identifier, Aggregator):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in AGGREGATORS:
        return AGGREGATORS[identifier.lower()](**kwargs)
    raise ValueError(f"`aggregator` must be one of {sorted(AGGREGATORS)} or an Aggregator. Received: {identifier!r}")


# ----- secure summation and postprocessors (the hooks SecAgg and DP plug into) -------------------------------------
class SecureSum(Protocol):
    """What `simulate(secure=...)` expects: computes the sum of the clients' `Payload`s.

    `secure_sum(payloads, client_ids, rng)` returns `(sum as a Payload, metrics)`; the server learns only the sum.
    It may drop clients (dropouts); it returns the sum over the survivors and reports them in
    `metrics["survivors"]`.
    """

    def secure_sum(self, payloads, client_ids, rng) -> tuple[Payload, dict]: ...


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

    The simulator runs `on_client` of each postprocessor in list order on each client's `Payload`, and `on_server`
    in reverse order on the summed `Payload`, so the last thing done on a client is the first undone on the
    server. Both return `(payload, metrics)`; the default is the identity.
    """

    def on_client(self, payload, ctx: RoundContext):
        return payload, {}

    def on_server(self, payload_sum, ctx: RoundContext):
        return payload_sum, {}


__all__ = [
    "Payload",
    "weighted_average",
    "weighted_delta_sum",
    "sum_payloads",
    "server_sgd_step",
    "server_avgm_step",
    "server_adam_step",
    "server_yogi_step",
    "check_positive_total",
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
