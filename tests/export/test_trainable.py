"""LiteRT training signatures against Keras: the same model, initial weights and batches trained k steps by
`train_on_batch` (the oracle) and by the exported `train` signature give the same weights and losses; bad input
gets named errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfx_ext import ExportError, to_tflite
from tfx_ext.lite.training import TrainableTFLiteModel, to_trainable_tflite

L = keras.layers
BATCH, STEPS, CLASSES = 4, 3, 3
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

MODELS = {
    "dense": ((6,), lambda: [L.Dense(8, activation="relu"), L.Dense(CLASSES)]),
    "conv1d": ((10, 3), lambda: [L.Conv1D(4, 3, padding="causal", activation="relu"), L.Conv1D(4, 3, strides=2),
                                 L.GlobalAveragePooling1D(), L.Dense(CLASSES)]),
    "conv2d": ((7, 7, 2), lambda: [L.Conv2D(4, 3, strides=2, padding="same", activation="relu6"),
                                   L.Conv2D(3, 2, dilation_rate=2), L.MaxPooling2D(padding="same"), L.Flatten(),
                                   L.Dense(CLASSES)]),
    "depthwise": ((8, 8, 3), lambda: [L.Conv2D(4, 1), L.DepthwiseConv2D(3, depth_multiplier=2, activation="relu"),
                                      L.DepthwiseConv2D(3, strides=2, padding="same"), L.Flatten(), L.Dense(CLASSES)]),
    # No bias before BatchNormalization: its gradient is zero up to rounding, which Adam would amplify.
    "batchnorm": ((6,), lambda: [L.Dense(8, use_bias=False), L.BatchNormalization(), L.Activation("relu"),
                                 L.Dense(CLASSES)]),
    "gru": ((5, 4), lambda: [L.GRU(6, unroll=True), L.Dense(CLASSES)]),
}
OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.1),
    "momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(0.01),
}
CASES = [("dense", "sgd"), ("dense", "adam"), ("conv1d", "momentum"), ("conv2d", "sgd"), ("conv2d", "adam"),
         ("depthwise", "adam"), ("batchnorm", "sgd"), ("batchnorm", "adam"), ("gru", "adam")]


def build(kind: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    shape, layers = MODELS[kind]
    return keras.Sequential([keras.Input(shape), *layers()], name=kind)


def batches(model, seed: int = 0, steps: int = STEPS):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps, BATCH, *model.inputs[0].shape[1:])).astype("float32")
    return x, rng.integers(0, CLASSES, size=(steps, BATCH)).astype("int32")


def assert_weights_equal(device: TrainableTFLiteModel, model: keras.Model):
    weights = device.get_weights()
    assert sorted(weights) == sorted(v.path for v in model.weights)
    for v in model.weights:
        np.testing.assert_allclose(weights[v.path], v.numpy(), rtol=1e-5, atol=1e-6, err_msg=v.path)


@pytest.mark.parametrize("kind,optimizer", CASES)
def test_litert_training_equals_keras_train_on_batch(kind, optimizer):
    model = build(kind)
    device = TrainableTFLiteModel(to_trainable_tflite(model, loss=LOSS, optimizer=OPTIMIZERS[optimizer](),
                                                      batch_size=BATCH))
    xs, ys = batches(model)
    model.compile(OPTIMIZERS[optimizer](), LOSS)
    keras_losses = [float(model.train_on_batch(x, y)) for x, y in zip(xs, ys)]
    litert_losses = [float(device.train(x, y)["loss"]) for x, y in zip(xs, ys)]
    np.testing.assert_allclose(litert_losses, keras_losses, rtol=1e-5, atol=1e-6)
    assert_weights_equal(device, model)
    np.testing.assert_allclose(device.infer(xs[0]), model.predict_on_batch(xs[0]), rtol=1e-5, atol=1e-5)


def test_a_loss_given_by_name_is_averaged_over_the_batch_as_keras_compile_does():
    """"sparse_categorical_crossentropy" resolves to a per-example function; Keras averages it over the batch."""
    model = keras.Sequential([keras.Input((6,)), L.Dense(CLASSES, activation="softmax")])
    device = TrainableTFLiteModel(to_trainable_tflite(model, loss="sparse_categorical_crossentropy", batch_size=BATCH,
                                                      learning_rate=0.1))
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    for x, y in zip(*batches(model)):
        np.testing.assert_allclose(device.train(x, y)["loss"], model.train_on_batch(x, y), rtol=1e-5)
    assert_weights_equal(device, model)


def test_set_weights_restarts_training_from_the_given_weights():
    """After training, set_weights(start) and training again reproduce a fresh Keras run (Adam slots zeroed)."""
    model = build("dense")
    start = {v.path: v.numpy() for v in model.weights}
    device = TrainableTFLiteModel(to_trainable_tflite(model, loss=LOSS, optimizer="adam", learning_rate=0.01,
                                                      batch_size=BATCH))
    xs, ys = batches(model)
    for x, y in zip(xs, ys):
        device.train(x, y)
    device.set_weights(start)
    for x, y in zip(xs, ys):
        device.train(x, y)
    model.compile(keras.optimizers.Adam(0.01), LOSS)
    for x, y in zip(xs, ys):
        model.train_on_batch(x, y)
    assert_weights_equal(device, model)


def test_head_only_training_keeps_the_body_frozen_and_equals_keras():
    """trainable_layers=[head] over a body whose gradient would need Flex (an overlapping max pool)."""
    def make():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((9, 9, 1)), L.Conv2D(3, 3, activation="relu"),
                                 L.MaxPooling2D(3, 2, name="pool"), L.Flatten(), L.Dense(CLASSES, name="head")])
    with pytest.raises(ExportError, match=r"FlexMaxPoolGrad \(layer 'pool' \(MaxPooling2D\)") as error:
        to_trainable_tflite(make(), loss=LOSS, batch_size=BATCH)
    assert error.value.layers == {"pool": ["FlexMaxPoolGrad"]}
    model = make()
    body = model.layers[0].get_weights()
    device = TrainableTFLiteModel(to_trainable_tflite(model, loss=LOSS, batch_size=BATCH, learning_rate=0.1,
                                                      trainable_layers=["head"]))
    for layer in model.layers[:-1]:
        layer.trainable = False
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    xs, ys = batches(model)
    for x, y in zip(xs, ys):
        model.train_on_batch(x, y)
        device.train(x, y)
    assert_weights_equal(device, model)
    np.testing.assert_array_equal(device.get_weights()[model.layers[0].kernel.path], body[0])


def test_head_only_freezes_batchnorm_as_keras_does():
    """A frozen body's BatchNormalization runs in inference mode (Keras `trainable = False`): its moving statistics
    stay, and the head's steps equal `train_on_batch` with the body frozen."""
    model = build("batchnorm")
    start = {v.path: v.numpy() for v in model.weights}
    head = model.layers[-1].name
    device = TrainableTFLiteModel(to_trainable_tflite(model, loss=LOSS, batch_size=BATCH, learning_rate=0.1,
                                                      trainable_layers=[head]))
    assert all(layer.trainable for layer in model.layers)  # the caller's flags are restored
    for layer in model.layers[:-1]:
        layer.trainable = False
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    for x, y in zip(*batches(model)):
        np.testing.assert_allclose(device.train(x, y)["loss"], model.train_on_batch(x, y), rtol=1e-5)
    assert_weights_equal(device, model)
    bn = model.layers[1]
    np.testing.assert_array_equal(device.get_weights()[bn.moving_mean.path], start[bn.moving_mean.path])


# ----- adversarial ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dense_device():
    model = build("dense")
    return model, TrainableTFLiteModel(to_trainable_tflite(model, loss=LOSS, batch_size=BATCH))


def test_a_plain_inference_export_is_refused_by_signature_name():
    model = build("dense")
    with pytest.raises(ExportError, match=r"not a trainable export.*'train'"):
        TrainableTFLiteModel(to_tflite(model))


@pytest.mark.parametrize("x,y,error,match", [
    (np.zeros((BATCH + 1, 6), "float32"), np.zeros(BATCH + 1, "int32"), ValueError, r"'x' must have shape \(4, 6\)"),
    (np.zeros((BATCH, 5), "float32"), np.zeros(BATCH, "int32"), ValueError, "shape"),
    (np.zeros((BATCH, 6), "float32"), np.zeros((BATCH, 1), "int32"), ValueError, "'y' must have shape"),
    (np.zeros((BATCH, 6), "float32"), np.zeros(BATCH, "float32"), TypeError, "'y' must be int32"),
    (np.zeros((BATCH, 6), "int32"), np.zeros(BATCH, "int32"), TypeError, "'x' must be float32"),
    (np.full((BATCH, 6), np.nan, "float32"), np.zeros(BATCH, "int32"), ValueError, "NaN"),
])
def test_bad_batches_get_named_errors_and_change_nothing(dense_device, x, y, error, match):
    model, device = dense_device
    before = device.get_weights()
    with pytest.raises(error, match=match):
        device.train(x, y)
    after = device.get_weights()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_bad_weights_get_named_errors(dense_device):
    model, device = dense_device
    weights = device.get_weights()
    first = model.weights[0].path
    with pytest.raises(ValueError, match=f"Missing: \\['{first}'\\]"):
        device.set_weights({k: v for k, v in weights.items() if k != first})
    with pytest.raises(ValueError, match="unknown"):
        device.set_weights(dict(weights, extra=np.zeros(1)))
    with pytest.raises(ValueError, match="must have 4 arrays"):
        device.set_weights(list(weights.values())[:2])
    with pytest.raises(ValueError, match="NaN"):
        device.set_weights(dict(weights, **{first: np.full_like(weights[first], np.inf)}))


@pytest.mark.parametrize("kwargs,match", [
    (dict(optimizer="rmsprop"), "SGD .* or Adam"),
    (dict(optimizer=keras.optimizers.Adam(amsgrad=True)), "amsgrad"),
    (dict(optimizer=keras.optimizers.SGD(weight_decay=0.1)), "weight_decay"),
])
def test_unsupported_optimizers_are_refused_by_name(kwargs, match):
    with pytest.raises(ExportError, match=match):
        to_trainable_tflite(build("dense"), loss=LOSS, **kwargs)


def test_dropout_is_refused_by_name_unless_disabled():
    model = keras.Sequential([keras.Input((6,)), L.Dense(8), L.Dropout(0.5, name="drop"), L.Dense(CLASSES)])
    with pytest.raises(ExportError, match="'drop' \\(Dropout\\).*disable_dropout=True"):
        to_trainable_tflite(model, loss=LOSS)
    device = TrainableTFLiteModel(to_trainable_tflite(model, loss=LOSS, batch_size=BATCH, disable_dropout=True))
    assert model.layers[1].rate == 0.5  # restored after the export
    x, y = batches(model, steps=1)
    out = device.train(x[0], y[0])
    np.testing.assert_allclose(out["output_0"] if "output_0" in out else list(out.values())[-1],
                               model(x[0], training=False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(trainable_layers=["nope"]), "must name layers"),
    (dict(batch_size=0), "batch_size"),
    (dict(loss=None), "`loss` must be given"),
])
def test_bad_arguments_get_named_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        to_trainable_tflite(build("dense"), **{"loss": LOSS, **kwargs})


def test_writes_the_file_when_given_a_path(tmp_path):
    path = tmp_path / "train.tflite"
    content = to_trainable_tflite(build("dense"), path, loss=LOSS, batch_size=BATCH)
    assert path.read_bytes() == content
    assert TrainableTFLiteModel(path).batch_size == BATCH
