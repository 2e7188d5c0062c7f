"""What a new user meets first: the compiled optimizer, `seed`, logits, bad labels and shapes, model vs model_fn."""

import keras
import numpy as np
import pytest

from tfx_ext.errors import DataError
from tfx_ext.federated import ClientData, LocalTrainer, simulate
from tfx_ext.federated.training import make_accuracy, resolve_client_optimizer

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def unseeded_model():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


def population(labels=None, x_dim=6):
    r = np.random.default_rng(0)
    x = r.normal(size=(80, x_dim)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32) if labels is None else labels
    return ClientData.iid(x, y, 4, seed=0), (x[:20], y[:20])


KW = dict(rounds=1, clients_per_round=2, batch_size=8, loss=LOSS, progress=False)


def test_compiled_optimizer_is_used_and_unsupported_one_is_named():
    def adam_model():
        m = unseeded_model()
        m.compile(optimizer=keras.optimizers.Adam(0.003), loss=LOSS)
        return m

    opt = resolve_client_optimizer(adam_model(), None)
    assert opt.kind == "Adam" and opt.config["learning_rate"] == pytest.approx(0.003)  # was SGD(0.01)
    assert resolve_client_optimizer(unseeded_model(), None).kind == "SGD"
    cd, _ = population()
    h_compiled, m1 = simulate(adam_model, cd, seed=3, **KW)
    h_explicit, m2 = simulate(adam_model, cd, seed=3, client_optimizer=keras.optimizers.Adam(0.003), **KW)
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)

    def rmsprop_model():
        m = unseeded_model()
        m.compile(optimizer="rmsprop", loss=LOSS)
        return m

    with pytest.raises(ValueError, match=r"compiled with RMSprop.*pass `client_optimizer="):
        simulate(rmsprop_model, cd, **KW)


def test_seed_seeds_the_initial_model():
    cd, _ = population()
    _, a = simulate(unseeded_model, cd, seed=1, **dict(KW, rounds=0))
    _, b = simulate(unseeded_model, cd, seed=1, **dict(KW, rounds=0))
    _, c = simulate(unseeded_model, cd, seed=2, **dict(KW, rounds=0))
    np.testing.assert_array_equal(a.get_weights()[0], b.get_weights()[0])
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_single_output_accuracy_thresholds_logits_at_zero():
    y = np.array([1, 0, 1, 0])
    out = np.array([[0.3], [-0.2], [-0.1], [0.6]], np.float32)  # logits: > 0 is class 1
    logits = make_accuracy(keras.losses.BinaryCrossentropy(from_logits=True))(y, out)
    probs = make_accuracy(keras.losses.BinaryCrossentropy())(y, out)
    assert float(logits) == 2.0 and float(probs) == 1.0  # a 0.5 threshold on logits calls 0.3 class 0
    assert float(make_accuracy("binary_crossentropy")(y, np.array([[0.7], [0.2], [0.4], [0.1]]))) == 3.0


@pytest.mark.parametrize("labels, match", [
    (np.eye(3, dtype=np.float32)[np.arange(80) % 3], r"look one-hot .* pass y.argmax\(-1\)"),
    (1 + np.arange(80) % 3, r"must be in \[0, 3\) .* Received: labels in \[1, 3\] \(labels 1..classes\? subtract 1\)"),
])
def test_bad_labels_are_named_before_tracing(labels, match):
    cd, _ = population(labels)
    with pytest.raises(DataError, match=match) as info:
        simulate(unseeded_model, cd, **KW)
    assert "Tensor" not in str(info.value) and len(str(info.value)) < 300  # no graph traceback, no weights


def test_wrong_input_shape_is_named_before_tracing():
    cd, _ = population(x_dim=7)
    with pytest.raises(DataError, match=r"per-example input shape \(7,\), but the model takes \(6,\)"):
        simulate(unseeded_model, cd, **KW)
    trainer = LocalTrainer(unseeded_model(), loss=LOSS, client_optimizer="sgd", batch_size=4)
    with pytest.raises(DataError, match="4 inputs but 3 labels"):
        trainer.train_cohort(trainer.get_weights(), np.zeros((4, 6), np.float32), np.zeros(3, np.int32),
                             [0, 4], [[0, 0]])
    assert trainer.trace_count == 0


def test_a_model_instead_of_model_fn_is_named():
    cd, _ = population()
    with pytest.raises(TypeError, match="`model_fn` must be a function returning a new Keras model"):
        simulate(unseeded_model(), cd, **KW)


def test_nan_in_eval_data_warns():
    cd, (x, y) = population()
    x = x.copy()
    x[3, 1] = np.nan
    with pytest.warns(RuntimeWarning, match=r"`eval_data` holds NaN or Inf in 1 of 20 examples"):
        simulate(unseeded_model, cd, eval_data=(x, y), **KW)
