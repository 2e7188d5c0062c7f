"""to_streaming / to_non_streaming: graph handling (Sequential, branches, Delay, dropout), runner, errors."""

import keras
import numpy as np
import pytest

from tfx_ext.errors import NotStreamableError
from tfx_ext.layers.delay import Delay
from tfx_ext.layers.recurrent import GRU, LSTM
from tfx_ext.layers.stream import Stream
from tfx_ext.streaming.contract import Mode
from tfx_ext.streaming.convert import to_non_streaming, to_streaming
from tfx_ext.streaming.graph import output_names
from tfx_ext.streaming.posteriors import stream_clips
from tfx_ext.streaming.runner import StreamingRunner
from tfx_ext.testing import assert_all_close, verify_streaming

L = keras.layers
X = np.random.default_rng(0).normal(size=(3, 8, 4)).astype("float32")


def test_sequential_model_streams():
    model = keras.Sequential([
        keras.Input((8, 4)),
        Stream(L.Conv1D(5, 3, dilation_rate=2)),
        L.BatchNormalization(),
        L.Dropout(0.5),
        LSTM(3),
        L.Dense(2),
    ])
    errors = verify_streaming(model, X, frames_per_step=(1, 2), compiled=(False,))
    assert max(errors.values()) <= 1e-5


def test_branches_and_frame_local_layers():
    """Residual Add and channel Concatenate of aligned branches, a Reshape that spells the time length."""
    inputs = keras.Input((8, 4), name="audio")
    a = Stream(L.Conv1D(4, 3), name="a")(inputs)
    b = Stream(L.Conv1D(4, 2, dilation_rate=3), name="b")(inputs)
    x = L.Add()([a, b, inputs])
    x = L.Concatenate()([x, L.Activation("tanh")(a)])
    x = L.Reshape((8, 4, 2))(x)  # time length spelled out: the converter makes it -1
    x = L.Reshape((-1, 8))(x)
    x = L.LayerNormalization()(x)
    outputs = [L.Dense(3, name="frames")(x), L.Dense(1, name="last")(GRU(2, return_sequences=False)(x))]
    model = keras.Model(inputs, outputs)
    errors = verify_streaming(model, X, frames_per_step=(1, 4), compiled=(False,))
    assert set(k.rsplit("/", 1)[1] for k in errors) == {"frames", "last"}


def test_external_state_naming_and_runner():
    inputs = keras.Input((8, 4), name="audio")
    x = Stream(L.Conv1D(4, 3), name="conv")(inputs)
    x = Stream(L.Conv1D(4, 1), name="pointwise")(x)  # kernel 1: no state
    outputs = L.Dense(2, name="scores")(LSTM(3, name="lstm")(x))
    runner = to_streaming(keras.Model(inputs, outputs), Mode.STREAM_EXTERNAL_STATE, batch_size=3)
    assert isinstance(runner, StreamingRunner)
    assert runner.state_names == ["conv_buffer", "lstm_h", "lstm_c"]
    assert [t.name for t in runner.model.inputs] == ["audio", "conv_buffer", "lstm_h", "lstm_c"]
    assert sorted(runner.model.output) == ["conv_buffer", "lstm_c", "lstm_h", "scores"]
    assert runner.output_names == ["scores"] and runner.input_names == ["audio"]
    out = runner(X[:, :1])
    assert out.shape == (3, 1, 2)
    assert float(np.abs(np.asarray(runner.states["conv_buffer"])[:, 1] - X[:, 0]).max()) == 0.0  # newest frame last
    runner.reset()
    assert all(float(np.abs(np.asarray(v)).max()) == 0.0 for v in runner.states.values())


def test_non_causal_model_with_delay_streams_with_known_delay():
    """A look-ahead conv ('same' in time) on one branch, Delay(1) on the skip: streamed == whole sequence, 1 late."""
    inputs = keras.Input((8, 4))
    y = Stream(L.Conv1D(4, 3), pad_time_dim="same")(inputs)
    x = L.Add()([y, Delay(1)(inputs)])
    model = keras.Model(inputs, L.Dense(2)(x))
    internal = to_streaming(model, batch_size=3)
    assert list(internal.output_delays.values()) == [1]
    errors = verify_streaming(model, X, frames_per_step=(1, 2), compiled=(False,))
    assert max(errors.values()) <= 1e-5


def test_non_causal_merge_without_delay_raises():
    inputs = keras.Input((8, 4))
    y = Stream(L.Conv1D(4, 3), pad_time_dim="same")(inputs)
    model = keras.Model(inputs, L.Add(name="merge")([y, inputs]))
    with pytest.raises(NotStreamableError, match=r"'merge' \(Add\) merges branches whose streamed values lag by "
                                                 r"\[1, 0\] frames: the model is not causal .*Delay\(d\)"):
        to_streaming(model)


def test_plain_time_mixing_layers_are_made_streamable_or_refused_by_name():
    """to_streaming rewrites plain Keras time-mixing layers (make_streamable) and refuses what has no stream form."""
    inputs = keras.Input((8, 4))
    model = keras.Model(inputs, L.Conv1D(2, 3, padding="same", name="conv")(inputs))
    runner = to_streaming(model, batch_size=3)
    assert isinstance(runner.model.get_layer("conv"), Stream) and runner.output_delays == {"conv": 1}
    inputs = keras.Input((8, 4))
    model = keras.Model(inputs, L.Bidirectional(L.LSTM(2), name="bi")(inputs))
    with pytest.raises(NotStreamableError, match=r"layer 'bi' \(Bidirectional\) runs a recurrence backwards"):
        to_streaming(model, Mode.STREAM_EXTERNAL_STATE)


@keras.saving.register_keras_serializable(package="tests")
class Squash(L.Layer):
    """A user's frame-local layer the table cannot know."""

    def call(self, x):
        return x / (1.0 + keras.ops.abs(x))


def test_extra_frame_local_layers_are_accepted():
    inputs = keras.Input((8, 4))
    model = keras.Model(inputs, Squash(name="squash")(inputs))
    with pytest.raises(NotStreamableError, match=r"'squash' \(Squash\) is not known to act on each frame .* "
                                                 r"extra_frame_local=\(YourLayer,\)"):
        to_streaming(model)
    streamed = to_streaming(model, batch_size=3, extra_frame_local=(Squash,))
    assert_all_close(streamed(X[:, :1]), np.asarray(model(X))[:, :1])


def test_subclassed_model_raises():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(X)
    with pytest.raises(NotStreamableError, match=r"subclassed model: its call\(\) is Python code .* functional"):
        to_streaming(net)


def test_frames_per_step_not_multiple_of_stride_raises():
    inputs = keras.Input((8, 4))
    model = keras.Model(inputs, Stream(L.Conv1D(2, 3, strides=2), name="strided")(inputs))
    with pytest.raises(NotStreamableError, match=r"'strided' \(Stream\) steps over multiples of 2 frames .* "
                                                 r"\(frames_per_step=3.*a multiple of 2"):
        to_streaming(model, frames_per_step=3)


def test_other_errors():
    inputs = keras.Input((8, 4))
    model = keras.Model(inputs, L.Reshape((32,), name="flat")(inputs))
    with pytest.raises(NotStreamableError, match=r"'flat' \(Reshape\) changes the time axis \(8 -> 32 frames\)"):
        to_streaming(model)
    model = keras.Model(inputs, L.Concatenate(axis=1, name="cat")([inputs, inputs]))
    with pytest.raises(NotStreamableError, match=r"'cat' \(Concatenate\) concatenates along time"):
        to_streaming(model)
    inner = keras.Sequential([keras.Input((8, 4)), L.Dense(2)], name="inner")
    outer = keras.Model(inputs, inner(inputs))
    with pytest.raises(NotStreamableError, match=r"'inner' is a nested model"):
        to_streaming(outer)
    shared = Stream(L.Conv1D(4, 3), name="shared")
    model = keras.Model(inputs, shared(shared(inputs)))
    with pytest.raises(NotStreamableError, match=r"'shared' \(Stream\) is called 2 times"):
        to_streaming(model)
    model = keras.Model(inputs, L.Dense(2)(inputs))
    with pytest.raises(ValueError, match=r"`mode` must be Mode.STREAM_INTERNAL_STATE or .* Received: mode='training'"):
        to_streaming(model, Mode.TRAINING)
    with pytest.raises(ValueError, match=r"`frames_per_step` must be an integer >= 1. Received: frames_per_step=0"):
        to_streaming(model, frames_per_step=0)
    with pytest.raises(ValueError, match=r"`batch_size` must be an integer >= 1. Received: batch_size=None"):
        to_streaming(model, batch_size=None)
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model"):
        to_streaming(L.Dense(2))


def test_to_non_streaming_removes_dropout_and_keeps_weights():
    inputs = keras.Input((8, 4))
    x = Stream(L.Conv1D(3, 3))(inputs)
    x = L.Dropout(0.9, name="drop")(x)
    model = keras.Model(inputs, GRU(2, dropout=0.5, name="gru")(x))
    inference = to_non_streaming(model)
    assert "drop" not in [layer.name for layer in inference.layers]
    assert inference.get_layer("gru").mode == Mode.NON_STREAM_INFERENCE
    assert_all_close(inference(X), model(X, training=False))
    assert_all_close(inference(X, training=True), inference(X))  # no training-only behaviour left
    assert not np.allclose(np.asarray(model(X, training=True)), np.asarray(model(X, training=False)))


def test_runner_run_checks_length():
    inputs = keras.Input((8, 4))
    runner = to_streaming(keras.Model(inputs, L.Dense(2)(inputs)), "stream_external_state", batch_size=3,
                          frames_per_step=3)
    with pytest.raises(ValueError, match=r"multiple of frames_per_step=3"):
        runner.run(X)


@pytest.mark.parametrize("mode", [Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE])
def test_to_streaming_returns_a_runner_in_both_modes(mode):
    inputs = keras.Input((8, 4), name="audio")
    model = keras.Model(inputs, L.Dense(2, name="scores")(GRU(3, name="gru")(inputs)))
    runner = to_streaming(model, mode, batch_size=3, frames_per_step=2)
    assert isinstance(runner, StreamingRunner) and isinstance(runner.model, keras.Model)
    assert runner.input_names == ["audio"] and runner.output_names == ["scores"]
    assert runner.state_names == ([] if mode == Mode.STREAM_INTERNAL_STATE else ["gru_h"])
    assert runner.output_delays == {"scores": 0}
    assert (runner.batch_size, runner.frames_per_step) == (3, 2)
    assert_all_close(runner.run(X), model(X))
    carried = runner(X[:, :2])  # after run(X): the state of 8 frames
    runner.reset()
    assert_all_close(runner(X[:, :2]), np.asarray(model(X))[:, :2])
    assert not np.allclose(carried, np.asarray(model(X))[:, :2])
    assert StreamingRunner.of(runner) is runner


def test_numpy_integer_sizes_are_accepted():
    """Fixed: `batch_size=np.int64(3)` (e.g. from an array shape) was refused as "not a positive integer"."""
    inputs = keras.Input((8, 4))
    runner = to_streaming(keras.Model(inputs, L.Dense(2)(inputs)), batch_size=np.int64(3),
                          frames_per_step=np.int32(2))
    assert (runner.batch_size, runner.frames_per_step) == (3, 2)


def test_output_names_of_sequential_functional_and_dict_models():
    sequential = keras.Sequential([keras.Input((8, 4)), L.Dense(2, name="last")])
    assert output_names(sequential) == ["last"]
    inputs = keras.Input((8, 4))
    assert output_names(keras.Model(inputs, [L.Dense(1, name="a")(inputs), L.Dense(1, name="b")(inputs)])) == [
        "a", "b"]
    assert output_names(keras.Model(inputs, {"z": L.Dense(1)(inputs)})) == ["z"]


def test_stream_clips_pads_the_last_batch_and_keeps_the_final_step():
    inputs = keras.Input((8, 4))
    model = keras.Model(inputs, L.Softmax()(L.Dense(3)(GRU(5, return_sequences=False)(inputs))))
    runner = to_streaming(model, batch_size=2, frames_per_step=2)
    clips = np.concatenate([X, X[:2]])  # 5 clips: the last batch of 2 is padded with one zero clip
    assert_all_close(stream_clips(runner, clips), model(clips), atol=1e-5)
    with pytest.raises(ValueError, match=r"`clips` must be \(num, frames, features...\)"):
        stream_clips(runner, X[0])
