"""DeltaActivation: the shared layer checks, then numerics, training, penalty, distribution and streaming."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfx_ext.transforms.temporal_sparsity import assign_fan_out, delta_mac_savings, fan_out_of, sparsity_report, temporal_deltas
from tfx_ext.layers.delta import DeltaActivation
from tfx_ext.streaming.contract import Mode
from tfx_ext.testing import assert_all_close, assert_distribute_parity, run_layer_test


@pytest.mark.parametrize("method", ["quantize", "gated"])
def test_layer_contract(method):
    run_layer_test(
        DeltaActivation,
        {"threshold": 0.1, "method": method, "trainable_threshold": True, "threshold_shape": "channel"},
        (2, 16, 8),
        expected_output_shape=(2, 16, 8),
        expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=0,
        dynamic_axes=(0, 1),  # any number of frames (gated: the scan path, which declares supports_jit=False)
        tflite=True,
        distribute=True,
    )


def _x(values):
    return np.asarray(values, dtype="float32").reshape(1, -1, 1)


def _run(layer, values):
    return np.asarray(layer(_x(values)))[0, :, 0]


def test_quantize_rounds_to_steps_and_deltas_are_changes():
    x = [0.1, 0.2, 1.1, 1.2, -0.6]
    np.testing.assert_allclose(_run(DeltaActivation(0.5), x), [0.0, 0.0, 1.0, 1.0, -0.5])
    np.testing.assert_allclose(_run(DeltaActivation(0.5, emit="deltas"), x), [0.0, 0.0, 1.0, 0.0, -1.5])
    np.testing.assert_allclose(_run(DeltaActivation(0.5, activation="relu"), x), [0.0, 0.0, 1.0, 1.0, 0.0])


def test_gated_compares_with_last_transmitted_value_so_drift_accumulates():
    drift = [0.2, 0.4, 0.6, 0.7, 0.2]
    # |x_t - x_prev_sent|: 0.2, 0.4 (held at 0), 0.6 >= 0.5 -> send 0.6; 0.1 (hold); 0.4 (hold).
    np.testing.assert_allclose(_run(DeltaActivation(0.5, method="gated"), drift), [0.0, 0.0, 0.6, 0.6, 0.6], atol=1e-7)
    np.testing.assert_allclose(
        _run(DeltaActivation(0.5, method="gated", emit="deltas"), drift), [0.0, 0.0, 0.6, 0.0, 0.0], atol=1e-7
    )


def test_per_channel_and_per_unit_thresholds_have_their_shapes():
    x = np.zeros((2, 4, 3, 5), "float32")
    for kind, shape in (("scalar", ()), ("channel", (5,)), ("unit", (3, 5))):
        layer = DeltaActivation(0.1, threshold_shape=kind)
        layer(x)
        assert tuple(layer.threshold_weight.shape) == shape


def test_per_channel_thresholds_act_per_channel():
    layer = DeltaActivation(1.0, threshold_shape="channel")
    layer.build((1, 2, 2))
    layer.threshold_weight.assign([0.5, 2.0])
    out = np.asarray(layer(np.array([[[0.7, 0.7], [1.4, 1.4]]], "float32")))
    np.testing.assert_allclose(out, [[[0.5, 0.0], [1.5, 2.0]]])


def test_straight_through_gradient_and_lsq_step_gradient():
    layer = DeltaActivation(0.5, trainable_threshold=True)
    x = tf.constant(_x([0.3, 0.9, 1.6]))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        total = tf.reduce_sum(y)
    grad_x, grad_step = tape.gradient(total, [x, layer.threshold_weight])
    np.testing.assert_allclose(grad_x.numpy().ravel(), [1.0, 1.0, 1.0])
    # d q / d step = round(x/step) - x/step summed: (1-0.6) + (2-1.8) + (3-3.2) = 0.4
    np.testing.assert_allclose(float(grad_step), 0.4, atol=1e-5)


def test_gated_threshold_gets_surrogate_gradient():
    layer = DeltaActivation(0.5, method="gated", trainable_threshold=True)
    x = tf.constant(_x([0.45, 0.55, 0.6]))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(layer(x))
    grad = tape.gradient(total, layer.threshold_weight)
    assert grad is not None and float(grad) != 0.0


def test_penalty_equals_its_formula():
    layer = DeltaActivation(0.5, penalty=0.01, fan_out=3, emit="deltas")
    x = np.array([[[0.1], [1.1], [1.2]], [[2.0], [0.0], [0.4]]], "float32")
    deltas = np.asarray(layer(x))
    expected = 0.01 * 3 * np.abs(deltas).sum() / 2
    (loss,) = layer.losses
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


def _smooth_sequences(n=32, t=20, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(scale=0.1, size=(n, t, c)), axis=1).astype("float32")


def _train_delta_model(penalty, x, y, epochs=8):
    keras.utils.set_random_seed(3)
    inputs = keras.Input(x.shape[1:])
    hidden = keras.layers.Dense(8, name="pre")(inputs)
    delta = DeltaActivation(0.05, activation="relu", penalty=penalty, name="d")
    model = keras.Model(inputs, keras.layers.Dense(y.shape[-1])(delta(hidden)))
    assign_fan_out(model)
    model.compile(keras.optimizers.Adam(0.01), "mse")
    history = model.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    return model, history


def test_penalty_training_raises_temporal_sparsity_and_logs_it():
    x = _smooth_sequences()
    y = np.sin(x.sum(-1, keepdims=True))
    plain, plain_history = _train_delta_model(0.0, x, y)
    sparse, history = _train_delta_model(0.05, x, y)
    plain_sparsity = sparsity_report(plain, [x])["d"]["temporal_sparsity"]
    sparse_sparsity = sparsity_report(sparse, [x])["d"]["temporal_sparsity"]
    assert sparse_sparsity > plain_sparsity + 0.1, (plain_sparsity, sparse_sparsity)
    assert "d_temporal_sparsity" in history.history and "d_spatial_sparsity" in history.history
    # the logged metric follows the penalty as the report does
    assert history.history["d_temporal_sparsity"][-1] > plain_history.history["d_temporal_sparsity"][-1] + 0.05


def test_trainable_threshold_moves_and_stays_positive():
    x = _smooth_sequences(n=16)
    inputs = keras.Input(x.shape[1:])
    delta = DeltaActivation(0.05, trainable_threshold=True, name="d")
    model = keras.Model(inputs, keras.layers.Dense(1)(delta(inputs)))
    model.compile(keras.optimizers.SGD(0.5), "mse")
    model.fit(x, np.ones((16, 20, 1), "float32"), epochs=3, batch_size=4, verbose=0)
    value = float(delta.threshold_weight.numpy())
    assert value != pytest.approx(0.05) and value > 0.0


def test_penalty_loss_is_scaled_per_replica_under_mirrored_strategy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 6, 3)).astype("float32")
    y = rng.normal(size=(8, 6, 2)).astype("float32")

    def model_fn():
        inputs = keras.Input((6, 3))
        hidden = DeltaActivation(0.3, penalty=0.02, trainable_threshold=True, activation="relu")(inputs)
        return keras.Model(inputs, keras.layers.Dense(2, kernel_initializer="ones")(hidden))

    assert_distribute_parity(model_fn, x, y)


@pytest.mark.parametrize("method", ["quantize", "gated"])
@pytest.mark.parametrize("frames_per_step", [1, 2])
def test_streaming_steps_equal_the_whole_sequence(method, frames_per_step):
    x = np.random.default_rng(2).normal(size=(2, 8, 3)).astype("float32")
    kwargs = {"threshold": 0.3, "method": method, "activation": "relu", "emit": "deltas"}
    full = np.asarray(DeltaActivation(**kwargs)(x))

    external = DeltaActivation(**kwargs, mode=Mode.STREAM_EXTERNAL_STATE)
    state = np.zeros((2, 3), "float32")
    chunks = []
    for t in range(0, 8, frames_per_step):
        out, state = external([x[:, t : t + frames_per_step], state])
        chunks.append(np.asarray(out))
    assert_all_close(np.concatenate(chunks, axis=1), full, what="external-state stream")

    inputs = keras.Input((frames_per_step, 3), batch_size=2)
    internal = DeltaActivation(**kwargs, mode=Mode.STREAM_INTERNAL_STATE)
    model = keras.Model(inputs, internal(inputs))
    for _ in range(2):  # The second pass checks reset_states.
        internal.reset_states()
        streamed = [np.asarray(model(x[:, t : t + frames_per_step])) for t in range(0, 8, frames_per_step)]
        assert_all_close(np.concatenate(streamed, axis=1), full, what="internal-state stream")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"threshold": -0.1}, r"`threshold` must be a finite number > 0. Received: threshold=-0.1"),
        ({"method": "sigma"}, r"`method` must be one of .* Received: method='sigma'"),
        ({"threshold_shape": "row"}, r"`threshold_shape` must be one of"),
        ({"activation": "tanh"}, r"`activation` must be None or 'relu'"),
        ({"emit": "both"}, r"`emit` must be one of"),
        ({"penalty": -1.0}, r"`penalty` must be a finite number >= 0"),
        ({"fan_out": 0}, r"`fan_out` must be an integer >= 1"),
        ({"mode": "online"}, r"`mode` must be one of"),
    ],
)
def test_config_errors_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeltaActivation(**kwargs)


def test_rank_two_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"needs inputs \(batch, time, features...\)"):
        DeltaActivation(0.1)(np.zeros((2, 3), "float32"))


def test_fan_out_follows_the_graph_through_pass_through_layers():
    inputs = keras.Input((10, 4))
    a = DeltaActivation(0.1, name="a")(inputs)
    conv = keras.layers.Conv1D(6, 3, padding="causal", name="conv")(keras.layers.Dropout(0.1)(a))
    b = DeltaActivation(0.1, name="b")(conv)
    out = keras.layers.Dense(5, name="dense")(keras.layers.BatchNormalization()(b))
    c = DeltaActivation(0.1, name="c")(out)
    model = keras.Model(inputs, c)
    assert assign_fan_out(model) == {"a": 18, "b": 5, "c": 1}
    assert model.get_layer("a").fan_out == 18
    assert fan_out_of(keras.layers.DepthwiseConv1D(3, depth_multiplier=2)) == 6


def test_mac_savings_and_sparsity_follow_the_counting_rule():
    inputs = keras.Input((4, 2))
    delta = DeltaActivation(1.0, name="d")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(delta))
    # Quantized with step 1: frames [0,0], [1,0], [1,0], [1,2] -> deltas [0,0], [1,0], [0,0], [0,2]: 2 of 8 nonzero.
    x = np.array([[[0.1, 0.2], [0.9, 0.1], [1.2, -0.3], [1.0, 2.2]]], "float32")
    savings = delta_mac_savings(model, [x])
    assert savings["dense_macs"] == 8 * 3 and savings["delta_macs"] == 2 * 3
    assert savings["savings"] == pytest.approx(0.75)
    report = sparsity_report(model, [(x, None)])["d"]
    assert report["temporal_sparsity"] == pytest.approx(6 / 8)
    assert report["spatial_sparsity"] == pytest.approx(4 / 8)
    assert report["fan_out"] == 3


def test_temporal_deltas_start_from_zero():
    np.testing.assert_allclose(temporal_deltas(np.array([[1.0, 1.0, 3.0]])), [[1.0, 0.0, 2.0]])


def test_insert_delta_activations_copies_weights_and_keeps_outputs_at_fine_resolution():
    from tfx_ext.transforms.temporal_sparsity import insert_delta_activations
    from tfx_ext.models import get_model

    model = get_model("ds_cnn", (12, 8), 4, width=4, num_blocks=1)
    x = np.random.default_rng(5).normal(size=(3, 12, 8)).astype("float32")
    delta_model = insert_delta_activations(model, threshold=1e-7, method="gated")
    names = [layer.name for layer in delta_model.layers if isinstance(layer, DeltaActivation)]
    assert names == ["relu0_delta", "dw1_relu_delta", "pw1_relu_delta"]
    assert_all_close(delta_model(x, training=False), model(x, training=False), atol=1e-5)
    assert delta_model.get_layer("relu0_delta").fan_out == 9  # depthwise 3x3, multiplier 1
    from tfx_ext.testing import save_and_load

    assert_all_close(save_and_load(delta_model)(x), delta_model(x))


def test_insert_delta_activations_needs_an_activation():
    from tfx_ext.transforms.temporal_sparsity import insert_delta_activations

    inputs = keras.Input((4, 3))
    with pytest.raises(ValueError, match="has no hidden ReLU"):
        insert_delta_activations(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


@pytest.mark.parametrize("method", ["quantize", "gated"])
def test_kws_model_with_delta_activations_streams_and_exports(method):
    """A DS-CNN with a DeltaActivation after every hidden ReLU: to_streaming in both modes equals the
    non-streaming model frame by frame (no special case in the converter), and float LiteRT equals Keras."""
    from tfx_ext.testing import BOTH_MODES, verify_streaming, verify_tflite_streaming
    from tfx_ext.transforms.temporal_sparsity import insert_delta_activations
    from tfx_ext.models import get_model

    model = insert_delta_activations(get_model("ds_cnn", (10, 8), 4, width=4, num_blocks=1), threshold=0.1,
                                     method=method)
    x = np.random.default_rng(7).normal(size=(2, 10, 8)).astype("float32")
    verify_streaming(model, x, frames_per_step=(1, 2), compiled=(True,))
    for mode in BOTH_MODES:
        assert verify_tflite_streaming(model, x, mode) <= 1e-4
