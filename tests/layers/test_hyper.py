"""HyperNetwork and the hyper layers: layer contract, tiling, hyperfan variance, gradients, parameter counts,
sharing through `.keras` save/load, conditional mode, MirroredStrategy parity, argument errors."""

import doctest
import math
import pathlib
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfx_ext.testing import assert_all_close, assert_distribute_parity, run_layer_test, save_and_load
from tfx_ext.layers import hyper_network as hyper_module
from tfx_ext.layers import hyper_layers as hyper_layers_module
from tfx_ext.layers.hyper_layers import HyperConv1D, HyperConv2D, HyperDense, HyperDepthwiseConv2D, target_variance
from tfx_ext.layers.hyper_network import HyperNetwork, chunk_grid, generator_param_count

# ---------------------------------------------------------------------------------------------------------------
# The layer contract (run_layer_test): each consumer with a private generator (dict spec), so every model the
# helper builds gets its own generator, created inside the strategy scope for the distribute check.


@pytest.mark.parametrize(
    "layer_cls, kwargs, input_shape, output_shape, distribute",
    [
        (HyperDense, {"units": 5, "hypernetwork": {"embedding_dim": 4, "chunk_shape": (4, 4)}}, (4, 7), (4, 5), True),
        (
            HyperConv1D,
            {"filters": 6, "kernel_size": 3, "padding": "causal", "activation": "relu",
             "hypernetwork": {"embedding_dim": 4, "chunk_shape": (3, 4, 4)}},
            (2, 9, 5), (2, 9, 6), True,
        ),
        (
            HyperConv2D,
            {"filters": 5, "kernel_size": 3, "strides": 2,
             "hypernetwork": {"embedding_dim": 4, "chunk_shape": (3, 3, 2, 4), "mlp_units": (8,)}},
            (2, 7, 7, 3), (2, 3, 3, 5), False,
        ),
        (
            HyperDepthwiseConv2D,
            {"kernel_size": 3, "depth_multiplier": 2, "padding": "same",
             "hypernetwork": {"embedding_dim": 4, "chunk_shape": (3, 3, 2, 2)}},
            (2, 5, 5, 3), (2, 5, 5, 6), False,
        ),
    ],
    ids=["dense", "conv1d", "conv2d_mlp", "depthwise"],
)
def test_layer_contract(layer_cls, kwargs, input_shape, output_shape, distribute):
    run_layer_test(
        layer_cls, kwargs, input_shape,
        expected_output_shape=output_shape,
        expected_num_trainable_weights=2,  # embeddings + bias; the generator is its own layer in the graph
        expected_num_non_trainable_weights=0,
        sequential="refused",  # Sequential does not track the generator a consumer inserts
        dynamic_axes=(0, 1) if layer_cls is HyperConv1D else (0,),  # a Conv1D takes any number of frames
        tflite=True,
        distribute=distribute,
    )


@pytest.mark.parametrize("kwargs", [{"embedding_dim": 4, "chunk_shape": (3, 4, 4)},
                                    {"embedding_dim": 4, "chunk_shape": (4, 4), "mlp_units": (8,)}],
                         ids=["linear", "mlp"])
def test_hypernetwork_layer_contract(kwargs):
    run_layer_test(
        HyperNetwork, kwargs, (2, 3),
        expected_num_trainable_weights=4,
        expected_num_non_trainable_weights=0,
        dynamic_axes=(),  # its outputs are the generator's parameters: no batch axis
        run_training_check=False,  # (for the same reason: it trains through its consumers, checked above)
    )


def test_docstring_examples_run():
    globs = {"keras": keras, **{name: getattr(m, name) for m in (hyper_module, hyper_layers_module) for name in m.__all__}}
    for module in (hyper_module, hyper_layers_module):
        result = doctest.testmod(module, extraglobs=globs, verbose=False)
        assert result.failed == 0 and result.attempted > 0, f"{module.__name__}: {result}"


# ---------------------------------------------------------------------------------------------------------------
# Generator: parameter count, chunk shapes, tiling.


@pytest.mark.parametrize(
    "embedding_dim, chunk_shape, hidden_dim, mlp_units, expected",
    [
        # Ha et al.'s form: in_c * (E + 1) * d + (d + 1) * prod(spatial) * out_c
        (8, (16, 16), None, None, 16 * 9 * 8 + 9 * 16),
        (4, (3, 3, 8, 16), 6, None, 8 * 5 * 6 + 7 * 9 * 16),
        (5, (3, 2, 7), None, None, 2 * 6 * 5 + 6 * 3 * 7),
        # MLP: sum of (fan_in + 1) * fan_out
        (8, (4, 4), None, (32, 16), 9 * 32 + 33 * 16 + 17 * 16),
    ],
)
def test_generator_param_count_formula(embedding_dim, chunk_shape, hidden_dim, mlp_units, expected):
    hnet = HyperNetwork(embedding_dim, chunk_shape, hidden_dim=hidden_dim, mlp_units=mlp_units)
    hnet.build()
    assert generator_param_count(embedding_dim, chunk_shape, hidden_dim, mlp_units) == expected
    assert hnet.num_params == expected == sum(math.prod(w.shape) for w in hnet.trainable_weights)
    chunks = hnet.generate(np.random.default_rng(0).normal(size=(2, 3, embedding_dim)).astype("float32"))
    assert tuple(chunks.shape) == (2, 3, *chunk_shape)


def test_linear_generator_matches_ha_equations():
    hnet = HyperNetwork(3, (2, 4, 5), hidden_dim=6)
    z = np.random.default_rng(0).normal(size=(3,)).astype("float32")
    w_in, b_in, w_out, b_out = [np.asarray(w) for w in (hnet.params()[k] for k in ("w_in", "b_in", "w_out", "b_out"))]
    b_in += 0.1
    b_out += 0.2
    hnet.set_weights([w_in, b_in, w_out, b_out])
    expected = np.zeros((2, 4, 5), "float32")
    for i in range(4):  # one row of the chunk's input axis per W_in[i]
        a_i = z @ w_in[i] + b_in[i]
        expected[:, i, :] = (a_i @ w_out + b_out).reshape(2, 5)
    assert_all_close(hnet.generate(z), expected, atol=1e-5)


@pytest.mark.parametrize(
    "layer_fn, chunk_shape, input_shape, kernel_shape",
    [
        (lambda h: HyperDense(3, hypernetwork=h), (4, 4), (2, 5), (5, 3)),  # smaller than 2x1 chunks, cropped
        (lambda h: HyperDense(33, hypernetwork=h), (16, 16), (2, 17), (17, 33)),  # odd: 2 x 3 chunks
        (lambda h: HyperDense(16, hypernetwork=h), (16, 16), (2, 16), (16, 16)),  # exactly one chunk
        (lambda h: HyperConv1D(7, 5, hypernetwork=h), (5, 3, 4), (2, 9, 10), (5, 10, 7)),
        (lambda h: HyperConv2D(9, (3, 1), hypernetwork=h), (3, 1, 4, 4), (2, 6, 6, 5), (3, 1, 5, 9)),
        (lambda h: HyperDepthwiseConv2D(3, 3, hypernetwork=h), (3, 3, 4, 2), (2, 6, 6, 5), (3, 3, 5, 3)),
    ],
    ids=["dense_small", "dense_odd", "dense_exact", "conv1d", "conv2d_3x1", "depthwise"],
)
def test_generated_kernel_shapes_and_tiling(layer_fn, chunk_shape, input_shape, kernel_shape):
    hnet = HyperNetwork(6, chunk_shape)
    layer = layer_fn(hnet)
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    layer(x)
    kernel = np.asarray(layer.generated_kernel(hnet.params()))
    assert kernel.shape == kernel_shape
    rows, cols = chunk_grid(kernel_shape, chunk_shape)
    assert tuple(layer.embeddings.shape) == (rows, cols, 6)
    # Every tile is the gain times the chunk generated from that tile's own embedding.
    in_c, out_c = chunk_shape[-2:]
    chunks = np.asarray(hnet.generate(np.asarray(layer.embeddings)))
    for i in range(rows):
        for j in range(cols):
            tile = kernel[..., i * in_c:(i + 1) * in_c, j * out_c:(j + 1) * out_c]
            expected = layer.gain * chunks[i, j][..., : tile.shape[-2], : tile.shape[-1]]
            assert_all_close(tile, expected, atol=1e-5, what=f"tile ({i}, {j})")


def test_layer_output_equals_plain_op_with_generated_kernel():
    hnet = HyperNetwork(4, (3, 3, 4, 4))
    layer = HyperConv2D(6, 3, hypernetwork=hnet, strides=2, padding="same", activation="tanh")
    x = np.random.default_rng(1).normal(size=(2, 9, 9, 5)).astype("float32")
    y = layer(x)
    plain = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="tanh")
    plain.build(x.shape)
    plain.set_weights([np.asarray(layer.generated_kernel(hnet.params())), np.asarray(layer.bias)])
    assert_all_close(y, plain(x), atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Hyperfan initialization: generated kernels start with the variance of the Keras initializer.


@pytest.mark.parametrize(
    "initializer, mlp_units",
    [("glorot_uniform", None), ("he_normal", None), ("lecun_normal", (64,)),
     (keras.initializers.VarianceScaling(2.0, mode="fan_out"), None)],
    ids=["glorot", "he", "lecun_mlp", "fan_out"],
)
def test_hyperfan_init_matches_keras_variance(initializer, mlp_units):
    rng = np.random.default_rng(0)
    ratios = []
    for seed in range(4):  # average over generator draws: one draw shares W_out across all chunks
        keras.utils.set_random_seed(seed)
        hnet = HyperNetwork(32, (3, 3, 16, 16), mlp_units=mlp_units)
        layer = HyperConv2D(64, 3, hypernetwork=hnet, kernel_initializer=initializer)
        layer(rng.normal(size=(1, 5, 5, 48)).astype("float32"))
        kernel = np.asarray(layer.generated_kernel(hnet.params()))
        ratios.append(kernel.var() / target_variance(initializer, kernel.shape))
    keras_kernel = keras.initializers.get(initializer)((3, 3, 48, 64))
    assert 0.85 < float(np.var(keras_kernel)) / target_variance(initializer, (3, 3, 48, 64)) < 1.15
    assert 0.8 < float(np.mean(ratios)) < 1.2, ratios
    assert abs(float(np.mean(kernel))) < 0.2 * math.sqrt(target_variance(initializer, kernel.shape))


def test_target_variance_of_keras_initializers():
    assert target_variance("glorot_uniform", (3, 3, 8, 16)) == pytest.approx(2.0 / (9 * 8 + 9 * 16))
    assert target_variance("he_normal", (10, 20)) == pytest.approx(0.2)
    assert target_variance(keras.initializers.VarianceScaling(3.0, mode="fan_out"), (5, 6)) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------------------------
# Shared generator models: gradients, parameter counts, save/load sharing, training after load.


def shared_model(conditional=None):
    hnet = HyperNetwork(8, (3, 8, 8), name="generator")
    x = keras.Input((12, 5), name="x")
    inputs = [x]
    extra = {}
    if conditional:
        task = keras.Input((), dtype="int32", name="task")
        inputs.append(task)
        extra = {"context": keras.layers.Embedding(3, 4, name="task_embedding")(task),
                 "conditional": conditional, "context_dim": 4}
    context = extra.pop("context", None)
    h = HyperConv1D(8, 3, hypernetwork=hnet, padding="causal", activation="relu", name="conv_a")(x)
    h = HyperConv1D(13, 3, hypernetwork=hnet, activation="relu", name="conv_b", **extra)(h, context=context)
    h = HyperConv1D(6, 3, hypernetwork=hnet, name="conv_c")(h)
    y = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(inputs if conditional else x, y)


def test_gradients_reach_generator_and_embeddings():
    model = shared_model()
    x = np.random.default_rng(0).normal(size=(4, 12, 5)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    paths = [v.path for v in model.trainable_variables]
    assert {p.split("/")[0] for p in paths} == {"generator", "conv_a", "conv_b", "conv_c"}
    for path, grad in zip(paths, grads):
        if path.endswith("bias") or path.endswith("b_in") or path.endswith("b_out"):
            assert grad is not None, path
        else:
            assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, f"no gradient for {path}"


def test_model_parameter_count_formula():
    model = shared_model()
    # Generator (3, 8, 8), E = 8, d = 8: 8 * 9 * 8 + 9 * 24; conv_a 5->8 (1x1 chunks), conv_b 8->13 (1x2),
    # conv_c 13->6 (2x1), each E = 8 per chunk plus its bias.
    expected = (8 * 9 * 8 + 9 * 24) + (1 * 8 + 8) + (2 * 8 + 13) + (2 * 8 + 6)
    assert model.count_params() == expected
    hyper_layers = [layer for layer in model.layers if hasattr(layer, "embeddings")]
    assert sum(layer.num_params for layer in hyper_layers) == expected - (8 * 9 * 8 + 9 * 24)
    assert sum(math.prod(v.shape) for v in model.trainable_variables) == expected


def test_sharing_survives_save_and_load(tmp_path):
    model = shared_model()
    x = np.random.default_rng(0).normal(size=(4, 12, 5)).astype("float32")
    y = np.random.default_rng(1).normal(size=(4, 6)).astype("float32")
    path = tmp_path / "shared.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode=True (default)
    assert_all_close(loaded(x), model(x), atol=1e-6, what="loaded vs original")
    generators = [layer for layer in loaded.layers if isinstance(layer, HyperNetwork)]
    assert len(generators) == 1
    assert [v.path for v in loaded.weights if v.path.startswith("generator/")] == [
        "generator/w_in", "generator/b_in", "generator/w_out", "generator/b_out"]
    assert loaded.count_params() == model.count_params()
    # The file stores the generator once: the scalars in the weights file equal the model's parameter count.
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as archive:
        (tmp_path / "w.h5").write_bytes(archive.read("model.weights.h5"))
    stored = []
    with h5py.File(tmp_path / "w.h5") as h5:
        h5.visititems(lambda name, obj: stored.append(obj.size) if isinstance(obj, h5py.Dataset) else None)
    assert sum(stored) == model.count_params()
    # Training after load updates the one generator, and every consumer sees the update.
    before = {v.path: np.asarray(v) for v in loaded.weights}
    loaded.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    loaded.fit(x, y, epochs=1, batch_size=4, verbose=0)
    for p in ("generator/w_in", "generator/w_out"):
        assert not np.allclose(before[p], np.asarray(loaded.get_layer("generator").weights[0 if "in" in p else 2]))
    gen = generators[0]
    fresh = [np.asarray(loaded.get_layer(n).generated_kernel(gen.params())) for n in ("conv_a", "conv_b", "conv_c")]
    gen.set_weights([w * 0 for w in gen.get_weights()])  # zero generator -> zero kernels in every consumer
    for n, k in zip(("conv_a", "conv_b", "conv_c"), fresh):
        assert np.abs(k).max() > 0
        assert np.abs(np.asarray(loaded.get_layer(n).generated_kernel(gen.params()))).max() == 0, n


def test_mirrored_strategy_training_equals_single_device():
    # Three convs sharing one generator, one of them conditional on a task embedding: one SGD step under
    # MirroredStrategy (2 logical CPUs) gives the same loss and weights as one device.
    x = {"x": np.random.default_rng(0).normal(size=(8, 12, 5)).astype("float32"),
         "task": np.arange(8, dtype="int32") % 3}
    y = np.random.default_rng(1).normal(size=(8, 6)).astype("float32")
    assert_distribute_parity(lambda: shared_model("scale"), x, y)


# ---------------------------------------------------------------------------------------------------------------
# Conditional mode.


def conditional_dense_model(mode):
    hnet = HyperNetwork(4, (4, 4), name="generator")
    x = keras.Input((6,), name="x")
    task = keras.Input((), dtype="int32", name="task")
    context = keras.layers.Embedding(2, 3, name="task_embedding")(task)
    y = HyperDense(2, hypernetwork=hnet, conditional=mode, context_dim=3, name="head")(x, context=context)
    return keras.Model([x, task], y)


@pytest.mark.parametrize("mode", ["scale", "kernel"])
def test_conditional_contexts_differ_train_and_save(mode):
    model = conditional_dense_model(mode)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    task = (np.arange(64) % 2).astype("int32")
    # Two tasks with opposite targets: only a context-dependent layer can fit both.
    w = rng.normal(size=(6, 2)).astype("float32")
    y = np.where(task[:, None] == 0, x @ w, -(x @ w)).astype("float32")
    same_x = np.repeat(x[:1], 2, axis=0)
    out = np.asarray(model([same_x, np.array([0, 1], "int32")]))
    assert np.abs(out[0] - out[1]).max() > 1e-4, "different contexts should give different outputs"
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    first = float(np.mean((np.asarray(model([x, task])) - y) ** 2))
    steps = 40  # one epoch over the batch repeated: 40 full-batch Adam steps without per-epoch overhead
    model.fit([np.tile(x, (steps, 1)), np.tile(task, steps)], np.tile(y, (steps, 1)), batch_size=64, epochs=1,
              shuffle=False, verbose=0)
    last = float(np.mean((np.asarray(model([x, task])) - y) ** 2))
    assert last < 0.5 * first, (first, last)
    loaded = save_and_load(model)
    assert_all_close(loaded([x, task]), model([x, task]), atol=1e-5)


def test_conditional_kernel_mode_generates_per_sample_kernels():
    model = conditional_dense_model("kernel")
    head, gen = model.get_layer("head"), model.get_layer("generator")
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    task = np.array([0, 1, 0], "int32")
    context = np.asarray(model.get_layer("task_embedding")(task))
    # Expected: z_b = z + context_b @ P, kernel_b generated from z_b, y_b = x_b @ kernel_b + bias.
    z = np.asarray(head.embeddings)[None] + np.einsum("bc,ijce->bije", context, np.asarray(head.context_projection))
    chunks = np.asarray(gen.generate(z))  # (3, 2, 1, 4, 4)
    kernels = head.gain * np.concatenate([chunks[:, 0], chunks[:, 1]], axis=-2)[:, 0, :6, :2]
    expected = np.einsum("bi,bio->bo", x, kernels) + np.asarray(head.bias)
    assert_all_close(model([x, task]), expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Argument errors (one test per message).

HNET = HyperNetwork(4, (4, 4))
HNET3 = HyperNetwork(4, (3, 4, 4))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: HyperNetwork(0, (4, 4)), ValueError, "`embedding_dim` must be an integer >= 1"),
        (lambda: HyperNetwork(4, 4), ValueError, "`chunk_shape` must be a tuple"),
        (lambda: HyperNetwork(4, (4, 0)), ValueError, "`chunk_shape` must be a tuple"),
        (lambda: HyperNetwork(4, (4, 4), hidden_dim=-1), ValueError, "`hidden_dim` must be an integer >= 1"),
        (lambda: HyperNetwork(4, (4, 4), mlp_units=(8, 0)), ValueError, "`mlp_units` must be None or a tuple"),
        (lambda: HyperNetwork(4, (4, 4), hidden_dim=8, mlp_units=(8,)), ValueError, "`hidden_dim` belongs to"),
        (lambda: HyperDense(3, hypernetwork="hnet"), TypeError, "`hypernetwork` must be a HyperNetwork"),
        (lambda: HyperDense(3), ValueError, "Give `hypernetwork` or both"),
        (lambda: HyperDense(3, hypernetwork=HNET, chunk_shape=(8, 8)), ValueError, "must match the hypernetwork"),
        (lambda: HyperDense(0, hypernetwork=HNET), ValueError, "`units` must be an integer >= 1"),
        (lambda: HyperConv1D(3, 3, hypernetwork=HNET), ValueError, "`chunk_shape` of a HyperConv1D must have 3"),
        (lambda: HyperDense(3, hypernetwork=HNET, kernel_initializer="ones"), ValueError,
         "`kernel_initializer` must be a VarianceScaling"),
        (lambda: HyperDense(3, hypernetwork=HNET, conditional="task"), ValueError, "`conditional` must be one of"),
        (lambda: HyperDense(3, hypernetwork=HNET, context_dim=2), ValueError, "`context_dim` is only used"),
        (lambda: HyperDense(3, hypernetwork=HNET, conditional="scale"), ValueError,
         "`context_dim` must be an integer >= 1"),
        (lambda: HyperConv1D(3, 3, chunk_shape=(3, 4, 4), embedding_dim=4, padding="full"), ValueError,
         "`padding` must be one of"),
        (lambda: HyperConv2D(3, 3, chunk_shape=(3, 3, 4, 4), embedding_dim=4, padding="causal"), ValueError,
         "`padding` must be one of"),
        (lambda: HyperConv1D(3, (3, 3), chunk_shape=(3, 4, 4), embedding_dim=4), ValueError,
         "`kernel_size` must be a positive integer or a tuple of 1"),
        (lambda: HyperConv1D(3, 3, chunk_shape=(3, 4, 4), embedding_dim=4, strides=2, dilation_rate=2),
         ValueError, "`strides` > 1 is not compatible"),
        (lambda: HyperDepthwiseConv2D(3, depth_multiplier=0, chunk_shape=(3, 3, 4, 4), embedding_dim=4),
         ValueError, "`depth_multiplier` must be an integer >= 1"),
    ],
)
def test_constructor_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "layer_fn, input_shape",
    [
        (lambda: HyperConv1D(5, 3, chunk_shape=(3, 4, 4), embedding_dim=4, padding="causal", dilation_rate=2,
                             conditional="kernel", context_dim=2), (3, 9, 6)),
        (lambda: HyperConv2D(5, 3, chunk_shape=(3, 3, 4, 4), embedding_dim=4, padding="same", strides=2,
                             conditional="kernel", context_dim=2), (3, 6, 7, 3)),
        (lambda: HyperConv2D(4, (2, 3), chunk_shape=(2, 3, 4, 4), embedding_dim=4, conditional="kernel",
                             context_dim=2), (3, 5, 6, 3)),
        (lambda: HyperDepthwiseConv2D(3, 2, chunk_shape=(3, 3, 2, 2), embedding_dim=4, padding="same",
                                      conditional="kernel", context_dim=2), (3, 5, 5, 3)),
    ],
    ids=["conv1d_causal_dilated", "conv2d_same_strided", "conv2d_valid_2x3", "depthwise_same"],
)
def test_conditional_kernel_conv_equals_per_sample_plain_conv(layer_fn, input_shape):
    layer = layer_fn()
    hnet = HyperNetwork(4, layer.chunk_shape)
    rng = np.random.default_rng(0)
    x = rng.normal(size=input_shape).astype("float32")
    context = rng.normal(size=(input_shape[0], 2)).astype("float32")
    y = np.asarray(layer(x, generator=hnet(x), context=context))
    # Reference: each sample through a plain convolution with that sample's generated kernel.
    z = np.asarray(layer.embeddings)[None] + np.einsum("bc,ijce->bije", context, np.asarray(layer.context_projection))
    kernels = np.asarray(layer._tile(hnet.generate(z)))
    for b in range(input_shape[0]):
        if isinstance(layer, HyperDepthwiseConv2D):
            plain = keras.layers.DepthwiseConv2D(layer.kernel_size, depth_multiplier=layer.depth_multiplier,
                                                 strides=layer.strides, padding=layer.padding)
        else:
            plain = (keras.layers.Conv1D if isinstance(layer, HyperConv1D) else keras.layers.Conv2D)(
                layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
                dilation_rate=layer.dilation_rate)
        plain.build((1, *input_shape[1:]))
        plain.set_weights([kernels[b], np.asarray(layer.bias)])
        assert_all_close(y[b:b + 1], plain(x[b:b + 1]), atol=1e-5, what=f"sample {b}")
    assert np.abs(kernels[0] - kernels[1]).max() > 1e-4


def test_call_errors():
    x = np.zeros((2, 6), "float32")
    with pytest.raises(ValueError, match="has no hypernetwork"):
        HyperDense(3, chunk_shape=(4, 4), embedding_dim=4)(x)
    with pytest.raises(ValueError, match="the kernel's spatial size"):
        HyperConv2D(3, (3, 1), hypernetwork=HyperNetwork(4, (3, 3, 4, 4)))(np.zeros((1, 5, 5, 2), "float32"))
    with pytest.raises(ValueError, match="pass `context` of shape"):
        HyperDense(3, hypernetwork=HNET, conditional="scale", context_dim=2)(x)
    with pytest.raises(ValueError, match="is not conditional; it takes no context"):
        HyperDense(3, hypernetwork=HNET)(x, context=np.zeros((2, 2), "float32"))
    with pytest.raises(ValueError, match=r"`context` must have shape \(batch, context_dim=2\)"):
        HyperDense(3, hypernetwork=HNET, conditional="scale", context_dim=2)(x, context=np.zeros((2, 5), "float32"))
    with pytest.raises(ValueError, match="pass `context` of shape"):  # symbolic calls are checked too
        HyperDense(3, hypernetwork=HNET, conditional="scale", context_dim=2)(keras.Input((6,)))
    with pytest.raises(ValueError, match="needs static spatial sizes"):
        HyperConv1D(3, 3, chunk_shape=(3, 4, 4), embedding_dim=4, conditional="kernel", context_dim=2)(
            keras.Input((None, 4)), generator=HNET3(keras.Input((None, 4))), context=keras.Input((2,)))
    with pytest.raises(ValueError, match="cannot be used in a Sequential model"):  # refused at build, not at load
        keras.Sequential([keras.Input((6,)), HyperDense(3, hypernetwork=HyperNetwork(4, (4, 4)))])
    with pytest.raises(ValueError, match="`params` must hold a linear generator"):
        hyper_module.generate_chunks({"foo": x}, x, (4, 4))


@pytest.mark.parametrize("mode", ["scale", "kernel"])
def test_conditional_model_tflite_parity(mode):
    from tfx_ext.testing import assert_tflite_parity

    hnet = HyperNetwork(4, (3, 4, 4))
    x = keras.Input((10, 5), name="x")
    task = keras.Input((), dtype="int32", name="task")
    context = keras.layers.Embedding(3, 2)(task)
    h = HyperConv1D(6, 3, hypernetwork=hnet, padding="causal", conditional=mode, context_dim=2)(x, context=context)
    y = HyperDense(3, hypernetwork=HyperNetwork(4, (4, 4)), conditional=mode, context_dim=2)(h, context=context)
    model = keras.Model([x, task], y)
    data = {"x": np.random.default_rng(0).normal(size=(2, 10, 5)).astype("float32"), "task": np.array([0, 2], "int32")}
    assert_tflite_parity(model, data)


def test_mixed_precision_keeps_float32_weights():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        hnet = HyperNetwork(4, (3, 4, 4))
        layer = HyperConv1D(6, 3, hypernetwork=hnet, padding="causal")
        y = layer(np.random.default_rng(0).normal(size=(2, 10, 5)).astype("float32"))
        assert y.dtype == "float16"
        assert {w.dtype for w in layer.weights + hnet.weights} == {"float32"}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_subclassed_model_tracks_the_generator_once():
    class TwoLayer(keras.Model):
        def __init__(self):
            super().__init__()
            self.hypernetwork = HyperNetwork(4, (4, 4))
            self.first = HyperDense(6, chunk_shape=(4, 4), embedding_dim=4, activation="relu")
            self.second = HyperDense(2, chunk_shape=(4, 4), embedding_dim=4)

        def call(self, x):
            generator = self.hypernetwork(x)
            return self.second(self.first(x, generator=generator), generator=generator)

    model = TwoLayer()
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    model(x)
    paths = [v.path for v in model.trainable_variables]
    assert len(paths) == len(set(paths)) == 4 + 2 * 2
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    assert all(g is not None for g in tape.gradient(loss, model.trainable_variables))


def test_numpy_integer_arguments_are_normalised_and_floats_refused():
    hnet = HyperNetwork(np.int64(4), (np.int64(4), np.int32(4)), hidden_dim=np.int64(8))
    assert (hnet.embedding_dim, hnet.chunk_shape, hnet.hidden_dim) == (4, (4, 4), 8)
    assert all(type(v) is int for v in (hnet.embedding_dim, *hnet.chunk_shape, hnet.hidden_dim))
    conv = HyperConv1D(np.int64(3), np.int64(3), chunk_shape=(3, 4, 4), embedding_dim=4, strides=np.int32(1))
    assert (conv.filters, conv.kernel_size, conv.strides) == (3, (3,), (1,))
    assert all(type(v) is int for v in (conv.filters, *conv.kernel_size, *conv.strides))
    for make, match in [
        (lambda: HyperNetwork(4.0, (4, 4)), r"`embedding_dim` must be an integer >= 1. Received: embedding_dim=4.0"),
        (lambda: HyperNetwork(4, (4.0, 4)), r"`chunk_shape` must be a tuple"),
        (lambda: HyperNetwork(4, (4, 4), mlp_units=(8.0,)), r"`mlp_units` must be None or a tuple"),
        (lambda: HyperDense(3.0, hypernetwork=HNET), r"`units` must be an integer >= 1. Received: units=3.0"),
        (lambda: HyperConv1D(3, 2.5, chunk_shape=(3, 4, 4), embedding_dim=4), r"`kernel_size` must be a positive"),
    ]:
        with pytest.raises(ValueError, match=match):
            make()
