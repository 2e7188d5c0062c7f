"""How each layer type treats the time axis (axis 1): the one table `to_streaming` decides with.

Every layer a streaming model may contain falls in one of four kinds (`TimeAxis`):

    FRAME_LOCAL     acts on each frame on its own (Dense, activations, normalization over features...): streams as
                    it is. Some are frame-local only for some arguments: their axis arguments are normalized
                    against the input rank first (`axis=-2` of a rank-3 input IS the time axis), EinsumDense
                    equations are parsed, Reshape/Permute are checked for moving time.
    STATEFUL        a `StreamingLayer` (Stream, GRU, LSTM, Delay, DeltaActivation, yours): streams with its state.
    TRAINING_ONLY   acts only in training (Dropout, noise): removed from inference and streaming models.
    REFUSED         mixes time with no streaming form (a bare Conv1D, a Keras LSTM, Bidirectional, Lambda, masking).

`refusal(layer, input_shapes, output_shape)` returns None for a layer that streams, or a sentence naming why it
cannot and what to do instead. The converter collects those sentences over the whole graph and raises one
`NotStreamableError` listing every offending layer. Layers outside the table are refused unless the caller vouches
for them with `extra_frame_local=(TheirLayer,)`.
"""

from __future__ import annotations

import enum
import math
from typing import Callable

import keras

from tfx_ext.layers.delay import Delay
from tfx_ext.layers.hyper_layers import HyperConv1D, HyperConv2D, HyperDense, HyperDepthwiseConv2D
from tfx_ext.layers.hyper_network import HyperNetwork
from tfx_ext.layers.tensor import FactorizedDense, TensorContraction, TensorRegression
from tfx_ext.streaming.contract import StreamingLayer

L = keras.layers


class TimeAxis(enum.Enum):
    """How a layer treats the time axis (axis 1) of its input."""

    FRAME_LOCAL = "frame_local"
    STATEFUL = "stateful"
    TRAINING_ONLY = "training_only"
    REFUSED = "refused"


# Layers that only act in training: removed from inference and streaming models (their input passes through).
TRAINING_ONLY_LAYERS: tuple[type, ...] = (
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.ActivityRegularization,
)

_STREAM_FIX = ("wrap it in tfx_ext.layers.Stream(...) (convolutions, pooling, Flatten, global pooling), which "
               "streams it with a ring buffer")
_RNN_FIX = "use tfx_ext.layers.GRU / LSTM, which carry their state across steps"


# ----- axis arithmetic -----------------------------------------------------------------------------------------------
def layer_label(layer) -> str:
    """How refusals name a layer: `layer 'name' (Type)` (one spelling for the converter and make_streamable)."""
    return f"layer {layer.name!r} ({type(layer).__name__})"


def normalize_axes(axis, rank: int) -> list[int]:
    """`axis` (an int, a list/tuple of ints, or None for all non-batch axes) as non-negative axes of `rank`."""
    if axis is None:
        return list(range(1, rank))
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return [int(a) % rank if -rank <= int(a) < rank else int(a) for a in axes]


def _axis_words(axis, rank: int) -> str:
    return f"axis={axis!r} of its rank-{rank} input"


def _over_time(layer, what: str, fix: str, rank: int) -> str:
    return f"{what} over time ({_axis_words(layer.axis, rank)} includes the time axis 1), so every frame depends " \
           f"on the others; {fix}"


# ----- per-type checks: each returns None (streams) or why not and the fix -----------------------------------------
def _softmax(layer, ranks, _out):
    if 1 in normalize_axes(layer.axis, ranks[0]):
        return _over_time(layer, "normalizes", "use axis=-1 (over features).", ranks[0])
    return None


def _layer_norm(layer, ranks, _out):
    if 1 in normalize_axes(layer.axis, ranks[0]):
        return _over_time(layer, "normalizes", "normalize over the feature axes only (axis=-1).", ranks[0])
    return None


def _unit_norm(layer, ranks, _out):
    return _layer_norm(layer, ranks, _out)


def _per_feature_axis(layer, ranks, _out):
    """BatchNormalization / Normalization: `axis` names the axes that KEEP their own statistics."""
    if layer.axis is None:  # Normalization(axis=None): one scalar mean and variance
        return None
    if 1 in normalize_axes(layer.axis, ranks[0]):
        return (f"keeps separate statistics per time step ({_axis_words(layer.axis, ranks[0])} is the time axis 1): "
                "a stream has no fixed time position to look them up; use axis=-1 (per feature).")
    return None


def _concatenate(layer, ranks, _out):
    axis = normalize_axes(layer.axis, ranks[0])[0]
    if axis == 1:
        return (f"concatenates along time ({_axis_words(layer.axis, ranks[0])} is the time axis 1); a stream "
                "cannot join sequences end to end. Concatenate along features (axis=-1).")
    if axis == 0:
        return "concatenates along the batch axis (axis=0); concatenate along features (axis=-1)."
    return None


def _prelu(layer, ranks, _out):
    shared = normalize_axes(layer.shared_axes, ranks[0]) if layer.shared_axes is not None else []
    if 1 not in shared:
        return ("has one alpha per time step (shared_axes does not include the time axis 1), so it is tied to "
                "absolute positions in the window; pass shared_axes=[1] (one alpha per feature).")
    return None


def _pool_axes(layer, ranks, _out):  # bare pooling / global pooling / Flatten outside Stream
    return f"mixes frames in time; {_STREAM_FIX}."


def _conv(layer, ranks, _out):
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose)):
        return ("upsamples time with an overlap-add and no state between steps; wrap it in "
                "tfx_ext.layers.ConvTransposeStream(...) (to_streaming does so for plain models).")
    return f"convolves over time with no state between steps; {_STREAM_FIX}."


def _keras_rnn(layer, ranks, _out):
    return f"is a Keras recurrence, which restarts from zero state on every call; {_RNN_FIX}."


def _bidirectional(layer, ranks, _out):
    return ("runs a recurrence backwards from the end of the window, which a stream never has; use a "
            "unidirectional tfx_ext.layers.GRU / LSTM (or a look-ahead Stream(..., pad_time_dim='same') with Delay).")


def _lambda(layer, ranks, _out):
    return ("is Python code the converter cannot inspect (and .keras files cannot restore in safe mode); write "
            "it as a Keras layer, and pass extra_frame_local=(YourLayer,) if it acts on each frame on its own.")


def _masking(layer, ranks, _out):
    return ("produces a time mask; masked frames are skipped over the whole window, which a stream cannot do "
            "frame by frame. Remove the mask (pad with zeros or trim the clips) before converting.")


def _embedding(layer, ranks, _out):
    if getattr(layer, "mask_zero", False):
        return _masking(layer, ranks, _out).replace("produces a time mask", "has mask_zero=True: it masks time")
    return None


def _last_axis(layer, ranks, _out):
    """Dense-like layers act on the last axis: on a rank-2 `(batch, time)` tensor that axis is time."""
    if ranks[0] == 2:
        return ("acts on the last axis, which is time on its rank-2 (batch, time) input, so every output mixes "
                "frames; give frames a feature axis first (Reshape((-1, 1)), or a front end such as "
                "tfx_ext.layers.LogMelFrontend).")
    return None


def _einsum_dense(layer, ranks, _out):
    return einsum_refusal(layer.equation, ranks[0])


def _permute(layer, ranks, _out):
    if tuple(layer.dims)[0] != 1:
        return (f"moves the time axis (dims={tuple(layer.dims)} puts axis {tuple(layer.dims)[0]} first); keep time "
                "first (dims starting with 1).")
    return None


def _time_distributed(layer, ranks, _out):
    return None  # applies its layer to each frame


def _tensor_regression(layer, ranks, _out):
    return ("contracts every non-batch axis, time included, with weights tied to window positions; apply it after "
            "the time axis is gone (after tfx_ext.layers.Stream(Flatten()) or GRU(return_sequences=False)).")


def _tensor_contraction(layer, ranks, _out):
    return ("contracts every non-batch axis, the time axis too (frames -> ranks); apply it after the time axis "
            "is gone or on a frame-local tensor without time.")


def _hyper_conv(layer, ranks, _out):
    if tuple(layer.kernel_size)[0] == 1 and tuple(layer.strides)[0] == 1:
        return None  # a 1-wide kernel in time acts on each frame
    return ("convolves over time with a generated kernel and no state between steps; bake it into a plain Keras "
            "convolution (tfx_ext.transforms.bake) and wrap that in tfx_ext.layers.Stream(...).")


# The table. First isinstance match wins, so subclasses come before their bases. `None` as a check: always streams.
_Check = Callable[..., "str | None"]
TABLE: tuple[tuple[tuple[type, ...], TimeAxis, _Check | None], ...] = (
    ((StreamingLayer,), TimeAxis.STATEFUL, None),
    (TRAINING_ONLY_LAYERS, TimeAxis.TRAINING_ONLY, None),
    ((L.Lambda,), TimeAxis.REFUSED, _lambda),
    ((L.Masking,), TimeAxis.REFUSED, _masking),
    ((L.Bidirectional,), TimeAxis.REFUSED, _bidirectional),
    ((L.RNN, L.GRU, L.LSTM, L.SimpleRNN, L.ConvLSTM1D, L.ConvLSTM2D), TimeAxis.REFUSED, _keras_rnn),
    ((L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv1D, L.DepthwiseConv2D, L.SeparableConv1D, L.SeparableConv2D,
      L.Conv1DTranspose, L.Conv2DTranspose), TimeAxis.REFUSED, _conv),
    ((L.AveragePooling1D, L.AveragePooling2D, L.MaxPooling1D, L.MaxPooling2D, L.GlobalAveragePooling1D,
      L.GlobalAveragePooling2D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.Flatten), TimeAxis.REFUSED,
     _pool_axes),
    ((TensorRegression,), TimeAxis.REFUSED, _tensor_regression),
    ((TensorContraction,), TimeAxis.REFUSED, _tensor_contraction),
    ((HyperConv1D, HyperConv2D, HyperDepthwiseConv2D), TimeAxis.FRAME_LOCAL, _hyper_conv),
    ((FactorizedDense, HyperDense, HyperNetwork, L.Dense), TimeAxis.FRAME_LOCAL, _last_axis),
    ((L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Identity, L.Add, L.Subtract, L.Multiply, L.Average,
      L.Maximum, L.Minimum), TimeAxis.FRAME_LOCAL, None),
    ((L.EinsumDense,), TimeAxis.FRAME_LOCAL, _einsum_dense),
    ((L.PReLU,), TimeAxis.FRAME_LOCAL, _prelu),
    ((L.Softmax,), TimeAxis.FRAME_LOCAL, _softmax),
    ((L.LayerNormalization,), TimeAxis.FRAME_LOCAL, _layer_norm),
    ((L.UnitNormalization,), TimeAxis.FRAME_LOCAL, _unit_norm),
    ((L.BatchNormalization, L.Normalization), TimeAxis.FRAME_LOCAL, _per_feature_axis),
    ((L.Concatenate,), TimeAxis.FRAME_LOCAL, _concatenate),
    ((L.Embedding,), TimeAxis.FRAME_LOCAL, _embedding),
    ((L.Reshape,), TimeAxis.FRAME_LOCAL, None),  # shape-aware: `reshape_refusal`, called by the converter
    ((L.Permute,), TimeAxis.FRAME_LOCAL, _permute),
    ((L.TimeDistributed,), TimeAxis.FRAME_LOCAL, _time_distributed),
)

# Layers whose outputs carry no time axis even when their input has one (a generator's parameters).
TIMELESS_OUTPUT_LAYERS: tuple[type, ...] = (HyperNetwork,)
# Frame-local Keras layers, for callers that used the flat list (the table is the reference).
FRAME_LOCAL_LAYERS: tuple[type, ...] = tuple(
    cls for types, kind, _ in TABLE if kind == TimeAxis.FRAME_LOCAL for cls in types)


def time_axis_kind(layer, extra_frame_local: tuple = ()) -> TimeAxis:
    """The kind of `layer` (an instance) in the table; unknown layers are REFUSED unless in `extra_frame_local`."""
    for types, kind, _ in TABLE:
        if isinstance(layer, types):
            return kind
    return TimeAxis.FRAME_LOCAL if isinstance(layer, tuple(extra_frame_local)) else TimeAxis.REFUSED


def refusal(layer, input_ranks: list[int], output_shape=None, extra_frame_local: tuple = ()) -> str | None:
    """Why `layer` cannot stream on inputs of `input_ranks` whose axis 1 is time (None: it streams).

    `input_ranks` are the ranks of its inputs that carry time (the first one decides axis arguments).
    """
    for types, kind, check in TABLE:
        if isinstance(layer, types):
            return None if check is None else check(layer, input_ranks, output_shape)
    if isinstance(layer, tuple(extra_frame_local)):
        return None
    return ("is not known to act on each frame on its own, so it cannot stream as it is. Wrap time-mixing layers "
            "in tfx_ext.layers.Stream(...) (convolutions, pooling, Flatten, global pooling), use "
            "tfx_ext.layers.GRU/LSTM for recurrences, or pass extra_frame_local=(YourLayer,) if it is frame-local.")


# ----- EinsumDense equations -----------------------------------------------------------------------------------------
def _expand(term: str, rank: int) -> list[str]:
    """An einsum term as one label per axis; the ellipsis becomes '.0', '.1', ... (shared between terms)."""
    if "..." not in term:
        return list(term)
    before, after = term.split("...")
    width = rank - len(before) - len(after)
    return [*before, *[f".{i}" for i in range(max(width, 0))], *after]


def einsum_refusal(equation: str, input_rank: int = 3) -> str | None:
    """Why an EinsumDense `equation` is not per frame, or None when it keeps time on axis 1 frame by frame.

    The input's axis-1 label is time. It must appear in the output at axis 1 and not in the kernel term: the kernel
    then never spans frames and no frame is summed with another.
    """
    equation = equation.replace(" ", "")
    try:
        inputs, output = equation.split("->")
        term, kernel = inputs.split(",")
    except ValueError:
        return f"has an equation {equation!r} that is not of the form 'input,kernel->output'."
    labels = _expand(term, input_rank)
    if len(labels) < 2:
        return None
    time = labels[1]
    out_rank = len(output.replace("...", "")) + (input_rank - len(term.replace("...", "")) if "..." in output else 0)
    out_labels = _expand(output, out_rank)
    kernel_labels = _expand(kernel, len(kernel.replace("...", "")))
    why = None
    if time not in out_labels:
        why = f"sums over time (the time label {time!r} is not in the output {output!r})"
    elif time in kernel_labels:
        why = f"has a kernel over time (the time label {time!r} is in the kernel term {kernel!r})"
    elif out_labels.index(time) != 1 or out_labels[0] != labels[0]:
        why = f"moves the time axis (label {time!r} is not axis 1 of the output {output!r})"
    if why is None:
        return None
    return (f"{why} in {equation!r}, so every output mixes frames; keep the time label in the input and output at "
            "axis 1 and out of the kernel (e.g. 'btc,cd->btd'), or apply it after the time axis is gone.")


def einsum_streamed_output_shape(equation: str, output_shape, frames: int | None = None) -> list | None:
    """`output_shape` of a frame-local EinsumDense with its time entry made `frames` (the frames per step; None:
    any number, which leaves later window cells without a static chunk).

    `output_shape` lists the output axes after the batch (or after the ellipsis); a model built on whole windows
    may spell the time length there (`EinsumDense("btc,cd->btd", output_shape=(49, 8))`), which a stream of
    1-frame chunks contradicts. None when the equation spells no time axis in `output_shape`.
    """
    equation = equation.replace(" ", "")
    term, output = equation.split("->")[0].split(",")[0], equation.split("->")[1]
    if "..." in term[:2] or "..." in output[:2] or len(term) < 2:
        return None  # time sits inside the ellipsis: output_shape does not spell it
    shape = list(output_shape) if isinstance(output_shape, (list, tuple)) else [output_shape]
    after = output.split("...")[-1] if "..." in output else output[1:]
    if term[1] not in after:
        return None
    index = after.index(term[1])
    if index >= len(shape):
        return None
    shape[index] = frames
    return shape


def einsum_shape_refusal(layer, input_shape) -> str | None:
    """Why Keras's declared output shape of an EinsumDense disagrees with what its einsum computes, or None.

    Keras 3 declares a wrong symbolic shape for an ellipsis equation on inputs of rank > 3
    (`"...c,cd->...d"` on `(None, 3, 5, 2)` declares `(None, 5, 3, d)` and computes `(batch, 3, 5, d)`), so a graph
    rebuilt on it is wired on wrong shapes. `input_shape` is the whole-window shape (batch first).
    """
    if input_shape is None or any(d is None for d in input_shape[2:]) or not hasattr(layer, "kernel"):
        return None
    import numpy as np

    concrete = (1, input_shape[1] or 2, *input_shape[2:])
    try:
        computed = np.einsum(layer.equation, np.zeros(concrete), np.zeros(tuple(layer.kernel.shape))).shape
        declared = tuple(layer.compute_output_shape(concrete))
    except ValueError:
        return None
    if len(computed) == len(declared) and all(d is None or d == c for c, d in zip(computed, declared)):
        return None
    return (f"declares output shape {declared[1:]} but computes {tuple(computed[1:])} for equation "
            f"{layer.equation!r} on inputs of shape {tuple(concrete[1:])} (Keras's shape inference of an ellipsis on "
            "inputs of rank > 3), so the graph is wired on wrong shapes; spell every axis in the equation (e.g. "
            "'btfc,cd->btfd').")


# ----- Reshape ------------------------------------------------------------------------------------------------------
def reshape_keeps_time(input_shape, output_shape) -> bool:
    """A Reshape keeps time when axis 1 keeps its length and the other axes keep their number of values."""
    if input_shape is None or output_shape is None or len(input_shape) < 2 or len(output_shape) < 2:
        return False
    rest_in, rest_out = input_shape[2:], output_shape[2:]
    if None in rest_in or None in rest_out:
        return False
    if input_shape[1] is not None and output_shape[1] is not None and input_shape[1] != output_shape[1]:
        return False
    return math.prod(rest_in) == math.prod(rest_out)


def reshape_refusal(input_shape, output_shape) -> str | None:
    """Why a Reshape from `input_shape` to `output_shape` (whole-window shapes) moves time, or None."""
    if reshape_keeps_time(input_shape, output_shape):
        return None
    before = "?" if input_shape is None else tuple(input_shape[1:])
    after = "?" if output_shape is None else tuple(output_shape[1:])
    frames = (f" ({input_shape[1]} -> {output_shape[1]} frames)" if input_shape is not None and output_shape is not
              None and len(output_shape) > 1 else "")
    return (f"changes the time axis{frames}: it maps {before} to {after}, folding frames into other axes; reshape "
            "only the axes after time (use -1 for time), or wrap a Flatten in tfx_ext.layers.Stream(...).")


__all__ = [
    "TimeAxis",
    "TABLE",
    "TRAINING_ONLY_LAYERS",
    "FRAME_LOCAL_LAYERS",
    "TIMELESS_OUTPUT_LAYERS",
    "time_axis_kind",
    "refusal",
    "normalize_axes",
    "einsum_refusal",
    "einsum_streamed_output_shape",
    "einsum_shape_refusal",
    "reshape_keeps_time",
    "reshape_refusal",
]
