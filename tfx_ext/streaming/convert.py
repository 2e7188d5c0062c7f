"""Conversion of trained Keras 3 models to streaming models (and back to plain inference models).

`to_streaming` reads the model's public config (`get_config`), re-creates every layer with `from_config` (streamable
layers with their `mode` switched), wires the graph again on inputs of `frames_per_step` frames and copies the
weights layer by layer by name. It never imports private Keras modules. It knows nothing about particular
streamable layers: everything it needs comes from the `tfx_ext.streaming.contract.StreamingLayer` contract (`state_specs`,
`output_delay`, `time_stride`, `drops_time_axis`).

External-state models take `[inputs..., *states]` and return a dict keyed by the original output names plus one
entry per state; each state's input and output share the name `<layer>_<state>`, so runners (Keras or LiteRT)
bind them by name. `StreamingRunner` feeds the states back.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import keras
import numpy as np

from tfx_ext.errors import NotStreamableError
from tfx_ext.streaming.contract import Mode, StreamingLayer, reset_model_states, state_name

# Ordinary Keras layers that act on each frame on its own (time on axis 1 untouched), so they stream as they are.
FRAME_LOCAL_LAYERS: tuple[type, ...] = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
    keras.layers.Reshape,
    keras.layers.Identity,
    keras.layers.TimeDistributed,
)
# Layers that only act in training: removed from inference and streaming models (their input passes through).
TRAINING_ONLY_LAYERS: tuple[type, ...] = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
)
_TENSOR = "__keras_tensor__"


# ----- reading the model's graph from its public config ------------------------------------------------------------
def _graph_config(model: keras.Model) -> dict:
    """The functional config of `model` (Sequential models are expressed as a chain)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={type(model).__name__}")
    if isinstance(model, keras.Sequential):
        config = model.get_config()
        layers = [copy.deepcopy(layer) for layer in config["layers"]]
        if not layers or layers[0]["class_name"] != "InputLayer":
            shape = config.get("build_input_shape")
            if shape is None:
                raise NotStreamableError(
                    f"model {model.name!r} (Sequential) has no input shape; build it with keras.Input(...) first."
                )
            layers.insert(0, {"class_name": "InputLayer", "config": {"batch_shape": list(shape), "dtype": "float32",
                                                                       "name": f"{model.name}_input"}})
        previous = None
        for layer in layers:
            layer["name"] = layer["config"]["name"]
            layer["inbound_nodes"] = [] if previous is None else [
                {"args": [{"class_name": _TENSOR, "config": {"keras_history": [previous, 0, 0]}}], "kwargs": {}}
            ]
            previous = layer["name"]
        return {"layers": layers, "input_layers": [[layers[0]["name"], 0, 0]],
                "output_layers": [[previous, 0, 0]]}
    try:
        config = model.get_config()
    except NotImplementedError:
        config = None
    if not isinstance(config, dict) or "input_layers" not in config or "output_layers" not in config:
        raise NotStreamableError(
            f"model {model.name!r} ({type(model).__name__}) is a subclassed model: its call() is Python code that "
            "to_streaming cannot rewire. Build it as a functional or Sequential model (keras.Model(inputs, "
            "outputs)) from the same layers."
        )
    return copy.deepcopy(config)


def _refs(structure) -> list:
    """[layer, node, index] references of a config's `input_layers` / `output_layers` (list, single or dict)."""
    if isinstance(structure, dict):
        return [list(v) for v in structure.values()]
    if structure and isinstance(structure[0], str):
        return [list(structure)]
    return [list(v) for v in structure]


def _resolve(value, tensors: dict):
    """Replaces serialized Keras tensors in call arguments by the rebuilt tensors."""
    if isinstance(value, dict) and value.get("class_name") == _TENSOR:
        name, node, index = value["config"]["keras_history"]
        return tensors[(name, node, index)]
    if isinstance(value, dict):
        return {k: _resolve(v, tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, tensors) for v in value)
    return value


def _history(value) -> list[tuple]:
    """(layer, node, index) of every serialized tensor inside call arguments."""
    if isinstance(value, dict) and value.get("class_name") == _TENSOR:
        return [tuple(value["config"]["keras_history"])]
    if isinstance(value, dict):
        return [h for v in value.values() for h in _history(v)]
    if isinstance(value, (list, tuple)):
        return [h for v in value for h in _history(v)]
    return []


def _flat(outputs) -> list:
    if isinstance(outputs, dict):
        return list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def _output_names(model: keras.Model) -> list[str]:
    if isinstance(model, keras.Sequential):
        return [model.layers[-1].name]
    if isinstance(model.output, dict):
        return list(model.output.keys())
    return list(model.output_names)


# ----- per-tensor bookkeeping: time axis, frames per step, streaming delay -----------------------------------------
class _Info:
    __slots__ = ("has_time", "frames", "delay", "rate")

    def __init__(self, has_time: bool, frames: int | None, delay: int, rate: int):
        self.has_time = has_time  # the tensor has a time axis (axis 1)
        self.frames = frames  # frames per step on that axis when streaming
        self.delay = delay  # streamed outputs lag the whole-sequence ones by this many model-input frames
        self.rate = rate  # model-input frames per frame of this tensor


def _describe(layer) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _check_frame_local(layer, infos: list[_Info], layer_config: dict, extra_frame_local: tuple) -> None:
    timed = [info for info in infos if info.has_time]
    if not timed:
        return  # after the time axis is gone every layer is fine
    if not isinstance(layer, FRAME_LOCAL_LAYERS + tuple(extra_frame_local)):
        raise NotStreamableError(
            f"{_describe(layer)} is not known to act on each frame on its own, so it cannot stream as it is. "
            "Wrap time-mixing layers in tfx_ext.layers.Stream(...) (convolutions, pooling, Flatten, global pooling), "
            "use tfx_ext.layers.GRU/LSTM for recurrences, or pass extra_frame_local=(YourLayer,) if it is "
            "frame-local."
        )
    config = layer_config["config"]
    if isinstance(layer, keras.layers.Concatenate) and config.get("axis") == 1:
        raise NotStreamableError(f"{_describe(layer)} concatenates along time (axis=1); it cannot stream.")
    if isinstance(layer, keras.layers.Softmax) and config.get("axis") == 1:
        raise NotStreamableError(f"{_describe(layer)} normalizes over time (axis=1); it cannot stream.")
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization)):
        axes = config.get("axis")
        axes = axes if isinstance(axes, (list, tuple)) else [axes]
        if 1 in axes:
            raise NotStreamableError(f"{_describe(layer)} normalizes over time (axis=1); use axis=-1.")


def _fix_reshape(layer_config: dict, input_shape) -> None:
    """A Reshape that keeps the time axis may spell its length: make it -1 so it works on any chunk."""
    target = list(layer_config["config"]["target_shape"])
    if input_shape is None or len(input_shape) < 2 or not target:
        return
    if target[0] == input_shape[1] and target[0] != -1:
        layer_config["config"]["target_shape"] = [-1, *target[1:]]
    elif target[0] != -1:
        raise NotStreamableError(
            f"layer {layer_config['config']['name']!r} (Reshape) changes the time axis ({input_shape[1]} -> "
            f"{target[0]} frames); reshape only the axes after time (use -1 for time)."
        )


# ----- rebuilding ----------------------------------------------------------------------------------------------------
def _rebuild(model: keras.Model, mode: Mode, batch_size: int | None, frames_per_step: int | None,
             extra_frame_local: tuple = ()) -> tuple[keras.Model, list[str]]:
    """Rebuilds `model` with its streamable layers in `mode`; returns the model and its state names."""
    graph = _graph_config(model)
    streaming = mode.is_streaming
    external = mode == Mode.STREAM_EXTERNAL_STATE
    tensors: dict[tuple, Any] = {}
    infos: dict[tuple, _Info] = {}
    shapes: dict[tuple, Any] = {}  # whole-sequence shapes, read from the original config
    data_inputs: list = []
    state_inputs: list = []
    state_outputs: dict[str, Any] = {}
    source_layers = {layer.name: layer for layer in model.layers}

    for layer_config in graph["layers"]:
        name = layer_config["name"]
        class_name = layer_config["class_name"]
        if class_name == "InputLayer":
            config = layer_config["config"]
            batch_shape = list(config.get("batch_shape") or [None, *config["shape"]])
            if len(batch_shape) < 3 and streaming:
                raise NotStreamableError(
                    f"input {name!r} has shape {tuple(batch_shape)}; streaming inputs need (batch, time, features...)."
                )
            shapes[(name, 0, 0)] = tuple(batch_shape)
            if batch_size is not None:
                batch_shape[0] = batch_size
            if streaming:
                batch_shape[1] = frames_per_step
            tensor = keras.Input(batch_shape=tuple(batch_shape), dtype=config.get("dtype", "float32"), name=name)
            tensors[(name, 0, 0)] = tensor
            infos[(name, 0, 0)] = _Info(True, frames_per_step, 0, 1)
            data_inputs.append(tensor)
            continue
        if class_name in ("Functional", "Sequential", "Model") or isinstance(source_layers.get(name), keras.Model):
            raise NotStreamableError(
                f"layer {name!r} is a nested model; to_streaming needs one flat functional or Sequential model. "
                "Call the inner model's layers directly in the outer model."
            )
        serialized = {k: v for k, v in layer_config.items() if k not in ("inbound_nodes", "build_config", "name")}
        layer = keras.saving.deserialize_keras_object(copy.deepcopy(serialized))
        nodes = layer_config.get("inbound_nodes", [])
        if isinstance(layer, TRAINING_ONLY_LAYERS):
            for node_index, node in enumerate(nodes):
                (source,) = _history(node["args"])[:1]
                tensors[(name, node_index, 0)] = tensors[source]
                infos[(name, node_index, 0)] = infos[source]
                shapes[(name, node_index, 0)] = shapes.get(source)
            continue
        if isinstance(layer, StreamingLayer):
            serialized["config"] = dict(serialized["config"], mode=mode.value)
            layer = keras.saving.deserialize_keras_object(copy.deepcopy(serialized))
            if streaming and len(nodes) > 1:
                raise NotStreamableError(
                    f"{_describe(layer)} is called {len(nodes)} times; a streamable layer keeps one state, so use "
                    "one layer per call."
                )
        elif isinstance(layer, keras.layers.Reshape) and streaming and nodes:
            (source,) = _history(nodes[0]["args"])[:1]
            if infos[source].has_time:
                _fix_reshape(serialized, shapes.get(source))
                layer = keras.saving.deserialize_keras_object(copy.deepcopy(serialized))
        for node_index, node in enumerate(nodes):
            sources = _history(node["args"]) + _history(node["kwargs"])
            in_infos = [infos[s] for s in sources]
            args = _resolve(node["args"], tensors)
            kwargs = _resolve(node["kwargs"], tensors)
            timed = [i for i in in_infos if i.has_time]
            if isinstance(layer, StreamingLayer):
                info = in_infos[0]
                if streaming:
                    if info.frames is not None and info.frames % max(layer.block_size, 1):
                        raise NotStreamableError(
                            f"{_describe(layer)} steps over multiples of {layer.block_size} frames (its time stride) "
                            f"but receives {info.frames} frames per step (frames_per_step={frames_per_step} of the "
                            f"model input). Use frames_per_step that is a multiple of {layer.block_size * info.rate}."
                        )
                out_info = _Info(
                    not layer.drops_time_axis,
                    None if info.frames is None else info.frames // max(layer.time_stride, 1),
                    info.delay + layer.output_delay * info.rate,
                    info.rate * max(layer.time_stride, 1),
                )
                if external:
                    data, rest = args[0], list(args[1:])
                    specs = layer.state_specs(tuple(data.shape))
                    states = [
                        keras.Input(batch_shape=(data.shape[0], *spec.shape), dtype=spec.dtype,
                                    name=state_name(name, spec))
                        for spec in specs
                    ]
                    outputs = layer([data, *states], *rest, **kwargs)
                    outputs = _flat(outputs)
                    state_inputs.extend(states)
                    for spec, value in zip(specs, outputs[1:]):
                        state_outputs[state_name(name, spec)] = value
                    outputs = outputs[0]
                else:
                    outputs = layer(*args, **kwargs)
            else:
                if streaming:
                    _check_frame_local(layer, in_infos, layer_config, extra_frame_local)
                    delays = sorted({i.delay for i in timed})
                    if len(delays) > 1:
                        lags = [i.delay for i in timed]
                        raise NotStreamableError(
                            f"{_describe(layer)} merges branches whose streamed values lag by {lags} frames: the "
                            f"model is not causal there (a look-ahead layer on one branch only). Put "
                            f"tfx_ext.layers.Delay(d) on the branches that lag less so they all lag {max(lags)} "
                            "frames (d in frames of that branch)."
                        )
                    if len({i.frames for i in timed}) > 1:
                        raise NotStreamableError(
                            f"{_describe(layer)} merges branches with different time strides "
                            f"({[i.frames for i in timed]} frames per step); it cannot stream."
                        )
                base = timed[0] if timed else (in_infos[0] if in_infos else _Info(False, None, 0, 1))
                out_info = _Info(bool(timed), base.frames, base.delay, base.rate)
                outputs = layer(*args, **kwargs)
            for index, tensor in enumerate(_flat(outputs)):
                tensors[(name, node_index, index)] = tensor
                infos[(name, node_index, index)] = out_info
        # whole-sequence shapes of this layer's outputs, for Reshape fixes downstream
        source = source_layers.get(name)
        if source is not None:
            try:
                for index, tensor in enumerate(_flat(source.output)):
                    shapes[(name, 0, index)] = tuple(tensor.shape)
            except (AttributeError, ValueError):
                pass

    names = _output_names(model)
    outputs = [tensors[tuple(ref)] for ref in _refs(graph["output_layers"])]
    delays = {n: infos[tuple(ref)].delay for n, ref in zip(names, _refs(graph["output_layers"]))}
    suffix = {Mode.STREAM_INTERNAL_STATE: "stream_internal", Mode.STREAM_EXTERNAL_STATE: "stream_external"}.get(
        mode, "inference")
    if external:
        clash = set(names) & set(state_outputs)
        if clash:
            raise NotStreamableError(f"output names {sorted(clash)} clash with state names; rename those outputs.")
        rebuilt = keras.Model([*data_inputs, *state_inputs], {**dict(zip(names, outputs)), **state_outputs},
                              name=f"{model.name}_{suffix}")
    else:
        rebuilt = keras.Model(data_inputs if len(data_inputs) > 1 else data_inputs[0],
                              outputs if len(outputs) > 1 else outputs[0], name=f"{model.name}_{suffix}")
    _copy_weights(model, rebuilt)
    rebuilt.output_delays = delays  # plain attribute: informative only, not saved
    return rebuilt, list(state_outputs)


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
                f"{_describe(layer)} has {len(variables)} weights after conversion but {len(values)} before; "
                "its config does not rebuild the same layer."
            )
        for variable, value in zip(variables, values):
            if tuple(variable.shape) != value.shape:
                raise NotStreamableError(
                    f"{_describe(layer)}: weight {variable.path!r} has shape {tuple(variable.shape)} after conversion "
                    f"but {value.shape} before."
                )
            variable.assign(value)


# ----- public API ----------------------------------------------------------------------------------------------------
def _check_positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def to_streaming(
    model: keras.Model,
    mode: Mode | str = Mode.STREAM_INTERNAL_STATE,
    batch_size: int = 1,
    frames_per_step: int = 1,
    *,
    extra_frame_local: tuple[type, ...] = (),
):
    """Converts a trained functional or Sequential model into one that consumes `frames_per_step` frames per call.

    Args:
        model: a functional or Sequential Keras 3 model whose time-mixing layers are streamable
            (`tfx_ext.layers.Stream`, `GRU`, `LSTM`, `Delay`, any `StreamingLayer`) and whose other layers act on
            each frame (Dense, BatchNormalization, activations, Reshape of the non-time axes, Add/Concatenate of
            aligned branches). Dropout and other training-only layers are removed.
        mode: `Mode.STREAM_INTERNAL_STATE` (states in variables; `tfx_ext.reset_model_states(model)` restarts) or
            `Mode.STREAM_EXTERNAL_STATE` (states are extra inputs/outputs named `<layer>_<state>`).
        batch_size: the static batch size of the streaming model (internal state needs one).
        frames_per_step: frames per call; must be a multiple of every time stride met on the way (for a layer
            after strided layers: a multiple of the product of the strides).
        extra_frame_local: further layer classes to accept as frame-local.

    Returns:
        For `STREAM_INTERNAL_STATE`, the streaming `keras.Model` (input `(batch_size, frames_per_step, ...)`).
        For `STREAM_EXTERNAL_STATE`, a `StreamingRunner` around the streaming model (`runner.model`), which feeds the
        states back and has `reset()`.
        The model gets a plain attribute `output_delays`: frames by which each streamed output lags the
        non-streaming one (0 for causal models).

    Raises:
        ValueError: bad `mode`, `batch_size` or `frames_per_step`.
        NotStreamableError: a subclassed or nested model, a layer that mixes frames without a streaming form, a
            merge of branches with different look-ahead (non-causal model without `Delay`), or a frames_per_step
            that is not a multiple of a time stride.
    """
    mode = Mode.of(mode)
    if not mode.is_streaming:
        raise ValueError(
            "`mode` must be Mode.STREAM_INTERNAL_STATE or Mode.STREAM_EXTERNAL_STATE (use to_non_streaming for "
            f"inference models). Received: mode={mode.value!r}"
        )
    _check_positive("batch_size", batch_size)
    _check_positive("frames_per_step", frames_per_step)
    try:
        streaming_model, states = _rebuild(model, mode, batch_size, frames_per_step, tuple(extra_frame_local))
    except NotStreamableError:
        raise
    except Exception as error:  # a layer refused the new shapes while being rebuilt: surface our own error
        cause = error
        while cause is not None:
            if isinstance(cause, NotStreamableError):
                raise NotStreamableError(str(cause)) from error
            cause = cause.__cause__ or cause.__context__
        raise
    if mode == Mode.STREAM_EXTERNAL_STATE:
        return StreamingRunner(streaming_model)
    return streaming_model


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
    if batch_size is not None:
        _check_positive("batch_size", batch_size)
    rebuilt, _ = _rebuild(model, Mode.NON_STREAM_INFERENCE, batch_size, None)
    return rebuilt


class StreamingRunner:
    """Steps a streaming model, feeding external states back by name; also works on internal-state models.

    States are the inputs whose names are also output names (`<layer>_<state>`); they start at zero.

    Args:
        model: a streaming model from `to_streaming` (either mode), or one loaded from `.keras`.
        compiled: run each step through a `tf.function` (much faster than eager for long streams).

    Example:
        >>> runner = to_streaming(model, "stream_external_state")    # doctest: +SKIP
        >>> for frame in frames: probs = runner(frame)                # doctest: +SKIP
        >>> runner.reset()                                            # doctest: +SKIP
    """

    def __init__(self, model: keras.Model, *, compiled: bool = True):
        self.model = model
        names = list(model.output.keys()) if isinstance(model.output, dict) else list(model.output_names)
        input_names = [t.name for t in model.inputs]
        self.state_names = [n for n in input_names if n in names]
        self.input_names = [n for n in input_names if n not in self.state_names]
        self.output_names = [n for n in names if n not in self.state_names]
        self.external = bool(self.state_names) or isinstance(model.output, dict)
        self._state_shapes = {t.name: (tuple(t.shape), t.dtype) for t in model.inputs if t.name in self.state_names}
        self.batch_size = model.inputs[0].shape[0]
        self.frames_per_step = model.inputs[0].shape[1]
        self._call = model
        if compiled:
            import tensorflow as tf

            self._call = tf.function(lambda inputs: model(inputs, training=False))
        self.states: dict[str, np.ndarray] = {}
        self.reset()

    @property
    def output_delays(self) -> dict:
        return getattr(self.model, "output_delays", {})

    def reset(self) -> None:
        """Starts a new stream: zero states (external) or zeroed state variables (internal)."""
        self.states = {n: keras.ops.zeros(shape, dtype=dtype) for n, (shape, dtype) in self._state_shapes.items()}
        reset_model_states(self.model)

    def __call__(self, inputs):
        """One step: `inputs` is an array (single input) or a dict by input name. Returns an array or a dict."""
        if not isinstance(inputs, Mapping):
            if len(self.input_names) != 1:
                raise ValueError(f"inputs must be a dict with keys {self.input_names}. Received: an array")
            inputs = {self.input_names[0]: inputs}
        feed = {**{n: keras.ops.convert_to_tensor(v) for n, v in inputs.items()}, **self.states}
        ordered = [feed[t.name] for t in self.model.inputs]
        outputs = self._call(ordered if len(ordered) > 1 else ordered[0])
        if isinstance(outputs, Mapping):
            self.states = {n: outputs[n] for n in self.state_names}
            values = {n: np.asarray(outputs[n]) for n in self.output_names}
        else:
            values = dict(zip(self.output_names, [np.asarray(o) for o in _flat(outputs)]))
        return values[self.output_names[0]] if len(values) == 1 else values

    step = __call__

    def run(self, sequence, *, reset: bool = True):
        """Streams a whole `(batch, time, ...)` sequence chunk by chunk (time must be a multiple of the chunk).

        Returns per output: outputs with a time axis concatenated along time; outputs without one stacked along a
        new axis 1 (one entry per step).
        """
        if reset:
            self.reset()
        sequence = np.asarray(sequence)
        step = self.frames_per_step
        if sequence.shape[1] % step:
            raise ValueError(
                f"sequence length must be a multiple of frames_per_step={step}. Received: shape={sequence.shape}"
            )
        results = [self(sequence[:, i:i + step]) for i in range(0, sequence.shape[1], step)]
        return _stack_steps(results)


def _stack_steps(results: list):
    if isinstance(results[0], dict):
        return {k: _stack_steps([r[k] for r in results]) for k in results[0]}
    first = np.asarray(results[0])
    if first.ndim >= 3:
        return np.concatenate(results, axis=1)
    return np.stack(results, axis=1)


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
            needed = math.lcm(needed, rate * max(int(layer.block_size), 1))
            rate *= max(int(layer.time_stride), 1)
        rates[name] = rate
    return needed


def output_delay(model: keras.Model) -> dict:
    """Frames by which each output of a streaming model lags the whole-sequence model (0 for causal models)."""
    return dict(getattr(model, "output_delays", {}))


__all__ = [
    "to_streaming",
    "to_non_streaming",
    "StreamingRunner",
    "min_frames_per_step",
    "FRAME_LOCAL_LAYERS",
    "TRAINING_ONLY_LAYERS",
]
