"""Conversion of trained Keras 3 models to streaming models (and back to plain inference models).

`to_streaming` reads the model's public config (`get_config`), re-creates every layer with `from_config` (streamable
layers with their `mode` switched), wires the graph again on inputs of `frames_per_step` frames and copies the
weights layer by layer by name. It never imports private Keras modules. It knows nothing about particular
streamable layers: everything it needs comes from the `tfx_ext.streaming.contract.StreamingLayer` contract (`state_specs`,
`output_delay`, `time_stride`, `drops_time_axis`).

External-state models take `[inputs..., *states]` and return a dict keyed by the original output names plus one
entry per state; each state's input and output share the name `<layer>_<state>`, so runners (Keras or LiteRT)
bind them by name. `to_streaming` returns a `tfx_ext.streaming.runner.StreamingRunner` in both modes: `.model` is
the streaming model to save or export, `runner(chunk)` / `runner.run(sequence)` step it, `runner.reset()` restarts.
The graph reading is in `tfx_ext.streaming.graph`.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from typing import Any

import keras
import numpy as np

from tfx_ext._validate import check_int
from tfx_ext.errors import NotStreamableError
from tfx_ext.streaming.contract import Mode, StreamingLayer, state_name
from tfx_ext.layers.delay import Delay
from tfx_ext.streaming.graph import _flat, _graph_config, _history, _refs, _resolve, output_names
from tfx_ext.streaming.runner import StreamingRunner
from tfx_ext.streaming.semantics import (
    FRAME_LOCAL_LAYERS,
    TIMELESS_OUTPUT_LAYERS,
    TRAINING_ONLY_LAYERS,
    einsum_shape_refusal,
    einsum_streamed_output_shape,
    layer_label,
    refusal,
    reshape_refusal,
)
from tfx_ext.streaming.streamable import needs_streamable, streamable_rewrite

# ----- per-tensor bookkeeping: time axis, frames per step, streaming delay -----------------------------------------
class _Info:
    __slots__ = ("has_time", "frames", "delay", "rate", "ahead", "tail")

    def __init__(self, has_time: bool, frames: int | None, delay, rate, ahead: tuple = (), tail: tuple = ()):
        self.has_time = has_time  # the tensor has a time axis (axis 1)
        self.frames = frames  # frames per step on that axis when streaming
        self.delay = delay  # streamed outputs lag the whole-sequence ones by this many model-input frames
        self.rate = rate  # model-input frames per frame of this tensor (a Fraction after upsampling)
        self.ahead = ahead  # names of the look-ahead layers that make up `delay`
        self.tail = tail  # names of the layers whose whole-sequence outputs run past the streamed frames


def _whole(value):
    """A frame count as an int when it is whole (delays and rates are Fractions only after upsampling)."""
    value = Fraction(value)
    return int(value) if value.denominator == 1 else value


def _summary_refusal(layer: StreamingLayer, info: _Info, lookahead: set) -> str | None:
    """A summary of the whole window (window cell, last RNN state) needs the window's last whole-sequence frames
    at a step boundary: not behind a layer with a tail (they come only after the window), not behind a look-ahead
    (they saw that layer's zero padding, which no stream reproduces), and not at a fraction of a model-input frame
    of lag (after upsampling: no step ends there)."""
    if not layer.drops_time_axis:
        return None
    if info.tail:
        sources = ", ".join(repr(n) for n in info.tail)
        return (f"{layer_label(layer)} summarizes the whole window, but the whole-sequence input it summarizes runs "
                f"past the streamed frames (the overlap-add tail of {sources}, 'valid' padding): streamed, those "
                f"frames come only after the window. Use padding='same' on {sources}, or crop its output (a "
                "TemporalPadding with a negative size) so the window ends with the last streamed frame.")
    ahead = [n for n in info.ahead if n in lookahead]  # not 'valid' layers: their delay needs no padding after
    if ahead:
        sources = ", ".join(repr(n) for n in ahead)
        return (f"{layer_label(layer)} summarizes the whole window behind the look-ahead of {sources}: the window's "
                f"last frames saw that layer's zero padding after the sequence, which a stream (fed on) never "
                f"reproduces. Use causal padding on {sources}, or keep the time axis to the output.")
    return None


def _warm_up_refusal(layer: StreamingLayer, info: _Info, data_shape) -> str | None:
    """A layer with look-ahead upstream emits `delay` warm-up frames before its first real one. A layer whose
    whole-sequence form starts from zero padding or a zero state (a causal conv, a recurrence, a window) would take
    them in and never equal the trained model; only a pure shift (`Delay`), a stateless layer and a layer whose
    `warmup_frames` equals the lag (it skips them: Stream, GRU, LSTM) pass them on."""
    if info.delay <= 0 or isinstance(layer, Delay):
        return None
    try:
        stateful = bool(layer.state_specs(tuple(data_shape))) or layer.drops_time_axis
    except NotStreamableError:
        return None  # the layer's own error follows when it is called
    if not stateful:
        return None
    if getattr(layer, "pad_time_dim", None) == "valid" and not layer.drops_time_axis:
        return None  # no padding to stand for: its outputs over warm-up frames are warm-up outputs (its delay grows)
    lag = info.delay // info.rate if info.delay % info.rate == 0 else None  # in this layer's input frames
    warmup = getattr(layer, "warmup_frames", 0)
    if warmup and warmup == lag:
        return None  # it skips exactly the warm-up frames (make_streamable sets this for plain models)
    sources = ", ".join(repr(n) for n in info.ahead) or "a layer before it"
    if warmup:
        wanted = f"warmup_frames={lag}" if lag is not None else "causal padding (the lag is not whole input frames)"
        return (f"{layer_label(layer)} has warmup_frames={warmup}, but its input lags the whole-sequence model by "
                f"{info.delay} model-input frames ({info.rate} per frame of its input; look-ahead of {sources}). "
                f"Use {wanted}, or causal padding on {sources}.")
    return (f"{layer_label(layer)} carries state, and its input lags the whole-sequence model by {info.delay} frames "
            f"(look-ahead of {sources}): a layer with look-ahead feeds a stateful layer, whose state would take in "
            f"the {info.delay} warm-up frames streamed before the first real one, so the stream would not equal the "
            f"model you trained. Use causal padding on {sources} (pad_time_dim='causal') or put the look-ahead "
            "after the stateful layers (a Delay on a skip branch aligns a look-ahead branch)."
            + (f" Or give it warmup_frames={lag}: it then takes the warm-up frames as its zero padding (a front end "
               "without padding, such as LogMelFrontend, always emits them)."
               if lag and hasattr(layer, "warmup_frames") else ""))


def _phase_refusal(layer: StreamingLayer, info: _Info) -> str | None:
    """A strided layer keeps one frame of every `stride`; with a look-ahead delay that is not a whole number of its
    output frames, the stream keeps the other phase and no streamed frame equals a whole-sequence one."""
    step = info.rate * max(int(layer.time_stride), 1)
    if info.delay <= 0 or step <= info.rate or info.delay % step == 0:
        return None
    sources = ", ".join(repr(n) for n in info.ahead) or "a layer before it"
    return (f"{layer_label(layer)} has time stride {layer.time_stride}, and its input lags the whole-sequence model by "
            f"{info.delay} frames (look-ahead of {sources}), not a multiple of its {step} input frames per output "
            "frame: the stream would sample the other phase and equal none of the model's frames. Use causal "
            f"padding on {sources}, or make the look-ahead a multiple of {step} frames.")


def _streamed_reshape(layer_config: dict, output_shape) -> None:
    """A Reshape that keeps the time axis may spell its length: spell every other axis and make time -1."""
    layer_config["config"]["target_shape"] = [-1, *[int(d) for d in output_shape[2:]]]


# ----- rebuilding ----------------------------------------------------------------------------------------------------
class _Rebuild:
    """One rebuild of a model's graph in `mode`: walks the config's layers in order and re-creates each call.

    Keeps, per rebuilt tensor (keyed by its `(layer, node, index)` history): the tensor, its `_Info` and the
    whole-sequence shape read from the original model (for Reshape fixes); and the state inputs and outputs met
    so far (external state).
    """

    def __init__(self, model: keras.Model, mode: Mode, batch_size: int | None, frames_per_step: int | None,
                 extra_frame_local: tuple = (), refused: dict[str, str] | None = None):
        self.graph = _graph_config(model)  # first: it refuses what is not a functional or Sequential model
        self.model = model
        self.mode = mode
        self.streaming = mode.is_streaming
        self.external = mode == Mode.STREAM_EXTERNAL_STATE
        self.batch_size = batch_size
        self.frames_per_step = frames_per_step
        self.extra_frame_local = tuple(extra_frame_local)
        self.tensors: dict[tuple, Any] = {}
        self.infos: dict[tuple, _Info] = {}
        self.shapes: dict[tuple, Any] = {}
        self.data_inputs: list = []
        self.state_inputs: list = []
        self.state_outputs: dict[str, Any] = {}
        self.source_layers = {layer.name: layer for layer in model.layers}
        self.problems: list[str] = []  # streaming refusals met so far (raised together at the end)
        self.refused = dict(refused or {})  # layer name -> make_streamable's reason (it knows plain layers best)
        self.lookahead: set[str] = set()  # layers whose whole-sequence form pads after the sequence (look-ahead)

    def run(self) -> tuple[keras.Model, list[str]]:
        """The rebuilt model (weights copied, `output_delays` set) and its state names.

        Streaming refusals are collected over the whole graph and raised once, naming every offending layer.
        """
        try:
            for layer_config in self.graph["layers"]:
                if layer_config["class_name"] == "InputLayer":
                    self._add_input(layer_config)
                else:
                    self._add_layer(layer_config)
        except NotStreamableError as error:
            if not self.problems:
                raise
            self.problems.append(str(error))
            raise self._refused() from None
        if self.problems:
            raise self._refused()
        return self._assemble(), list(self.state_outputs)

    def _refused(self) -> NotStreamableError:
        """One error for every layer refused so far (the single reason alone when there is only one)."""
        unique = list(dict.fromkeys(self.problems))
        if len(unique) == 1:
            return NotStreamableError(unique[0])
        listed = "\n".join(f"  - {p}" for p in unique)
        return NotStreamableError(f"model {self.model.name!r} cannot stream; {len(unique)} layers are refused:\n"
                                  f"{listed}")

    # --- one step per kind of graph entry ---
    def _add_input(self, layer_config: dict) -> None:
        name, config = layer_config["name"], layer_config["config"]
        batch_shape = list(config.get("batch_shape") or [None, *config["shape"]])
        if len(batch_shape) < 2 and self.streaming:  # (batch, time) streams: raw audio, token ids
            raise NotStreamableError(
                f"input {name!r} has shape {tuple(batch_shape)}, no time axis; streaming inputs need (batch, time, "
                "...)."
            )
        self.shapes[(name, 0, 0)] = tuple(batch_shape)
        if self.batch_size is not None:
            batch_shape[0] = self.batch_size
        if self.streaming:
            batch_shape[1] = self.frames_per_step
        tensor = keras.Input(batch_shape=tuple(batch_shape), dtype=config.get("dtype", "float32"), name=name)
        self.tensors[(name, 0, 0)] = tensor
        self.infos[(name, 0, 0)] = _Info(True, self.frames_per_step, 0, 1)
        self.data_inputs.append(tensor)

    def _add_layer(self, layer_config: dict) -> None:
        name = layer_config["name"]
        nodes = layer_config.get("inbound_nodes", [])
        reason = self._semantics_refusal(layer_config, nodes)
        if name in self.refused or reason is not None:
            self.problems.append(self.refused.get(name) or f"{layer_label(self.source_layers[name])} {reason}")
            self._walk_past_refused(layer_config, nodes)
            return
        layer = self._recreate(layer_config, nodes)
        if isinstance(layer, TRAINING_ONLY_LAYERS):
            self._pass_through(name, nodes)
            return
        for node_index, node in enumerate(nodes):
            in_infos = [self.infos[s] for s in _history(node["args"]) + _history(node["kwargs"])]
            args = _resolve(node["args"], self.tensors)
            kwargs = _resolve(node["kwargs"], self.tensors)
            if isinstance(layer, StreamingLayer):
                outputs, out_info = self._call_streaming(layer, in_infos[0], args, kwargs)
            else:
                outputs, out_info = self._call_frame_local(layer, layer_config, in_infos, args, kwargs)
            for index, tensor in enumerate(_flat(outputs)):
                self.tensors[(name, node_index, index)] = tensor
                self.infos[(name, node_index, index)] = out_info
        self._record_shapes(name)

    def _semantics_refusal(self, layer_config: dict, nodes: list) -> str | None:
        """Why this layer cannot stream on the inputs it gets, from `tfx_ext.streaming.semantics` (None: it can).

        Lambda layers are refused in every mode (safe-mode deserialization cannot restore them); the rest only
        when streaming and only when an input still has its time axis.
        """
        source = self.source_layers.get(layer_config["name"])
        if isinstance(source, keras.layers.Lambda):
            return refusal(source, [3])
        if not self.streaming or source is None or not nodes or isinstance(source, (StreamingLayer, keras.Model)):
            return None
        histories = _history(nodes[0]["args"]) + _history(nodes[0]["kwargs"])
        timed = [h for h in histories if self.infos[h].has_time]
        if not timed:
            return None  # after the time axis is gone every layer is fine
        if isinstance(source, keras.layers.Reshape):
            whole = self.shapes.get(timed[0])
            try:
                out = source.compute_output_shape(whole) if whole is not None else None
            except (ValueError, TypeError):
                out = None
            return reshape_refusal(whole, out)
        ranks = [len(self.tensors[h].shape) for h in timed]
        reason = refusal(source, ranks, extra_frame_local=self.extra_frame_local)
        if reason is None and isinstance(source, keras.layers.EinsumDense):
            reason = einsum_shape_refusal(source, self.shapes.get(timed[0]))
        return reason

    def _walk_past_refused(self, layer_config: dict, nodes: list) -> None:
        """Keeps walking after a refusal so later layers are checked too: the outputs of a refused layer become
        placeholders of its whole-window output shape (time set to the chunk), which are never assembled."""
        name = layer_config["name"]
        source = self.source_layers[name]
        try:
            outputs = _flat(source.output)
        except (AttributeError, ValueError):  # a shared layer: several output nodes; stop here
            raise self._refused() from None
        for node_index, node in enumerate(nodes):
            in_infos = [self.infos[h] for h in _history(node["args"]) + _history(node["kwargs"])]
            timed = [i for i in in_infos if i.has_time]
            base = timed[0] if timed else _Info(False, None, 0, 1)
            for index, tensor in enumerate(outputs):
                shape = list(tensor.shape)
                has_time = bool(timed) and len(shape) >= 3
                if self.batch_size is not None:
                    shape[0] = self.batch_size
                if has_time:
                    shape[1] = base.frames
                self.tensors[(name, node_index, index)] = keras.Input(batch_shape=tuple(shape), dtype=tensor.dtype)
                self.infos[(name, node_index, index)] = _Info(has_time, base.frames, base.delay, base.rate,
                                                              base.ahead, base.tail)
        self._record_shapes(name)

    def _recreate(self, layer_config: dict, nodes: list):
        """The layer re-created from its config: streamable layers in `mode`, time-keeping Reshapes made generic."""
        name = layer_config["name"]
        if layer_config["class_name"] in ("Functional", "Sequential", "Model") or isinstance(
                self.source_layers.get(name), keras.Model):
            raise NotStreamableError(
                f"layer {name!r} is a nested model; to_streaming needs one flat functional or Sequential model. "
                "Call the inner model's layers directly in the outer model."
            )
        serialized = {k: v for k, v in layer_config.items() if k not in ("inbound_nodes", "build_config", "name")}
        layer = keras.saving.deserialize_keras_object(copy.deepcopy(serialized))
        if isinstance(layer, StreamingLayer):
            serialized["config"] = dict(serialized["config"], mode=self.mode.value)
            layer = keras.saving.deserialize_keras_object(copy.deepcopy(serialized))
            if self.streaming and len(nodes) > 1:
                raise NotStreamableError(
                    f"{layer_label(layer)} is called {len(nodes)} times; a streamable layer keeps one state, so use "
                    "one layer per call."
                )
        elif isinstance(layer, keras.layers.EinsumDense) and self.streaming:  # frame-local: checked before
            sources = _history(nodes[0]["args"])[:1] if nodes else []
            frames = self.infos[sources[0]].frames if sources else None
            shape = einsum_streamed_output_shape(layer.equation, serialized["config"]["output_shape"], frames)
            if shape is not None:
                serialized["config"] = dict(serialized["config"], output_shape=shape)
                layer = keras.saving.deserialize_keras_object(copy.deepcopy(serialized))
        elif isinstance(layer, keras.layers.Reshape) and self.streaming and nodes:
            (source,) = _history(nodes[0]["args"])[:1]
            if self.infos[source].has_time:  # kept time (checked by `_semantics_refusal`): make it any length
                _streamed_reshape(serialized, self.source_layers[name].compute_output_shape(self.shapes[source]))
                layer = keras.saving.deserialize_keras_object(copy.deepcopy(serialized))
        return layer

    def _pass_through(self, name: str, nodes: list) -> None:
        """A training-only layer is dropped: each of its outputs is its input."""
        for node_index, node in enumerate(nodes):
            (source,) = _history(node["args"])[:1]
            self.tensors[(name, node_index, 0)] = self.tensors[source]
            self.infos[(name, node_index, 0)] = self.infos[source]
            self.shapes[(name, node_index, 0)] = self.shapes.get(source)

    def _call_streaming(self, layer: StreamingLayer, info: _Info, args, kwargs):
        """Calls a streamable layer; with external state, its states become model inputs and outputs."""
        if self.streaming and info.frames is not None and info.frames % max(layer.block_size, 1):
            raise NotStreamableError(
                f"{layer_label(layer)} steps over multiples of {layer.block_size} frames (its time stride) "
                f"but receives {info.frames} frames per step (frames_per_step={self.frames_per_step} of the "
                f"model input). Use frames_per_step that is a multiple of {layer.block_size * info.rate}."
            )
        if self.streaming:
            for problem in (_warm_up_refusal(layer, info, args[0].shape), _phase_refusal(layer, info),
                            _summary_refusal(layer, info, self.lookahead)):
                if problem is not None:
                    self.problems.append(problem)
        if getattr(layer, "lookahead", 0) > 0 and layer.output_delay:
            self.lookahead.add(layer.name)
        stride, ratio = max(int(layer.time_stride), 1), max(int(layer.output_ratio), 1)
        out_info = _Info(
            not layer.drops_time_axis,
            None if info.frames is None else info.frames * ratio // stride,
            _whole(info.delay + layer.output_delay * info.rate),
            _whole(info.rate * Fraction(stride, ratio)),
            info.ahead + ((layer.name,) if layer.output_delay and not isinstance(layer, Delay) else ()),
            info.tail + ((layer.name,) if layer.tail else ()),
        )
        if not self.external:
            return layer(*args, **kwargs), out_info
        data, rest = args[0], list(args[1:])
        specs = layer.state_specs(tuple(data.shape))
        states = [keras.Input(batch_shape=(data.shape[0], *spec.shape), dtype=spec.dtype,
                              name=state_name(layer.name, spec)) for spec in specs]
        outputs = _flat(layer([data, *states], *rest, **kwargs))
        self.state_inputs.extend(states)
        for spec, value in zip(specs, outputs[1:]):
            self.state_outputs[state_name(layer.name, spec)] = value
        return outputs[0], out_info

    def _call_frame_local(self, layer, layer_config: dict, in_infos: list[_Info], args, kwargs):
        """Calls an ordinary layer; streaming needs it to act frame by frame on aligned branches."""
        timed = [i for i in in_infos if i.has_time]
        if self.streaming:
            try:
                _check_aligned(layer, timed)
            except NotStreamableError as error:  # collected: the layer still runs on aligned shapes
                self.problems.append(str(error))
        base = timed[0] if timed else (in_infos[0] if in_infos else _Info(False, None, 0, 1))
        ahead = tuple(dict.fromkeys(n for i in timed for n in i.ahead))
        tail = tuple(dict.fromkeys(n for i in timed for n in i.tail))
        keeps_time = bool(timed) and not isinstance(layer, TIMELESS_OUTPUT_LAYERS)
        return layer(*args, **kwargs), _Info(keeps_time, base.frames, base.delay, base.rate, ahead, tail)

    def _record_shapes(self, name: str) -> None:
        """Whole-sequence shapes of this layer's outputs in the original model, for Reshape fixes downstream."""
        source = self.source_layers.get(name)
        if source is None:
            return
        try:
            for index, tensor in enumerate(_flat(source.output)):
                self.shapes[(name, 0, index)] = tuple(tensor.shape)
        except (AttributeError, ValueError):
            pass

    def _assemble(self) -> keras.Model:
        """The new `keras.Model` on the rebuilt tensors, with the weights copied and `output_delays` set."""
        names = output_names(self.model)
        refs = [tuple(ref) for ref in _refs(self.graph["output_layers"])]
        outputs = [self.tensors[ref] for ref in refs]
        suffix = {Mode.STREAM_INTERNAL_STATE: "stream_internal", Mode.STREAM_EXTERNAL_STATE: "stream_external"}.get(
            self.mode, "inference")
        model_name = f"{self.model.name}_{suffix}"
        if self.external:
            clash = set(names) & set(self.state_outputs)
            if clash:
                raise NotStreamableError(f"output names {sorted(clash)} clash with state names; rename those outputs.")
            rebuilt = keras.Model([*self.data_inputs, *self.state_inputs],
                                  {**dict(zip(names, outputs)), **self.state_outputs}, name=model_name)
        else:
            rebuilt = keras.Model(self.data_inputs if len(self.data_inputs) > 1 else self.data_inputs[0],
                                  outputs if len(outputs) > 1 else outputs[0], name=model_name)
        _copy_weights(self.model, rebuilt)
        rebuilt.output_delays = {n: self.infos[ref].delay for n, ref in zip(names, refs)}  # informative, not saved
        return rebuilt


def _check_aligned(layer, timed: list[_Info]) -> None:
    """A layer that merges timed branches needs them to lag equally and step at the same rate."""
    lags = [i.delay for i in timed]
    if len(set(lags)) > 1:
        raise NotStreamableError(
            f"{layer_label(layer)} merges branches whose streamed values lag by {lags} frames: the "
            f"model is not causal there (a look-ahead layer on one branch only). Put "
            f"tfx_ext.layers.Delay(d) on the branches that lag less so they all lag {max(lags)} "
            "frames (d in frames of that branch)."
        )
    if len({i.frames for i in timed}) > 1:
        raise NotStreamableError(
            f"{layer_label(layer)} merges branches with different time strides "
            f"({[i.frames for i in timed]} frames per step); it cannot stream."
        )


def _rebuild(model: keras.Model, mode: Mode, batch_size: int | None, frames_per_step: int | None,
             extra_frame_local: tuple = (), refused: dict[str, str] | None = None) -> tuple[keras.Model, list[str]]:
    """Rebuilds `model` with its streamable layers in `mode`; returns the model and its state names. `refused`:
    layers `make_streamable` could not rewrite, refused with its reasons alongside every other problem."""
    return _Rebuild(model, mode, batch_size, frames_per_step, extra_frame_local, refused).run()


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copies parameters layer by layer by name (internal-state variables are not parameters and start at zero)."""
    for layer in target.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        original = source.get_layer(layer.name)
        if isinstance(layer, StreamingLayer):
            values = [np.asarray(w) for w in original.parameter_weights()]
            variables = layer.parameter_weights()
        else:
            values = [np.asarray(w) for w in original.weights]
            variables = layer.weights
        if len(values) != len(variables):
            raise NotStreamableError(
                f"{layer_label(layer)} has {len(variables)} weights after conversion but {len(values)} before; "
                "its config does not rebuild the same layer."
            )
        for variable, value in zip(variables, values):
            if tuple(variable.shape) != value.shape:
                raise NotStreamableError(
                    f"{layer_label(layer)}: weight {variable.path!r} has shape {tuple(variable.shape)} after conversion "
                    f"but {value.shape} before."
                )
            variable.assign(value)


# ----- public API ----------------------------------------------------------------------------------------------------
def to_streaming(
    model: keras.Model,
    mode: Mode | str = Mode.STREAM_INTERNAL_STATE,
    batch_size: int = 1,
    frames_per_step: int = 1,
    *,
    extra_frame_local: tuple[type, ...] = (),
) -> StreamingRunner:
    """Converts a trained functional or Sequential model into one that consumes `frames_per_step` frames per call.

    Args:
        model: a functional or Sequential Keras 3 model whose time-mixing layers are streamable
            (`tfx_ext.layers.Stream`, `GRU`, `LSTM`, `Delay`, any `StreamingLayer`) and whose other layers act on
            each frame (Dense, BatchNormalization, activations, Reshape of the non-time axes, Add/Concatenate of
            aligned branches). Dropout and other training-only layers are removed. What each layer type does with
            time is the table in `tfx_ext.streaming.semantics`: axis arguments are normalized against the rank
            (`Softmax(axis=-2)` on `(batch, time, features)` is over time: refused), EinsumDense equations are
            read, Reshape/Permute must keep time on axis 1.
        mode: `Mode.STREAM_INTERNAL_STATE` (states in variables, zeroed by `runner.reset()`) or
            `Mode.STREAM_EXTERNAL_STATE` (states are extra inputs/outputs named `<layer>_<state>`).
        batch_size: the static batch size of the streaming model (internal state needs one).
        frames_per_step: frames per call; must be a multiple of every time stride met on the way (for a layer
            after strided layers: a multiple of the product of the strides).
        extra_frame_local: further layer classes to accept as frame-local.

    Returns:
        A `StreamingRunner` in both modes. `runner.model` is the streaming `keras.Model` (data input
        `(batch_size, frames_per_step, ...)`; external state adds the state inputs and outputs) to save or pass to
        `tfx_ext.lite`; `runner(chunk)` runs one step (feeding external states back), `runner.run(sequence)` a
        whole sequence, `runner.reset()` starts a new stream; `input_names`, `state_names`, `output_names` name
        the tensors, and `output_delays` gives the frames by which each streamed output lags the non-streaming
        one (0 for causal models): with look-ahead (`Stream(..., pad_time_dim="same")`), streamed frame
        `j + delay` equals whole-window frame `j`.

    Raises:
        ValueError: bad `mode`, `batch_size` or `frames_per_step`.
        NotStreamableError: a subclassed or nested model, a layer that mixes frames without a streaming form, a
            merge of branches with different look-ahead (non-causal model without `Delay`), a look-ahead before a
            layer with state (its state would take in the warm-up frames: use causal padding there, or put the
            look-ahead after it) or before a strided layer by a lag that is not a whole number of its output
            frames, or a frames_per_step that is not a multiple of a time stride. Every offending layer of the
            model is named in one error.
    """
    refused: dict[str, str] = {}
    if needs_streamable(model):  # a plain Keras model you trained: rewrite it with its weights first
        model, refused = streamable_rewrite(model)
    mode = Mode.of(mode)
    if not mode.is_streaming:
        raise ValueError(
            "`mode` must be Mode.STREAM_INTERNAL_STATE or Mode.STREAM_EXTERNAL_STATE (use to_non_streaming for "
            f"inference models). Received: mode={mode.value!r}"
        )
    batch_size = check_int("batch_size", batch_size, minimum=1)
    frames_per_step = check_int("frames_per_step", frames_per_step, minimum=1)
    try:
        streaming_model, states = _rebuild(model, mode, batch_size, frames_per_step, tuple(extra_frame_local), refused)
    except NotStreamableError:
        raise
    except Exception as error:  # a layer refused the new shapes while being rebuilt: surface our own error
        cause = error
        while cause is not None:
            if isinstance(cause, NotStreamableError):
                raise NotStreamableError(str(cause)) from error
            cause = cause.__cause__ or cause.__context__
        raise
    return StreamingRunner(streaming_model, output_delays=streaming_model.output_delays, state_names=states)


def to_non_streaming(model: keras.Model, batch_size: int | None = None) -> keras.Model:
    """Rebuilds `model` for whole-sequence inference: streamable layers in `NON_STREAM_INFERENCE`, dropout removed.

    Args:
        model: a functional or Sequential Keras 3 model.
        batch_size: a static batch size for the inputs, or None to keep the model's.

    Returns:
        A new `keras.Model` with the same weights.

    Raises:
        NotStreamableError: a subclassed or nested model.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True)
    rebuilt, _ = _rebuild(model, Mode.NON_STREAM_INFERENCE, batch_size, None)
    return rebuilt


def min_frames_per_step(model: keras.Model) -> int:
    """The smallest `frames_per_step` the model streams with: every streamable layer must get a multiple of its block
    size, counted in model-input frames through the strides before it (the least common multiple over layers)."""
    import math

    graph = _graph_config(model)
    rates: dict[str, int] = {}
    needed = 1
    for layer_config in graph["layers"]:
        name = layer_config["name"]
        sources = [h[0] for node in layer_config.get("inbound_nodes", []) for h in _history(node["args"])]
        rate = max([rates.get(s, 1) for s in sources] or [1])
        layer = model.get_layer(name) if layer_config["class_name"] != "InputLayer" else None
        if isinstance(layer, StreamingLayer):
            # its input gets frames_per_step / rate frames per step, a multiple of its block size
            needed = math.lcm(needed, Fraction(rate * max(int(layer.block_size), 1)).numerator)
            rate = _whole(rate * Fraction(max(int(layer.time_stride), 1), max(int(layer.output_ratio), 1)))
        rates[name] = rate
    return needed


def output_delay(model) -> dict:
    """Frames by which each output of a streaming model (or runner) lags the whole-sequence model (0: causal)."""
    if isinstance(model, StreamingRunner):
        return model.output_delays
    return dict(getattr(model, "output_delays", {}))  # our own plain attribute; absent on a model loaded from file


__all__ = [
    "to_streaming",
    "to_non_streaming",
    "min_frames_per_step",
    "output_delay",
    "FRAME_LOCAL_LAYERS",
    "TRAINING_ONLY_LAYERS",
]
