"""Every layer family that exists trains one epoch under MirroredStrategy (2 logical CPUs) exactly like one device.

Reference: `model.fit` on one device. Candidate: `tfx_ext.distribute.fit` under MirroredStrategy with the same
global batch (8 = 2 x 4), the same data order, one epoch of 2 steps, SGD with momentum. Tolerances: weights 1e-5
absolute, epoch loss 1e-5 relative (the loss includes the add_loss terms: regularizers, activity penalties, the
delta sparsity penalty, so their per-replica scaling is checked by the loss comparison). Every family runs: a
layer module that fails to import fails its family's test with the ImportError. The epoch must also move the
weights (by far more than the mismatch), so two fits that both skip training cannot pass.
"""

import importlib
import pathlib

import keras
import numpy as np
import pytest

from tfx_ext.testing import assert_all_close
from tfx_ext.distribute import fit, get_strategy

WEIGHT_ATOL = 1e-5
LOSS_RTOL = 1e-5
MIN_MOVEMENT = 1e-3  # largest weight change of the epoch: measured 0.034 (stream_conv) to 0.073 over the families
FRAMES, FEATURES = 6, 4


class ActivityPenalty(keras.layers.Layer):
    """add_loss of a batch-dependent term (mean square activation): scaled per replica like Keras does."""

    def __init__(self, weight=0.1, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight

    def call(self, inputs):
        self.add_loss(self.weight * keras.ops.mean(keras.ops.square(inputs)))
        return inputs


def _head(h):
    h = keras.layers.GlobalAveragePooling1D()(h) if len(h.shape) == 3 else h
    return keras.layers.Dense(2, name="head")(h)


def keras_conv_dense(inputs):
    h = keras.layers.Conv1D(6, 3, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01),
                            activity_regularizer=keras.regularizers.L1(0.01))(inputs)
    return _head(keras.layers.Dense(5, activation="tanh")(h))


def add_loss_layer(inputs):
    return _head(ActivityPenalty(0.5)(keras.layers.Dense(5, activation="tanh")(inputs)))


def stream_conv(inputs):
    from tfx_ext.layers.stream import Stream

    h = Stream(keras.layers.Conv1D(6, 3, activation="relu"))(inputs)
    return _head(Stream(keras.layers.DepthwiseConv1D(3))(h))


def gru(inputs):
    from tfx_ext.layers.recurrent import GRU

    return _head(GRU(5)(inputs))


def lstm(inputs):
    from tfx_ext.layers.recurrent import LSTM

    return _head(LSTM(5, return_sequences=False)(inputs))


def delay(inputs):
    from tfx_ext.layers.delay import Delay

    return _head(Delay(2)(keras.layers.Dense(5)(inputs)))


def delta_activation(inputs):
    from tfx_ext.layers.delta import DeltaActivation

    return _head(DeltaActivation(0.05, penalty=0.01)(keras.layers.Dense(5)(inputs)))


def tensor_layers(inputs):
    from tfx_ext.layers.tensor import FactorizedDense, TensorContraction, TensorRegression

    h = TensorContraction((3, 2))(inputs)
    h = FactorizedDense(6, factorization="tucker", rank=0.5)(keras.layers.Flatten()(h))
    h = keras.layers.Reshape((2, 3))(h)
    return TensorRegression(2, factorization="cp", rank=2)(h)


def hyper_layers(inputs):
    from tfx_ext.layers.hyper_network import HyperNetwork
    from tfx_ext.layers.hyper_layers import HyperConv1D, HyperDense

    hnet = HyperNetwork(embedding_dim=3, chunk_shape=(3, 4, 4))
    h = HyperConv1D(4, 3, hypernetwork=hnet, padding="causal", activation="relu")(inputs)
    dense_net = HyperNetwork(embedding_dim=3, chunk_shape=(4, 4))
    return _head(HyperDense(4, hypernetwork=dense_net)(h))


CANDIDATES = {
    "keras_conv_dense": (keras_conv_dense, []),
    "add_loss": (add_loss_layer, []),
    "stream_conv": (stream_conv, ["tfx_ext.layers.stream"]),
    "gru": (gru, ["tfx_ext.layers.recurrent"]),
    "lstm": (lstm, ["tfx_ext.layers.recurrent"]),
    "delay": (delay, ["tfx_ext.layers.delay"]),
    "delta_activation": (delta_activation, ["tfx_ext.layers.delta"]),
    "tensor": (tensor_layers, ["tfx_ext.layers.tensor"]),
    "hyper": (hyper_layers, ["tfx_ext.layers.hyper_network", "tfx_ext.layers.hyper_layers"]),
}


FAMILIES = {name: body for name, (body, _) in CANDIDATES.items()}


def _model(body, seed=5):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FRAMES, FEATURES), name="x")
    model = keras.Model(inputs, body(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.5), loss="mse")
    return model


@pytest.fixture(scope="module")
def mirrored():
    return get_strategy("mirrored")  # The one shared instance: see tfx_ext.distribute.strategy._mirrored.


@pytest.mark.parametrize("family", sorted(CANDIDATES))
def test_layer_family_modules_import(family):
    root = pathlib.Path(__file__).resolve().parents[2]
    for name in CANDIDATES[family][1]:
        module = importlib.import_module(name)  # an ImportError fails here, naming the module
        assert root in pathlib.Path(module.__file__).resolve().parents, f"{name} imported from {module.__file__}"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_mirrored_epoch_equals_one_device(family, mirrored):
    for module in CANDIDATES[family][1]:
        importlib.import_module(module)
    body = FAMILIES[family]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, FRAMES, FEATURES)).astype("float32")
    single = _model(body)
    initial = single.get_weights()
    y = rng.normal(size=(16, *single.output.shape[1:])).astype("float32")
    expected = single.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    with mirrored.scope():
        model = _model(body)
    history = fit(model, x, y, batch_size=8, epochs=1, strategy=mirrored, verbose=0)
    error = assert_all_close(model.get_weights(), single.get_weights(), WEIGHT_ATOL,
                             what=f"{family}: weights after one mirrored epoch vs one device")
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=LOSS_RTOL)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), initial) if a.size)
    print(f"{family}: weights moved {moved:.3g}, mirrored vs one device {error:.3g}")
    assert moved >= MIN_MOVEMENT, f"{family}: one epoch moved the weights by only {moved:.3g}"
    assert error <= moved / 100, f"{family}: mismatch {error:.3g} is not small against the training step {moved:.3g}"
