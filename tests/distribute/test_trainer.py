"""tfx_ext.distribute.fit equals model.fit under the default strategy and MirroredStrategy (2 logical CPUs).

Tolerances: same strategy, same batches -> the same float32 ops in the same order, so weights agree to 1e-6
(observed: exactly equal) and epoch losses to 1e-6 relative (Keras averages them in float32, we in float64).
Mirrored vs one device: the gradient is a sum of two half-batch gradients, so 1e-5 absolute.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfx_ext.testing import assert_all_close
from tfx_ext.distribute import DistributeError, fit, get_strategy
from tfx_ext.distribute import evaluate as dist_evaluate

WEIGHT_ATOL = 1e-6
MIRRORED_ATOL = 1e-5


def make_model(seed=3, optimizer=None):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), name="x")
    h = keras.layers.Dense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01), name="hidden")(
        inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="probs")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 1).astype("int64")
    return x, y


def weights(model):
    return [np.asarray(w) for w in model.get_weights()]


def assert_history_close(ours, keras_history, rtol=1e-6):
    assert sorted(ours) == sorted(keras_history), (sorted(ours), sorted(keras_history))
    for key in keras_history:
        np.testing.assert_allclose(ours[key], keras_history[key], rtol=rtol, atol=1e-7, err_msg=key)


@pytest.fixture(scope="module")
def mirrored():
    return get_strategy("mirrored")  # The one shared instance: see tfx_ext.distribute.strategy._mirrored.


@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
def test_fit_equals_model_fit(strategy_name, mirrored):
    strategy = mirrored if strategy_name == "mirrored" else get_strategy("default")
    x, y = data()
    with strategy.scope():
        reference = make_model()
    expected = reference.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, validation_data=(x[:16], y[:16]))
    with strategy.scope():
        model = make_model()
    history = fit(model, x, y, batch_size=16, epochs=2, strategy=strategy, verbose=0,
                  validation_data=(x[:16], y[:16]))
    assert_all_close(weights(model), weights(reference), WEIGHT_ATOL, what="weights vs model.fit")
    assert_history_close(history.history, expected.history)
    assert model.history is history and history.epoch == [0, 1]


def test_mirrored_equals_one_device_with_an_uneven_last_batch(mirrored):
    """41 examples, global batch 16: the last batch (9) splits 5/4 between the replicas. Each replica's loss is
    weighted by its share of the global batch, so the step equals the single-device step (model.fit under
    Mirrored would weight the two halves equally)."""
    x, y = data(41)
    single = make_model()
    single_history = fit(single, x, y, batch_size=16, epochs=1, verbose=0)
    with mirrored.scope():
        model = make_model()
    history = fit(model, x, y, batch_size=16, epochs=1, strategy=mirrored, verbose=0)
    assert_all_close(weights(model), weights(single), MIRRORED_ATOL, what="mirrored vs one device")
    np.testing.assert_allclose(history.history["loss"], single_history.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(history.history["accuracy"], single_history.history["accuracy"], rtol=1e-6)


def test_dataset_input_equals_arrays_and_sample_weights_count():
    x, y = data()
    sw = np.linspace(0.5, 1.5, len(x)).astype("float32")
    a, b = make_model(), make_model()
    ha = fit(a, x, y, sample_weight=sw, batch_size=12, epochs=1, verbose=0)
    hb = fit(b, tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(12), epochs=1, verbose=0)
    assert_all_close(weights(a), weights(b), WEIGHT_ATOL, what="dataset vs arrays")
    assert ha.history == hb.history
    reference = make_model()
    expected = reference.fit(x, y, sample_weight=sw, batch_size=12, epochs=1, shuffle=False, verbose=0)
    assert_all_close(weights(a), weights(reference), WEIGHT_ATOL, what="sample weights vs model.fit")
    np.testing.assert_allclose(ha.history["loss"], expected.history["loss"], rtol=1e-6)


def test_evaluate_equals_model_evaluate(mirrored):
    x, y = data()
    with mirrored.scope():
        model = make_model()
    expected = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    ours = dist_evaluate(model, x, y, batch_size=16, strategy=mirrored)
    assert sorted(ours) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(ours[key], expected[key], rtol=1e-6, err_msg=key)


def test_early_stopping_stops_like_model_fit():
    x, y = data()
    stop = lambda: keras.callbacks.EarlyStopping(monitor="loss", min_delta=10.0, patience=0)  # noqa: E731
    reference = make_model()
    expected = reference.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0, callbacks=[stop()])
    model = make_model()
    history = fit(model, x, y, batch_size=16, epochs=5, verbose=0, callbacks=[stop()])
    assert len(history.history["loss"]) == len(expected.history["loss"]) == 2
    assert_all_close(weights(model), weights(reference), WEIGHT_ATOL)


def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    x, y = data()
    uninterrupted = make_model()
    expected = fit(uninterrupted, x, y, batch_size=16, epochs=2, verbose=0)
    first = make_model()
    fit(first, x, y, batch_size=16, epochs=1, verbose=0, checkpoint_dir=str(tmp_path))
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-1")
    resumed = make_model(seed=99)  # Different initial weights: everything must come from the checkpoint.
    history = fit(resumed, x, y, batch_size=16, epochs=2, verbose=0, checkpoint_dir=str(tmp_path), resume=True)
    assert history.epoch == [1]
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"][1:], rtol=1e-6)
    assert_all_close(weights(resumed), weights(uninterrupted), WEIGHT_ATOL, what="resumed vs uninterrupted")
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")


def test_save_path_and_model_checkpoint_callback_write_on_the_chief(tmp_path):
    x, y = data()
    model = make_model()
    save_path = str(tmp_path / "final.keras")
    callback = keras.callbacks.ModelCheckpoint(str(tmp_path / "epoch{epoch}.keras"))
    fit(model, x, y, batch_size=16, epochs=2, verbose=0, callbacks=[callback], save_path=save_path)
    assert sorted(os.listdir(tmp_path)) == ["epoch1.keras", "epoch2.keras", "final.keras"]
    loaded = keras.saving.load_model(save_path)
    assert_all_close(weights(loaded), weights(model), 0.0, what="saved .keras")


def test_progress_bar_on_the_chief(capsys):
    x, y = data(16)
    fit(make_model(), x, y, batch_size=8, epochs=1, verbose=1)
    out = capsys.readouterr().out
    assert "2/2" in out and "loss:" in out and "accuracy:" in out
    fit(make_model(), x, y, batch_size=8, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_add_loss_only_model_trains_without_targets():
    class Penalty(keras.layers.Layer):
        def call(self, inputs):
            self.add_loss(keras.ops.mean(keras.ops.square(inputs)))
            return inputs

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    outputs = Penalty()(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    history = fit(model, x, batch_size=8, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]


# Errors, each with its message.


def test_uncompiled_model_is_rejected():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"`model` must be compiled \(loss, optimizer, metrics\) before `fit`"):
        fit(model, *data(), epochs=1)


def test_model_built_outside_the_strategy_scope_is_rejected(mirrored):
    with pytest.raises(DistributeError, match=r"the model's variables or optimizer were not created under this "
                                              r"strategy \(MirroredStrategy\): build and compile the model inside"):
        fit(make_model(), *data(), epochs=1, strategy=mirrored)


def test_optimizer_created_outside_the_strategy_scope_is_rejected(mirrored):
    """Only the optimizer is foreign here: its variables (its `iterations` counter exists from construction) show it,
    through public API (the check used to read Keras's private `optimizer._distribution_strategy`)."""
    optimizer = keras.optimizers.SGD(0.1)
    with mirrored.scope():
        model = make_model(optimizer=optimizer)
    with pytest.raises(DistributeError, match=r"the model's variables or optimizer were not created under this "):
        fit(model, *data(), epochs=1, strategy=mirrored)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"epochs": 0}, r"`epochs` must be an integer >= 1. Received: epochs=0"),
    ({"verbose": 3}, r"`verbose` must be one of 'auto', 0, 1, 2. Received: verbose=3"),
    ({"verbose": True}, r"`verbose` must be one of 'auto', 0, 1, 2. Received: verbose=True"),
    ({"epochs": 2.0}, r"`epochs` must be an integer >= 1. Received: epochs=2.0"),
    ({"batch_size": 0}, r"`batch_size` must be a positive integer \(the global batch\). Received: batch_size=0"),
    ({"steps_per_epoch": 0}, r"`steps_per_epoch` must be an integer >= 1 or None"),
    ({"resume": True}, r"`resume=True` needs `checkpoint_dir`"),
    ({"save_path": "model.h5"}, r"`save_path` must end in '.keras'. Received: save_path='model.h5'"),
    ({"validation_data": [1]}, r"`validation_data` must be \(x, y\), \(x, y, sample_weight\) or a tf.data.Dataset"),
    ({"strategy": "tpu"}, r"`name` must be one of"),
])
def test_argument_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        fit(make_model(), *data(), **{"epochs": 1, **kwargs})


def test_data_errors():
    x, y = data()
    model = make_model()
    with pytest.raises(ValueError, match=r"must have the same number of examples. Received sizes: \[40, 48\]"):
        fit(model, x, y[:40], epochs=1)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match=r"`batch_size` must be None when `x` is a tf.data.Dataset"):
        fit(model, dataset, batch_size=8, epochs=1)
    with pytest.raises(ValueError, match=r"`y` and `sample_weight` must be None when `x` is a tf.data.Dataset"):
        fit(model, dataset, y, epochs=1)
    with pytest.raises(ValueError, match=r"`sample_weight` needs `y`"):
        fit(model, x, sample_weight=np.ones(len(x)), epochs=1)
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model. Received: model=str"):
        fit("model", x, y, epochs=1)


def test_steps_per_epoch_continues_the_iterator_like_model_fit():
    x, y = data()
    dataset = lambda: tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()  # noqa: E731
    reference = make_model()
    expected = reference.fit(dataset(), steps_per_epoch=2, epochs=3, verbose=0, shuffle=False)
    model = make_model()
    history = fit(model, dataset(), steps_per_epoch=2, epochs=3, verbose=0)
    assert_all_close(weights(model), weights(reference), WEIGHT_ATOL, what="steps_per_epoch vs model.fit")
    assert_history_close(history.history, expected.history)
