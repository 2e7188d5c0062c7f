"""make_streamable / to_streaming of plain Keras models you already trained (issue 17 item 4).

The oracle is always the user's ORIGINAL plain model called on the whole window (never a rebuild): the rewritten
model must equal it, and the stream must equal it `output_delay` frames late, in both state modes.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tfx_ext
from tfx_ext.errors import NotStreamableError
from tfx_ext.layers.recurrent import GRU, LSTM
from tfx_ext.layers.stream import Stream
from tfx_ext.streaming.convert import min_frames_per_step, to_streaming
from tfx_ext.streaming.streamable import make_streamable
from tfx_ext.testing import save_and_load

L = keras.layers
BOTH = ("stream_internal_state", "stream_external_state")


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _stream_error(original: keras.Model, model: keras.Model, x: np.ndarray, mode: str) -> float:
    """Max abs difference between `to_streaming(model)` run over `x` and `original(x)` (the oracle): outputs with a
    time axis compared `output_delay` frames late, window summaries at the last step."""
    step = min_frames_per_step(make_streamable(model) if tfx_ext.streaming.streamable.needs_streamable(model)
                               else model)
    runner = to_streaming(model, mode, batch_size=x.shape[0], frames_per_step=step)
    streamed = runner.run(x)
    expected = original(x, training=False)
    names = runner.output_names
    streamed = streamed if isinstance(streamed, dict) else {names[0]: streamed}
    expected = expected if isinstance(expected, dict) else dict(zip(names, keras.tree.flatten(expected)))
    worst = 0.0
    for name in names:
        got, want = np.asarray(streamed[name]), np.asarray(expected[name])
        if want.ndim >= 3:
            rate = x.shape[1] // got.shape[1]
            shift = runner.output_delays[name] // rate
            frames = min(got.shape[1] - shift, want.shape[1])
            assert frames > 0, (name, got.shape, want.shape, shift)
            worst = max(worst, float(np.abs(got[:, shift:shift + frames] - want[:, :frames]).max()))
        else:
            assert runner.output_delays[name] == 0 or not any(
                isinstance(layer, Stream) and layer.lookahead for layer in runner.model.layers)
            worst = max(worst, float(np.abs(got[:, -1] - want).max()))
    return worst


def _check(model: keras.Model, x: np.ndarray, atol: float = 1e-5) -> dict:
    converted = make_streamable(model)
    whole = float(np.abs(np.asarray(converted(x)) - np.asarray(model(x))).max())
    assert whole <= atol, whole
    errors = {mode: _stream_error(model, model, x, mode) for mode in BOTH}
    assert max(errors.values()) <= atol, errors
    return {"whole": whole, **errors}


def _one_layer(layer, shape):
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


# ----- Stream keeps a built layer's weights --------------------------------------------------------------------------
def test_stream_of_a_trained_conv_keeps_its_weights_and_saves_them(tmp_path):
    conv = L.Conv1D(3, 3, padding="causal", name="conv")
    x = _x((2, 9, 4))
    conv(x)
    conv.set_weights([w + np.random.default_rng(1).normal(size=w.shape).astype("float32")
                      for w in conv.get_weights()])  # "trained": not the initializer's values
    wrapped = Stream(conv)
    np.testing.assert_allclose(np.asarray(wrapped(x)), np.asarray(conv(x)), atol=1e-6)
    inputs = keras.Input((9, 4))
    model = keras.Model(inputs, Stream(conv, name="wrapped")(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(conv(x)), atol=1e-6)
    before = np.asarray(wrapped.cell.kernel).copy()
    conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
    np.testing.assert_array_equal(np.asarray(wrapped.cell.kernel), before)  # a copy, not the same variable


def test_stream_valid_time_padding_equals_the_plain_layer_and_streams_late():
    conv = L.Conv1D(3, 4, strides=2, padding="valid")
    x = _x((2, 12, 3))
    conv(x)
    stream = Stream(conv, pad_time_dim="valid")
    np.testing.assert_allclose(np.asarray(stream(x)), np.asarray(conv(x)), atol=1e-6)
    assert stream.output_delay == 2 and stream.lookahead == 0
    with pytest.raises(NotStreamableError, match=r"pad_time_dim='valid' needs an effective time kernel e .*"
                                                 r"Received: e=3, s=2"):
        Stream(L.Conv1D(3, 3, strides=2), pad_time_dim="valid")
    with pytest.raises(ValueError, match=r"`warmup_frames` must be"):
        Stream(L.Conv1D(3, 3), warmup_frames=-1)


# ----- each plain layer type, streamed against the original ---------------------------------------------------------
ONE_D = [
    L.Conv1D(4, 3, padding="causal", dilation_rate=2),
    L.Conv1D(4, 3, padding="valid"),
    L.Conv1D(4, 5, padding="same"),
    L.Conv1D(4, 4, strides=2, padding="valid"),
    L.DepthwiseConv1D(3, padding="valid", depth_multiplier=2),
    L.DepthwiseConv1D(3, padding="same"),
    L.SeparableConv1D(4, 3, padding="valid"),
    L.SeparableConv1D(4, 3, padding="same"),
    L.MaxPooling1D(2),
    L.AveragePooling1D(3, strides=1),
    L.MaxPooling1D(2, padding="same"),
    L.GlobalAveragePooling1D(),
    L.GlobalMaxPooling1D(),
    L.Flatten(),
    L.GRU(5),
    L.GRU(5, return_sequences=True),
    L.LSTM(5, return_sequences=True),
    L.LSTM(5),
]
TWO_D = [
    L.Conv2D(4, (3, 3), padding="valid"),
    L.Conv2D(4, (3, 3), padding="same"),
    L.Conv2D(4, (3, 2), strides=(1, 2), padding="valid"),
    L.DepthwiseConv2D((3, 3), padding="same"),
    L.SeparableConv2D(4, (3, 3), padding="valid"),
    L.MaxPooling2D((2, 2)),
    L.AveragePooling2D((1, 2)),
    L.GlobalAveragePooling2D(),
    L.GlobalMaxPooling2D(),
]


@pytest.mark.parametrize("layer", ONE_D + TWO_D, ids=lambda layer: f"{type(layer).__name__}-"
                         f"{layer.get_config().get('padding', '')}-{layer.get_config().get('strides', '')}")
def test_each_plain_layer_streams_exactly_against_the_original(layer):
    keras.utils.set_random_seed(0)
    two_d = any(layer is other for other in TWO_D)
    shape = (8, 6, 2) if two_d else (8, 3)
    x = _x((2, *shape), seed=2)
    model = _one_layer(layer, shape)
    model.set_weights([w + 0.1 * np.random.default_rng(3).normal(size=w.shape).astype("float32")
                       for w in model.get_weights()])  # trained-looking, nonzero biases
    converted = make_streamable(model)
    assert not tfx_ext.streaming.streamable.needs_streamable(converted)
    _check(model, x)


# ----- a trained plain KWS-like model --------------------------------------------------------------------------------
def _kws(frames=16, bins=10, classes=3):
    inputs = keras.Input((frames, bins), name="features")
    x = L.Reshape((frames, bins, 1))(inputs)
    x = L.Conv2D(6, (3, 3), padding="valid", activation="relu", name="conv")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.DepthwiseConv2D((3, 3), padding="valid", name="dw")(x)
    x = L.ReLU()(x)
    x = L.MaxPooling2D((1, 2), name="pool")(x)
    x = L.Reshape((-1, 3 * 6))(x)  # freq 10 -> 8 -> 6 -> 3, 6 channels
    x = L.Dropout(0.2)(x)
    x = L.GRU(8, name="gru")(x)
    outputs = L.Dense(classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="plain_kws")


def _kws_data(n=48, frames=16, bins=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, frames, bins)).astype("float32")
    for i, c in enumerate(y):
        x[i, :, 3 * c:3 * c + 3] += 1.5
    return x, y


def test_trained_plain_kws_model_streams_exactly_against_the_original():
    keras.utils.set_random_seed(0)
    model = _kws()
    x, y = _kws_data()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    converted = make_streamable(model)
    assert isinstance(converted.get_layer("conv"), Stream) and isinstance(converted.get_layer("gru"), GRU)
    assert converted.get_layer("gru").warmup_frames == 4  # two valid 3-frame convs before it
    errors = _check(model, x[:4])
    print(f"\nplain kws (trained 1 epoch): whole {errors['whole']:.2e}, internal "
          f"{errors['stream_internal_state']:.2e}, external {errors['stream_external_state']:.2e}")
    # the trained weights, copied: perturbing the original afterwards leaves the rewrite alone
    expected = np.asarray(converted(x[:4]))
    kernel = model.get_layer("conv").kernel
    kernel.assign(np.asarray(kernel) + 1.0)
    model.get_layer("gru").cell.kernel.assign(np.zeros(model.get_layer("gru").cell.kernel.shape, "float32"))
    np.testing.assert_array_equal(np.asarray(converted(x[:4])), expected)
    assert float(np.abs(np.asarray(model(x[:4])) - expected).max()) > 1e-3
    # and the rewrite saves and loads with safe_mode (its Stream/GRU weights included)
    np.testing.assert_allclose(np.asarray(save_and_load(converted)(x[:4])), expected, atol=1e-6)


def test_sequential_plain_model_streams_against_the_original():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((10, 3)),
        L.Conv1D(4, 3, padding="causal", activation="relu"),
        L.MaxPooling1D(2),
        L.LSTM(4, return_sequences=True),
        L.Dense(2),
    ])
    converted = tfx_ext.make_streamable(model)
    assert isinstance(converted, keras.Model) and not isinstance(converted, keras.Sequential)
    _check(model, _x((2, 10, 3), seed=4))


def test_branches_lagging_alike_and_tfx_layers_behind_a_delay():
    """A valid conv on both branches of an Add (equal delays), then a tfx_ext GRU and Stream that get warm-up."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((12, 3))
    a = L.Conv1D(4, 3, padding="valid", name="a")(inputs)
    b = L.Conv1D(4, 3, padding="valid", dilation_rate=1, name="b")(inputs)
    x = L.Add()([a, b])
    x = Stream(L.Conv1D(4, 3), name="causal")(x)
    outputs = GRU(3, name="rnn")(x)
    model = keras.Model(inputs, outputs)
    converted = make_streamable(model)
    assert converted.get_layer("causal").warmup_frames == 2 and converted.get_layer("rnn").warmup_frames == 2
    _check(model, _x((2, 12, 3), seed=5))


# ----- refusals ------------------------------------------------------------------------------------------------------
def test_every_offending_layer_is_named_with_why_and_fix():
    inputs = keras.Input((8, 4))
    x = L.GRU(3, go_backwards=True, return_sequences=True, name="backwards")(inputs)
    x = L.LSTM(3, return_sequences=True, stateful=False, return_state=False, name="fine")(x)
    y = L.Bidirectional(L.GRU(2, return_sequences=True), name="bi")(inputs)
    z = L.SimpleRNN(2, return_sequences=True, name="simple")(inputs)
    w = L.Conv1D(2, 3, strides=2, padding="causal", name="strided_causal")(inputs)
    v = L.Conv1D(2, 4, padding="same", name="even_same")(inputs)
    u = L.GRU(2, reset_after=False, name="old_gru")(inputs)
    model = keras.Model(inputs, [x, y, z, w, v, u])
    with pytest.raises(NotStreamableError) as info:
        make_streamable(model)
    message = str(info.value)
    assert "cannot convert 6 layer(s)" in message
    for expected in (r"'backwards' (GRU) has go_backwards=True", r"'bi' (Bidirectional) runs a recurrence "
                     "backwards", r"'simple' (SimpleRNN) is a Keras recurrence", r"'strided_causal' (Conv1D) is "
                     "causal with time stride 2", r"'even_same' (Conv1D) has padding='same' with an even",
                     r"'old_gru' (GRU) has reset_after=False"):
        assert expected in message, (expected, message)
    assert "'fine'" not in message and message.count("\n  - ") == 6
    with pytest.raises(NotStreamableError, match=r"'bi' \(Bidirectional\)"):
        to_streaming(model)  # to_streaming refuses through the same rewrite


@pytest.mark.parametrize("build, match", [
    (lambda i: L.GRU(2, stateful=True, name="r")(i), r"'r' \(GRU\) has stateful=True"),
    (lambda i: L.LSTM(2, return_state=True, name="r")(i)[0], r"'r' \(LSTM\) has return_state=True"),
    (lambda i: L.GRU(2, name="r")(L.Conv1D(2, 3, padding="same")(i)), r"'r' \(GRU\) returns its last state "
                                                                       r"behind a look-ahead"),
    (lambda i: L.GlobalAveragePooling1D(name="r")(L.Conv1D(2, 3, padding="same")(i)), r"'r' "
     r"\(GlobalAveragePooling1D\) summarizes the window behind a look-ahead"),
    (lambda i: L.MaxPooling1D(3, strides=2, padding="same", name="r")(i), r"'r' \(MaxPooling1D\) pools with "
                                                                          r"padding='same'"),
    (lambda i: L.Conv1D(2, 3, strides=2, padding="valid", name="r")(i), r"'r' \(Conv1D\) has time kernel 3 and "
                                                                        r"stride 2"),
    (lambda i: L.Conv1D(2, 2, strides=2, name="r")(L.Conv1D(2, 2, name="v")(i)), r"'r' \(Conv1D\) has time "
                                                                                  r"stride 2 behind layers that "
                                                                                  r"delay it by 1 frames"),
])
def test_single_refusals(build, match):
    inputs = keras.Input((8, 4), batch_size=2)  # (a stateful RNN needs a static batch to build)
    model = keras.Model(inputs, build(inputs))
    with pytest.raises(NotStreamableError, match=match):
        make_streamable(model)


def test_shared_time_mixing_layer_and_masks_are_refused():
    inputs = keras.Input((8, 4))
    conv = L.Conv1D(4, 3, padding="causal", name="shared")
    model = keras.Model(inputs, L.Add()([conv(inputs), conv(conv(inputs))]))
    with pytest.raises(NotStreamableError, match=r"'shared' \(Conv1D\) is called 3 times"):
        make_streamable(model)
    inputs = keras.Input((8, 4))
    model = keras.Model(inputs, L.GRU(2, name="r")(L.Masking()(inputs)))
    with pytest.raises(NotStreamableError, match=r"'r' \(GRU\) is called with a mask"):
        make_streamable(model)


def test_nested_model_is_refused():
    inner = keras.Sequential([keras.Input((8, 4)), L.Conv1D(2, 3, padding="causal")], name="inner")
    inputs = keras.Input((8, 4))
    with pytest.raises(NotStreamableError, match=r"layer 'inner' is a nested model"):
        make_streamable(keras.Model(inputs, inner(inputs)))


# ----- random plain models (hypothesis), against the original -------------------------------------------------------
@st.composite
def _plain_chain(draw):
    """A random chain of plain Keras time-mixing and frame-local layers (1-D), sometimes ending in a summary."""
    chain, lookahead = [], False
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["conv", "depthwise", "separable", "pool", "dense", "bn", "gru"]))
        padding = draw(st.sampled_from(["causal", "valid", "same"]))
        kernel = draw(st.sampled_from([1, 3, 5]))
        if kind in ("conv", "depthwise", "separable"):
            if kind != "conv" and padding == "causal":
                padding = "valid"
            cls = {"conv": L.Conv1D, "depthwise": L.DepthwiseConv1D, "separable": L.SeparableConv1D}[kind]
            args = (3,) if kind != "depthwise" else ()
            chain.append(lambda cls=cls, args=args, k=kernel, p=padding: cls(*args, k, padding=p))
            lookahead = lookahead or (padding == "same" and kernel > 1)
        elif kind == "pool" and not chain:  # first: a stride behind a look-ahead of 1 frame is refused
            chain.append(lambda: L.MaxPooling1D(2))
        elif kind == "dense":
            chain.append(lambda: L.Dense(3, activation="tanh"))
        elif kind == "bn":
            chain.append(lambda: L.BatchNormalization())
        else:
            chain.append(lambda: L.GRU(3, return_sequences=True))
    if not lookahead and draw(st.booleans()):
        chain.append(draw(st.sampled_from([lambda: L.GRU(2), lambda: L.GlobalAveragePooling1D(),
                                           lambda: L.Flatten()])))
    return chain


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(chain=_plain_chain(), seed=st.integers(0, 2 ** 16))
def test_random_plain_models_stream_exactly_against_the_original(chain, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 3))
    x = inputs
    for make in chain:
        x = make()(x)
    model = keras.Model(inputs, x)
    model.set_weights([w + 0.1 * np.random.default_rng(seed).normal(size=w.shape).astype("float32")
                       for w in model.get_weights()])
    _check(model, _x((2, 16, 3), seed=seed))
