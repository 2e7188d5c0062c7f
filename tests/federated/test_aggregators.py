"""Aggregators: hand-checkable FedAvg weighting and the server-optimizer formulas of Reddi et al. 2021."""

import numpy as np
import pytest

from tfx_ext.errors import FederatedError
from tfx_ext.federated import (
    ClientResult,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Payload,
    PlainSum,
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


@pytest.mark.parametrize("yogi", [False, True])
def test_server_adam_and_yogi_formulas(yogi):
    w, deltas = _toy()
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    opt = (ServerYogi if yogi else ServerAdam)(learning_rate=lr, beta_1=b1, beta_2=b2, tau=tau)
    state = opt.init_state(w)
    m = [np.zeros(2), np.zeros(())]
    v = [np.full(2, tau**2), np.full((), tau**2)]
    for d in deltas:
        w_new, state = opt.step(w, d, state)
        m = [b1 * mi + (1 - b1) * di for mi, di in zip(m, d)]
        if yogi:
            v = [vi - (1 - b2) * di**2 * np.sign(vi - di**2) for vi, di in zip(v, d)]
        else:
            v = [b2 * vi + (1 - b2) * di**2 for vi, di in zip(v, d)]
        expect = [wi + lr * mi / (np.sqrt(vi) + tau) for wi, mi, vi in zip(w, m, v)]
        for a, b in zip(w_new, expect):
            np.testing.assert_allclose(a, b, rtol=1e-12)
        w = w_new
    # Yogi and Adam differ on the second step (the v updates differ).
    assert yogi or not np.allclose(state["v"][0], [tau**2] * 2)


def test_fedadam_uses_the_negative_average_update_as_pseudo_gradient():
    g = [np.array([1.0, 1.0], np.float32)]
    clients = [ClientResult(0, [np.array([2.0, 1.0], np.float32)], 1), ClientResult(1, [np.array([1.0, 0.0], np.float32)], 3)]
    opt = FedAdam(learning_rate=0.1, tau=1e-3)
    new, state, _ = opt.aggregate(g, clients, opt.init_state(g))
    delta = np.array([0.25, -0.75])  # (1*(1,0) + 3*(0,-1)) / 4
    m = 0.1 * delta
    v = 0.99 * 1e-6 + 0.01 * delta**2
    np.testing.assert_allclose(new[0], g[0] + 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-6)
    # First step of Adam moves every coordinate by about lr in the direction of the update.
    assert np.all(np.sign(new[0] - g[0]) == np.sign(delta))
    assert isinstance(FedYogi().server_optimizer, ServerYogi)
    assert isinstance(FedAvgM().server_optimizer, ServerMomentum)


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
