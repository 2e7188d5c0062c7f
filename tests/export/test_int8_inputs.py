"""The rest of the int8 path: every calibration clip kept, representative data in the TFLite conventions,
whole-window recurrent int8 warned about, recurrent QAT models without calibration data named."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfx_ext.errors import DataError
from tfx_ext.lite.convert import to_tflite
from tfx_ext.lite.int8 import streaming_calibration_data
from tfx_ext.lite.runtime import TFLiteModel
from tfx_ext.models import TINY_KWARGS, get_model
from tfx_ext.streaming.convert import to_streaming


def _conv_model(name="conv_kws"):
    keras.utils.set_random_seed(0)
    return get_model("ds_cnn", (6, 5), 3, **TINY_KWARGS["ds_cnn"])


@pytest.mark.parametrize("clips,batch", [(4, 3), (2, 3), (3, 3), (1, 1)])
def test_streaming_calibration_data_keeps_every_clip(clips, batch):
    # Before: 4 clips at batch 3 gave one batch (clip 3 lost); 2 clips at batch 3 gave an empty list.
    runner = to_streaming(_conv_model(), "stream_external_state", batch_size=batch, frames_per_step=1)
    x = np.random.default_rng(0).normal(size=(clips, 6, 5)).astype("float32")
    samples = streaming_calibration_data(runner, x)
    batches = -(-clips // batch)
    assert len(samples) == batches * 6
    first_frames = np.concatenate([s["features"][:, 0] for s in samples[::6]])  # each batch's first chunk
    assert first_frames.shape == (batches * batch, 5)
    for clip in range(clips):
        assert any(np.array_equal(x[clip, 0], row) for row in first_frames), clip
    with pytest.raises(DataError, match="`sequences` is empty"):
        streaming_calibration_data(runner, x[:0])


def _flat_model():
    inputs = keras.Input((4,), name="x")
    return keras.Model(inputs, keras.layers.Dense(3, name="y")(keras.layers.Dense(5, activation="relu")(inputs)))


@pytest.mark.parametrize("convention", ["array", "array_batched", "lists", "generator", "dataset", "dataset_dicts",
                                        "dicts"])
def test_representative_data_in_tflite_conventions_gives_the_same_model(convention):
    model = _flat_model()
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    reference = to_tflite(model, quantize="int8", representative_data=[{"x": x[i:i + 1]} for i in range(8)])
    data = {
        "array": x,  # (num, *per-example shape): one invocation of the batch-1 signature per row
        "array_batched": x[:, None],  # (num, *signature shape)
        "lists": [[x[i:i + 1]] for i in range(8)],
        "generator": lambda: ([x[i:i + 1]] for i in range(8)),
        "dataset": tf.data.Dataset.from_tensor_slices(x[:, None]),
        "dataset_dicts": tf.data.Dataset.from_tensor_slices({"x": x[:, None]}),
        "dicts": ({"x": x[i:i + 1]} for i in range(8)),
    }[convention]
    flatbuffer = to_tflite(model, quantize="int8", representative_data=data)
    assert TFLiteModel(flatbuffer).input_details["x"]["quantization"] == \
        TFLiteModel(reference).input_details["x"]["quantization"]
    assert flatbuffer == reference


def test_representative_data_in_no_convention_lists_the_expected_inputs():
    runner = to_streaming(_conv_model(), "stream_external_state", batch_size=1, frames_per_step=1)
    x = np.zeros((3, 1, 5), np.float32)
    with pytest.raises(DataError, match=r"as one array is for single-input models; this signature has the inputs "
                                        r"\['features', .*'conv0_buffer'"):
        to_tflite(runner, quantize="int8", representative_data=x)
    with pytest.raises(DataError, match=r"sample 0 must be a dict of input name -> array, or a list of \d+ arrays "
                                        r"in the order \['features', "):
        to_tflite(runner, quantize="int8", representative_data=[[x[:1]]])
    with pytest.raises(DataError, match=r"must be \(num, \*\(1, 4\)\) or \(num, \*\(4,\)\).*Received: shape=\(8, 3\)"):
        to_tflite(_flat_model(), quantize="int8", representative_data=np.zeros((8, 3), np.float32))


def test_whole_window_int8_of_a_recurrent_model_warns_with_the_size_ratio():
    keras.utils.set_random_seed(0)
    model = get_model("gru", (12, 10), 4, **TINY_KWARGS["gru"])
    x = np.random.default_rng(0).normal(size=(4, 12, 10)).astype("float32")
    with pytest.warns(UserWarning, match=r"whole-window model .* unrolls its recurrent layer\(s\) .* over every "
                                         r"frame .*the file is \d+\.\dx the float32 weights.*to_streaming\(model"):
        whole = to_tflite(model, quantize="int8", representative_data=x, allow_float_ops=True)
    runner = to_streaming(model, "stream_external_state", batch_size=1, frames_per_step=1)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*whole-window", category=UserWarning)  # streaming: no warning
        stream = to_tflite(runner, quantize="int8", representative_data=streaming_calibration_data(runner, x),
                           allow_float_ops=True)
    print(f"\nint8 gru whole window {len(whole)} B, streaming {len(stream)} B, {model.count_params()} parameters")
    assert len(stream) < len(whole)
