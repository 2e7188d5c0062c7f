"""The layers checked the way Keras checks its own (issues 17 and 22): dtype policies reach inner cells, states
live in the variable dtype, hyper layers are accurate in float16 and refuse Sequential, `tf.saved_model.save`
works, gated DeltaActivation trains under XLA."""

import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfx_ext.layers.delta import DeltaActivation
from tfx_ext.layers.hyper_layers import HyperConv1D, HyperDense
from tfx_ext.layers.hyper_network import HyperNetwork
from tfx_ext.layers.recurrent import GRU, LSTM
from tfx_ext.layers.stream import Stream
from tfx_ext.streaming.contract import Mode


@pytest.fixture
def mixed_float16():
    """The global `mixed_float16` policy for one test, restored afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# ----- Stream decides the rank from the class, not its name ----------------------------------------------------
@keras.saving.register_keras_serializable(package="tfx_ext_tests")
class MyConv(keras.layers.Conv2D):
    """A user's Conv2D subclass whose name has no '2D' in it."""


def test_stream_rank_from_class_not_name():
    x = np.random.default_rng(0).normal(size=(2, 8, 5, 3)).astype("float32")
    mine = Stream(MyConv(4, (3, 3), padding="same"))
    plain = Stream(keras.layers.Conv2D(4, (3, 3), padding="same"))
    assert mine.rank == 2
    mine(x), plain(x)
    plain.set_weights(mine.get_weights())
    np.testing.assert_allclose(mine(x), plain(x), atol=1e-6)
    assert isinstance(Stream.from_config(mine.get_config()).cell, MyConv)


# ----- dtype= reaches the inner layer --------------------------------------------------------------------------
def test_stream_passes_dtype_to_its_cell():
    layer = Stream(keras.layers.Conv1D(4, 3), dtype="float16")
    assert layer.cell.dtype_policy.name == "float16"
    assert layer(np.zeros((2, 6, 3), "float32")).dtype == "float16"
    loaded = Stream.from_config(layer.get_config())
    assert loaded.cell.dtype_policy.name == "float16"


def test_stream_keeps_the_cells_own_dtype_without_dtype_argument():
    layer = Stream(keras.layers.Conv1D(4, 3, dtype="float16"))
    assert layer.cell.dtype_policy.name == "float16"
    assert Stream.from_config(layer.get_config()).cell.dtype_policy.name == "float16"


@pytest.mark.parametrize("layer_cls", [GRU, LSTM])
def test_recurrent_passes_dtype_to_its_rnn(layer_cls):
    layer = layer_cls(4, dtype="mixed_float16")
    y = layer(np.zeros((2, 5, 3), "float32"))
    assert layer.rnn.dtype_policy.name == "mixed_float16"
    assert y.dtype == "float16"
    assert all(w.dtype == "float32" for w in layer.weights)  # weights stay float32, as in Keras


@pytest.mark.parametrize(
    "make",
    [lambda: Stream(keras.layers.Conv1D(4, 3), mode=Mode.STREAM_INTERNAL_STATE), lambda: GRU(4, mode="stream_internal_state")],
    ids=["stream", "gru"],
)
def test_state_variables_in_the_variable_dtype(mixed_float16, make):
    layer = make()
    x = np.ones((2, 1, 3), "float32")
    y1 = layer(x)
    assert layer.state_variables
    assert all(v.dtype == "float32" for v in layer.state_variables)
    assert y1.dtype == "float16"
    y2 = layer(x)  # the state carried across calls is read back in the compute dtype
    assert y2.dtype == "float16"


# ----- hyper layers: Sequential refused, saved_model, float16 contractions ----------------------------------------
@pytest.mark.parametrize(
    "hypernetwork",
    [lambda: HyperNetwork(4, (4, 4)), lambda: {"embedding_dim": 4, "chunk_shape": (4, 4)}],
    ids=["shared", "private"],
)
def test_sequential_hyper_model_refused_at_build(hypernetwork):
    with pytest.raises(ValueError, match=r"cannot be used in a Sequential model"):
        keras.Sequential([keras.Input((7,)), HyperDense(3, hypernetwork=hypernetwork())])
    lazy = keras.Sequential([HyperDense(3, hypernetwork=hypernetwork())])  # built on its first call
    with pytest.raises(ValueError, match=r"cannot be used in a Sequential model"):
        lazy(np.zeros((2, 7), "float32"))


def test_hyper_layers_still_work_inside_a_functional_model_nested_in_sequential():
    hnet = HyperNetwork(4, (4, 4))
    x = keras.Input((7,))
    inner = keras.Model(x, HyperDense(3, hypernetwork=hnet)(x))
    outer = keras.Sequential([keras.Input((7,)), inner, keras.layers.Dense(2)])
    assert len(outer.trainable_weights) == 2 + 4 + 2  # consumer, generator, Dense


def _saved_model_round_trip(model, x):
    path = os.path.join(tempfile.mkdtemp(), "saved")
    tf.saved_model.save(model, path)
    restored = tf.saved_model.load(path)
    outputs = restored.signatures["serving_default"](tf.constant(x))
    np.testing.assert_allclose(next(iter(outputs.values())).numpy(), model(x), atol=1e-6)


def test_saved_model_of_a_hyper_model():
    hnet = HyperNetwork(4, (3, 4, 4))
    x = keras.Input((9, 5))
    y = HyperConv1D(3, 3, hypernetwork=hnet)(HyperConv1D(6, 3, hypernetwork=hnet, padding="same")(x))
    _saved_model_round_trip(keras.Model(x, y), np.ones((2, 9, 5), "float32"))


@pytest.mark.parametrize("method", ["quantize", "gated"])
def test_saved_model_of_a_default_delta_activation(method):
    x = keras.Input((6, 3))
    model = keras.Model(x, DeltaActivation(0.3, method=method)(x))
    _saved_model_round_trip(model, np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32"))


def test_delta_metrics_update_in_training_calls_only():
    layer = DeltaActivation(0.5)
    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
    layer(x, training=False)
    assert float(layer.temporal_sparsity.count) == 0
    layer(x, training=True)
    assert float(layer.temporal_sparsity.count) == 1


def _hyper_model(conditional=None):
    hnet = HyperNetwork(8, (16, 16), hidden_dim=16)
    x = keras.Input((40,))
    extra = {"conditional": "kernel", "context_dim": 3} if conditional else {}
    context = keras.Input((3,))
    h = HyperDense(48, hypernetwork=hnet, activation="relu")(x)
    y = HyperDense(24, hypernetwork=hnet, **extra)(h, context=context) if conditional else HyperDense(24, hypernetwork=hnet)(h)
    return keras.Model([x, context], y)


@pytest.mark.parametrize("conditional", [False, True], ids=["static", "kernel_conditional"])
def test_hyper_outputs_in_mixed_float16_match_float32(conditional):
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(32, 40)).astype("float32"), rng.normal(size=(32, 3)).astype("float32")]
    reference = _hyper_model(conditional)
    expected = np.asarray(reference(inputs))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _hyper_model(conditional)
        model.set_weights(reference.get_weights())
        actual = np.asarray(model(inputs)).astype("float32")
    finally:
        keras.config.set_dtype_policy(previous)
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= 0.02 * scale, np.mean(np.abs(actual - expected) > 0.02 * scale)


# ----- DeltaActivation's penalty under a global mixed policy ----------------------------------------------------
def test_delta_penalty_trains_under_mixed_float16(mixed_float16):
    x = keras.Input((6, 3))
    y = keras.layers.Dense(2)(DeltaActivation(0.3, penalty=0.01)(keras.layers.Dense(3)(x)))
    model = keras.Model(x, y)
    model.compile("sgd", "mse")
    data = np.random.default_rng(0).normal(size=(4, 6, 3)).astype("float32")
    history = model.fit(data, np.zeros((4, 6, 2), "float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert all(loss.dtype == "float32" for loss in model.losses)


# ----- gated DeltaActivation under XLA -----------------------------------------------------------------------------
def _gated_model(frames):
    x = keras.Input((frames, 3))
    y = keras.layers.Dense(2)(DeltaActivation(0.3, method="gated", trainable_threshold=True)(keras.layers.Dense(3)(x)))
    return keras.Model(x, y)


def test_gated_delta_trains_under_jit_compile():
    model = _gated_model(6)
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
    assert model.jit_compile is True
    data = np.random.default_rng(0).normal(size=(4, 6, 3)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(data, np.ones((4, 6, 2), "float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


def test_gated_delta_with_dynamic_time_declares_no_jit_and_keras_respects_it():
    model = _gated_model(None)
    assert not model.layers[2].supports_jit
    with pytest.warns(UserWarning, match="doesn't support `jit_compile=True`"):
        model.compile("sgd", "mse", jit_compile=True)
    assert model.jit_compile is False
    data = np.random.default_rng(0).normal(size=(4, 6, 3)).astype("float32")
    model.fit(data, np.ones((4, 6, 2), "float32"), epochs=1, verbose=0)


def test_gated_delta_unrolled_matches_scan_with_gradients():
    data = tf.constant(np.random.default_rng(1).normal(size=(2, 7, 3)).astype("float32"))
    static, dynamic = _gated_model(7), _gated_model(None)
    dynamic.set_weights(static.get_weights())
    grads = []
    for model in (static, dynamic):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(data) ** 2)
        grads.append(tape.gradient(loss, model.trainable_weights))
    np.testing.assert_allclose(static(data), dynamic(data), atol=1e-6)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, atol=1e-5)


# ----- docstrings that say what the code does ---------------------------------------------------------------------
def test_mask_per_sample_is_documented_with_its_real_default():
    from tfx_ext.layers.tensor import TensorRegression

    assert TensorRegression(3, "cp", rank=2).get_config()["mask_per_sample"] is False
    doc = TensorRegression.__doc__.split("mask_per_sample:")[1].split("drop_at_inference:")[0]
    assert "the default,\n            False" in doc and "the paper's choice, the default" not in doc
    # The default draws one mask for the whole batch: identical samples give identical outputs in training.
    layer = TensorRegression(3, "cp", rank=8, rank_dropout=0.5, seed=0)
    y = np.asarray(layer(np.ones((4, 5, 6), "float32"), training=True))
    np.testing.assert_allclose(y, np.broadcast_to(y[:1], y.shape))


def test_shard_partition_docstring_matches_a_client_with_more_classes_than_shards():
    from tfx_ext.federated import partition

    labels = np.repeat(np.arange(3), 5)  # classes of 5 examples, shards of 3: shards straddle class boundaries
    clients = partition.shard_partition(labels, 5, shards_per_client=1, seed=0)
    assert max(len(set(labels[c])) for c in clients) > 1  # more classes than shards
    assert "at most `shards_per_client` classes only when" in partition.__doc__


# ----- DeltaActivation in full int8 ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, float_ops",
    [("gated", []), ("quantize", ["DEQUANTIZE (INT8 -> FLOAT32)", "ROUND (FLOAT32 -> FLOAT32)", "QUANTIZE (FLOAT32 -> INT8)"])],
)
def test_delta_int8_export_keeps_exactly_the_documented_float_ops(method, float_ops):
    import re

    import tfx_ext

    rng = np.random.default_rng(0)
    x = keras.Input((8, 16), name="x")
    y = keras.layers.Dense(4)(DeltaActivation(0.25, method=method, track_metrics=False)(keras.layers.Dense(16)(x)))
    model = keras.Model(x, y)
    calibration = [{"x": rng.normal(size=(1, 8, 16)).astype("float32")} for _ in range(20)]
    flatbuffer = tfx_ext.to_tflite(model, quantize="int8", representative_data=calibration, allow_float_ops=True)
    found = [re.sub(r"^subgraph \d+ op \d+ ", "", op) for op in tfx_ext.non_integer_ops(flatbuffer)]
    assert found == float_ops
    assert all(op.split(" ")[0] in DeltaActivation.__doc__ for op in float_ops)
