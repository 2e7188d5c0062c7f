"""n-bit weight QAT (kws_streaming's 4-bit weights, 8-bit activations): the fake-quantized kernels hold
2^bits - 1 levels per channel, the setting survives .keras, and the int8 export agrees with the QAT model."""

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tfx_ext.lite.convert import to_tflite
from tfx_ext.lite.verification import verify
from tfx_ext.models import get_model
from tfx_ext.testing import save_and_load
from tfx_ext.transforms.qat import fake_quant_weights, quantize_aware
from tests.export.conftest import BINS, CLASSES, FRAMES, TINY, synthetic


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quantized_kernels_hold_the_levels_of_their_bits(bits):
    kernel = np.random.default_rng(bits).normal(size=(5, 7)).astype("float32")
    q = keras.ops.convert_to_numpy(fake_quant_weights(kernel, (0,), bits))
    levels = 2 ** (bits - 1) - 1
    scale = np.abs(kernel).max(axis=0) / levels  # per output channel, computed here from the definition
    np.testing.assert_allclose(q / scale, np.round(q / scale), atol=1e-4)  # on the grid
    assert np.all(np.abs(np.round(q / scale)) <= levels)
    assert all(len(np.unique(np.round(q[:, c] / scale[c]))) <= 2 * levels + 1 for c in range(7))
    assert np.all(np.abs(q - kernel) <= scale / 2 + 1e-6)


def test_four_bit_weights_train_export_and_agree():
    keras.utils.set_random_seed(0)
    model = get_model("ds_cnn", (FRAMES, BINS), CLASSES, **TINY["ds_cnn"])
    qat = quantize_aware(model, weight_bits=4)
    kernels = [layer for layer in qat.layers if hasattr(layer, "weight_bits")]
    assert kernels and all(layer.weight_bits == 4 for layer in kernels)
    qat.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    (x, y), test = synthetic(256, 0), synthetic(128, 1)
    qat.fit(x, y, epochs=12, batch_size=32, verbose=0)
    loaded = save_and_load(qat)
    assert all(layer.weight_bits == 4 for layer in loaded.layers if hasattr(layer, "weight_bits"))
    flatbuffer = to_tflite(qat, quantize="int8")
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    weights = [d for d in interpreter.get_tensor_details()
               if d["dtype"] == np.int8 and len(d["quantization_parameters"]["scales"]) > 1]  # per-channel kernels
    assert len(weights) >= 3
    for d in weights:
        w = np.moveaxis(interpreter.get_tensor(d["index"]), d["quantization_parameters"]["quantized_dimension"], 0)
        assert max(len(np.unique(channel)) for channel in w) <= 15, d["name"]  # 4-bit levels in int8 storage
    result = verify(qat, flatbuffer, test)
    print(f"\n4-bit QAT ds_cnn: accuracy keras {result.accuracy_model:.3f} int8 {result.accuracy_tflite:.3f}, "
          f"agreement {result.agreement:.3f}")
    assert result.accuracy_model >= 0.9 and result.agreement >= 0.95


def test_bad_weight_bits_are_named():
    model = get_model("gru", (FRAMES, BINS), CLASSES, **TINY["gru"])
    with pytest.raises(ValueError, match=r"recurrent layers \['gru1', 'gru2'\] keep 8-bit weights"):
        quantize_aware(model, weight_bits=4)
    with pytest.raises(ValueError, match=r"`weight_bits` must be an integer >= 2 and <= 8. Received: weight_bits=1"):
        quantize_aware(get_model("ds_cnn", (FRAMES, BINS), CLASSES, **TINY["ds_cnn"]), weight_bits=1)
