"""`SecAgg` in the simulator: same aggregate as the plain sum (within the encoding bound), dropouts, FedMA refused."""

import keras
import numpy as np
import pytest

from tfx_ext.errors import FederatedError, MalformedUpdateError, SecureAggregationError
from tfx_ext.federated import ClientData, ClientResult, FedAvg, Payload, simulate
from tfx_ext.federated.secure import SecAgg, check_aggregator

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tiny_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


def fedavg_results(n=6, seed=0):
    rng = np.random.default_rng(seed)
    global_weights = [rng.normal(size=(6, 8)).astype(np.float32), np.zeros(8, np.float32)]
    results = [ClientResult(f"c{k}", [(g + rng.normal(scale=0.05, size=g.shape)).astype(np.float32)
                                      for g in global_weights], int(rng.integers(5, 60))) for k in range(n)]
    return global_weights, results


@pytest.mark.parametrize("variant", ["secagg", "secagg+"])
def test_fedavg_round_by_hand_equals_the_plain_aggregate(variant):
    global_weights, results = fedavg_results()
    plain, _, _ = FedAvg().aggregate(global_weights, results, {})
    secure = SecAgg(variant=variant, seed=1)
    weights, _, metrics = secure.aggregate(FedAvg(), global_weights, results, {})
    for a, b in zip(plain, weights):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert metrics["secure/survivors"] == 6 and metrics["secure/sim_only_relative_error"] < 1e-6
    assert metrics["secure/sim_only_clipped_fraction"] == 0 and metrics["secure/sim_only_weights_capped"] == 0


def test_secure_sum_with_dropouts_sums_the_survivors():
    _, results = fedavg_results(n=12, seed=3)
    payloads = [FedAvg().client_payload(fedavg_results(n=12, seed=3)[0], r) for r in results]
    ids = [r.client_id for r in results]
    secure = SecAgg(variant="secagg", dropout_rate=0.3, seed=2, threshold=0.5)
    total, metrics = secure.secure_sum(payloads, ids, np.random.default_rng(0))
    again, metrics2 = SecAgg(variant="secagg", dropout_rate=0.3, seed=2, threshold=0.5).secure_sum(
        payloads, ids, np.random.default_rng(0))
    survivors = metrics["survivor_ids"]
    assert 0 < metrics["dropped"] == 12 - len(survivors) and survivors == metrics2["survivor_ids"]  # seeded
    plain = [sum(payloads[ids.index(c)].arrays[i] for c in survivors) for i in range(len(payloads[0].arrays))]
    for a, b in zip(total.arrays, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(total.weight, sum(payloads[ids.index(c)].weight for c in survivors), rtol=1e-6)
    assert metrics["sim_only_relative_error"] < 1e-6 and metrics["bytes_up_per_client"] > 0
    assert all(metrics[f"time_{s}_s"] >= 0 for s in ("advertise", "share_keys", "masked_input", "unmask"))


def test_unweighted_mode_and_clipping_metrics():
    payloads = [Payload([np.array([0.5, -3.0])], 1.0), Payload([np.array([0.25, 0.5])], 1.0),
                Payload([np.array([0.0, 0.5])], 1.0)]
    with pytest.warns(UserWarning, match="0.111 of the update coordinates exceeded clip=1.0"):
        total, metrics = SecAgg(weighted=False, clip=1.0, variant="secagg").secure_sum(
            payloads, [0, 1, 2], np.random.default_rng(0))
    np.testing.assert_allclose(total.arrays[0], [0.75, 0.0], atol=1e-8)  # -3 clipped to -1
    np.testing.assert_allclose(total.weight, 3.0, atol=1e-8)  # the weight travels as one more coordinate
    assert metrics["sim_only_clipped_fraction"] == pytest.approx(1 / 9)


def test_extras_travel_by_name_through_the_secure_sum():
    payloads = [Payload([np.full(2, 0.1 * n)], n, {"b": np.full(3, 0.5 * n), "a": np.array([0.2 * n])})
                for n in (1.0, 2.0, 3.0)]
    total, _ = SecAgg(variant="secagg", seed=0).secure_sum(payloads, [0, 1, 2], np.random.default_rng(0))
    np.testing.assert_allclose(total.arrays[0], np.full(2, 0.6), atol=1e-5)
    np.testing.assert_allclose(total.extras["b"], np.full(3, 3.0), atol=1e-5)
    np.testing.assert_allclose(total.extras["a"], [1.2], atol=1e-5)
    assert total.weight == pytest.approx(6.0, abs=1e-5)


def test_too_many_dropouts_raise():
    payloads = [Payload([np.ones(3)], 2.0) for _ in range(6)]
    with pytest.raises(SecureAggregationError, match=r"Too many dropouts"):
        SecAgg(variant="secagg", dropout_rates={"masked_input": 0.9}, seed=0).secure_sum(
            payloads, list(range(6)), np.random.default_rng(0))


def test_server_side_fedma_is_refused_and_client_side_matching_composes():
    from tfx_ext.federated.fedma import ClientSideMatching, FedMA

    with pytest.raises(SecureAggregationError, match=r"needs each client's individual weights.*client-side matching"):
        check_aggregator(FedMA(tiny_model))
    with pytest.raises(SecureAggregationError, match=r"ClientSideMatching"):
        SecAgg().aggregate(FedMA(tiny_model), [], [], {})
    csm = ClientSideMatching(tiny_model)
    check_aggregator(csm)  # sum-based: accepted
    global_weights = [np.asarray(w) for w in tiny_model().get_weights()]
    rng = np.random.default_rng(0)
    results = [ClientResult(k, [(g + rng.normal(scale=0.1, size=g.shape)).astype(np.float32)
                                for g in global_weights], 10 + k) for k in range(5)]
    plain, _, _ = csm.aggregate(global_weights, results, {})
    secure, _, _ = SecAgg(clip=4.0, variant="secagg", seed=0).aggregate(csm, global_weights, results, {})
    for a, b in zip(plain, secure):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_simulate_with_secagg_matches_plain_training():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 6)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5)).astype(np.int32)
    cd = ClientData.iid(x, y, 8, seed=0)
    kw = dict(rounds=2, clients_per_round=4, batch_size=8, loss=LOSS, client_optimizer=keras.optimizers.SGD(0.1),
              progress=False, seed=3)
    _, plain = simulate(tiny_model, cd, **kw)
    h, secure = simulate(tiny_model, cd, secure=SecAgg(variant="secagg+", clip=2.0, seed=0), **kw)
    for a, b in zip(plain.get_weights(), secure.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    r = h.rounds[-1]
    assert r["secure/survivors"] == 4 and r["secure/sim_only_relative_error"] < 1e-5 and r["secure/bytes_up_per_client"] > 0
    with pytest.raises(FederatedError, match=r"sum-based aggregator|individual weights"):
        from tfx_ext.federated.fedma import FedMA

        simulate(tiny_model, cd, aggregator=FedMA(tiny_model), secure=SecAgg(), **kw)


@pytest.mark.slow
def test_digits_fedavg_with_secagg_reaches_the_plain_accuracy():
    from tfx_ext.data.digits import load_digits

    (x, y), (xt, yt) = load_digits(seed=0)
    x, xt = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    cd = ClientData.iid(x, y, 20, seed=0)

    def model_fn():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                                 keras.layers.Dense(10)])

    kw = dict(rounds=8, clients_per_round=10, batch_size=16, loss=LOSS, local_epochs=2,
              client_optimizer=keras.optimizers.SGD(0.3), progress=False, seed=0, eval_data=(xt, yt), eval_every=8)
    hp, _ = simulate(model_fn, cd, **kw)
    hs, _ = simulate(model_fn, cd, secure=SecAgg(variant="secagg+", clip=2.0, seed=0), **kw)
    acc_p, acc_s = hp.rounds[-1]["eval_accuracy"], hs.rounds[-1]["eval_accuracy"]
    print(f"digits accuracy: plain {acc_p:.4f}, SecAgg+ {acc_s:.4f}")
    assert acc_p > 0.85 and abs(acc_p - acc_s) <= 0.01
    assert max(r["secure/sim_only_relative_error"] for r in hs.rounds) < 1e-5


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"`variant` must be one of \('secagg', 'secagg\+'\). Received: variant='x'"):
        SecAgg(variant="x")
    with pytest.raises(ValueError, match=r"`clip` must be a finite number > 0. Received: clip=0"):
        SecAgg(clip=0)
    with pytest.raises(ValueError, match=r"`bits` must be an integer >= 2 and <= 64. Received: bits=128"):
        SecAgg(bits=128)
    with pytest.raises(ValueError, match=r"`dropout_rate` must be a finite number >= 0 and < 1. Received: dropout_rate=1.5"):
        SecAgg(dropout_rate=1.5)
    with pytest.raises(ValueError, match=r"`threshold` must be a positive integer, a fraction in \(0, 1\] or None"):
        SecAgg(threshold=1.5)
    with pytest.raises(ValueError, match=r"`dropout_rates` keys must be among"):
        SecAgg(dropout_rates={"late": 0.1})
    with pytest.raises(ValueError, match=r"`rounding` must be one of"):
        SecAgg(rounding="up")
    with pytest.raises(TypeError, match=r"`seed` must be an integer"):
        SecAgg(seed="a")
    with pytest.raises(MalformedUpdateError, match=r"Client 0: payload weight must be finite and > 0"):
        SecAgg().secure_sum([Payload([np.ones(2)], 0.0)] * 3, [0, 1, 2], np.random.default_rng(0))
    with pytest.raises(SecureAggregationError, match=r"Overflow guard"):
        SecAgg(bits=4).secure_sum([Payload([np.ones(2)], 1.0)] * 30, list(range(30)), np.random.default_rng(0))


def test_docstring_examples_run():
    import doctest

    from tfx_ext.federated.secure import wrapper

    assert doctest.testmod(wrapper).failed == 0


def test_active_adversary_variant_through_the_wrapper():
    payloads = [Payload([np.full(4, 0.1 * k)], 1.0 + k) for k in range(8)]
    secure = SecAgg(variant="secagg", consistency_check=True, seed=0)
    total, metrics = secure.secure_sum(payloads, list(range(8)), np.random.default_rng(0))
    np.testing.assert_allclose(total.arrays[0], np.full(4, 0.1 * sum(range(8))), atol=1e-5)
    assert metrics["survivors"] == 8 and "time_consistency_s" in metrics
    assert secure.parameters(8).threshold == metrics["threshold"]
