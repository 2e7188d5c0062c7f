"""Aggregators: hand-checkable FedAvg weighting; the adaptive server optimizers against a plain-Python loop written
from Reddi et al. 2021's Algorithm 2 on a worked example."""

import math

import numpy as np
import pytest

from tfx_ext.errors import FederatedError
from tfx_ext.federated import (
    ClientResult,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Payload,
    PlainSum,
    ServerAdagrad,
    ServerAdam,
    ServerMomentum,
    ServerSGD,
    ServerYogi,
    sum_payloads,
    weighted_average,
    weighted_delta_sum,
)
from tfx_ext.federated import aggregators as agg


def test_weighted_average_by_hand():
    # Prepare: two clients, 1 and 3 examples.
    results = [([np.array([0.0, 4.0]), np.array(8.0)], 1), ([np.array([4.0, 0.0]), np.array(0.0)], 3)]
    # Execute
    out = weighted_average(results)
    # Assert: (1*0 + 3*4)/4 = 3, (1*4 + 3*0)/4 = 1, 8/4 = 2.
    np.testing.assert_array_equal(out[0], [3.0, 1.0])
    np.testing.assert_array_equal(out[1], 2.0)


def test_weighted_average_does_not_modify_inputs_and_keeps_dtype():
    w = [np.array([1.0, 2.0], np.float32)]
    out = weighted_average([(w, 2), (w, 5)])
    assert out[0].dtype == np.float32
    np.testing.assert_array_equal(w[0], [1.0, 2.0])


def test_fedavg_class_equals_the_pure_function():
    g = [np.array([1.0, 1.0], np.float32), np.array([[0.5]], np.float32)]
    clients = [
        ClientResult("a", [np.array([2.0, 0.0], np.float32), np.array([[1.5]], np.float32)], 2),
        ClientResult("b", [np.array([0.0, 3.0], np.float32), np.array([[0.0]], np.float32)], 6),
    ]
    fedavg = FedAvg()
    new, state, metrics = fedavg.aggregate(g, clients, fedavg.init_state(g))
    ref = weighted_average([(c.weights, c.num_examples) for c in clients])
    for a, b in zip(new, ref):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
        assert a.dtype == np.float32
    assert state == {} and metrics["update_norm"] > 0
    # The summable part by hand: 2*(1,-1) + 6*(-1, 2) = (-4, 10); total 8.
    sums, total = weighted_delta_sum(g, [(c.weights, c.num_examples) for c in clients])
    np.testing.assert_array_equal(sums[0], [-4.0, 10.0])
    assert total == 8.0


def test_fedprox_aggregates_like_fedavg():
    g = [np.zeros(3, np.float32)]
    clients = [ClientResult(i, [np.full(3, i, np.float32)], i + 1) for i in range(3)]
    a = FedAvg().aggregate(g, clients, {})[0]
    b = FedProx(mu=0.1).aggregate(g, clients, {})[0]
    np.testing.assert_array_equal(a[0], b[0])
    assert FedProx(mu=0.1).proximal_mu == 0.1 and FedAvg().proximal_mu == 0.0


def _toy():
    w = [np.array([1.0, -2.0]), np.array(0.5)]
    deltas = [[np.array([0.2, -0.4]), np.array(0.1)], [np.array([-0.1, 0.3]), np.array(-0.2)]]
    return w, deltas


def test_server_momentum_formula():
    w, deltas = _toy()
    opt = ServerMomentum(learning_rate=0.5, momentum=0.9)
    state = opt.init_state(w)
    v = [np.zeros(2), np.zeros(())]
    for d in deltas:
        w_new, state = opt.step(w, d, state)
        v = [0.9 * vi + di for vi, di in zip(v, d)]
        expect = [wi + 0.5 * vi for wi, vi in zip(w, v)]
        for a, b in zip(w_new, expect):
            np.testing.assert_allclose(a, b, rtol=1e-12)
        w = w_new


def reddi_algorithm_2(x0, clients_of_round, rounds, variant, *, eta, beta_1, beta_2, tau):
    """Reddi et al. 2021 ("Adaptive Federated Optimization"), Algorithm 2, one scalar coordinate at a time.

    Written from the paper's pseudo-code, not from the implementation. `x0` is a list of floats;
    `clients_of_round(t, x_t)` returns round t's client models (lists of floats; equal-sized clients, so the
    paper's unweighted `1/|S|` mean applies). Returns the server model after every round and the final `v`.

        Δ_t = 1/|S| Σ_i (x_i - x_t);  m_t = β1 m_{t-1} + (1 - β1) Δ_t
        FedAdagrad: v_t = v_{t-1} + Δ_t²
        FedYogi:    v_t = v_{t-1} - (1 - β2) Δ_t² sign(v_{t-1} - Δ_t²)
        FedAdam:    v_t = β2 v_{t-1} + (1 - β2) Δ_t²
        x_{t+1} = x_t + η m_t / (√v_t + τ),   m_{-1} = 0, v_{-1} = τ²
    """
    x = list(x0)
    m = [0.0] * len(x)
    v = [tau * tau] * len(x)
    trajectory = []
    for t in range(rounds):
        client_models = clients_of_round(t, list(x))
        for j in range(len(x)):
            delta = sum(client[j] - x[j] for client in client_models) / len(client_models)
            m[j] = beta_1 * m[j] + (1 - beta_1) * delta
            if variant == "adagrad":
                v[j] = v[j] + delta * delta
            elif variant == "yogi":
                difference = v[j] - delta * delta
                sign = 1.0 if difference > 0 else (-1.0 if difference < 0 else 0.0)
                v[j] = v[j] - (1 - beta_2) * delta * delta * sign
            else:
                v[j] = beta_2 * v[j] + (1 - beta_2) * delta * delta
            x[j] = x[j] + eta * m[j] / (math.sqrt(v[j]) + tau)
        trajectory.append(list(x))
    return trajectory, v


# A worked example: a weight array of 2 and a scalar bias (flattened as [w0, w1, b]), 3 rounds, 3 equal-sized
# clients per round whose models sit at fixed offsets from the round's server model. The updates grow and shrink
# across rounds, so Yogi's sign(v - Δ²) takes both signs.
_OFFSETS = [
    [[0.30, -0.60, 0.05], [0.10, -0.20, 0.15], [0.20, -0.40, -0.05]],
    [[0.01, 0.02, 0.90], [-0.01, 0.00, 1.10], [0.03, 0.01, 1.00]],
    [[-0.50, 0.20, 0.00], [-0.70, 0.40, 0.02], [-0.60, 0.30, -0.02]],
]
_X0 = [1.0, -2.0, 0.5]


def _clients_of_round(t, x):
    return [[xj + oj for xj, oj in zip(x, offsets)] for offsets in _OFFSETS[t]]


def _run_aggregator(aggregator):
    """The aggregator on the worked example: the server model after each round and the last state."""
    weights = [np.array(_X0[:2]), np.array(_X0[2])]
    state = aggregator.init_state(weights)
    trajectory = []
    for t in range(len(_OFFSETS)):
        x = [*weights[0].tolist(), float(weights[1])]
        clients = [ClientResult(k, [np.array(c[:2]), np.array(c[2])], 5) for k, c in enumerate(_clients_of_round(t, x))]
        weights, state, _ = aggregator.aggregate(weights, clients, state)
        trajectory.append([*weights[0].tolist(), float(weights[1])])
    return trajectory, state


@pytest.mark.parametrize("variant", ["adam", "yogi", "adagrad"])
def test_adaptive_aggregators_follow_reddi_algorithm_2(variant):
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    aggregator = {"adam": FedAdam(learning_rate=lr, beta_1=b1, beta_2=b2, tau=tau),
                  "yogi": FedYogi(learning_rate=lr, beta_1=b1, beta_2=b2, tau=tau),
                  "adagrad": FedAdagrad(learning_rate=lr, beta_1=b1, tau=tau)}[variant]
    trajectory, state = _run_aggregator(aggregator)
    expected, v = reddi_algorithm_2(_X0, _clients_of_round, len(_OFFSETS), variant, eta=lr, beta_1=b1, beta_2=b2,
                                    tau=tau)
    np.testing.assert_allclose(trajectory, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose([*state["v"][0], state["v"][1]], v, rtol=1e-12)


def test_the_three_second_moment_rules_differ_on_the_worked_example():
    """The worked example separates the variants: were one implemented as another, its reference test would fail."""
    hyper = dict(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)
    finals = {variant: reddi_algorithm_2(_X0, _clients_of_round, 3, variant, **hyper)
              for variant in ("adam", "yogi", "adagrad")}
    for a, b in [("adam", "yogi"), ("adam", "adagrad"), ("yogi", "adagrad")]:
        # 1e-5 is 10^7 times the rtol of the reference test (measured: Adam vs Yogi 4.8e-4, the closest pair).
        assert np.max(np.abs(np.subtract(finals[a][0], finals[b][0]))) > 1e-5, (a, b)
    # Yogi's v moves towards Δ² from both sides in this example: it grows on the bias in round 2 (Δ² = 1 > v) and
    # shrinks on w0 in round 2 (Δ_w0 = 0.01: v > Δ²). Checked on the reference by hand-stepping one coordinate.
    _, v1 = reddi_algorithm_2(_X0, _clients_of_round, 1, "yogi", **hyper)
    _, v2 = reddi_algorithm_2(_X0, _clients_of_round, 2, "yogi", **hyper)
    assert v2[2] > v1[2] and v2[0] < v1[0]


def test_fedadam_first_step_by_hand():
    """Round 1 by hand: m = (1 - β1) Δ, v = β2 τ² + (1 - β2) Δ²; example-weighted Δ (1 and 3 examples)."""
    g = [np.array([1.0, 1.0], np.float32)]
    clients = [ClientResult(0, [np.array([2.0, 1.0], np.float32)], 1), ClientResult(1, [np.array([1.0, 0.0], np.float32)], 3)]
    opt = FedAdam(learning_rate=0.1, tau=1e-3)
    new, _, _ = opt.aggregate(g, clients, opt.init_state(g))
    # Δ = (1*(1,0) + 3*(0,-1)) / 4 = (0.25, -0.75); m = (0.025, -0.075); v = 0.99e-6 + 0.01 Δ² = (0.00062599,
    # 0.00562599); step = 0.1 m / (√v + 1e-3) = (0.0025 / 0.026020, -0.0075 / 0.076007).
    np.testing.assert_allclose(new[0], [1.0 + 0.0025 / 0.0260198, 1.0 - 0.0075 / 0.0760066], rtol=1e-5)
    assert isinstance(FedYogi().server_optimizer, ServerYogi)
    assert isinstance(FedAvgM().server_optimizer, ServerMomentum)
    assert isinstance(FedAdagrad().server_optimizer, ServerAdagrad)


def test_server_sgd_learning_rate_one_is_fedavg():
    w = [np.array([1.0, 2.0], np.float32)]
    d = [np.array([0.5, -1.0])]
    np.testing.assert_array_equal(ServerSGD().step(w, d, {})[0][0], [1.5, 1.0])
    np.testing.assert_allclose(ServerSGD(0.5).step(w, d, {})[0][0], [1.25, 1.5])


def test_plain_sum_and_sum_payloads():
    p = [Payload([np.array([1.0, 2.0])], 1.0, {"c": np.array([1.0])}), Payload([np.array([3.0, 4.0])], 2.0,
                                                                                 {"c": np.array([2.0])})]
    total, metrics = PlainSum().secure_sum(p, ["a", "b"], np.random.default_rng(0))
    np.testing.assert_array_equal(total.arrays[0], [4.0, 6.0])
    assert total.weight == 3.0 and metrics["survivors"] == 2
    summed = sum_payloads(p)
    np.testing.assert_array_equal(summed.arrays[0], [4.0, 6.0])
    np.testing.assert_array_equal(summed.extras["c"], [3.0])  # extras are summed by name


def test_fedavg_client_payload_is_the_weighted_delta_sum():
    g = [np.array([1.0, 1.0], np.float32)]
    r = ClientResult("a", [np.array([2.0, 0.0], np.float32)], 3)
    payload = FedAvg().client_payload(g, r)
    sums, total = weighted_delta_sum(g, [(r.weights, r.num_examples)])
    np.testing.assert_array_equal(payload.arrays[0], sums[0])
    assert payload.weight == total == 3.0 and dict(payload.extras) == {}
    assert not FedAvg.needs_individual_updates


def test_payload_validation_names_the_problem():
    from tfx_ext.errors import MalformedUpdateError
    from tfx_ext.federated.payload import payload_problem, validate_payload

    template = Payload([np.zeros(2)], 1.0, {"c": np.zeros(3)})
    assert payload_problem(Payload([np.ones(2)], 2.0, {"c": np.ones(3)}), template) is None
    assert "expected 1 payload arrays, got 2" in payload_problem(Payload([np.ones(2)] * 2, 1.0, {"c": np.ones(3)}),
                                                                 template)
    assert "extras" in payload_problem(Payload([np.ones(2)], 1.0), template)
    assert "shape (3,)" in payload_problem(Payload([np.ones(3)], 1.0, {"c": np.ones(3)}), template)
    assert "NaN" in payload_problem(Payload([np.ones(2)], 1.0, {"c": np.full(3, np.nan)}), template)
    assert "weight" in payload_problem(Payload([np.ones(2)], 0.0, {"c": np.ones(3)}), template)
    assert "expected a Payload" in payload_problem([np.ones(2)], template)
    with pytest.raises(MalformedUpdateError, match=r"Malformed payload: payload weight must be finite and > 0"):
        validate_payload(Payload([np.ones(2)], float("inf"), {"c": np.ones(3)}), template)
    with pytest.raises(ValueError, match=r"`payloads` must hold at least one payload"):
        sum_payloads([])


def test_pure_functions_leave_their_inputs_alone():
    w, deltas = _toy()
    state = ServerAdam().init_state(w)
    before = [a.copy() for a in w], [a.copy() for a in state["m"]], [a.copy() for a in state["v"]]
    agg.server_adam_step(w, deltas[0], state)
    for a, b in zip(w + state["m"] + state["v"], before[0] + before[1] + before[2]):
        np.testing.assert_array_equal(a, b)


def test_get_by_name():
    assert isinstance(agg.get("fedyogi"), FedYogi)
    assert isinstance(agg.get("FedProx", mu=0.5), FedProx)


def test_aggregator_errors():
    with pytest.raises(ValueError, match=r"`results` must hold at least one client result"):
        weighted_average([])
    with pytest.raises(ValueError, match=r"The total number of examples must be positive. Received: total=0.0"):
        weighted_average([([np.zeros(1)], 0)])
    with pytest.raises(ValueError, match=r"`mu` must be a finite number >= 0. Received: mu=-1"):
        FedProx(mu=-1)
    with pytest.raises(ValueError, match=r"`momentum` must be a finite number >= 0 and < 1. Received: momentum=1.5"):
        ServerMomentum(momentum=1.5)
    with pytest.raises(ValueError, match=r"`learning_rate` must be a finite number > 0. Received: learning_rate=0"):
        ServerAdam(learning_rate=0)
    with pytest.raises(ValueError, match=r"`tau` must be a finite number > 0"):
        ServerYogi(tau=-1.0)
    with pytest.raises(TypeError, match=r"`server_optimizer` must be a ServerSGD"):
        FedAvg(server_optimizer="adam")
    with pytest.raises(ValueError, match=r"`aggregator` must be one of"):
        agg.get("fedsgd")
    with pytest.raises(FederatedError, match=r"No client results to aggregate"):
        FedAvg().aggregate([np.zeros(1)], [], {})
    with pytest.raises(FederatedError, match=r"aggregated number of examples must be positive"):
        FedAvg().finalize([np.zeros(1)], Payload([np.zeros(1)], 0.0), {})
    with pytest.raises(FederatedError, match=r"cannot rebuild it"):
        FedAvg().rebuild_model(None, [])
