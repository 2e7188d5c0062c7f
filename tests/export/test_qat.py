"""Quantization-aware training for Keras 3: fake-quant layers, `.keras` round trip, int8 export from learned ranges,
streaming conversion with the ranges carried over."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.testing import save_and_load
from tfx_ext.export import TFLiteModel, to_tflite
from tfx_ext.quantization import (
    FakeQuant,
    QuantizedBatchNormalization,
    QuantizedConv2D,
    QuantizedDepthwiseConv2D,
    fake_quant_weights,
    is_quantize_aware,
    quantize_aware,
)
from tfx_ext.errors import ExportError
from tfx_ext.quantize_export import non_integer_ops, streaming_calibration_data
from tfx_ext.streaming import to_streaming
from tfx_ext.verify import verify


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
    streaming = to_streaming(qat_ds_cnn, mode, batch_size=1, frames_per_step=1)
    model = getattr(streaming, "model", streaming)
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
    with pytest.raises(ValueError, match=r"`momentum` must be in \[0, 1\). Received: momentum=1.5"):
        FakeQuant(momentum=1.5)
    with pytest.raises(ValueError, match="`num_bits` must be 8"):
        FakeQuant(num_bits=4)


def test_qat_crnn_streams_to_full_int8_with_calibrated_gru(trained, data):
    keras.utils.set_random_seed(0)
    qat = quantize_aware(trained["crnn"])
    assert "gru_fq" not in [layer.name for layer in qat.layers]  # the GRU output is its state: calibrated
    qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    qat.fit(*data["train"], epochs=1, batch_size=32, verbose=0)
    runner = to_streaming(qat, "stream_external_state", batch_size=1, frames_per_step=1)
    with pytest.raises(ExportError, match="recurrent layers' internals or streaming states: pass representative_data"):
        to_tflite(runner.model, quantize="int8")
    flatbuffer = to_tflite(runner.model, quantize="int8",
                           representative_data=streaming_calibration_data(runner, data["train"][0][:24]))
    assert non_integer_ops(flatbuffer) == []
    result = verify(qat, flatbuffer, data["test"])
    print(f"\nqat int8 crnn/stream_external_state: agreement {result.agreement:.3f}, "
          f"accuracy int8 {result.accuracy_tflite:.3f}")
    assert result.agreement >= 0.97
