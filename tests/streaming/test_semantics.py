"""The time-axis table (`tfx_ext.streaming.semantics`): issue 17's table rows, refusals by name, axis arithmetic.

Every accepted model is checked against the ORIGINAL model on the whole window (`verify_streaming`); EinsumDense
equations are checked against numpy's einsum (perturb one frame, see which output frames move), not against the
parser under test.
"""

import itertools

import keras
import numpy as np
import pytest

from tfx_ext.errors import NotStreamableError
from tfx_ext.layers.recurrent import GRU
from tfx_ext.layers.stream import Stream
from tfx_ext.layers.tensor import FactorizedDense, TensorRegression
from tfx_ext.streaming.contract import Mode
from tfx_ext.streaming.convert import to_streaming
from tfx_ext.streaming.semantics import TimeAxis, einsum_refusal, normalize_axes, time_axis_kind
from tfx_ext.testing import verify_streaming, verify_tflite_streaming

L = keras.layers
X = np.random.default_rng(0).normal(size=(2, 8, 4)).astype("float32")
BOTH = (Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE)
pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax over axis:UserWarning")


def _conv_then(make_head):
    inputs = keras.Input((8, 4), name="x")
    y = Stream(L.Conv1D(4, 3), name="conv")(inputs)
    return keras.Model(inputs, make_head(y))


def _concat(axis):
    return lambda y: L.Concatenate(axis=axis, name="head")([y, L.Activation("tanh")(y)])


# (id, the model of the issue's row, what the error must say, the same model written to stream)
ROWS = [
    ("softmax-axis-minus-2", lambda: _conv_then(L.Softmax(axis=-2, name="head")),
     r"'head' \(Softmax\) normalizes over time \(axis=-2 of its rank-3 input includes the time axis 1\).*axis=-1",
     lambda: _conv_then(L.Softmax(axis=-1, name="head"))),
    ("concatenate-axis-minus-2", lambda: _conv_then(_concat(-2)),
     r"'head' \(Concatenate\) concatenates along time \(axis=-2 .*Concatenate along features \(axis=-1\)",
     lambda: _conv_then(_concat(-1))),
    ("layernorm-axis-minus-2",
     lambda: _conv_then(L.LayerNormalization(axis=-2, center=False, scale=False, name="head")),
     r"'head' \(LayerNormalization\) normalizes over time \(axis=\[-2\] .*normalize over the feature axes only",
     lambda: _conv_then(L.LayerNormalization(axis=-1, center=False, scale=False, name="head"))),
    ("einsum-btc-cd-bd", lambda: _conv_then(L.EinsumDense("btc,cd->bd", output_shape=(3,), name="head")),
     r"'head' \(EinsumDense\) sums over time \(the time label 't' is not in the output 'bd'\)",
     # the time length spelled in output_shape, as a model built on whole windows does: made None to stream
     lambda: _conv_then(L.EinsumDense("btc,cd->btd", output_shape=(8, 3), bias_axes="d", name="head"))),
]


@pytest.mark.parametrize("row, build, error, fixed", ROWS, ids=[r[0] for r in ROWS])
def test_issue_table_row_is_refused_by_name_and_its_fix_streams_exactly(row, build, error, fixed):
    model = build()
    for mode in BOTH:
        with pytest.raises(NotStreamableError, match=error):
            to_streaming(model, mode, batch_size=2)
    errors = verify_streaming(fixed(), X, frames_per_step=(1, 2), compiled=(True,))
    assert max(errors.values()) <= 1e-5, errors


def _look_ahead_then_gru(pad: str, return_sequences: bool):
    inputs = keras.Input((8, 4), name="x")
    y = Stream(L.Conv1D(4, 5), pad_time_dim=pad, name="ahead")(inputs)
    return keras.Model(inputs, GRU(3, return_sequences=return_sequences, name="gru")(y))


@pytest.mark.parametrize("return_sequences", [True, False])
def test_issue_table_row_5_look_ahead_before_a_recurrence(return_sequences):
    """Stream(Conv1D(k=5), 'same') -> GRU: was 0.29 (0.49 at a final state) off the model, silently."""
    model = _look_ahead_then_gru("same", return_sequences)
    for mode in BOTH:
        with pytest.raises(NotStreamableError, match=r"'gru' \(GRU\) carries state, and its input lags the "
                                                     r"whole-sequence model by 2 frames \(look-ahead of 'ahead'\).*"
                                                     r"pad_time_dim='causal'"):
            to_streaming(model, mode, batch_size=2)
    errors = verify_streaming(_look_ahead_then_gru("causal", return_sequences), X, frames_per_step=(1, 4),
                              compiled=(True,))
    assert max(errors.values()) <= 1e-5, errors


def test_every_refused_layer_is_named_at_once():
    inputs = keras.Input((8, 4), name="x")
    y = L.Softmax(axis=-2, name="sm")(inputs)
    y = L.Conv1D(4, 3, name="plain_conv")(y)  # made streamable (a 'valid' Stream): not refused
    y = L.Conv1D(4, 4, padding="same", name="even_conv")(y)  # refused by make_streamable, with its reason
    y = L.LayerNormalization(axis=[-2], name="ln")(y)
    model = keras.Model(inputs, L.Lambda(lambda t: t * 2.0, name="twice")(y))
    with pytest.raises(NotStreamableError) as caught:
        to_streaming(model)
    message = str(caught.value)
    assert "4 layers are refused" in message, message
    for name in ("'sm' (Softmax)", "'even_conv' (Conv1D) has padding='same' with an even effective time kernel",
                 "'ln' (LayerNormalization)", "'twice' (Lambda)"):
        assert name in message, (name, message)
    assert "plain_conv" not in message


@pytest.mark.parametrize("make, error", [
    (lambda: L.Bidirectional(L.GRU(2, return_sequences=True), name="bi"),
     r"'bi' \(Bidirectional\) runs a recurrence backwards"),
    (lambda: L.Lambda(lambda t: keras.ops.cumsum(t, axis=1), name="lam"),
     r"'lam' \(Lambda\) is Python code the converter cannot inspect"),
    (lambda: L.Masking(name="mask"), r"'mask' \(Masking\) produces a time mask"),
    (lambda: TensorRegression([2, 2], name="reg"), r"'reg' \(TensorRegression\) contracts every non-batch axis"),
    (lambda: L.Permute((2, 1), name="perm"), r"'perm' \(Permute\) moves the time axis"),
    (lambda: L.PReLU(name="prelu"), r"'prelu' \(PReLU\) has one alpha per time step.*shared_axes=\[1\]"),
])
def test_time_mixing_layers_are_refused_by_name(make, error):
    inputs = keras.Input((8, 4), name="x")
    model = keras.Model(inputs, make()(inputs))
    with pytest.raises(NotStreamableError, match=error):
        to_streaming(model, Mode.STREAM_EXTERNAL_STATE)


def test_axis_normalization_against_the_rank():
    assert normalize_axes(-2, 3) == [1] and normalize_axes(-3, 4) == [1] and normalize_axes(-2, 4) == [2]
    assert normalize_axes([1, -1], 3) == [1, 2] and normalize_axes(None, 4) == [1, 2, 3]


def test_table_kinds():
    assert time_axis_kind(FactorizedDense(4, factorization="tt", rank=2)) == TimeAxis.FRAME_LOCAL
    assert time_axis_kind(GRU(2)) == TimeAxis.STATEFUL
    assert time_axis_kind(L.Dropout(0.1)) == TimeAxis.TRAINING_ONLY
    assert time_axis_kind(L.Conv1D(2, 3)) == TimeAxis.REFUSED
    assert time_axis_kind(L.Layer()) == TimeAxis.REFUSED
    assert time_axis_kind(L.Layer(), extra_frame_local=(L.Layer,)) == TimeAxis.FRAME_LOCAL


# ----- EinsumDense equations against numpy -------------------------------------------------------------------------
def _frame_local_by_numpy(equation: str, rank: int) -> bool:
    """Streams iff time stays on output axis 1, perturbing input frame j moves only output frame j, and the map is
    the same at every position (shifting the input in time shifts the output: no weight tied to a position)."""
    term, kernel_term = equation.split("->")[0].split(",")
    rng = np.random.default_rng(0)
    x_shape = (2, 5, 3, 4)[:rank]
    sizes = {}
    for label, size in zip(term.replace("...", "E" * (rank - len(term.replace("...", "")))), x_shape):
        sizes[label] = size
    kernel = rng.normal(size=[sizes.get(c, 3) for c in kernel_term])
    x = rng.normal(size=x_shape)
    y = np.einsum(equation, x, kernel)
    if y.ndim < 2 or y.shape[1] != x.shape[1]:
        return False
    if not np.allclose(np.einsum(equation, np.roll(x, 1, axis=1), kernel), np.roll(y, 1, axis=1)):
        return False
    for j in range(x.shape[1]):
        bumped = x.copy()
        bumped[:, j] += 1.0
        moved = np.abs(np.einsum(equation, bumped, kernel) - y).reshape(y.shape[0], y.shape[1], -1).max(axis=(0, 2))
        if any(moved[k] > 1e-9 for k in range(y.shape[1]) if k != j) or moved[j] <= 1e-9:
            return False
    return True


EQUATIONS = [("btc,cd->btd", 3), ("...c,cd->...d", 3), ("...c,cd->...d", 4), ("btfc,cd->btfd", 4),
             ("btfc,fcd->btd", 4), ("bftc,cd->bftd", 4), ("btc,cde->btde", 3), ("btc,cd->bd", 3),
             ("btc,cd->bcd", 3), ("btc,tcd->btd", 3), ("btc,cd->bdt", 3), ("btfc,cf->btc", 4),
             ("btfc,ct->btf", 4), ("abc,cd->abd", 3)]


@pytest.mark.parametrize("equation, rank", EQUATIONS, ids=[f"{e}-rank{r}" for e, r in EQUATIONS])
def test_einsum_equations_agree_with_numpy(equation, rank):
    assert (einsum_refusal(equation, rank) is None) == _frame_local_by_numpy(equation, rank)


# ----- look-ahead and strides ---------------------------------------------------------------------------------------
def _look_ahead_then_pool(kernel: int):
    inputs = keras.Input((8, 4), name="x")
    y = Stream(L.DepthwiseConv1D(kernel), pad_time_dim="same", name="ahead")(inputs)
    return keras.Model(inputs, Stream(L.MaxPooling1D(2, 2), name="pool")(y))


def test_look_ahead_before_a_strided_layer_streams_when_it_is_whole_output_frames():
    """Look-ahead of 2 frames before a stride-2, stateless pool: one output frame late, exact."""
    model = _look_ahead_then_pool(5)
    assert to_streaming(model, batch_size=2, frames_per_step=2).output_delays == {"pool": 2}
    errors = verify_streaming(model, X, frames_per_step=(2, 4), compiled=(True,))
    assert max(errors.values()) <= 1e-5, errors
    with pytest.raises(NotStreamableError, match=r"'pool' \(Stream\) has time stride 2, and its input lags the "
                                                 r"whole-sequence model by 1 frames .*not a multiple of its 2"):
        to_streaming(_look_ahead_then_pool(3), frames_per_step=2)


def test_identity_model_streams_its_input():
    inputs = keras.Input((8, 4), name="x")
    model = keras.Model(inputs, inputs)
    for mode in BOTH:
        runner = to_streaming(model, mode, batch_size=2)
        assert runner.state_names == [] and runner.input_names == ["x"]
    assert max(verify_streaming(model, X, compiled=(False,), check_reset=False).values()) == 0.0


def test_frame_local_einsum_with_time_spelled_exports_exactly():
    model = ROWS[3][3]()
    for mode in BOTH:
        assert verify_tflite_streaming(model, X[:1], mode) <= 1e-4


def test_semantics_table_covers_all_combinations_of_negative_axes():
    """Each axis spelling of a rank-3 or rank-4 input that includes time is refused; the others stream."""
    for rank, axis in itertools.product((3, 4), range(-4, 4)):
        if not -rank <= axis < rank or axis % rank == 0:
            continue
        shape = (8, 4) if rank == 3 else (8, 3, 2)
        inputs = keras.Input(shape, name="x")
        model = keras.Model(inputs, L.Softmax(axis=axis, name="sm")(inputs))
        if axis % rank == 1:
            with pytest.raises(NotStreamableError, match=r"'sm' \(Softmax\) normalizes over time"):
                to_streaming(model)
        else:
            x = np.random.default_rng(1).normal(size=(2, *shape)).astype("float32")
            assert max(verify_streaming(model, x, modes=(Mode.STREAM_INTERNAL_STATE,), compiled=(False,),
                                        check_reset=False).values()) <= 1e-5


def test_einsum_with_an_ellipsis_on_rank_4_is_refused_by_name():
    """Found by the fuzzer: Keras declares (None, 5, 3, 2) for '...c,cd->...d' on (None, 3, 5, 2) and computes
    (batch, 3, 5, 2); the rebuilt graph crashed (StagingError, a conv 'output size would be zero')."""
    inputs = keras.Input((3, 5, 2), name="x")
    model = keras.Model(inputs, L.EinsumDense("...c,cd->...d", output_shape=(2,), name="ein")(inputs))
    with pytest.raises(NotStreamableError, match=r"'ein' \(EinsumDense\) declares output shape \(5, 3, 2\) but "
                                                 r"computes \(3, 5, 2\).*'btfc,cd->btfd'"):
        to_streaming(model, batch_size=2)
    spelled = keras.Model(inputs, L.EinsumDense("btfc,cd->btfd", output_shape=(None, 5, 2), name="ein")(inputs))
    x = np.random.default_rng(2).normal(size=(2, 3, 5, 2)).astype("float32")
    assert max(verify_streaming(spelled, x, compiled=(False,), check_reset=False).values()) <= 1e-5
