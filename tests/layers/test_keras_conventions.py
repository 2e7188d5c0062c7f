"""The layers checked the way Keras checks its own (issues 17 and 22): dtype policies reach inner cells, states
live in the variable dtype, hyper layers are accurate in float16 and refuse Sequential, `tf.saved_model.save`
works, gated DeltaActivation trains under XLA."""

import inspect
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
