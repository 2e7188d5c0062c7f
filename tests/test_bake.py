"""`tfx_ext.transforms.baking.bake`: plain Keras models with the generated kernels (parity, TFLite, loaded models, streaming)."""

import keras
import numpy as np
import pytest

from tfx_ext.testing import assert_all_close, assert_tflite_parity, save_and_load
from tfx_ext.errors import NotStreamableError
from tfx_ext.transforms.baking import bake, hyper_parameter_report
from tfx_ext.layers.hyper_layers import HyperConv1D, HyperConv2D, HyperDense, HyperDepthwiseConv2D
from tfx_ext.layers.hyper_network import HyperNetwork

BAKE_ATOL = 1e-6


def image_model():
    """Three convolutions share one generator; the head has its own MLP generator; BatchNorm keeps its weights."""
    conv_gen = HyperNetwork(8, (3, 3, 8, 8), name="conv_generator")
    x = keras.Input((9, 9, 3), name="image")
    h = HyperConv2D(12, 3, hypernetwork=conv_gen, padding="same", activation="relu", name="conv1")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = HyperDepthwiseConv2D(3, depth_multiplier=2, hypernetwork=conv_gen, strides=2, name="dw")(h)
    h = HyperConv2D(10, 3, hypernetwork=conv_gen, activation="relu", name="conv2")(h)
    h = keras.layers.Flatten(name="flat")(h)
    y = HyperDense(5, hypernetwork=HyperNetwork(4, (8, 4), mlp_units=(16,), name="head_generator"),
                   name="head")(h)
    return keras.Model(x, y)


@pytest.fixture(scope="module")
def trained_image_model():
    keras.utils.set_random_seed(3)
    model = image_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 9, 9, 3)).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(x, rng.normal(size=(16, 5)).astype("float32"), epochs=2, batch_size=8, verbose=0)
    return model, x


def test_bake_parity_and_plain_layers(trained_image_model):
    model, x = trained_image_model
    baked = bake(model)
    kinds = {layer.name: type(layer).__name__ for layer in baked.layers}
    assert kinds == {"image": "InputLayer", "conv1": "Conv2D", "bn": "BatchNormalization", "dw": "DepthwiseConv2D",
                     "conv2": "Conv2D", "flat": "Flatten", "head": "Dense"}
    error = assert_all_close(baked(x), model(x), atol=BAKE_ATOL, what="baked vs hyper")
    assert error <= BAKE_ATOL
    # The baked model holds the plain layers' parameters: conv1, BatchNorm (4 x 12), dw (3x3x12x2), conv2 (on
    # 4x4x24 -> 2x2x10), head (40 -> 5).
    plain = (27 * 12 + 12) + 4 * 12 + (9 * 12 * 2 + 24) + (9 * 24 * 10 + 10) + (40 * 5 + 5)
    assert baked.count_params() == plain
    report = hyper_parameter_report(model)
    assert report["generator"] == sum(layer.num_params for layer in model.layers if isinstance(layer, HyperNetwork))
    assert report["total"] == sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_baked_model_tflite_parity(trained_image_model):
    model, x = trained_image_model
    baked = bake(model)
    assert_tflite_parity(baked, x[:2])
    assert_all_close(baked(x[:2]), model(x[:2]), atol=BAKE_ATOL)


def test_bake_a_loaded_model_and_explicit_generator_wiring():
    hnet = HyperNetwork(6, (5, 4))
    x = keras.Input((7,))
    params = hnet(x)  # one generator call feeding two layers
    h = HyperDense(9, chunk_shape=(5, 4), embedding_dim=6, activation="tanh")(x, generator=params)
    h = HyperDense(3, chunk_shape=(5, 4), embedding_dim=6)(h, generator=params)
    model = keras.Model(x, h)
    loaded = save_and_load(model)
    data = np.random.default_rng(0).normal(size=(4, 7)).astype("float32")
    baked = bake(loaded)
    assert_all_close(baked(data), model(data), atol=BAKE_ATOL)
    assert not any(isinstance(layer, HyperNetwork) for layer in baked.layers)


def causal_audio_model():
    gen = HyperNetwork(8, (3, 8, 8), name="generator")
    x = keras.Input((None, 6), name="frames")
    h = HyperConv1D(8, 3, hypernetwork=gen, padding="causal", activation="relu", name="conv1")(x)
    h = HyperConv1D(8, 3, hypernetwork=gen, padding="causal", dilation_rate=2, activation="relu", name="conv2")(h)
    y = HyperDense(4, hypernetwork=HyperNetwork(4, (8, 4)), name="head")(h)
    return keras.Model(x, y)


def test_baked_causal_convs_stream():
    from tfx_ext.streaming.contract import Mode
    from tfx_ext.streaming.convert import to_streaming

    model = causal_audio_model()
    x = np.random.default_rng(0).normal(size=(1, 12, 6)).astype("float32")
    baked = bake(model, stream=True)
    assert [type(layer).__name__ for layer in baked.layers[1:]] == ["Stream", "Stream", "Dense"]
    full = np.asarray(model(x))
    assert_all_close(baked(x), full, atol=BAKE_ATOL, what="stream-wrapped bake vs hyper")
    streaming = to_streaming(baked, Mode.STREAM_INTERNAL_STATE, batch_size=1, frames_per_step=2)
    steps = np.concatenate([np.asarray(streaming(x[:, t:t + 2])) for t in range(0, 12, 2)], axis=1)
    assert_all_close(steps, full, atol=1e-5, what="streamed baked model vs whole sequence")


def test_baked_same_padded_conv2d_wraps_in_stream_with_same_outputs():
    gen = HyperNetwork(4, (3, 3, 4, 4))
    x = keras.Input((10, 6, 2))
    h = HyperConv2D(5, 3, hypernetwork=gen, padding="same", activation="relu")(x)
    y = HyperDepthwiseConv2D(3, hypernetwork=gen, padding="same")(h)
    model = keras.Model(x, y)
    baked = bake(model, stream=True)
    assert [type(layer).__name__ for layer in baked.layers[1:]] == ["Stream", "Stream"]
    assert [layer.pad_time_dim for layer in baked.layers[1:]] == ["same", "same"]
    data = np.random.default_rng(0).normal(size=(2, 10, 6, 2)).astype("float32")
    assert_all_close(baked(data), model(data), atol=BAKE_ATOL)


def test_bake_errors():
    with pytest.raises(TypeError, match="`model` must be a functional keras.Model"):
        bake(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    gen = HyperNetwork(4, (4, 4))
    x = keras.Input((6,))
    task = keras.Input((3,))
    conditional = keras.Model([x, task], HyperDense(2, hypernetwork=gen, conditional="scale", context_dim=3)(
        x, context=task))
    with pytest.raises(ValueError, match="has no plain equivalent"):
        bake(conditional)
    params = gen(x)
    leak = keras.Model(x, [HyperDense(2, hypernetwork=gen)(x), params["b_out"]])
    with pytest.raises(ValueError, match="outputs the parameters of HyperNetwork"):
        bake(leak)
    used = keras.Model(x, HyperDense(2, hypernetwork=gen)(x) + keras.ops.sum(params["b_out"]))
    with pytest.raises(ValueError, match="uses the output of HyperNetwork"):
        bake(used)
    shared_call = HyperDense(6, hypernetwork=gen)
    twice = keras.Model(x, shared_call(shared_call(x)))
    with pytest.raises(ValueError, match="is called 2 times"):
        bake(twice)
    inner = keras.Model(x, HyperDense(2, hypernetwork=gen)(x))
    outer_input = keras.Input((6,))
    with pytest.raises(ValueError, match="is a nested model with hyper layers"):
        bake(keras.Model(outer_input, inner(outer_input)))
    valid = keras.Model(x := keras.Input((8, 4)), HyperConv1D(4, 3, hypernetwork=HyperNetwork(4, (3, 4, 4)))(x))
    with pytest.raises(NotStreamableError, match="only 'causal', or 'same'"):
        bake(valid, stream=True)
