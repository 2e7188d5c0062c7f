"""LSTM with peepholes and/or a projection (kws_streaming's LSTM(use_peepholes, num_proj)): a numpy loop of the
LSTMP formulas on the whole sequence, the model streamed in both modes, float LiteRT, .keras safe mode."""

import keras
import numpy as np
import pytest

from tfx_ext.layers import LSTM
from tfx_ext.streaming.contract import Mode
from tfx_ext.streaming.convert import to_streaming
from tfx_ext.testing import run_layer_test, verify_layer_streaming
from tests.layers.streaming_checks import assert_round_trip, float_litert_error


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def lstmp_numpy(x, layer):
    """Peephole LSTM with a projection (Sak et al. 2014) written out frame by frame, gates (i, f, c, o)."""
    w = {v.path.split("/")[-1]: np.asarray(v, np.float64) for v in layer.weights}
    u = layer.units
    m = np.zeros((x.shape[0], layer.num_proj or u))
    c = np.zeros((x.shape[0], u))
    peep = w.get("peepholes", np.zeros((3, u)))
    outs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ w["kernel"] + m @ w["recurrent_kernel"] + w["bias"]
        zi, zf, zc, zo = z[:, :u], z[:, u:2 * u], z[:, 2 * u:3 * u], z[:, 3 * u:]
        c = sigmoid(zf + peep[1] * c) * c + sigmoid(zi + peep[0] * c) * np.tanh(zc)
        m = sigmoid(zo + peep[2] * c) * np.tanh(c)
        if layer.num_proj:
            m = m @ w["projection"]
        outs.append(m)
    return np.stack(outs, axis=1)


CONFIGS = [dict(use_peepholes=True), dict(num_proj=3), dict(use_peepholes=True, num_proj=2)]


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_whole_sequence_equals_the_lstmp_formulas(kwargs):
    keras.utils.set_random_seed(0)
    layer = LSTM(5, bias_initializer="random_normal", **kwargs)
    x = np.random.default_rng(0).normal(size=(2, 7, 4)).astype("float32")
    y = np.asarray(layer(x))
    for v in layer.weights:  # peepholes start random; make the oracle see non-trivial ones
        assert np.abs(np.asarray(v)).max() > 0
    np.testing.assert_allclose(y, lstmp_numpy(x.astype(np.float64), layer), atol=1e-5)
    assert y.shape == (2, 7, kwargs.get("num_proj", 5))


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_streams_like_the_whole_sequence(kwargs):
    x = np.random.default_rng(1).normal(size=(2, 6, 4)).astype("float32")
    errors = verify_layer_streaming(LSTM, {"units": 5, **kwargs}, x, frames_per_step=(1, 3))
    assert errors and max(errors.values()) <= 1e-5
    inputs = keras.Input((6, 4))
    model = keras.Model(inputs, LSTM(5, name="lstm", **kwargs)(inputs))
    runner = to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=2)
    shapes = {t.name: tuple(t.shape[1:]) for t in runner.model.inputs[1:]}
    assert shapes == {"lstm_h": (kwargs.get("num_proj", 5),), "lstm_c": (5,)}


def test_layer_contract_litert_and_safe_mode():
    run_layer_test(LSTM, {"units": 4, "use_peepholes": True, "num_proj": 2}, (2, 5, 3), expected_output_shape=(2, 5, 2),
                   expected_num_trainable_weights=5, expected_num_non_trainable_weights=0, run_training_check=False)
    for mode in (Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE):
        assert float_litert_error(LSTM(4, use_peepholes=True, num_proj=3), (5, 3), mode) <= 1e-5
    inputs = keras.Input((5, 3))
    assert_round_trip(keras.Model(inputs, LSTM(4, use_peepholes=True, num_proj=3, return_sequences=False)(inputs)))


def test_unsupported_options_are_named():
    with pytest.raises(ValueError, match=r"uses tanh/sigmoid and no dropout .*'dropout': 0.2"):
        LSTM(4, use_peepholes=True, dropout=0.2)
    with pytest.raises(ValueError, match=r"`num_proj` must be an integer >= 1"):
        LSTM(4, num_proj=0)
