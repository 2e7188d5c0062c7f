"""Model fuzzer for `tfx_ext.to_streaming` (issue 17 item 5): random valid Keras models, each streamed or refused.

    python -m bench.fuzz --models 1000 --seed 0        # writes bench/results/fuzz.json
    python -m bench.fuzz --smoke                       # a few models, seconds (what tests/bench runs)
    python -m bench.fuzz --models 200 --tflite_every 10  # float LiteRT of the external-state step on every 10th

`hypothesis` strategies (`descriptions()`) draw small functional models as plain JSON-able descriptions: an input
`(T, F)` or `(T, F, C)` with T in 8-16, then a chain of ops from the streamable vocabulary (`tfx_ext.layers.Stream`
around Conv1D/2D, DepthwiseConv, SeparableConv and pooling with random kernel, stride, dilation, time padding
causal/same and frequency padding; BatchNormalization, LayerNormalization(axis=-1), Dense, activations, Add or
Concatenate(axis=-1) residual branches, `tfx_ext.layers.GRU`/`LSTM`, `DeltaActivation`, `FactorizedDense`,
`HyperDense`, frame-local EinsumDense (its output shape spelling the time length or not), plain Conv1DTranspose/
Conv2DTranspose upsampling time (padding 'same', rewritten as `ConvTransposeStream`), Reshape/
TimeDistributed(Flatten) of the non-time axes), an optional window summary (Stream of global pooling or Flatten, or
a GRU without sequences), and in about a quarter of the models one time-mixing op that must be refused
(Softmax/Concatenate/LayerNormalization over time, EinsumDense summing, moving or weighting time, global pooling
without Stream, Bidirectional, Lambda, a bare Conv1D).

`check(description)` builds the model (`build_model`), gives it random weights (zero-initialized weights such as
biases and batch-norm statistics drawn at random too) and calls `tfx_ext.to_streaming` in both modes. The oracle
is the ORIGINAL model called on the whole window, never a model rebuilt by the code under test. The stream is fed
the window followed by enough zero frames to cover the declared output delay. Outputs with a time axis: streamed
frame `j + delay` must equal window frame `j` for every frame that does not see the end of the window (the last
`delay` window frames saw the look-ahead layer's own zero padding, which no stream reproduces when the look-ahead
sits inside the model). Window summaries: the step that has consumed `T + delay` frames. Outcomes:

    exact     both modes converted and every output within 1e-5 (float LiteRT of the external-state step: 1e-4)
    boundary  a mismatch in a model with DeltaActivation that is exact once every Delta step moves by 0.1%: float
              noise (~1e-7) flipped a value lying on a rounding or gate boundary (counted apart, never as exact)
    refused   both modes raised a named tfx_ext error (`TfxExtError`: NotStreamableError, ExportError, ...)
    mismatch  converted without an error, but the streamed outputs differ (a silent error)
    crash     any other exception (a traceback instead of a named error), or the modes disagree

`expects_refusal(description)` says whether the model holds a time-mixing op; `over_refused` counts models of the
streamable vocabulary only that were refused anyway (a usability gap, not a silent error). `shrink` reduces a
failing description greedily (drop ops, then simplify parameters) while it keeps failing the same way; the shrunk
descriptions go into `bench/results/fuzz.json` and become regression tests in `tests/streaming/test_fuzz.py`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
import traceback
from fractions import Fraction
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

from bench.harness import RESULTS_DIR, Benchmark

FLOAT_ATOL = 1e-5
TFLITE_ATOL = 1e-4
BATCH = 2
OUTCOMES = ("exact", "boundary", "refused", "mismatch", "crash")
# Full-int8 LiteRT on a sample of the exact models (issue 17 item 5): top-1 agreement with the float model on
# separable clips (INT8_CLASSES patterns plus INT8_NOISE noise) must reach INT8_AGREEMENT, or a named refusal.
INT8_AGREEMENT = 0.97
INT8_CLASSES = 4
INT8_NOISE = 0.3
INT8_CALIBRATION_CLIPS = 16
INT8_EVAL_CLIPS = 64
# A frame counts when its float top-1 leads the runner-up by this many int8 output steps (range / 255): closer
# decisions are ties at int8 resolution, which no int8 model can be asked to keep.
INT8_MARGIN_STEPS = 4
INT8_OUTCOMES = ("agree", "disagree", "refused", "no decision", "crash")
# DeltaActivation rounds (quantize) or thresholds (gated): float noise of ~1e-7 between the whole-window and the
# streamed computation before it flips a value lying on a boundary by a whole step. Such a mismatch is checked again
# with every Delta step moved by this factor; exact then, it is a "boundary" flip, not a streaming error.
BOUNDARY_NUDGE = 1.0 + 1e-3
MAX_STRIDE_PRODUCT = 4
# Ops that mix frames in time without a streaming form: a model holding one must be refused by name. (A plain
# GlobalAveragePooling or causal Conv1D is streamable since make_streamable: `gap_plain`/`conv_plain` stream or are
# refused by name, checked against the original model like the rest.)
TIME_MIXING = ("softmax_time", "concat_time", "layernorm_time", "einsum_time", "bidirectional", "lambda")
# Layers whose state (recurrence, previous value, window buffer) must not see a look-ahead layer's warm-up frames.
STATEFUL_AFTER_LOOKAHEAD = ("gru", "lstm", "gru_last", "delta", "gap", "gmp", "flatten", "mha")
# The failure classes issue 17 listed or this fuzzer found (each fixed: streamed exactly or refused by name, with a
# regression test in tests/streaming/test_fuzz.py). A failure holding one is labelled with it, a new one "NEW".
KNOWN_ISSUES = {
    "softmax_time": "Softmax over time (negative axis) is accepted (issue 17 table row 1)",
    "concat_time": "Concatenate along time (negative axis) is accepted (issue 17 table row 2)",
    "layernorm_time": "LayerNormalization over time (negative axis) is accepted (issue 17 table row 3)",
    "einsum_time": "EinsumDense equations are never read (issue 17 table row 4)",
    "lambda": "Lambda is a deserialization traceback, not a named refusal (issue 17 item 2)",
    "bidirectional": "Bidirectional is not a named refusal (issue 17 item 2)",
    "same_before_state": "a look-ahead ('same') Stream before a stateful layer (issue 17 table row 5 / item 3)",
    # found by this fuzzer (regression tests in tests/streaming/test_fuzz.py):
    "same_before_stride": "a look-ahead ('same') Stream before a strided layer: the stream samples the other phase "
                          "(the delay is not a whole number of output frames), accepted without an error",
    "same_before_buffer": "a look-ahead ('same') Stream before another Stream with a buffer: the buffer takes in "
                          "the look-ahead layer's warm-up frames (issue 17 item 3; a Stream buffer is state too)",
    "identity": "a model whose output is its input: the runner takes the input for a state and refuses an array",
}


# ----- generation ----------------------------------------------------------------------------------------------------
def _widths():
    return st.sampled_from([2, 3, 4, 6, 8])


@st.composite
def _conv_op(draw, rank: int, freq: int | None, cell: str):
    """A Stream-wrapped conv or pool; returns (op, time stride, new freq)."""
    kernel = draw(st.integers(1, 4))
    stride = draw(st.sampled_from([1, 1, 2]))
    dilation = 1 if stride > 1 else draw(st.sampled_from([1, 1, 2]))
    pad = "causal" if stride > 1 or cell == "pool" else draw(st.sampled_from(["causal", "causal", "same"]))
    op = {"op": f"{cell}{rank}d", "kernel": kernel, "stride": stride, "dilation": dilation, "pad": pad}
    if cell == "pool":
        op.update(kind=draw(st.sampled_from(["max", "avg"])), dilation=1, kernel=max(kernel, stride) if draw(
            st.booleans()) else kernel)
    if cell in ("conv", "sep"):
        op["filters"] = draw(_widths())
    if cell == "dw":
        op["multiplier"] = draw(st.sampled_from([1, 2]))
    if rank == 2:
        fk = draw(st.integers(1, min(3, freq)))
        fs = draw(st.sampled_from([1, 1, 2])) if freq >= 4 else 1
        fpad = "valid" if cell == "pool" and op["kind"] == "avg" else draw(st.sampled_from(["valid", "same"]))
        if fs > 1 and op["dilation"] > 1:
            fs = 1
        op.update(freq_kernel=fk, freq_stride=fs, freq_pad=fpad)
        if fpad == "same":
            freq = -(-freq // fs)
        else:
            freq = (freq - fk) // fs + 1
    return op, stride, freq


@st.composite
def _frame_op(draw, rank: int, width: int):
    """A frame-local op (keeps rank and time); returns (op, new width)."""
    kind = draw(st.sampled_from(["bn", "dense", "act", "ln", "delta", "factorized", "hyperdense", "einsum", "delay"]
                                if rank == 1 else ["bn", "dense", "act", "ln", "delta", "einsum", "delay"]))
    if kind == "delay":  # kws_streaming's Delay(also_in_non_streaming=True): the trained model holds the delay
        return {"op": "delay", "delay": draw(st.sampled_from([1, 2]))}, width
    if kind == "dense":
        units = draw(_widths())
        return {"op": "dense", "units": units, "activation": draw(st.sampled_from([None, "relu", "tanh"]))}, units
    if kind == "act":
        return {"op": "act", "fn": draw(st.sampled_from(["relu", "tanh", "sigmoid", "softmax"]))}, width
    if kind == "delta":
        return {"op": "delta", "method": draw(st.sampled_from(["quantize", "gated"])),
                "threshold": draw(st.sampled_from([0.05, 0.1, 0.3]))}, width
    if kind == "factorized":
        units = draw(st.sampled_from([4, 6, 8]))
        if width not in (4, 6, 8):
            return {"op": "dense", "units": units, "activation": None}, units
        return {"op": "factorized", "units": units, "factorization": draw(st.sampled_from(["cp", "tucker", "tt"])),
                "rank": 2}, units
    if kind == "hyperdense":
        units = draw(_widths())
        return {"op": "hyperdense", "units": units}, units
    if kind == "einsum":  # frame-local equations; the output shape may spell the window's time length
        units = draw(_widths())
        # "...c,cd->...d" only on rank-3 inputs: on rank 4 Keras declares a wrong output shape (refused by name)
        equation = draw(st.sampled_from(["btc,cd->btd", "...c,cd->...d"] if rank == 1 else ["btfc,cd->btfd"]))
        return {"op": "einsum", "equation": equation, "units": units, "spell_time": draw(st.booleans())}, units
    return {"op": kind}, width


@st.composite
def _time_mixing_op(draw, rank: int):
    kinds = ["softmax_time", "concat_time", "layernorm_time", "gap_plain", "lambda"]
    if rank == 1:
        kinds += ["einsum_time", "bidirectional", "conv_plain"]
    kind = draw(st.sampled_from(kinds))
    op = {"op": kind}
    ndim = rank + 2
    if kind in ("softmax_time", "concat_time"):
        op["axis"] = draw(st.sampled_from([1, 1 - ndim]))
    elif kind == "layernorm_time":
        op["axis"] = draw(st.sampled_from([[1], [1 - ndim], [1, -1]]))
    elif kind == "einsum_time":
        op["equation"] = draw(st.sampled_from(["btc,cd->bd", "btc,cd->bcd", "btc,tcd->btd", "btc,cd->bdt"]))
        op["units"] = 3
    elif kind in ("bidirectional", "conv_plain"):
        op["units"] = draw(_widths())
    return op


@st.composite
def descriptions(draw, max_ops: int = 5, time_mixing: float = 0.25):
    """A strategy of model descriptions: `{"input": [T, F] or [T, F, C], "ops": [...], "seed": int}`.

    `time_mixing` is the chance that the chain holds one op that must be refused (see `TIME_MIXING`).
    """
    rank = draw(st.sampled_from([1, 1, 2]))
    freq = draw(st.sampled_from([4, 5, 6])) if rank == 2 else None
    width = draw(st.sampled_from([2, 3, 4])) if rank == 2 else draw(st.sampled_from([3, 4, 6]))
    features = [freq, width] if rank == 2 else [width]
    ops: list[dict] = []
    stride_product = 1
    has_time = True
    n_ops = draw(st.integers(1, max_ops))
    mixing_at = draw(st.integers(0, n_ops - 1)) if draw(st.floats(0, 1)) < time_mixing else None
    for index in range(n_ops):
        if index == mixing_at:
            op = draw(_time_mixing_op(rank))
            ops.append(op)
            if op["op"] in ("einsum_time", "gap_plain"):
                has_time = False
                break
            if op["op"] in ("bidirectional", "conv_plain"):
                width = 2 * op["units"] if op["op"] == "bidirectional" else op["units"]
            continue
        choices = ["conv", "dw", "sep", "pool", "frame", "frame", "residual", "up"]
        choices += ["gru", "lstm", "svdf", "attention", "mha", "to2d"] if rank == 1 else ["to1d"]
        kind = draw(st.sampled_from(choices))
        if kind in ("conv", "dw", "sep", "pool"):
            op, stride, new_freq = draw(_conv_op(rank, freq, kind))
            if stride_product * stride > MAX_STRIDE_PRODUCT:
                op["stride"] = stride = 1
            if rank == 2 and new_freq < 1:
                continue
            ops.append(op)
            stride_product *= stride
            freq = new_freq
            if kind in ("conv", "sep"):
                width = op["filters"]
            elif kind == "dw":
                width *= op["multiplier"]
        elif kind == "frame":
            op, width = draw(_frame_op(rank, width))
            ops.append(op)
        elif kind == "up":  # a plain Conv1DTranspose / Conv2DTranspose (kernel (k, 1)) upsampling time, 'same'
            width = draw(_widths())
            ops.append({"op": f"up{rank}d", "filters": width, "kernel": draw(st.integers(1, 5)),
                        "stride": draw(st.sampled_from([1, 2, 3]))})
        elif kind in ("gru", "lstm"):
            units = draw(_widths())
            op = {"op": kind, "units": units}
            if kind == "lstm" and draw(st.booleans()):  # kws_streaming's LSTM options: peepholes, a projection
                op.update(peepholes=draw(st.booleans()), proj=draw(st.sampled_from([None, 2, 3])))
            ops.append(op)
            width = op.get("proj") or units
        elif kind == "mha":  # a plain causal keras.layers.MultiHeadAttention (rewritten as the windowed form)
            ops.append({"op": "mha", "heads": draw(st.sampled_from([1, 2]))})
        elif kind == "attention":
            ops.append({"op": "attention", "heads": draw(st.sampled_from([1, 2])),
                        "window": draw(st.sampled_from([1, 3, 6]))})
        elif kind == "svdf":
            units = draw(_widths())
            ops.append({"op": "svdf", "units": units, "memory": draw(st.sampled_from([1, 3, 5]))})
            width = units
        elif kind == "to2d":
            if width % 2:
                continue
            ops.append({"op": "to2d", "channels": 2})
            rank, freq, width = 2, width // 2, 2
        elif kind == "to1d":
            ops.append({"op": "to1d", "how": draw(st.sampled_from(["reshape", "flatten"]))})
            rank, width, freq = 1, freq * width, None
        else:
            op, width = draw(_residual_op(rank, freq, width))
            ops.append(op)
    if has_time and draw(st.integers(0, 3)) == 0:  # a window summary: the output has no time axis
        head = draw(st.sampled_from(["gap", "gmp", "flatten"] + (["gru_last"] if rank == 1 else [])))
        ops.append({"op": head, "units": draw(_widths())} if head == "gru_last" else {"op": head})
        if draw(st.booleans()):
            ops.append({"op": "dense", "units": draw(_widths()), "activation": None})
    low = max(1, math.ceil(8 / stride_product))
    frames = stride_product * draw(st.integers(low, max(low, 16 // stride_product)))
    return {"input": [frames, *features], "ops": ops, "seed": draw(st.integers(0, 2**16))}


@st.composite
def _residual_op(draw, rank: int, freq: int | None, width: int):
    """A branch that keeps time and frequency, merged by Add (projected back to the width) or Concatenate(-1)."""
    branch = []
    branch_width = width
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            op, branch_width = draw(_frame_op(rank, branch_width))
        else:
            cell = draw(st.sampled_from(["conv", "dw", "sep"]))
            op, _, _ = draw(_conv_op(rank, freq, cell))
            op["stride"] = 1
            if rank == 2:
                op.update(freq_pad="same", freq_stride=1)
            if cell in ("conv", "sep"):
                branch_width = op["filters"]
            else:
                branch_width *= op["multiplier"]
        branch.append(op)
    merge = draw(st.sampled_from(["add", "concat"]))
    return {"op": "residual", "merge": merge, "branch": branch}, width + branch_width if merge == "concat" else width


def draw_descriptions(n: int, seed: int, **strategy_kwargs) -> list[dict]:
    """`n` distinct descriptions drawn by hypothesis, the same ones for the same seed (no example database)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    drawn: dict[str, dict] = {}

    @hypothesis_seed(seed)
    @settings(max_examples=4 * n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(descriptions(**strategy_kwargs))
    def collect(description):
        if len(drawn) < n:
            drawn.setdefault(json.dumps(description, sort_keys=True), description)

    collect()
    return list(drawn.values())


# ----- building ------------------------------------------------------------------------------------------------------
def _stream_cell(op: dict, keras):
    """The Keras cell a Stream op wraps."""
    kind, rank = op["op"][:-2], int(op["op"][-2])
    layers = keras.layers
    if rank == 1:
        size, strides, dilation, extra = op["kernel"], op["stride"], op["dilation"], {}
    else:
        size, strides = (op["kernel"], op["freq_kernel"]), (op["stride"], op["freq_stride"])
        dilation, extra = (op["dilation"], 1), {"padding": op["freq_pad"]}
    if kind == "conv":
        cls = layers.Conv1D if rank == 1 else layers.Conv2D
        return cls(op["filters"], size, strides=strides, dilation_rate=dilation, **extra)
    if kind == "dw":
        cls = layers.DepthwiseConv1D if rank == 1 else layers.DepthwiseConv2D
        return cls(size, strides=strides, dilation_rate=dilation, depth_multiplier=op["multiplier"], **extra)
    if kind == "sep":
        cls = layers.SeparableConv1D if rank == 1 else layers.SeparableConv2D
        return cls(op["filters"], size, strides=strides, dilation_rate=dilation, **extra)
    pools = {("max", 1): layers.MaxPooling1D, ("avg", 1): layers.AveragePooling1D,
             ("max", 2): layers.MaxPooling2D, ("avg", 2): layers.AveragePooling2D}
    return pools[(op["kind"], rank)](pool_size=size, strides=strides, **extra)


def _apply(op: dict, x, name: str):
    """Applies one described op to the Keras tensor `x`."""
    import keras

    from tfx_ext import layers as tl

    kind = op["op"]
    spatial = len(x.shape) - 2
    if kind[-2:] in ("1d", "2d") and kind[:-2] in ("conv", "dw", "sep", "pool"):
        return tl.Stream(_stream_cell(op, keras), pad_time_dim=op["pad"], name=name)(x)
    if kind in ("up1d", "up2d"):  # plain Keras: to_streaming rewrites it (tfx_ext.layers.ConvTransposeStream)
        if kind == "up1d":
            return keras.layers.Conv1DTranspose(op["filters"], op["kernel"], strides=op["stride"], padding="same",
                                                name=name)(x)
        return keras.layers.Conv2DTranspose(op["filters"], (op["kernel"], 1), strides=(op["stride"], 1),
                                            padding="same", name=name)(x)
    if kind == "residual":
        y = x
        for j, branch_op in enumerate(op["branch"]):
            y = _apply(branch_op, y, f"{name}_b{j}")
        if op["merge"] == "add":
            if y.shape[-1] != x.shape[-1]:
                y = keras.layers.Dense(x.shape[-1], name=f"{name}_proj")(y)
            return keras.layers.Add(name=name)([x, y])
        return keras.layers.Concatenate(axis=-1, name=name)([x, y])
    simple = {
        "bn": lambda: keras.layers.BatchNormalization(name=name),
        "ln": lambda: keras.layers.LayerNormalization(axis=-1, name=name),
        "act": lambda: keras.layers.Activation(op.get("fn"), name=name),
        "dense": lambda: keras.layers.Dense(op.get("units"), activation=op.get("activation"), name=name),
        "delay": lambda: tl.Delay(op.get("delay", 1), also_in_non_streaming=True, name=name),
        "delta": lambda: tl.DeltaActivation(op.get("threshold", 0.1), method=op.get("method", "quantize"), name=name),
        "factorized": lambda: tl.FactorizedDense(op.get("units"), factorization=op.get("factorization", "tucker"),
                                                 rank=op.get("rank", 2), name=name),
        "hyperdense": lambda: tl.HyperDense(op.get("units"), hypernetwork={"embedding_dim": 4, "chunk_shape": [4, 4]},
                                            name=name),
        "gru": lambda: tl.GRU(op.get("units"), name=name),
        "attention": lambda: tl.StreamingMultiHeadAttention(num_heads=op.get("heads", 1), key_dim=4,
                                                            window=op.get("window", 3), name=name),
        "svdf": lambda: tl.SVDF(memory_size=op.get("memory", 3), units1=op.get("units"), name=name),
        "lstm": lambda: tl.LSTM(op.get("units"), use_peepholes=op.get("peepholes", False), num_proj=op.get("proj"),
                                name=name),
        "mha": lambda: _CausalSelfAttention(op.get("heads", 1), name),
        "gru_last": lambda: tl.GRU(op.get("units"), return_sequences=False, name=name),
        "gap": lambda: tl.Stream((keras.layers.GlobalAveragePooling1D if spatial == 1
                                  else keras.layers.GlobalAveragePooling2D)(), name=name),
        "gmp": lambda: tl.Stream((keras.layers.GlobalMaxPooling1D if spatial == 1
                                  else keras.layers.GlobalMaxPooling2D)(), name=name),
        "flatten": lambda: tl.Stream(keras.layers.Flatten(), name=name),
        "to2d": lambda: keras.layers.Reshape((x.shape[1], x.shape[-1] // op.get("channels", 2),
                                              op.get("channels", 2)), name=name),
        "to1d": lambda: (keras.layers.Reshape((x.shape[1], x.shape[2] * x.shape[3]), name=name)
                         if op.get("how") == "reshape" else keras.layers.TimeDistributed(keras.layers.Flatten(),
                                                                                        name=name)),
        # time-mixing ops: a model holding one must be refused by name
        "softmax_time": lambda: keras.layers.Softmax(axis=op.get("axis"), name=name),
        "layernorm_time": lambda: keras.layers.LayerNormalization(axis=op.get("axis"), center=False, scale=False,
                                                                  name=name),
        "einsum": lambda: keras.layers.EinsumDense(
            op.get("equation"), output_shape=_einsum_output_shape(op, x.shape), bias_axes="d", name=name),
        "einsum_time": lambda: keras.layers.EinsumDense(
            op.get("equation"), output_shape=_einsum_output_shape(op, x.shape), name=name),
        "gap_plain": lambda: (keras.layers.GlobalAveragePooling1D if spatial == 1
                              else keras.layers.GlobalAveragePooling2D)(name=name),
        "bidirectional": lambda: keras.layers.Bidirectional(keras.layers.GRU(op.get("units"), return_sequences=True),
                                                            name=name),
        "lambda": lambda: keras.layers.Lambda(lambda t: keras.ops.cumsum(t, axis=1), name=name),
        "conv_plain": lambda: keras.layers.Conv1D(op.get("units"), 3, padding="causal", name=name),
    }
    if kind == "concat_time":
        return keras.layers.Concatenate(axis=op["axis"], name=name)(
            [x, keras.layers.Activation("tanh", name=f"{name}_branch")(x)])
    if kind not in simple:
        raise ValueError(f"unknown op {kind!r} in a fuzz description")
    return simple[kind]()(x)


class _CausalSelfAttention:
    """`keras.layers.MultiHeadAttention` called as causal self-attention (`layer(x, x, use_causal_mask=True)`)."""

    def __init__(self, heads: int, name: str):
        import keras

        self.layer = keras.layers.MultiHeadAttention(heads, 4, name=name)

    def __call__(self, x):
        return self.layer(x, x, use_causal_mask=True)


def _einsum_output_shape(op: dict, shape) -> tuple:
    """EinsumDense `output_shape` (axes after the batch or the ellipsis) for the fuzz equations."""
    equation, units = op["equation"], op["units"]
    if equation.startswith("..."):
        return (units,)
    frames = shape[1] if op.get("spell_time", True) else None
    return {"btc,cd->btd": (frames, units), "btfc,cd->btfd": (frames, shape[2], units), "btc,cd->bd": (units,),
            "btc,cd->bcd": (shape[-1], units), "btc,tcd->btd": (shape[1], units),
            "btc,cd->bdt": (units, shape[1])}[equation]


def build_model(description: dict):
    """The functional Keras model a description stands for, with random weights (seeded by the description)."""
    import keras

    inputs = keras.Input(shape=tuple(description["input"]), name="x")
    x = inputs
    for i, op in enumerate(description["ops"]):
        x = _apply(op, x, f"op{i}_{op['op']}")
    model = keras.Model(inputs, x, name="fuzz")
    rng = np.random.default_rng(description["seed"])
    for variable in model.weights:
        value = np.asarray(variable)
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, value.shape).astype(value.dtype))
        elif value.size and not np.any(value) and np.issubdtype(value.dtype, np.floating):
            variable.assign(rng.normal(0.0, 0.3, value.shape).astype(value.dtype))  # biases, BN means and betas
    return model


def model_input(description: dict) -> np.ndarray:
    rng = np.random.default_rng(description["seed"] + 1)
    return rng.normal(size=(BATCH, *description["input"])).astype("float32")


def _flat_ops(ops: list[dict]):
    for op in ops:
        yield op
        yield from _flat_ops(op.get("branch", []))


def expects_refusal(description: dict) -> bool:
    """True when the model holds an op that mixes time without a streaming form (it must be refused)."""
    return any(op["op"] in TIME_MIXING for op in _flat_ops(description["ops"]))


def known_issue(description: dict) -> str | None:
    """The issue-17 bug a failing model runs into, if it holds one of the constructs the issue lists."""
    if not description["ops"]:
        return KNOWN_ISSUES["identity"]
    for op in _flat_ops(description["ops"]):  # a known bad layer first: it decides the failure wherever it sits
        if op["op"] in KNOWN_ISSUES:
            return KNOWN_ISSUES[op["op"]]
    seen_same = False
    for op in _flat_ops(description["ops"]):
        if seen_same and op.get("stride", 1) > 1:
            return KNOWN_ISSUES["same_before_stride"]
        if seen_same and op["op"] in STATEFUL_AFTER_LOOKAHEAD:
            return KNOWN_ISSUES["same_before_state"]
        if seen_same and op["op"][:-2] in ("conv", "dw", "sep", "pool") and (op["kernel"] - 1) * op["dilation"] > 0:
            return KNOWN_ISSUES["same_before_buffer"]
        if op.get("pad") == "same" and (op.get("kernel", 1) - 1) * op.get("dilation", 1) > 1:
            seen_same = True  # look-ahead (e - 1) // 2 >= 1 frame
    return None


def describe(description: dict) -> str:
    """A one-line summary: input shape and the op chain."""
    def one(op):
        keys = {k: v for k, v in op.items() if k not in ("op", "branch")}
        inner = ",".join(f"{k}={v}" for k, v in keys.items())
        if op["op"] == "residual":
            inner += ";" + " > ".join(one(b) for b in op["branch"])
        return f"{op['op']}({inner})"
    return f"x{tuple(description['input'])} > " + " > ".join(one(op) for op in description["ops"])


# ----- checking ------------------------------------------------------------------------------------------------------
def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    if len(text) > 1 and text[0].endswith(":"):  # a list of refused layers: keep the first one
        text = [f"{text[0]} {text[1].strip()}"]
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _stream(step: Callable, x: np.ndarray, fps: int, has_time: bool) -> np.ndarray:
    """Feeds `x` chunk by chunk; concatenates time outputs, stacks window summaries (one entry per step)."""
    outs = [np.asarray(step(x[:, i:i + fps])) for i in range(0, x.shape[1], fps)]
    return np.concatenate(outs, axis=1) if has_time else np.stack(outs, axis=1)


def _aligned(streamed: np.ndarray, expected: np.ndarray, delay: int, frames: int, fps: int):
    """The streamed outputs and the whole-window ones they must equal, after the declared delay.

    Returns `(got, expected, "")`, or `(None, None, why)` when they cannot be aligned."""
    if expected.ndim >= 3:  # a time axis: output frame j of the window is streamed frame j + delay / rate
        rate = Fraction(frames, expected.shape[1])  # a fraction after upsampling (a transposed conv)
        if (delay / rate).denominator != 1:
            return None, None, f"delay {delay} is not a whole number of output frames ({rate} input frames each)"
        shift = int(delay / rate)
        kept = expected.shape[1] - shift  # the last `shift` frames saw the look-ahead's zero padding inside the model
        if kept < 1:
            return None, None, f"delay of {shift} output frames leaves none of the {expected.shape[1]} to compare"
        got, expected = streamed[:, shift:shift + kept], expected[:, :kept]
    else:  # a window summary: the step that has consumed the window and the delay (zero frames appended)
        consumed = frames + delay
        if consumed % fps:
            return None, None, f"window + delay ({consumed} frames) is not a whole number of steps of {fps}"
        got = streamed[:, consumed // fps - 1] if consumed // fps <= streamed.shape[1] else None
    if got is None or got.shape != expected.shape:
        return None, None, f"streamed shape {None if got is None else got.shape} != whole-window {expected.shape}"
    return got, expected, ""


def _aligned_error(streamed: np.ndarray, expected: np.ndarray, delay: int, frames: int, fps: int) -> tuple[float, str]:
    """Max abs error of the stream against the whole-window output, after the declared delay (inf: cannot align)."""
    got, expected, why = _aligned(streamed, expected, delay, frames, fps)
    if why:
        return math.inf, why
    return float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)))) if got.size else 0.0, ""


def _check_mode(model, mode, x: np.ndarray, expected: np.ndarray, tflite: bool) -> dict[str, Any]:
    from tfx_ext.errors import TfxExtError
    from tfx_ext.streaming.convert import min_frames_per_step, to_streaming

    try:
        fps = min_frames_per_step(model)
        runner = to_streaming(model, mode, batch_size=x.shape[0], frames_per_step=fps)
    except TfxExtError as error:
        return {"outcome": "refused", "error": _first_line(error)}
    except Exception as error:
        return {"outcome": "crash", "error": _first_line(error), "traceback": traceback.format_exc()[-2000:]}
    try:
        delay = max(runner.output_delays.values(), default=0)
        pad = -(-delay // fps) * fps
        fed = np.concatenate([x, np.zeros((x.shape[0], pad, *x.shape[2:]), x.dtype)], axis=1)
        has_time = expected.ndim >= 3
        result: dict[str, Any] = {"fps": fps, "delay": delay}
        err, why = _aligned_error(_stream(runner, fed, fps, has_time), expected, delay, x.shape[1], fps)
        result["max_err"] = err
        if tflite:
            result["tflite_max_err"], tflite_why = _tflite_error(runner, fed, expected, delay, x.shape[1], fps)
            why = why or tflite_why
        bad = err > FLOAT_ATOL or result.get("tflite_max_err", 0.0) > TFLITE_ATOL
        result["outcome"] = "mismatch" if bad else "exact"
        if why:
            result["error"] = why
        return result
    except Exception as error:  # converted, then failed to run: a crash (named errors here are crashes too)
        return {"outcome": "crash", "error": _first_line(error), "traceback": traceback.format_exc()[-2000:]}


def _tflite_error(runner, fed: np.ndarray, expected: np.ndarray, delay: int, frames: int, fps: int):
    """Float LiteRT of the external-state step, states fed back by name, against the whole-window output."""
    from tfx_ext.lite.convert import to_tflite
    from tfx_ext.lite.runtime import TFLiteModel

    lite = TFLiteModel(to_tflite(runner.model, batch_size=fed.shape[0]))
    data = runner.input_names[0]
    output = runner.output_names[0]
    states = {n: np.zeros(lite.input_details[n]["shape"], lite.input_details[n]["dtype"]) for n in runner.state_names}

    def step(chunk):
        nonlocal states
        got = lite({data: chunk, **states})
        states = {n: got[n] for n in runner.state_names}
        return got[output]

    err, why = _aligned_error(_stream(step, fed, fps, expected.ndim >= 3), expected, delay, frames, fps)
    return err, why and f"TFLite: {why}"


def separable_clips(description: dict, count: int, draw: int) -> np.ndarray:
    """`count` clips of INT8_CLASSES classes: each class a fixed random pattern over the whole window, each clip its
    class's pattern plus small noise. Inputs that fall into clear groups, as features of different words do, rather
    than noise whose every frame is a coin toss; `draw` 0 calibrates, 1 evaluates (same patterns, new noise)."""
    patterns = np.random.default_rng(description["seed"] + 2).normal(size=(INT8_CLASSES, *description["input"]))
    noise = np.random.default_rng(description["seed"] + 3 + draw).normal(size=(count, *description["input"]))
    return (patterns[np.arange(count) % INT8_CLASSES] + INT8_NOISE * noise).astype("float32")


def check_int8(model, description: dict) -> dict[str, Any]:
    """Full-int8 LiteRT of the external-state step against the ORIGINAL float model on the whole window.

    Calibrated by streaming the float model over separable clips (`streaming_calibration_data`), run in LiteRT with
    its states fed back by name, scored on other clips of the same classes: top-1 agreement over the last axis of
    every aligned output frame. Outcomes: "agree" (>= INT8_AGREEMENT), "disagree", "refused" (a named tfx_ext
    error: an op without an int8 kernel...), "crash" (any other exception), "no decision" (nothing to rank).
    Ops without int8 kernels (DeltaActivation's rounding) may stay float: the hybrid is what users export."""
    from tfx_ext.errors import TfxExtError
    from tfx_ext.lite.convert import to_tflite
    from tfx_ext.lite.int8 import streaming_calibration_data
    from tfx_ext.lite.runtime import TFLiteModel
    from tfx_ext.streaming.contract import Mode
    from tfx_ext.streaming.convert import min_frames_per_step, to_streaming

    try:
        fps = min_frames_per_step(model)
        runner = to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=BATCH, frames_per_step=fps)
        delay = max(runner.output_delays.values(), default=0)
        pad = -(-delay // fps) * fps
        frames = description["input"][0]

        def padded(clips):
            return np.concatenate([clips, np.zeros((clips.shape[0], pad, *clips.shape[2:]), clips.dtype)], axis=1)

        samples = streaming_calibration_data(runner, padded(separable_clips(description, INT8_CALIBRATION_CLIPS, 0)))
        try:
            lite = TFLiteModel(to_tflite(runner, quantize="int8", batch_size=BATCH, representative_data=samples,
                                         allow_float_ops=True))
        except TfxExtError as error:
            return {"outcome": "refused", "error": _first_line(error)}
        clips = separable_clips(description, INT8_EVAL_CLIPS, 1)
        expected = np.asarray(model(clips, training=False))
        if expected.shape[-1] < 2:
            return {"outcome": "no decision", "error": ""}
        data, output = runner.input_names[0], runner.output_names[0]
        got_all, expected_all = [], []
        for start in range(0, len(clips), BATCH):
            states = {n: np.zeros(lite.input_details[n]["shape"], "float32") for n in runner.state_names}

            def step(chunk):
                nonlocal states
                got = lite({data: chunk, **states})
                states = {n: got[n] for n in runner.state_names}
                return got[output]

            streamed = _stream(step, padded(clips[start:start + BATCH]), fps, expected.ndim >= 3)
            got, want, why = _aligned(streamed, expected[start:start + BATCH], delay, frames, fps)
            if why:
                return {"outcome": "crash", "error": f"int8 LiteRT: {why}"}
            got_all.append(got)
            expected_all.append(want)
        got, want = np.concatenate(got_all), np.concatenate(expected_all)
        top2 = np.sort(want, axis=-1)[..., -2:]
        step = float(np.ptp(want)) / 255.0  # the int8 output's resolution over the float output's range
        decided = (top2[..., 1] - top2[..., 0]) >= INT8_MARGIN_STEPS * step
        if not decided.any():
            return {"outcome": "no decision", "error": "no frame's float decision clears the int8 resolution"}
        agreement = float(np.mean((np.argmax(got, -1) == np.argmax(want, -1))[decided]))
        return {"outcome": "agree" if agreement >= INT8_AGREEMENT else "disagree", "agreement": agreement,
                "decided_fraction": float(decided.mean()),
                "relative_max_err": float(np.max(np.abs(got - want))) / (float(np.ptp(want)) or 1.0), "error": ""}
    except Exception as error:
        return {"outcome": "crash", "error": f"int8: {_first_line(error)}", "traceback": traceback.format_exc()[-2000:]}


def _nudged(description: dict) -> dict | None:
    """The description with every DeltaActivation step moved by BOUNDARY_NUDGE (None: it holds none)."""
    nudged = copy.deepcopy(description)
    deltas = [op for op in _flat_ops(nudged["ops"]) if op["op"] == "delta"]
    for op in deltas:
        op["threshold"] = op.get("threshold", 0.1) * BOUNDARY_NUDGE
    return nudged if deltas else None


def check(description: dict, *, tflite: bool = False, int8: bool = False, second_opinion: bool = True) -> dict[str, Any]:
    """Builds the model, streams it in both modes against the original model on the whole window (see module doc).

    With `int8`, an exact model is also exported full-int8 and checked by `check_int8` (its result under "int8";
    an int8 crash makes the outcome a crash).

    Returns a dict: `outcome` (one of OUTCOMES, or "invalid" when the description does not build: a generator
    bug), `error` (the first line of the error or why outputs cannot align), per-mode results, `seconds`.
    """
    from tfx_ext.streaming.contract import Mode

    start = time.perf_counter()
    try:
        model = build_model(description)
        x = model_input(description)
        expected = np.asarray(model(x, training=False))
    except Exception as error:
        return {"outcome": "invalid", "error": _first_line(error), "seconds": time.perf_counter() - start}
    modes = {
        "internal": _check_mode(model, Mode.STREAM_INTERNAL_STATE, x, expected, False),
        "external": _check_mode(model, Mode.STREAM_EXTERNAL_STATE, x, expected, tflite),
    }
    outcomes = {r["outcome"] for r in modes.values()}
    if "crash" in outcomes:
        outcome = "crash"
    elif "mismatch" in outcomes:
        outcome = "mismatch"
    elif outcomes == {"refused", "exact"}:
        outcome = "crash"
    else:
        (outcome,) = outcomes
    error = next((r["error"] for r in modes.values() if r["outcome"] == outcome and r.get("error")), "")
    if outcomes == {"refused", "exact"}:
        error = "the two modes disagree: " + next(r["error"] for r in modes.values() if r["outcome"] == "refused")
    nudged = _nudged(description) if outcome == "mismatch" and second_opinion else None
    if nudged is not None and check(nudged, tflite=tflite, second_opinion=False)["outcome"] == "exact":
        outcome, error = "boundary", f"exact with the Delta steps moved by {BOUNDARY_NUDGE - 1:g}: {error}"
    result = {"outcome": outcome, "error": error, "modes": modes, "expects_refusal": expects_refusal(description),
              "tflite": tflite}
    if int8 and outcome == "exact":
        result["int8"] = check_int8(model, description)
        if result["int8"]["outcome"] == "crash":
            result.update(outcome="crash", error=result["int8"]["error"])
    result["seconds"] = time.perf_counter() - start
    return result


def signature(result: dict) -> tuple[str, str]:
    """What a failure is, for shrinking and grouping: the outcome and the error's kind."""
    error = result.get("error", "")
    kind = error.split(":", 1)[0] if result["outcome"] in ("crash", "refused") else ""
    if result["outcome"] == "mismatch":
        kind = "cannot align" if "not a whole" in error or "shape" in error else "values"
    return result["outcome"], kind


# ----- shrinking -----------------------------------------------------------------------------------------------------
_SIMPLER = {"kernel": 1, "stride": 1, "dilation": 1, "filters": 2, "units": 2, "multiplier": 1, "freq_kernel": 1,
            "freq_stride": 1, "pad": "causal", "freq_pad": "valid", "method": "quantize", "activation": None,
            "fn": "relu", "merge": "add", "threshold": 0.1}


def _candidates(description: dict):
    """Simpler descriptions: one op fewer (top level or in a branch), then one parameter simpler, shorter input."""
    ops = description["ops"]
    for i in range(len(ops)):
        yield dict(description, ops=ops[:i] + ops[i + 1:])
    for i, op in enumerate(ops):
        for j in range(len(op.get("branch", []))):
            branch = op["branch"][:j] + op["branch"][j + 1:]
            if branch:
                yield dict(description, ops=ops[:i] + [dict(op, branch=branch)] + ops[i + 1:])
    for path, op in _op_paths(ops):
        for key, simple in _SIMPLER.items():
            if key in op and op[key] != simple:
                yield _replace(description, path, dict(op, **{key: simple}))
    frames = description["input"][0]
    for smaller in range(1, frames):
        if frames % smaller == 0 and smaller >= 2:
            yield dict(description, input=[smaller, *description["input"][1:]])
            break


def _op_paths(ops: list[dict], prefix=()):
    for i, op in enumerate(ops):
        yield (*prefix, i), op
        yield from _op_paths(op.get("branch", []), (*prefix, i, "branch"))


def _replace(description: dict, path: tuple, new_op: dict) -> dict:
    result = copy.deepcopy(description)
    container = result["ops"]
    for step in path[:-1]:
        container = container[step]
    container[path[-1]] = new_op
    return result


def shrink(description: dict, keeps_failing: Callable[[dict], bool], *, budget: int = 200) -> tuple[dict, int]:
    """Greedy reduction: takes the first simpler candidate that still fails, until none does or `budget` checks.

    Returns the smallest failing description found and the number of checks made.
    """
    current, checks = description, 0
    improved = True
    while improved and checks < budget:
        improved = False
        for candidate in _candidates(current):
            if checks >= budget:
                break
            checks += 1
            if candidate["ops"] and keeps_failing(candidate):
                current, improved = candidate, True
                break
    return current, checks


def shrink_failure(description: dict, result: dict, *, budget: int = 200) -> tuple[dict, dict, int]:
    """Shrinks a failing description while it fails the same way (`signature`); returns it, its result, checks."""
    target = signature(result)
    issue = known_issue(description)  # stay on the same bug: do not wander from one failure class to another
    last: dict[str, dict] = {}

    def keeps_failing(candidate):
        if known_issue(candidate) != issue:
            return False
        outcome = check(candidate, tflite=result.get("tflite", False), int8="int8" in result)  # a LiteRT failure needs LiteRT again
        if signature(outcome) == target:
            last[json.dumps(candidate, sort_keys=True)] = outcome
            return True
        return False

    shrunk, checks = shrink(description, keeps_failing, budget=budget)
    return shrunk, last.get(json.dumps(shrunk, sort_keys=True), result), checks


# ----- the benchmark -------------------------------------------------------------------------------------------------
def run(models: int, seed: int, *, tflite_every: int = 0, int8_every: int = 0, shrink_budget: int = 150, max_ops: int = 5,
        name: str = "fuzz", results_dir=RESULTS_DIR, print_table: bool = True) -> dict:
    """Checks `models` drawn descriptions; prints the table and writes `<results_dir>/<name>.json`."""
    import warnings

    import keras

    import tfx_ext

    # Softmax over a 1-frame time axis (a streamed chunk) is one of the cases under test; Keras warns every time.
    warnings.filterwarnings("ignore", message="You are using a softmax over axis", category=UserWarning)
    warnings.filterwarnings("ignore", category=tfx_ext.errors.AttentionWindowWarning)  # the window is the clip
    start = time.perf_counter()
    descriptions_ = draw_descriptions(models, seed, max_ops=max_ops)
    generation_s = time.perf_counter() - start
    counts = {k: 0 for k in (*OUTCOMES, "invalid")}
    refused_by: dict[str, int] = {}
    over_refused: dict[str, int] = {}
    failures: dict[tuple, dict] = {}
    tflite_checked = 0
    int8_counts = {k: 0 for k in INT8_OUTCOMES}
    int8_agreements: list[float] = []
    int8_disagreeing: list[dict] = []
    check_start = time.perf_counter()
    for index, description in enumerate(descriptions_):
        use_tflite = bool(tflite_every) and index % tflite_every == 0
        tflite_checked += use_tflite
        result = check(description, tflite=use_tflite, int8=bool(int8_every) and index % int8_every == 0)
        counts[result["outcome"]] += 1
        if "int8" in result:
            int8_counts[result["int8"]["outcome"]] += 1
            if "agreement" in result["int8"]:
                int8_agreements.append(result["int8"]["agreement"])
            if result["int8"]["outcome"] == "disagree":
                int8_disagreeing.append({"summary": describe(description), "description": description,
                                         **result["int8"]})
        if result["outcome"] == "refused":
            key = result["error"].split(":", 1)[0]
            refused_by[key] = refused_by.get(key, 0) + 1
            if not result.get("expects_refusal"):
                reason = _refusal_reason(result["error"])
                over_refused[reason] = over_refused.get(reason, 0) + 1
        elif result["outcome"] in ("mismatch", "crash", "invalid"):
            group = (*signature(result), known_issue(description) or "")
            entry = failures.setdefault(group, {"count": 0, "first": description, "first_result": result})
            entry["count"] += 1
    check_s = time.perf_counter() - check_start
    shrunk = []
    for (outcome, kind, known), entry in failures.items():
        small, small_result, checks = shrink_failure(entry["first"], entry["first_result"], budget=shrink_budget)
        shrunk.append({
            "outcome": outcome, "kind": kind, "known_issue": known, "count": entry["count"],
            "error": small_result.get("error", ""), "max_err": _max_err(small_result),
            "description": small, "summary": describe(small), "first": entry["first"],
            "first_summary": describe(entry["first"]), "shrink_checks": checks,
            "tflite": entry["first_result"].get("tflite", False),
        })
    total_s = time.perf_counter() - start
    bench = Benchmark(name, config={"models": models, "drawn": len(descriptions_), "seed": seed,
                                    "tflite_every": tflite_every, "int8_every": int8_every,
                                    "int8_agreement": INT8_AGREEMENT, "max_ops": max_ops, "batch": BATCH,
                                    "float_atol": FLOAT_ATOL, "tflite_atol": TFLITE_ATOL,
                                    "tfx_ext": getattr(tfx_ext, "__version__", None), "keras": keras.__version__},
                      results_dir=results_dir)
    bench.add_row({"outcome": "exact", "models": counts["exact"], "note": f"TFLite checked on {tflite_checked}"})
    bench.add_row({"outcome": "boundary flips", "models": counts["boundary"],
                   "note": "Delta rounding/gate flips from float noise: exact with the Delta steps moved by 0.1%"})
    for key, value in sorted(refused_by.items()):
        bench.add_row({"outcome": f"refused: {key}", "models": value, "note": ""})
    for reason, value in sorted(over_refused.items(), key=lambda kv: -kv[1]):
        bench.add_row({"outcome": "  of which over-refused", "models": value, "note": reason})
    for item in shrunk:
        bench.add_row({"outcome": f"{item['outcome']} ({item['kind'] or 'values'})", "models": item["count"],
                       "note": (item["known_issue"] or "NEW") + " | " + item["summary"][:120]})
    if int8_every:
        agreeing = [a for a in int8_agreements if a >= INT8_AGREEMENT]
        low = f", lowest {min(agreeing):.3f}" if agreeing else ""
        for key in INT8_OUTCOMES:
            note = {"agree": f"top-1 agreement >= {INT8_AGREEMENT} on separable clips{low}",
                    "disagree": "; ".join(f"{d['agreement']:.3f}: {d['summary'][:80]}" for d in int8_disagreeing)[:300],
                    }.get(key, "")
            bench.add_row({"outcome": f"int8: {key}", "models": int8_counts[key], "note": note})
    bench.add_row({"outcome": "silent mismatches", "models": counts["mismatch"], "note": ""})
    bench.add_row({"outcome": "crashes", "models": counts["crash"], "note": ""})
    if counts["invalid"]:
        bench.add_row({"outcome": "invalid (generator bug)", "models": counts["invalid"], "note": ""})
    bench.add_row({"outcome": "time (s)", "models": round(total_s, 1),
                   "note": f"generate {generation_s:.1f}, check {check_s:.1f} ({check_s / max(len(descriptions_), 1):.3f}"
                           f" s/model), shrink {total_s - generation_s - check_s:.1f}"})
    document = bench.finish(["outcome", "models", "note"], print_table=print_table)
    int8_summary = {"counts": int8_counts, "agreements": int8_agreements, "disagreeing": int8_disagreeing}
    document.update(int8=int8_summary, counts=counts, refused_by=refused_by, over_refused=over_refused, failures=shrunk,
                    seconds={"total": total_s, "generate": generation_s, "check": check_s})
    if results_dir is not None:
        saved = json.loads(open(document["path"]).read())
        saved.update(int8=int8_summary, counts=counts, refused_by=refused_by, over_refused=over_refused, failures=shrunk,
                     seconds=document["seconds"])
        with open(document["path"], "w") as handle:
            json.dump(saved, handle, indent=2, default=str)
    return document


def _refusal_reason(error: str) -> str:
    """A short reason for a refusal of a model from the streamable vocabulary (grouped in the table)."""
    for needle, reason in (("carries state, and its input lags", "look-ahead ('same') before a stateful layer"),
                           ("has time stride", "look-ahead ('same') before a strided layer, off phase"),
                           ("lag by", "merge of branches with different look-ahead"),
                           ("is not known to act on each frame", "layer not in the time-axis table"),
                           ("stride", "strides / frames_per_step")):
        if needle in error:
            return reason
    return error[:100]


def _max_err(result: dict) -> float | None:
    errors = [r.get("max_err") for r in result.get("modes", {}).values() if r.get("max_err") is not None]
    return max(errors) if errors else None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000, help="models to draw and check")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (same seed, same models)")
    parser.add_argument("--tflite_every", type=int, default=20, help="float LiteRT on every n-th model (0: never)")
    parser.add_argument("--int8_every", type=int, default=25,
                        help="full-int8 LiteRT (top-1 agreement) on every n-th model that streams exactly (0: never)")
    parser.add_argument("--shrink_budget", type=int, default=150, help="checks spent shrinking each failure group")
    parser.add_argument("--max_ops", type=int, default=5, help="ops per model chain")
    parser.add_argument("--smoke", action="store_true", help="12 models, TFLite on 2, small shrink budget")
    parser.add_argument("--results_dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    if args.smoke:
        return run(12, args.seed, tflite_every=6, int8_every=4, shrink_budget=10, name="fuzz_smoke", results_dir=args.results_dir)
    return run(args.models, args.seed, tflite_every=args.tflite_every, int8_every=args.int8_every, shrink_budget=args.shrink_budget,
               max_ops=args.max_ops, results_dir=args.results_dir)


if __name__ == "__main__":
    main()
