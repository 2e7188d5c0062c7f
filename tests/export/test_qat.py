"""Quantization-aware training for Keras 3: fake-quant layers, `.keras` round trip, int8 export from learned ranges,
streaming conversion with the ranges carried over."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfx_ext.testing import save_and_load
from tfx_ext.lite.convert import to_tflite
from tfx_ext.lite.runtime import TFLiteModel
from tfx_ext.transforms.qat import (
    FakeQuant,
    QuantizedBatchNormalization,
    QuantizedConcatenate,
    QuantizedConv2D,
    QuantizedDepthwiseConv2D,
    QuantizedGRU,
    QuantizedKerasGRU,
    QuantizedKerasLSTM,
    QuantizedLSTM,
    QuantizedSeparableConv1D,
    QuantizedSeparableConv2D,
    fake_quant_weights,
    is_quantize_aware,
    quantize_aware,
)
from tfx_ext.layers.recurrent import GRU, LSTM
from tfx_ext.lite.int8 import model_ops, non_integer_ops, streaming_calibration_data
from tfx_ext.streaming.convert import to_streaming
from tfx_ext.lite.verification import verify


def _tensor_details(flatbuffer):
    """(ops as dicts with op_name/inputs/outputs tensor indices, {index: tensor detail}, interpreter)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    return interpreter._get_ops_details(), details, interpreter


def _scale(detail) -> float:
    (scale,) = detail["quantization_parameters"]["scales"]
    return float(scale)


def _range_scale(fq) -> float:
    return (float(fq.range_max.numpy()) - float(fq.range_min.numpy())) / 255


def _state_scales(flatbuffer, name: str) -> tuple[float, float]:
    """(input, output) scales of the external state `name` of an int8 streaming flatbuffer."""
    runner = TFLiteModel(flatbuffer)
    return runner.input_details[name]["quantization"][0], runner.output_details[name]["quantization"][0]


def test_fake_quant_weights_is_per_channel_symmetric_int8():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 2, 4)).astype("float32")
    quantized = np.asarray(fake_quant_weights(kernel, (0, 1, 2)))
    scale = np.abs(kernel).max(axis=(0, 1, 2), keepdims=True) / 127
    steps = quantized / scale
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)  # on each channel's grid
    np.testing.assert_allclose(np.abs(steps).max(axis=(0, 1, 2)), 127, atol=1e-3)
    np.testing.assert_allclose(quantized, kernel, atol=scale.max() / 2 + 1e-6)


def test_fake_quant_moving_average_range():
    layer = FakeQuant(momentum=0.5)
    first = np.array([[-1.0, 2.0]], "float32")
    layer(first, training=True)
    assert float(layer.range_min.numpy()) == -1.0 and float(layer.range_max.numpy()) == 2.0
    layer(np.array([[-3.0, 4.0]], "float32"), training=True)
    assert float(layer.range_min.numpy()) == pytest.approx(-2.0)  # 0.5 * -1 + 0.5 * -3
    assert float(layer.range_max.numpy()) == pytest.approx(3.0)
    out = np.asarray(layer(np.array([[10.0, 0.013]], "float32")))  # inference: clipped to the range, no update
    assert out[0, 0] == pytest.approx(3.0, abs=0.03)
    assert float(layer.range_max.numpy()) == pytest.approx(3.0)
    assert abs(out[0, 1] - 0.013) <= 5.0 / 255 / 2 + 1e-6


def test_quantize_aware_structure(qat_ds_cnn, trained):
    assert is_quantize_aware(qat_ds_cnn) and not is_quantize_aware(trained["ds_cnn"])
    assert isinstance(qat_ds_cnn.get_layer("conv0").cell, QuantizedConv2D)
    assert isinstance(qat_ds_cnn.get_layer("dw1").cell, QuantizedDepthwiseConv2D)
    assert isinstance(qat_ds_cnn.get_layer("input_norm"), QuantizedBatchNormalization)
    names = [layer.name for layer in qat_ds_cnn.layers if isinstance(layer, FakeQuant)]
    # ranges after the input, the standalone BN and each fused conv+BN+ReLU, the pool and the logits; none between
    # a conv and its BN (folded by TFLite) and none after the softmax (fixed int8 range)
    assert names == ["features_fq", "input_norm_fq", "relu0_fq", "dw1_relu_fq", "pw1_relu_fq", "pool_fq", "logits_fq"]


def test_qat_keras_round_trip(qat_ds_cnn, data):
    x = data["test"][0][:8]
    loaded = save_and_load(qat_ds_cnn)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat_ds_cnn.predict(x, verbose=0))
    for a, b in zip(loaded.weights, qat_ds_cnn.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_qat_int8_export_uses_learned_ranges_without_representative_data(qat_ds_cnn, trained, data):
    flatbuffer = to_tflite(qat_ds_cnn, quantize="int8")
    assert non_integer_ops(flatbuffer) == []
    runner = TFLiteModel(flatbuffer)
    scale, zero_point = runner.input_details["features"]["quantization"]
    fq = qat_ds_cnn.get_layer("features_fq")
    low, high = float(fq.range_min.numpy()), float(fq.range_max.numpy())
    assert scale == pytest.approx((high - low) / 255, rel=1e-3)
    assert zero_point == pytest.approx(-128 - low / scale, abs=1)
    result = verify(qat_ds_cnn, runner, data["test"])
    float_result = verify(trained["ds_cnn"], runner, data["test"])
    print(f"\nqat int8 ds_cnn/non_stream: agreement with QAT Keras {result.agreement:.3f}, accuracy QAT "
          f"{result.accuracy_model:.3f}, float {float_result.accuracy_model:.3f}, int8 {result.accuracy_tflite:.3f}")
    assert result.agreement >= 0.97
    assert result.accuracy_tflite >= float_result.accuracy_model - 0.01


@pytest.mark.parametrize("mode", ["stream_internal_state", "stream_external_state"])
def test_qat_streams_with_ranges_carried_over(qat_ds_cnn, data, mode):
    model = to_streaming(qat_ds_cnn, mode, batch_size=1, frames_per_step=1).model
    for layer in qat_ds_cnn.layers:
        if isinstance(layer, FakeQuant):
            np.testing.assert_array_equal(np.asarray(model.get_layer(layer.name).range_max),
                                          np.asarray(layer.range_max))
    flatbuffer = to_tflite(model, quantize="int8")
    assert non_integer_ops(flatbuffer) == []
    result = verify(qat_ds_cnn, flatbuffer, data["test"])
    print(f"\nqat int8 ds_cnn/{mode}: agreement {result.agreement:.3f}, accuracy int8 {result.accuracy_tflite:.3f}")
    assert result.agreement >= 0.97


def test_quantize_aware_errors(qat_ds_cnn):
    with pytest.raises(ValueError, match="already quantize-aware. Received: model='ds_cnn_qat'"):
        quantize_aware(qat_ds_cnn)
    with pytest.raises(TypeError, match="must be a functional keras.Model. Received: model=Sequential"):
        quantize_aware(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match=r"`momentum` must be a finite number >= 0.0 and < 1.0. Received: momentum=1.5"):
        FakeQuant(momentum=1.5)
    with pytest.raises(ValueError, match="`num_bits` must be 8"):
        FakeQuant(num_bits=4)


def test_qat_crnn_streams_to_full_int8_with_calibrated_gru(trained, data):
    keras.utils.set_random_seed(0)
    qat = quantize_aware(trained["crnn"])
    assert "gru_fq" not in [layer.name for layer in qat.layers]  # the GRU's output is h: ranged inside the cell
    assert isinstance(qat.get_layer("gru"), QuantizedGRU)
    qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    qat.fit(*data["train"], epochs=1, batch_size=32, verbose=0)
    loaded = save_and_load(qat)  # exact `.keras` round trip, state ranges included; the loaded model streams
    np.testing.assert_array_equal(loaded.predict(data["test"][0][:8], verbose=0),
                                  qat.predict(data["test"][0][:8], verbose=0))
    runner = to_streaming(loaded, "stream_external_state", batch_size=1, frames_per_step=1)
    with pytest.raises(ValueError, match=r"quantize-aware model .* needs `representative_data`: its recurrent "
                                         r"layer\(s\) \['gru'\] learn ranges for their states only"):
        to_tflite(runner.model, quantize="int8")  # named before converting (the README says so)
    flatbuffer = to_tflite(runner.model, quantize="int8",
                           representative_data=streaming_calibration_data(runner, data["train"][0][:24]))
    assert non_integer_ops(flatbuffer) == []
    h_range = qat.get_layer("gru").rnn.cell.h_range
    assert _state_scales(flatbuffer, "gru_h")[1] == pytest.approx(_range_scale(h_range), rel=1e-3)  # learned
    result = verify(qat, flatbuffer, data["test"])
    print(f"\nqat int8 crnn/stream_external_state: agreement {result.agreement:.3f}, "
          f"accuracy int8 {result.accuracy_tflite:.3f}, h scales (in, out) {_state_scales(flatbuffer, 'gru_h')}, "
          f"learned {_range_scale(h_range):.6f}")
    assert result.agreement >= 0.97


# ----- SeparableConv, Concatenate range sharing ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def qat_zoo(data):
    """A small model with SeparableConv2D/1D (in Stream) and a Concatenate, trained then fine-tuned with QAT."""
    from tfx_ext.layers.stream import Stream

    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input(data["train"][0].shape[1:], name="features")
    bins = inputs.shape[-1]
    x = layers.BatchNormalization(name="input_norm")(inputs)
    x = layers.Reshape((-1, bins, 1), name="expand")(x)
    x = Stream(layers.SeparableConv2D(6, (3, 3), strides=(1, 2), padding="same", depth_multiplier=2,
                                      use_bias=False), name="sep2d")(x)
    x = layers.ReLU(name="sep2d_relu")(layers.BatchNormalization(name="sep2d_bn")(x))
    x = layers.Reshape((-1, -(-bins // 2) * 6), name="merge")(x)
    a = Stream(layers.SeparableConv1D(8, 3, activation="relu"), name="sep1d")(x)
    b = Stream(layers.Conv1D(4, 1), name="conv1d")(x)
    x = layers.Concatenate(name="concat")([a, layers.ReLU(name="conv1d_relu")(b)])
    x = Stream(layers.GlobalAveragePooling1D(), name="pool")(x)
    outputs = layers.Activation("softmax", name="probs")(layers.Dense(4, name="logits")(x))
    model = keras.Model(inputs, outputs, name="zoo")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(*data["train"], epochs=8, batch_size=32, verbose=0)
    qat = quantize_aware(model)
    qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    qat.fit(*data["train"], epochs=2, batch_size=32, verbose=0)
    return qat


@pytest.mark.parametrize("layer_cls, kwargs, shape, num_trainable, num_ranges", [
    (QuantizedSeparableConv1D, {"filters": 4, "kernel_size": 3, "depth_multiplier": 2}, (4, 6, 3), 3, 1),
    (QuantizedSeparableConv2D, {"filters": 4, "kernel_size": 3, "padding": "same"}, (4, 5, 5, 2), 3, 1),
    (QuantizedKerasGRU, {"units": 4, "return_sequences": True}, (4, 5, 3), 3, 1),
    (QuantizedKerasLSTM, {"units": 4}, (4, 5, 3), 3, 2),
    (QuantizedGRU, {"units": 4}, (4, 5, 3), 3, 1),
    (QuantizedLSTM, {"units": 4, "return_sequences": False, "range_momentum": 0.5}, (4, 5, 3), 3, 2),
])
def test_quantized_layers_keras_contract(layer_cls, kwargs, shape, num_trainable, num_ranges):
    """Config round trips, weight counts (3 per range: min, max, initialized), `.keras` round trip, a fit step."""
    from tfx_ext.testing import run_layer_test

    # (streaming is checked on trained models below: untrained ranges are empty and zero every state)
    run_layer_test(layer_cls, kwargs, shape, expected_num_trainable_weights=num_trainable,
                   expected_num_non_trainable_weights=3 * num_ranges)


def test_qat_separable_and_concatenate_structure(qat_zoo):
    assert isinstance(qat_zoo.get_layer("sep2d").cell, QuantizedSeparableConv2D)
    assert isinstance(qat_zoo.get_layer("sep1d").cell, QuantizedSeparableConv1D)
    assert isinstance(qat_zoo.get_layer("concat"), QuantizedConcatenate)
    names = [layer.name for layer in qat_zoo.layers if isinstance(layer, FakeQuant)]
    # the Concatenate's inputs (sep1d, conv1d_relu) and output share its `mid` range: no range of their own
    assert names == ["features_fq", "input_norm_fq", "sep2d_relu_fq", "pool_fq", "logits_fq"]
    for layer in (qat_zoo.get_layer("sep2d").cell, qat_zoo.get_layer("concat")):
        assert float(layer.mid.initialized.numpy()) == 1.0 and float(layer.mid.range_max.numpy()) > 0.0
    with pytest.raises(ValueError, match=r"`range_momentum` must be a finite number >= 0.0 and < 1.0. Received: range_momentum=2"):
        QuantizedConcatenate(range_momentum=2)


def test_qat_separable_conv_matches_depthwise_then_pointwise():
    layer = QuantizedSeparableConv1D(3, 2, depth_multiplier=2, activation="relu")
    x = np.random.default_rng(0).normal(size=(2, 6, 4)).astype("float32")
    layer(x, training=True)  # sets the intermediate range from this batch
    depthwise = keras.layers.DepthwiseConv1D(2, depth_multiplier=2, use_bias=False)
    depthwise.build(x.shape)
    depthwise.set_weights([np.asarray(fake_quant_weights(layer.depthwise_kernel, (0,)))])
    mid = np.asarray(layer.mid(depthwise(x)))
    pointwise = np.asarray(fake_quant_weights(layer.pointwise_kernel, (0, 1)))[0]
    expected = np.maximum(mid @ pointwise + np.asarray(layer.bias), 0.0)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-5)
    low, high = float(layer.mid.range_min.numpy()), float(layer.mid.range_max.numpy())
    steps = np.diff(np.unique(mid)) / ((high - low) / 255)  # the intermediate tensor is on the int8 grid
    assert low < 0.0 < high and np.allclose(steps, np.round(steps), atol=1e-2)


def test_qat_separable_and_concatenate_int8_without_representative_data(qat_zoo, data):
    flatbuffer = to_tflite(qat_zoo, quantize="int8")
    ops_list = [op["op"] for op in model_ops(flatbuffer)]
    assert non_integer_ops(flatbuffer) == [] and "QUANTIZE" not in ops_list  # no requantization before CONCATENATION
    assert ops_list.count("DEPTHWISE_CONV_2D") == 2 and ops_list.count("CONV_2D") == 3  # 2 separable, 1 conv
    op_details, details, _ = _tensor_details(flatbuffer)
    by_name = [op for op in op_details if op["op_name"] == "DEPTHWISE_CONV_2D"]
    for op, name in zip(by_name, ["sep2d", "sep1d"]):  # the depthwise output carries the learned `mid` range
        mid = qat_zoo.get_layer(name).cell.mid
        expected = (float(mid.range_max.numpy()) - float(mid.range_min.numpy())) / 255
        assert _scale(details[op["outputs"][0]]) == pytest.approx(expected, rel=1e-3)
    (concat,) = [op for op in op_details if op["op_name"] == "CONCATENATION"]
    scales = {_scale(details[i]) for i in [*concat["inputs"], *concat["outputs"]]}
    assert len(scales) == 1
    result = verify(qat_zoo, flatbuffer, data["test"])
    print(f"\nqat int8 separable+concat: agreement {result.agreement:.3f}, max error {result.max_abs_error:.4f}, "
          f"accuracy int8 {result.accuracy_tflite:.3f}, ops {ops_list}")
    assert result.agreement >= 0.97


@pytest.mark.parametrize("mode", ["stream_internal_state", "stream_external_state"])
def test_qat_separable_and_concatenate_stream(qat_zoo, data, mode):
    loaded = save_and_load(qat_zoo)
    x = data["test"][0][:8]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat_zoo.predict(x, verbose=0))
    model = to_streaming(loaded, mode, batch_size=1, frames_per_step=1).model
    assert isinstance(model.get_layer("concat"), QuantizedConcatenate)
    np.testing.assert_array_equal(np.asarray(model.get_layer("concat").mid.range_max),
                                  np.asarray(qat_zoo.get_layer("concat").mid.range_max))
    flatbuffer = to_tflite(model, quantize="int8")
    assert non_integer_ops(flatbuffer) == [] and "QUANTIZE" not in [op["op"] for op in model_ops(flatbuffer)]
    result = verify(qat_zoo, flatbuffer, data["test"])
    print(f"\nqat int8 separable+concat/{mode}: agreement {result.agreement:.3f}")
    assert result.agreement >= 0.97


def test_qat_add_keeps_producer_ranges(trained, data):
    """TC-ResNet's residual Add: TFLite's int8 ADD rescales each input itself, so the inputs keep their producers'
    ranges; the Add's output range is the one after its fused ReLU."""
    keras.utils.set_random_seed(0)
    qat = quantize_aware(trained["tc_resnet"])
    names = [layer.name for layer in qat.layers if isinstance(layer, FakeQuant)]
    assert "block1_out_fq" in names and "block1_add_fq" not in names and "block1_bypass_relu_fq" in names
    for start in range(0, 128, 64):  # ranges from training-mode passes (fine-tuning is left to the other tests)
        qat(data["train"][0][start:start + 64], training=True)
    flatbuffer = to_tflite(qat, quantize="int8")
    ops_list = [op["op"] for op in model_ops(flatbuffer)]
    assert non_integer_ops(flatbuffer) == [] and "QUANTIZE" not in ops_list and "ADD" in ops_list
    result = verify(qat, flatbuffer, data["test"])
    print(f"\nqat int8 tc_resnet: agreement {result.agreement:.3f}, max error {result.max_abs_error:.4f}, "
          f"ops {ops_list}")
    assert result.agreement >= 0.97


# ----- BatchNormalization folding at export --------------------------------------------------------------------------
def test_fake_quant_commutes_with_per_channel_scale():
    """fq(w * s) / s == fq(w) per output channel for any nonzero s (both signs): folding BN's gamma / sigma into
    the kernel after QAT quantizes to the integers QAT simulated."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 4, 16)).astype("float32")
    scale = (rng.uniform(0.05, 20.0, size=16) * rng.choice([-1.0, 1.0], size=16)).astype("float32")
    assert (scale < 0).any() and (scale > 0).any()
    axes = (0, 1, 2)
    quantized = np.asarray(fake_quant_weights(kernel, axes))
    np.testing.assert_allclose(np.asarray(fake_quant_weights(kernel * scale, axes)) / scale, quantized, rtol=1e-5,
                               atol=1e-6)
    # and what the converter sees: the QAT kernel, already on its grid, scaled and quantized again
    np.testing.assert_allclose(np.asarray(fake_quant_weights(quantized * scale, axes)), quantized * scale, rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(np.asarray(fake_quant_weights(kernel + scale, axes)) - scale, quantized)  # shifts don't


def test_int8_export_folds_bn_into_the_qat_kernels_exactly(qat_ds_cnn):
    """The converter folds each BN into the conv before it and quantizes the folded kernel per output channel; its
    int8 kernels times their scales equal fq(kernel) * gamma / sqrt(var + eps), the QAT inference weights, and the
    Dense kernel is per-channel too (one scale per output unit), as `QuantizedDense` simulates."""
    op_details, details, interpreter = _tensor_details(to_tflite(qat_ds_cnn, quantize="int8"))
    convs = [op for op in op_details if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert [op["op_name"] for op in convs] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "FULLY_CONNECTED"]
    for op, (name, bn_name) in zip(convs, [("conv0", "bn0"), ("dw1", "dw1_bn"), ("pw1", "pw1_bn"), ("logits", None)]):
        layer = qat_ds_cnn.get_layer(name)
        cell = getattr(layer, "cell", layer)
        depthwise = op["op_name"] == "DEPTHWISE_CONV_2D"
        raw = np.asarray(cell.kernel)
        kernel = np.asarray(fake_quant_weights(raw, tuple(range(raw.ndim - (2 if depthwise else 1)))))
        if bn_name is not None:
            bn = qat_ds_cnn.get_layer(bn_name)
            multiplier = np.asarray(bn.gamma) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
            kernel = kernel * multiplier.reshape(kernel.shape[-2:] if depthwise else (-1,))
        # TFLite layouts: conv (out, kh, kw, in); depthwise (1, kh, kw, in * multiplier); dense (out, in)
        expected = kernel.reshape(1, *kernel.shape[:2], -1) if depthwise else np.moveaxis(kernel, -1, 0)
        detail = details[op["inputs"][1]]
        params = detail["quantization_parameters"]
        axis = params["quantized_dimension"]
        assert len(params["scales"]) == expected.shape[axis]  # per channel, Dense included
        values = interpreter.get_tensor(detail["index"]).astype("float32")
        shape = [1] * values.ndim
        shape[axis] = -1
        np.testing.assert_allclose(values * params["scales"].reshape(shape), expected.reshape(values.shape),
                                   rtol=1e-5, atol=1e-7)


# ----- recurrent layers ----------------------------------------------------------------------------------------------
def test_qat_recurrent_cells_quantize_kernels_and_learn_state_ranges():
    layer = QuantizedKerasLSTM(5, return_sequences=True)
    x = np.random.default_rng(0).normal(size=(4, 6, 3)).astype("float32")
    layer(x, training=True)
    cell = layer.cell
    assert [fq.name for fq in cell.state_ranges] == ["h_range", "c_range"]
    # one step against the LSTM equations written out with fake-quantized kernels and the learned state ranges
    kernel, recurrent_kernel = (np.asarray(fake_quant_weights(w, (0,))) for w in (cell.kernel, cell.recurrent_kernel))
    h0, c0 = np.full((4, 5), 0.3, "float32"), np.full((4, 5), -0.2, "float32")
    z = x[:, 0] @ kernel + h0 @ recurrent_kernel + np.asarray(cell.bias)
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    i, f, g, o = np.split(z, 4, axis=-1)
    c = np.asarray(cell.c_range(sigmoid(f) * c0 + sigmoid(i) * np.tanh(g)))
    h = np.asarray(cell.h_range(sigmoid(o) * np.tanh(c)))
    step_h, (state_h, state_c) = cell(x[:, 0], [h0, c0])
    np.testing.assert_allclose(np.asarray(state_c), c, atol=1e-5)
    np.testing.assert_allclose(np.asarray(step_h), h, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(step_h), np.asarray(state_h))
    assert all(float(fq.initialized.numpy()) == 1.0 for fq in cell.state_ranges)
    h_range = cell.h_range
    outputs = np.asarray(layer(x))  # every output (= h) is on the learned h grid
    steps = np.diff(np.unique(outputs)) / _range_scale(h_range)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-2)
    assert outputs.min() >= float(h_range.range_min.numpy()) - 1e-6
    with pytest.raises(ValueError, match=r"`range_momentum` must be a finite number >= 0.0 and < 1.0. Received: range_momentum=-1"):
        QuantizedKerasGRU(3, range_momentum=-1)


def test_qat_keras_recurrent_layers_round_trip(data):
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input(data["train"][0].shape[1:], name="features")
    x = layers.GRU(6, return_sequences=True, name="gru")(inputs)
    x = layers.LSTM(6, name="lstm")(x)
    model = keras.Model(inputs, layers.Dense(4, activation="softmax", name="probs")(x), name="rnn")
    qat = quantize_aware(model, momentum=0.8)
    assert isinstance(qat.get_layer("lstm"), QuantizedKerasLSTM) and isinstance(qat.get_layer("gru"), QuantizedKerasGRU)
    assert qat.get_layer("lstm").cell.c_range.momentum == 0.8
    assert [layer.name for layer in qat.layers if isinstance(layer, FakeQuant)] == ["features_fq"]  # ranges inside
    qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    qat.fit(*data["train"], epochs=1, batch_size=64, verbose=0)
    assert float(qat.get_layer("lstm").cell.c_range.initialized.numpy()) == 1.0
    loaded = save_and_load(qat)
    x = data["test"][0][:8]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    for a, b in zip(loaded.weights, qat.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert loaded.get_layer("lstm").cell.c_range.momentum == 0.8


def test_qat_lstm_streams_to_full_int8_with_learned_state_ranges(data):
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input(data["train"][0].shape[1:], name="features")
    x = layers.BatchNormalization(name="input_norm")(inputs)
    x = LSTM(6, return_sequences=False, name="lstm")(x)
    outputs = layers.Activation("softmax", name="probs")(layers.Dense(4, name="logits")(x))
    model = keras.Model(inputs, outputs, name="lstm_kws")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(*data["train"], epochs=6, batch_size=32, verbose=0)
    qat = quantize_aware(model, momentum=0.8)
    assert isinstance(qat.get_layer("lstm"), QuantizedLSTM) and qat.get_layer("lstm").rnn.cell.h_range.momentum == 0.8
    qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    qat.fit(*data["train"], epochs=1, batch_size=32, verbose=0)
    runner = to_streaming(qat, "stream_external_state", batch_size=1, frames_per_step=1)
    flatbuffer = to_tflite(runner.model, quantize="int8",
                           representative_data=streaming_calibration_data(runner, data["train"][0][:24]))
    assert non_integer_ops(flatbuffer) == []
    cell = qat.get_layer("lstm").rnn.cell
    for state, fq in (("lstm_h", cell.h_range), ("lstm_c", cell.c_range)):
        assert _state_scales(flatbuffer, state)[1] == pytest.approx(_range_scale(fq), rel=1e-3)
    result = verify(qat, flatbuffer, data["test"])
    print(f"\nqat int8 lstm/stream_external_state: agreement {result.agreement:.3f}, max error "
          f"{result.max_abs_error:.4f}, state scales h {_state_scales(flatbuffer, 'lstm_h')} c "
          f"{_state_scales(flatbuffer, 'lstm_c')}, learned h {_range_scale(cell.h_range):.6f} c "
          f"{_range_scale(cell.c_range):.6f}")
    assert result.agreement >= 0.97


def test_qat_gru_streams_internal_state_to_full_int8(trained, data):
    keras.utils.set_random_seed(0)
    qat = quantize_aware(trained["gru"])
    assert all(isinstance(qat.get_layer(name), QuantizedGRU) for name in ("gru1", "gru2"))
    for start in range(0, 128, 64):  # ranges from training-mode passes (the crnn and LSTM tests fine-tune)
        qat(data["train"][0][start:start + 64], training=True)
    runner = to_streaming(qat, "stream_internal_state", batch_size=1, frames_per_step=1)
    model = runner.model
    np.testing.assert_array_equal(np.asarray(model.get_layer("gru2").rnn.cell.h_range.range_max),
                                  np.asarray(qat.get_layer("gru2").rnn.cell.h_range.range_max))
    flatbuffer = to_tflite(model, quantize="int8",
                           representative_data=streaming_calibration_data(runner, data["train"][0][:24]))
    assert non_integer_ops(flatbuffer) == []
    result = verify(qat, flatbuffer, data["test"])
    print(f"\nqat int8 gru/stream_internal_state: agreement {result.agreement:.3f}, "
          f"max error {result.max_abs_error:.4f}")
    assert result.agreement >= 0.97


@pytest.mark.parametrize("layer", ["gru", "lstm"])
def test_qat_recurrent_state_ranges_move_during_a_fit_step(layer):
    """The quantized cell's own `call` runs in training (use_cudnn=False: a cuDNN kernel would skip it), so a fit
    step updates the learned state ranges."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 5), name="features")
    x = (GRU if layer == "gru" else LSTM)(4, return_sequences=False, name=layer)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probs")(x))
    qat = quantize_aware(model)
    cell = qat.get_layer(layer).rnn.cell
    assert qat.get_layer(layer).rnn.use_cudnn is False
    before = [(float(fq.range_min), float(fq.range_max)) for fq in cell.state_ranges]
    qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(8, 6, 5)).astype("float32")
    qat.fit(x, np.arange(8) % 3, epochs=1, batch_size=8, verbose=0)
    after = [(float(fq.range_min), float(fq.range_max)) for fq in cell.state_ranges]
    for (low0, high0), (low1, high1) in zip(before, after):
        assert (low0, high0) == (0.0, 0.0)
        assert low1 < 0.0 < high1  # moved to the states' batch range
