"""Streaming GRU/LSTM: same maths as Keras's layers, stream exactly with (h[, c]) carried, round trips, errors."""

import keras
import numpy as np
import pytest

from tfx_ext.testing import assert_all_close, run_layer_test
from tfx_ext.layers.recurrent import GRU, LSTM
from tfx_ext.streaming.contract import Mode


@pytest.mark.parametrize("layer_cls,num_weights", [(GRU, 3), (LSTM, 3)])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_layer_contract_and_streaming(layer_cls, num_weights, return_sequences):
    run_layer_test(
        layer_cls,
        {"units": 4, "return_sequences": return_sequences},
        (2, 6, 3),
        expected_output_shape=(2, 6, 4) if return_sequences else (2, 4),
        expected_num_trainable_weights=num_weights,
        expected_num_non_trainable_weights=0,
        dynamic_axes=(0, 1),
        supports_masking=True,
        streaming=True,
    )


@pytest.mark.parametrize("ours,theirs", [(GRU, keras.layers.GRU), (LSTM, keras.layers.LSTM)])
def test_same_maths_as_keras(ours, theirs):
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    layer, reference = ours(4), theirs(4, return_sequences=True)
    layer.build(x.shape)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    assert_all_close(layer(x), reference(x))


@pytest.mark.parametrize("layer_cls,names", [(GRU, ["h"]), (LSTM, ["h", "c"])])
def test_state_specs(layer_cls, names):
    specs = layer_cls(5, mode=Mode.STREAM_EXTERNAL_STATE).state_specs((2, 1, 3))
    assert [(s.name, s.shape) for s in specs] == [(n, (5,)) for n in names]


def test_internal_state_variables_and_reset():
    layer = LSTM(3, mode=Mode.STREAM_INTERNAL_STATE)
    x = np.ones((2, 1, 2), "float32")
    first = np.asarray(layer(x))
    assert [tuple(v.shape) for v in layer.state_variables] == [(2, 3), (2, 3)]
    assert not np.allclose(np.asarray(layer(x)), first)  # state carried
    layer.reset_states()
    assert_all_close(layer(x), first)


def test_config_keeps_arguments():
    layer = LSTM(3, unit_forget_bias=False, activation="relu", dropout=0.25, seed=3, return_sequences=False)
    config = layer.get_config()
    assert config["unit_forget_bias"] is False and config["dropout"] == 0.25 and config["seed"] == 3
    assert LSTM.from_config(config).get_config() == config


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"`units` must be an integer >= 1. Received: units=0"):
        GRU(0)
    with pytest.raises(ValueError, match=r"`dropout` must be a finite number >= 0 and < 1. Received: dropout=1.5"):
        LSTM(2, dropout=1.5)
    with pytest.raises(ValueError, match=r"expects inputs \(batch, time, features\)"):
        GRU(2)(np.zeros((1, 2, 3, 4), "float32"))


@pytest.mark.parametrize("ours,theirs", [(GRU, keras.layers.GRU), (LSTM, keras.layers.LSTM)])
def test_masked_frames_as_in_keras(ours, theirs):
    """Behind `Masking`, padded frames keep the state exactly as Keras's own layer does, and the mask reaches the
    next recurrent layer (the last output is the one of the last unmasked frame)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 7, 3)).astype("float32")
    x[0, 4:] = 0.0  # padded tails of different lengths
    x[1, 2:] = 0.0

    def stack(cls):
        inputs = keras.Input((7, 3))
        h = cls(4, return_sequences=True)(keras.layers.Masking(0.0)(inputs))
        return keras.Model(inputs, [h, cls(5, return_sequences=False)(h)])

    model, reference = stack(ours), stack(theirs)
    reference.set_weights(model.get_weights())
    assert model.layers[2].supports_masking
    assert_all_close(model(x), reference(x))
    unmasked = keras.Model(model.input, model.layers[3](model.layers[2](model.input)))
    assert not np.allclose(np.asarray(unmasked(x))[0], np.asarray(model(x)[1])[0], atol=1e-4)  # the mask matters


def test_a_mask_in_a_streaming_mode_is_refused():
    layer = GRU(4, mode=Mode.STREAM_INTERNAL_STATE)
    x = np.ones((2, 1, 3), "float32")
    layer(x)
    with pytest.raises(ValueError, match=r"received a mask in stream_internal_state mode"):
        layer(x, mask=np.ones((2, 1), bool))
