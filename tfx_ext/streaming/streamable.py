"""`make_streamable`: a plain Keras model you already trained, rewritten with streamable layers and its weights.

kws_streaming users train plain Keras models (Conv1D/Conv2D, depthwise and separable convs, pooling, GRU/LSTM) and
then want them to stream without retraining. `make_streamable(model)` walks the model's public config (as
`to_streaming` does) and returns a functional model that computes the same whole-window outputs with:

- time-mixing convolutions and pools wrapped in `tfx_ext.layers.Stream`, their time padding mapped: 'causal' ->
  `pad_time_dim="causal"`, 'same' -> `"same"` (look-ahead: streamed outputs come `(e - 1) // 2` frames late),
  'valid' -> `"valid"` (streamed outputs come `e - s` frames late); the frequency axis keeps the layer's padding;
- global pooling and Flatten over time as `Stream` window cells (the window: the model's static time length);
- `keras.layers.GRU`/`LSTM` replaced by `tfx_ext.layers.GRU`/`LSTM` (same maths, `reset_after=True` GRU);
- every other layer kept (`to_streaming` then decides whether it acts on each frame).

Every copied layer gets the trained weights (copies: the original model is left alone). Streamed, a layer behind
a delayed one ('valid' or look-ahead) would take the delayed layer's warm-up frames in; the rewrite gives it
`warmup_frames` = its input's delay, so a `Stream` treats them as its zero padding and a GRU/LSTM keeps its state
through them: streamed outputs then equal the original model's, `output_delay` frames late.

What it cannot make exact is refused with one `NotStreamableError` listing every offending layer, why and the fix.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from fractions import Fraction

import keras

from tfx_ext.errors import AttentionWindowWarning, NotStreamableError
from tfx_ext.layers.attention import StreamingMultiHeadAttention
from tfx_ext.layers.conv_transpose import TRANSPOSED_CELLS, ConvTransposeStream
from tfx_ext.layers.recurrent import GRU, LSTM
from tfx_ext.layers.stream import Stream
from tfx_ext.streaming.contract import StreamingLayer
from tfx_ext.streaming.graph import _flat, _graph_config, _history, _refs, _resolve, output_names
from tfx_ext.streaming.semantics import layer_label, refusal

L = keras.layers
_CONVS = (L.Conv1D, L.Conv2D, L.DepthwiseConv1D, L.DepthwiseConv2D, L.SeparableConv1D, L.SeparableConv2D)
_POOLS = (L.AveragePooling1D, L.AveragePooling2D, L.MaxPooling1D, L.MaxPooling2D)
_WINDOWS = (L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.Flatten)
_RNNS = {L.GRU: GRU, L.LSTM: LSTM}
# Plain layers that mix time and have no streamable form here: (why, fix).
# Plain layers that mix time and have no streamable form here: refused with the reason of the time-axis table.
_REFUSED = (L.Bidirectional, L.SimpleRNN, L.ConvLSTM1D, L.ConvLSTM2D, L.RNN)


@dataclasses.dataclass(frozen=True)
class _Time:
    """What a tensor's time axis looks like when streamed."""

    has_time: bool
    delay: int = 0  # streamed values lag the whole-window ones by this many model-input frames (maybe a Fraction)
    rate: int = 1  # model-input frames per frame of this tensor (a Fraction after upsampling)
    lookahead: bool = False  # a 'same' layer upstream: its last frames need frames after the window


class _Refusal(Exception):
    def __init__(self, why: str, fix: str):
        super().__init__(why)
        self.why, self.fix = why, fix


def _plain_kind(layer) -> str | None:
    """'conv', 'pool', 'window', 'rnn' or 'refused' for plain Keras layers that mix time; None for the others."""
    if isinstance(layer, StreamingLayer):
        return None
    if type(layer) in _RNNS:
        return "rnn"
    if isinstance(layer, TRANSPOSED_CELLS):
        return "transpose"
    if isinstance(layer, L.MultiHeadAttention):
        return "attention"
    if isinstance(layer, _CONVS):
        return "conv"
    if isinstance(layer, _POOLS):
        return "pool"
    if isinstance(layer, _WINDOWS):
        return "window"
    if isinstance(layer, _REFUSED):
        return "refused"
    return None


def needs_streamable(model: keras.Model) -> bool:
    """True when `model` holds plain Keras layers that `make_streamable` rewrites (or refuses): convolutions,
    pools, global pooling, Flatten, GRU/LSTM, Bidirectional, SimpleRNN."""
    return any(_plain_kind(layer) is not None for layer in getattr(model, "layers", []))


def _time_geometry(config: dict, kind: str) -> tuple[int, int, str]:
    """(effective kernel e, stride s, padding) of a conv or pool along time (axis 1), from its config."""
    size = config["kernel_size"] if kind == "conv" else config["pool_size"]
    strides = config.get("strides") or size
    dilation = config.get("dilation_rate") or (1,) * len(size)
    return (int(size[0]) - 1) * int(dilation[0]) + 1, int(strides[0]), config.get("padding", "valid")


def _stream_for(layer, kind: str, info: _Time, time_length) -> tuple[Stream, _Time]:
    """The `Stream` wrapping `layer` (a conv or pool) with its time padding mapped, and its output's `_Time`."""
    config = layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last":
        raise _Refusal("has data_format='channels_first' (time must be axis 1)", "use data_format='channels_last'")
    kernel, stride, padding = _time_geometry(config, kind)
    if kind == "pool" and padding == "same":
        if kernel == stride and time_length is not None and time_length % stride == 0:
            padding = "valid"  # 'same' pads nothing here
        else:
            raise _Refusal(f"pools with padding='same' over time (pool {kernel}, stride {stride}), which Keras "
                           "computes over the valid positions of a padded window", "use padding='valid'")
    if padding == "causal":
        if stride != 1:
            raise _Refusal(f"is causal with time stride {stride}: Keras's output j ends at frame j * {stride}, "
                           "off the grid of whole streamed steps", "use strides=1, or padding='valid'")
        pad_time_dim = "causal"
    elif padding == "same":
        if stride != 1:
            raise _Refusal(f"has padding='same' with time stride {stride}, which streams with no whole-frame "
                           "look-ahead", "use padding='valid' (or causal) for strided layers")
        if kernel % 2 == 0:
            raise _Refusal(f"has padding='same' with an even effective time kernel ({kernel}): Keras looks "
                           f"{kernel // 2} frames ahead, Stream's look-ahead is (e - 1) // 2",
                           "use an odd kernel, or padding='valid'")
        pad_time_dim = "same"
    else:
        if kernel < stride or (kernel - stride) % stride:
            raise _Refusal(f"has time kernel {kernel} and stride {stride}: its 'valid' outputs fall between the "
                           "streamed steps", f"use a time kernel of {stride} + n * {stride} frames")
        pad_time_dim = "valid"
    frames = info.delay // info.rate  # this layer's input frames of delay
    if frames % stride:
        raise _Refusal(f"has time stride {stride} behind layers that delay it by {frames} frames: streamed steps "
                       "would be off the whole-window grid", f"make the delays upstream multiples of {stride}")
    pads_front = pad_time_dim == "same" or (pad_time_dim == "causal" and kernel > stride)
    stream = Stream(layer, pad_time_dim=pad_time_dim, warmup_frames=frames if pads_front else 0,
                    name=layer.name, dtype=layer.dtype_policy)
    out = _Time(True, info.delay + stream.output_delay * info.rate, info.rate * stride,
                info.lookahead or pad_time_dim == "same")
    return stream, out


def _overlaps_in_time(layer) -> bool:
    """Whether a transposed conv overlaps frames in time (effective kernel > stride): only then has it state."""
    config = layer.get_config()
    return (int(config["kernel_size"][0]) - 1) * int(config["dilation_rate"][0]) + 1 > int(config["strides"][0])


def _transpose_for(layer, info: _Time) -> tuple[ConvTransposeStream, _Time]:
    """A Conv1DTranspose / Conv2DTranspose as a `ConvTransposeStream` (its look-ahead or 'valid' tail flagged)."""
    lag = info.delay / info.rate  # this layer's input frames of delay: warm-up frames, zeros of its whole form
    if lag != int(lag):
        raise _Refusal(f"sits behind layers that delay it by {lag} of its input frames, not whole frames",
                       "make the delays upstream whole frames of its input")
    stateful = _overlaps_in_time(layer)
    stream = ConvTransposeStream(layer, warmup_frames=int(lag) if stateful else 0, name=layer.name,
                                 dtype=layer.dtype_policy)
    out = _Time(True, info.delay + stream.output_delay * info.rate, Fraction(info.rate) / stream.output_ratio,
                info.lookahead or stream.lookahead > 0)
    return stream, out


def _attention_for(layer, node: dict, info: _Time, time_length) -> tuple[StreamingMultiHeadAttention, _Time]:
    """A `keras.layers.MultiHeadAttention` self-attention called with `use_causal_mask=True` as a
    `StreamingMultiHeadAttention` whose window is the model's time length (exact over the trained window)."""
    config = layer.get_config()
    inputs = _history(node["args"]) + _history({k: v for k, v in node["kwargs"].items() if k in ("query", "value",
                                                                                                   "key")})
    if len(set(inputs)) != 1:
        raise _Refusal("attends to another sequence (query, key and value differ): a stream has only its own past",
                       "call it as self-attention, layer(x, x, use_causal_mask=True)")
    unsupported = {k: v for k, v in node["kwargs"].items() if k not in ("query", "value", "key", "use_causal_mask",
                                                                        "training") and v not in (None, False)}
    if not node["kwargs"].get("use_causal_mask") or unsupported:
        why = (f"is called with {sorted(unsupported)}" if unsupported else
               "attends to future frames (called without use_causal_mask=True)")
        raise _Refusal(why, "call it as layer(x, x, use_causal_mask=True) with no attention_mask")
    for key, allowed in (("use_gate", False), ("output_shape", None)):
        if config.get(key) not in (allowed,):
            raise _Refusal(f"has {key}={config.get(key)!r}", f"use {key}={allowed!r}")
    if tuple(config.get("attention_axes") or (1,)) != (1,):
        raise _Refusal(f"attends over axes {config['attention_axes']} (time is axis 1)", "use attention_axes=None")
    if info.lookahead or info.delay:
        raise _Refusal("sits behind a delayed or look-ahead layer; its keys would take in warm-up frames",
                       "use causal layers before it")
    window = config.get("sliding_window") or time_length
    if window is None:
        raise _Refusal("attends over a time axis of unknown length, so no window covers it",
                       "give the model input a static time length, or use StreamingMultiHeadAttention(window=W)")
    window = min(int(window), int(time_length)) if time_length is not None else int(window)
    warnings.warn(f"{layer_label(layer)} streams as StreamingMultiHeadAttention(window={window}): exact over the "
                  f"first {window} frames; a longer stream attends to the last {window} frames only, where the "
                  "whole-sequence layer would attend to every earlier frame.", AttentionWindowWarning, stacklevel=4)
    new = StreamingMultiHeadAttention(config["num_heads"], config["key_dim"], window, value_dim=config["value_dim"],
                                      use_bias=config["use_bias"], name=layer.name, dtype=layer.dtype_policy)
    return new, info


def _window_for(layer, info: _Time, time_length) -> tuple[Stream, _Time]:
    if info.lookahead:
        raise _Refusal("summarizes the window behind a look-ahead ('same') layer or a 'valid' transposed conv's "
                       "overlap tail: streamed, the window's last frames come only after it",
                       "use padding='valid' or 'causal' in time before it ('same' on a transposed conv)")
    if time_length is None:
        raise _Refusal("summarizes a time axis of unknown length", "give the model input a static time length")
    config = layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last" or config.get("keepdims"):
        raise _Refusal("keeps the time axis or reads channels first", "use keepdims=False, channels_last")
    return Stream(layer, window=int(time_length), name=layer.name, dtype=layer.dtype_policy), _Time(False)


def _rnn_for(layer, info: _Time) -> tuple[keras.layers.Layer, _Time]:
    """The `tfx_ext.layers` GRU/LSTM with `layer`'s config (weights set after it is built)."""
    config = layer.get_config()
    kind = type(layer).__name__
    for flag, why, fix in (
        ("go_backwards", "reads the sequence from its end", "train with go_backwards=False"),
        ("stateful", "carries state across batches itself", "use stateful=False (streaming carries the state)"),
        ("return_state", "returns its states as extra outputs", "use return_state=False"),
    ):
        if config.get(flag):
            raise _Refusal(f"has {flag}=True: it {why}", fix)
    if kind == "GRU" and not config.get("reset_after", True):
        raise _Refusal("has reset_after=False (tfx_ext.layers.GRU is the reset_after=True form)",
                       "train with reset_after=True (Keras's default)")
    if not config.get("return_sequences") and info.lookahead:
        raise _Refusal("returns its last state behind a look-ahead ('same') layer: streamed, the last frames "
                       "come only after the window", "use padding='valid' or 'causal' in time before it")
    keys = ("units", "activation", "recurrent_activation", "use_bias", "kernel_initializer",
            "recurrent_initializer", "bias_initializer", "dropout", "return_sequences", "seed")
    kwargs = {key: config[key] for key in keys if key in config}
    if kind == "LSTM":
        kwargs["unit_forget_bias"] = config.get("unit_forget_bias", True)
    new = _RNNS[type(layer)](**kwargs, warmup_frames=info.delay // info.rate, name=layer.name,
                             dtype=layer.dtype_policy)
    return new, _Time(bool(config.get("return_sequences")), info.delay, info.rate, info.lookahead)


def _with_warmup(layer: StreamingLayer, frames: int) -> StreamingLayer | None:
    """A tfx_ext streaming layer re-created with `warmup_frames` (a Stream only when it pads in front)."""
    config = layer.get_config()
    if "warmup_frames" not in config or frames == 0:
        return None
    if isinstance(layer, Stream) and not layer.is_window_cell and (
            layer.pad_time_dim == "valid" or layer.kernel <= layer.stride):
        return None  # no zero padding in front to stand for (a window cell's warm-up frames fall out of its window)
    return type(layer).from_config(dict(config, warmup_frames=frames))


class _Rewrite:
    """One walk over a model's graph config, building the streamable model layer by layer."""

    def __init__(self, model: keras.Model):
        self.graph = _graph_config(model)
        self.model = model
        self.source = {layer.name: layer for layer in model.layers}
        self.tensors: dict[tuple, object] = {}
        self.times: dict[tuple, _Time] = {}
        self.inputs: list = []
        self.copies: list[tuple] = []  # (new layer, weights to set once built)
        self.refusals: dict[str, str] = {}  # layer name -> why it cannot stream and the fix

    def run(self) -> tuple[keras.Model, dict[str, str]]:
        """The rewritten model and the refused layers (kept as they were, weights not copied, when any)."""
        for layer_config in self.graph["layers"]:
            if layer_config["class_name"] == "InputLayer":
                self._input(layer_config)
            else:
                self._layer(layer_config)
        if not self.refusals:
            for layer, weights in self.copies:
                layer.set_weights(weights)
        return self._assemble(), dict(self.refusals)

    def _input(self, layer_config: dict) -> None:
        config = layer_config["config"]
        shape = tuple(config.get("batch_shape") or (None, *config["shape"]))
        tensor = keras.Input(batch_shape=shape, dtype=config.get("dtype", "float32"), name=layer_config["name"])
        self.tensors[(layer_config["name"], 0, 0)] = tensor
        self.times[(layer_config["name"], 0, 0)] = _Time(len(shape) >= 2)  # (batch, time) raw audio has time
        self.inputs.append(tensor)

    def _layer(self, layer_config: dict) -> None:
        name = layer_config["name"]
        source = self.source.get(name)  # None for a Keras op in the graph (e.g. a mask's NotEqual)
        nodes = layer_config.get("inbound_nodes", [])
        new = None
        for node_index, node in enumerate(nodes):
            sources = _history(node["args"]) + _history(node["kwargs"])
            timed = [self.times[s] for s in sources if self.times[s].has_time]
            info = max(timed, key=lambda t: t.delay) if timed else _Time(False)
            if new is None:  # a shared layer is one layer in the rewrite too
                new, out, copies_weights = self._convert(source, layer_config, info, self._time_length(sources),
                                                         len(nodes), node)
                if not copies_weights and source is not None:
                    self.copies.append((new, source.get_weights()))
            kwargs = _resolve(node["kwargs"], self.tensors)
            if new is not source and _plain_kind(source) is not None and type(new) is not type(source):
                if kwargs.get("mask") is not None:
                    self.refusals[name] = (f"{layer_label(source)} is called with a mask; fix: streaming has no "
                                           "masks, drop Masking / mask_zero.")
                kwargs = {k: v for k, v in kwargs.items() if k not in ("mask", "training")}
            args = _resolve(node["args"], self.tensors)
            if isinstance(new, StreamingMultiHeadAttention) and not isinstance(source, StreamingLayer):
                args, kwargs = args[:1], {}  # self-attention of the query (checked by `_attention_for`)
            outputs = new(*args, **kwargs)
            for index, tensor in enumerate(_flat(outputs)):
                self.tensors[(name, node_index, index)] = tensor
                self.times[(name, node_index, index)] = out

    def _time_length(self, sources):
        """The static time length of the layer's first input (the rewrite keeps every whole-window shape)."""
        tensor = self.tensors[sources[0]] if sources else None
        return tensor.shape[1] if tensor is not None and len(tensor.shape) >= 2 else None

    def _convert(self, source, layer_config: dict, info: _Time, time_length, calls: int, node: dict):
        """(the layer to call, its output `_Time`, whether it copied the weights itself); a refusal is recorded
        and the layer kept as it is."""
        kind = _plain_kind(source) if info.has_time and source is not None else None
        try:
            if kind is not None and calls > 1:
                raise _Refusal(f"is called {calls} times; a streamed layer keeps one state per call",
                               "use one layer per call")
            if kind == "conv" or kind == "pool":
                return (*_stream_for(source, kind, info, time_length), True)
            if kind == "window":
                return (*_window_for(source, info, time_length), True)
            if kind == "transpose":
                return (*_transpose_for(source, info), True)
            if kind == "attention":
                return (*_attention_for(source, node, info, time_length), False)
            if kind == "rnn":
                return (*_rnn_for(source, info), False)
            if kind == "refused":
                self.refusals[source.name] = f"{layer_label(source)} {refusal(source, [3])}"
        except _Refusal as refused:
            self.refusals[source.name] = f"{layer_label(source)} {refused.why}; fix: {refused.fix}."
        return (*self._keep(source, layer_config, info), False)

    def _keep(self, source, layer_config: dict, info: _Time):
        serialized = {k: v for k, v in layer_config.items() if k not in ("inbound_nodes", "build_config", "name")}
        if isinstance(source, L.Lambda):  # the user's live layer, not a file: no safe-mode concern; refused anyway
            self.refusals[source.name] = f"{layer_label(source)} {refusal(source, [3])}"
            return keras.saving.deserialize_keras_object(copy.deepcopy(serialized), safe_mode=False), info
        layer = keras.saving.deserialize_keras_object(copy.deepcopy(serialized))
        if isinstance(source, StreamingLayer) and info.has_time:
            warmed = _with_warmup(layer, info.delay // info.rate)
            layer = warmed or layer
            rate = info.rate * Fraction(max(int(layer.time_stride), 1), max(int(layer.output_ratio), 1))
            return layer, _Time(not layer.drops_time_axis, info.delay + layer.output_delay * info.rate,
                                rate, info.lookahead or getattr(layer, "lookahead", 0) > 0)
        return layer, info

    def _assemble(self) -> keras.Model:
        refs = [tuple(ref) for ref in _refs(self.graph["output_layers"])]
        outputs = [self.tensors[ref] for ref in refs]
        original = None if isinstance(self.model, keras.Sequential) else self.model.output
        if isinstance(original, dict):
            outputs = dict(zip(output_names(self.model), outputs))
        elif not isinstance(original, (list, tuple)):
            (outputs,) = outputs
        inputs = self.inputs if len(self.inputs) > 1 else self.inputs[0]
        return keras.Model(inputs, outputs, name=self.model.name)


def make_streamable(model: keras.Model) -> keras.Model:
    """Rewrites a trained plain Keras model with streamable layers, keeping its trained weights (copied).

    Convolutions (Conv1D/2D, DepthwiseConv1D/2D, SeparableConv1D/2D) and pools (Max/AveragePooling1D/2D) over
    time are wrapped in `tfx_ext.layers.Stream` with their time padding ('causal', 'same' as look-ahead, 'valid'
    with the outputs' delay), global pooling and Flatten over time become `Stream` window cells, and
    `keras.layers.GRU`/`LSTM` become `tfx_ext.layers.GRU`/`LSTM`; layers behind a delayed layer skip its warm-up
    frames when streamed. Frame-local layers (Dense, BatchNormalization, activations, Dropout, Reshape, ...) are
    kept; `to_streaming` judges them. Training-only arguments of GRU/LSTM (regularizers, constraints,
    recurrent_dropout) are not carried over; everything the forward pass uses is.

    The result computes the same outputs as `model` on the whole window, and `to_streaming(result)` streams
    them (`runner.output_delays` frames late where 'valid' or 'same' layers delay them). `to_streaming` calls
    this itself on models with plain time-mixing layers.

    Args:
        model: a functional or Sequential Keras 3 model (built).

    Returns:
        A new functional `keras.Model` of the same name, inputs and output names.

    Raises:
        NotStreamableError: every layer it cannot make stream exactly, each with why and the fix (Bidirectional,
            SimpleRNN, GRU with go_backwards/stateful/return_state/reset_after=False, strides off the streamed
            grid, 'same' pooling, a summary behind a look-ahead layer, a shared time-mixing layer, ...); also
            subclassed and nested models.
    """
    rewritten, refusals = streamable_rewrite(model)
    if refusals:
        listed = "\n".join(f"  - {why}" for why in refusals.values())
        raise NotStreamableError(f"make_streamable cannot convert {len(refusals)} layer(s) of model "
                                 f"{model.name!r}:\n{listed}")
    return rewritten


def streamable_rewrite(model: keras.Model) -> tuple[keras.Model, dict[str, str]]:
    """`make_streamable` without raising: the rewrite and `{layer name: why it is refused}` (`to_streaming` names
    those together with every other layer it refuses)."""
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            raise NotStreamableError(
                f"layer {layer.name!r} is a nested model; make_streamable needs one flat functional or Sequential "
                "model. Call the inner model's layers directly in the outer model."
            )
    return _Rewrite(model).run()


__all__ = ["make_streamable", "needs_streamable"]
