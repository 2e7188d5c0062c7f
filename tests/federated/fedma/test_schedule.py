"""FedMA inside `simulate` (server-side and client-side matching) and the layer-wise `run_fedma` schedule."""

import numpy as np
import pytest
import keras

from tfx_ext.errors import FederatedError
from tfx_ext.federated import ClientData, PlainSum, simulate
from tfx_ext.federated.fedma import ClientSideMatching, FedMA, run_fedma


def small_cnn(widths=None):
    widths = widths or {}
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(widths.get("c1", 4), 3, activation="relu", name="c1"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(widths.get("d1", 8), activation="relu", name="d1"),
        keras.layers.Dense(3, name="out"),
    ])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240).astype("int32")
    x = rng.normal(size=(240, 8, 8, 1)).astype("float32") * 0.3
    x[np.arange(240), y * 2, y * 2, 0] += 2.0  # a learnable signal
    return ClientData.dirichlet(x[:180], y[:180], 6, alpha=0.5, seed=0), (x[180:], y[180:])


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_fedma_and_client_side_matching_run_in_simulate(data):
    cd, test = data
    runs = {}
    for name, aggregator in [("fedma", FedMA(small_cnn, max_growth=1.5, gamma=3.0, class_counts=cd, seed=1)),
                             ("client", ClientSideMatching(small_cnn, class_counts=cd))]:
        history, model = simulate(small_cnn, cd, rounds=3, clients_per_round=4, local_epochs=2, loss=LOSS,
                                  client_optimizer=keras.optimizers.SGD(0.1), aggregator=aggregator, eval_data=test,
                                  progress=False, seed=1)  # `seed` seeds the initial model too
        runs[name] = (history, model)
        assert history["eval_accuracy"][-1] > 0.5
    fedma_history, fedma_model = runs["fedma"]
    width = fedma_history["aggregator/width/d1"][-1]
    assert 8 <= width <= 12 and fedma_model.get_layer("d1").units == width


def test_secure_aggregation_composes_with_client_side_matching_only(data):
    cd, test = data
    history, _ = simulate(small_cnn, cd, rounds=1, clients_per_round=3, loss=LOSS, secure=PlainSum(),
                          aggregator=ClientSideMatching(small_cnn), progress=False)
    assert history["clients_accepted"] == [3]
    with pytest.raises(FederatedError, match="Secure aggregation needs a sum-based aggregator"):
        simulate(small_cnn, cd, rounds=1, clients_per_round=3, loss=LOSS, secure=PlainSum(),
                 aggregator=FedMA(small_cnn), progress=False)


def test_run_fedma_layerwise_then_communication(data):
    cd, test = data
    keras.utils.set_random_seed(2)
    history, model = run_fedma(small_cnn, cd, rounds=4, local_epochs=2, loss=LOSS,
                               client_optimizer=keras.optimizers.SGD(0.1), eval_data=test, max_growth=1.5,
                               gamma=3.0, seed=0)
    assert history["stage"] == ["layer:c1", "layer:d1", "output", "comm"]
    assert history["round"] == [1, 2, 3, 4]
    assert history["eval_accuracy"][-1] > 0.5
    assert all(b > 0 for b in history["bytes_up"])
    # The layer-wise rounds send one layer each: less than a full model.
    full = sum(np.asarray(v).nbytes for v in model.weights)
    assert history["bytes_up"][0] < 6 * full
    assert model.get_layer("c1").filters <= 6 and model.get_layer("d1").units <= 12
    with pytest.raises(ValueError, match=r"`rounds` must be an integer >= 3"):
        run_fedma(small_cnn, cd, rounds=2, loss=LOSS)


def test_fedma_with_growth_resumes_like_an_uninterrupted_run(data, tmp_path):
    cd, _ = data

    def run(rounds, resume):
        return simulate(small_cnn, cd, rounds=rounds, clients_per_round=3, loss=LOSS, progress=False, seed=3,
                        client_optimizer=keras.optimizers.SGD(0.1), checkpoint_dir=str(tmp_path / "ck"),
                        resume=resume,
                        aggregator=FedMA(small_cnn, sigma=0.05, gamma=5.0, max_growth=2.0, class_counts=cd, seed=1))

    keras.utils.set_random_seed(5)
    straight_history, straight = run(2, False)
    assert straight_history["aggregator/units_added"][0] > 0  # the width grew in round 1
    keras.utils.set_random_seed(5)
    run(1, False)
    resumed_history, resumed = run(2, True)
    assert resumed.get_layer("d1").units == straight.get_layer("d1").units
    for a, b in zip(resumed.weights, straight.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_run_fedma_from_independent_inits_matches_real_permutations(data):
    cd, test = data
    keras.utils.set_random_seed(4)
    history, model = run_fedma(small_cnn, cd, rounds=3, local_epochs=1, loss=LOSS, independent_init=True,
                               client_optimizer=keras.optimizers.SGD(0.1), eval_data=test, seed=0)
    assert history["stage"] == ["layer:c1", "layer:d1", "output"]
    # Independently initialized clients do not share a unit order: matching moves most units.
    assert history["moved_fraction"][0] > 0.3
    assert np.isfinite(history["eval_accuracy"][-1])


def test_client_side_matching_under_secagg_matches_the_plain_sum(data):
    from tfx_ext.federated.secure import SecAgg

    cd, _ = data
    runs = []
    for secure in (None, SecAgg(variant="secagg", seed=0)):
        keras.utils.set_random_seed(6)
        _, model = simulate(small_cnn, cd, rounds=1, clients_per_round=4, loss=LOSS, secure=secure, progress=False,
                            client_optimizer=keras.optimizers.SGD(0.1),
                            aggregator=ClientSideMatching(small_cnn, class_counts=cd))
        runs.append([np.asarray(w) for w in model.weights])
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, atol=1e-3)  # the fixed-point quantization bound
