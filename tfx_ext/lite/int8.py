"""Full-integer (int8) TFLite export: representative data with realistic streaming states, and an op check.

`to_tflite(model, quantize="int8", representative_data=...)` (in `tfx_ext.lite.convert`) builds the SavedModel
converter and uses this module for everything int8: `require_calibration`, `unrolled_recurrences`,
`configure_int8`, `conversion_error` and `check_full_integer`.

Three kinds of models:
- non-streaming models: representative data are dicts of input name -> array (one signature invocation each);
- external-state streaming models (`to_streaming(..., "stream_external_state").model`): the states are signature
  inputs, so they must be in the representative data with realistic values; `streaming_calibration_data` runs the
  float streaming model over real sequences and yields every step's inputs together with the states it saw
  (calibrating on zero states leaves the state tensors with a useless range);
- internal-state streaming models: the states are resource variables, quantized with
  the converter's variable quantization (`tfx_ext._compat.enable_variable_quantization`; no QUANTIZE/DEQUANTIZE
  around them). The calibrator runs the float model
  invocation after invocation, so the variables follow real streams; `streaming_calibration_data` restarts each
  sequence through the `reset_states` signature. That signature takes a dummy int32 input `reset` here, because
  the calibrator cannot load a model with an input-less signature.

Recurrent layers (GRU/LSTM) are unrolled over the signature's static time axis for the conversion
(`unrolled_recurrences`): a TFLite WHILE loop has no int8 kernels.

After conversion `check_full_integer` reads the flatbuffer (every subgraph) and lists the ops that still compute in
float and the QUANTIZE/DEQUANTIZE ops that are not at the model boundary; `ExportError` names them unless
`allow_float_ops=True`.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import Iterable, Mapping

import keras
import numpy as np
import tensorflow as tf


from tfx_ext._compat import edit_calibration, enable_variable_quantization, tflite_schema
from tfx_ext.errors import DataError, ExportError
from tfx_ext.lite.signatures import RESET_SIGNATURE, SIGNATURE, reset_sample, state_variables
from tfx_ext.streaming.contract import Mode, streaming_layers
from tfx_ext.streaming.runner import StreamingRunner
from tfx_ext.transforms.qat import is_quantize_aware

# Ops that hold no arithmetic: variables, control flow and shape plumbing on int32.
_BOOKKEEPING_OPS = {"VAR_HANDLE", "CALL_ONCE", "READ_VARIABLE", "ASSIGN_VARIABLE", "WHILE", "IF"}
_FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"}


# ----- representative data -----------------------------------------------------------------------------------------
def _samples(representative_data, specs: Mapping[str, Mapping[str, tf.TensorSpec]]) -> list:
    if callable(representative_data):
        representative_data = representative_data()
    if isinstance(representative_data, (np.ndarray, tf.Tensor)):
        return _array_samples(np.asarray(representative_data), specs[SIGNATURE])
    if isinstance(representative_data, Mapping) or not isinstance(representative_data, Iterable):
        raise DataError(
            "`representative_data` must be a numpy array of samples (single-input models), or an iterable, a "
            "generator function or a tf.data.Dataset of samples: dicts of input name -> array, or lists of arrays "
            f"in the signature's input order {list(specs[SIGNATURE])} (see tfx_ext.lite.int8."
            f"streaming_calibration_data). Received: representative_data of type {type(representative_data).__name__}"
        )
    if isinstance(representative_data, tf.data.Dataset):
        representative_data = representative_data.as_numpy_iterator()
    return list(representative_data)


def _array_samples(array: np.ndarray, expected: Mapping[str, tf.TensorSpec]) -> list:
    """A numpy array of samples for a single-input signature: `(num, *signature shape)` (one invocation each) or
    `(num, *per-example shape)` (split into invocations of the signature's batch)."""
    if len(expected) != 1:
        raise DataError(
            f"`representative_data` as one array is for single-input models; this signature has the inputs "
            f"{list(expected)} (streaming states included): pass dicts of input name -> array. "
            f"Received: an array of shape {array.shape}"
        )
    (name, spec), = expected.items()
    shape = tuple(spec.shape)
    if array.shape[1:] == shape:
        return [{name: value} for value in array]
    if array.shape[1:] == shape[1:] and len(array) % shape[0] == 0:
        return [{name: array[i:i + shape[0]]} for i in range(0, len(array), shape[0])]
    raise DataError(
        f"`representative_data` as an array must be (num, *{shape}) or (num, *{shape[1:]}) with num a multiple of "
        f"the batch {shape[0]}, for the input {name!r}. Received: shape={array.shape}"
    )


def _as_dict(sample, expected: Mapping[str, tf.TensorSpec], index: int, key: str):
    """A sample in any TFLite convention (dict, list/tuple of arrays in input order, one array) as a dict."""
    if isinstance(sample, Mapping):
        return sample
    names = list(expected)
    if isinstance(sample, (list, tuple)) and len(sample) == len(names):
        return dict(zip(names, sample))
    if isinstance(sample, (np.ndarray, tf.Tensor)) and len(names) == 1:
        return {names[0]: sample}
    raise DataError(
        f"representative sample {index} must be a dict of input name -> array, or a list of {len(names)} arrays in "
        f"the order {names} of signature {key!r}. Received: {type(sample).__name__}"
        + (f" of length {len(sample)}" if isinstance(sample, (list, tuple)) else "")
    )


def check_representative_data(representative_data, specs: Mapping[str, Mapping[str, tf.TensorSpec]]) -> list:
    """Materializes `representative_data` and checks every sample against the signature inputs.

    Args:
        representative_data: in the TFLite conventions: a numpy array of samples (single-input models), or an
            iterable, a function returning one, or a `tf.data.Dataset`, of samples; a sample is a dict input name
            -> array, a list of arrays in the signature's input order, one array (single input), or a
            `(signature_key, dict)` tuple.
        specs: `{signature: {input name: tf.TensorSpec}}` of the exported model.

    Returns:
        A list of `(signature_key, {name: float32 array})` samples.

    Raises:
        DataError: empty data, unknown signature, missing or unknown input names (the expected ones listed), wrong
            shape or non-float dtype.
    """
    samples = _samples(representative_data, specs)
    if not samples:
        raise DataError("`representative_data` is empty; int8 calibration needs at least one sample.")
    checked = []
    for index, sample in enumerate(samples):
        key = SIGNATURE
        if isinstance(sample, tuple) and len(sample) == 2 and isinstance(sample[0], str):
            key, sample = sample
        if key not in specs:
            raise DataError(
                f"representative sample {index} is for signature {key!r}; the model has {sorted(specs)}."
            )
        expected = specs[key]
        sample = _as_dict(sample, expected, index, key)
        missing, unknown = sorted(set(expected) - set(sample)), sorted(set(sample) - set(expected))
        if missing or unknown:
            raise DataError(
                f"representative sample {index} must have exactly the inputs {sorted(expected)} of signature "
                f"{key!r} (streaming states included). Missing: {missing}; unknown: {unknown}"
            )
        values = {}
        for name, spec in expected.items():
            value = np.asarray(sample[name])
            want = spec.dtype.as_numpy_dtype
            if np.issubdtype(want, np.floating) != np.issubdtype(value.dtype, np.floating) or value.dtype == bool:
                raise DataError(
                    f"representative input {name!r} (sample {index}) must have dtype {np.dtype(want).name}. "
                    f"Received: dtype={value.dtype}"
                )
            if tuple(value.shape) != tuple(spec.shape):
                raise DataError(
                    f"representative input {name!r} (sample {index}) must have shape {tuple(spec.shape)} (the "
                    f"exported signature, batch included). Received: shape={tuple(value.shape)}"
                )
            values[name] = value.astype(want)
        checked.append((key, values))
    return checked


def streaming_calibration_data(model_or_runner, sequences, *, reset: bool = True) -> list:
    """Calibration samples from streaming the float model over real sequences (states included).

    Args:
        model_or_runner: a `StreamingRunner` (external state: `to_streaming(..., "stream_external_state")`), an
            external-state streaming model, or an internal-state streaming model.
        sequences: `(num, time, ...)` whole sequences (features, or `(num, samples)` raw audio), `time` a multiple of the model's frames per step;
            each is streamed from a fresh state, one batch of the streaming model's batch size at a time. Every
            sequence is used: a last batch that is not full (or `num` below the batch size) is padded with
            sequences from the start, which adds no values outside the data's ranges.
        reset: for internal-state models, start every sequence with a `reset_states` invocation (the calibrator
            then sees states of real streams from zero, as the app will).

    Returns:
        A list of samples for `to_tflite(..., representative_data=...)`: for external-state models a dict of the
        data inputs and the states each step received; for internal-state models the data inputs, preceded at every
        sequence start by `("reset_states", {"reset": ...})`.
    """

    runner = StreamingRunner.of(model_or_runner)
    internal = bool(state_variables(runner.model))
    if len(runner.input_names) != 1:
        raise ValueError(f"streaming_calibration_data supports one data input. Received: {runner.input_names}")
    name = runner.input_names[0]
    batch, step = runner.batch_size or 1, runner.frames_per_step
    sequences = np.asarray(sequences)
    sequences = sequences if sequences.dtype.kind in "iu" else sequences.astype("float32")  # int16 PCM stays int16
    if sequences.ndim < 2 or sequences.shape[1] % step:  # (num, samples) raw audio streams too
        raise DataError(
            f"`sequences` must be (num, time, ...) with time a multiple of frames_per_step={step}. "
            f"Received: shape={sequences.shape}"
        )
    if len(sequences) == 0:
        raise DataError("`sequences` is empty; streaming calibration needs at least one sequence.")
    padded = -(-len(sequences) // batch) * batch
    sequences = sequences[np.arange(padded) % len(sequences)]  # pad the last batch by wrapping around
    samples: list = []
    for start in range(0, padded, batch):
        sequence = sequences[start:start + batch]
        runner.reset()
        if internal and reset:
            samples.append(reset_sample())
        for t in range(0, sequence.shape[1], step):
            chunk = sequence[:, t:t + step]
            samples.append({name: chunk, **{k: np.asarray(v) for k, v in runner.states.items()}})
            runner(chunk)
    runner.reset()
    return samples


# ----- inspection --------------------------------------------------------------------------------------------------
def _enum_names(enum) -> dict[int, str]:
    return {value: key for key, value in vars(enum).items() if not key.startswith("_") and isinstance(value, int)}


def model_ops(flatbuffer: bytes) -> list[dict]:
    """Every op of every subgraph: `{"subgraph", "index", "op", "inputs", "outputs"}` with tensor type names and
    whether each tensor is a subgraph input/output (`"boundary"`). Read with the flatbuffer schema LiteRT ships
    (`tfx_ext._compat.tflite_schema`)."""
    schema = tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    result = []
    for s, subgraph in enumerate(model.subgraphs):
        boundary = set(np.atleast_1d(subgraph.inputs).tolist()) | set(np.atleast_1d(subgraph.outputs).tolist())
        for i, op in enumerate(subgraph.operators or []):
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            name = op_names.get(builtin, str(builtin))
            if name == "CUSTOM" and code.customCode:
                name = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)

            def describe(indices):
                return [
                    (type_names[subgraph.tensors[t].type], t in boundary)
                    for t in (np.atleast_1d(indices).tolist() if indices is not None else [])
                    if t >= 0
                ]

            result.append({"subgraph": s, "index": i, "op": name, "inputs": describe(op.inputs),
                           "outputs": describe(op.outputs)})
    return result


def non_integer_ops(flatbuffer: bytes) -> list[str]:
    """Ops that keep a model from being full-integer: float arithmetic, and QUANTIZE/DEQUANTIZE away from the model
    boundary (a QUANTIZE of a float signature input or a DEQUANTIZE to a float signature output is the boundary
    conversion of `int8_io=False` and is allowed; an int8 -> int8 QUANTIZE is a requantization and is allowed).

    Returns:
        Descriptions like `"subgraph 0 op 12 DEQUANTIZE (INT8 -> FLOAT32)"`; empty for a full-integer model.
    """
    found = []
    for op in model_ops(flatbuffer):
        name = op["op"]
        if name in _BOOKKEEPING_OPS:
            continue
        in_types = [t for t, _ in op["inputs"]]
        out_types = [t for t, _ in op["outputs"]]
        label = f"subgraph {op['subgraph']} op {op['index']} {name} ({','.join(in_types)} -> {','.join(out_types)})"
        if name == "QUANTIZE":
            if any(t in _FLOAT_TYPES for t in in_types) and not all(b for _, b in op["inputs"]):
                found.append(label)
        elif name == "DEQUANTIZE":
            if not all(b for _, b in op["outputs"]):
                found.append(label)
        elif any(t in _FLOAT_TYPES for t in in_types + out_types):
            found.append(label)
    return found


def check_full_integer(flatbuffer: bytes, model_name: str = "model", *, learned_ranges_only: bool = False) -> None:
    """Raises `ExportError` listing the float ops and inner QUANTIZE/DEQUANTIZE ops of an int8 flatbuffer.

    `learned_ranges_only`: the export was calibrated from a `quantize_aware` model's ranges alone (no
    representative data); the error then says which tensors have none.
    """
    found = non_integer_ops(flatbuffer)
    if found:
        shown = "; ".join(found[:20]) + (f"; ... ({len(found) - 20} more)" if len(found) > 20 else "")
        float_ops = sorted({item.split(" ")[4] for item in found} - {"QUANTIZE", "DEQUANTIZE"})
        raise ExportError(
            f"int8 export of model {model_name!r} is not full-integer: ops without int8 kernels: {float_ops}; "
            f"{len(found)} op(s) compute in float or convert between float and int8 inside the model: {shown}. "
            "Pass allow_float_ops=True to accept a hybrid model, or replace those layers."
            + (" (This quantize-aware model has tensors without learned ranges, such as recurrent layers' "
               "internals or streaming states: pass representative_data for them.)" if learned_ranges_only else "")
        )


def _unsupported_op(message: str) -> str | None:
    for pattern in (r"op: '?([A-Za-z0-9_.]+)'?", r"'(tfl\.[a-z0-9_]+)'", r"'(tf\.[A-Za-z0-9_]+)'"):
        match = re.search(pattern, message)
        if match:
            return match.group(1)
    return None


def _all_layers(model) -> list:
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(_all_layers(layer))
        for attribute in ("rnn", "cell", "layer"):  # wrappers: tfx_ext GRU/LSTM (.rnn), Stream (.cell), Bidirectional
            inner = getattr(layer, attribute, None)
            if isinstance(inner, keras.layers.Layer):
                found.append(inner)
    return found


@contextlib.contextmanager
def unrolled_recurrences(model: keras.Model):
    """Within the block, every recurrent layer of `model` unrolls over its time axis.

    A recurrent layer that is not unrolled converts to a TFLite WHILE loop, which has no int8 kernels (the TF 2.21
    calibrator even crashes the process on it). Keras reads `RNN.unroll` when the layer is called, so an export
    traced inside the block has plain per-frame ops (FULLY_CONNECTED, ADD, MUL, LOGISTIC, TANH) with the same
    weights. The layers are restored on exit.
    """
    loops = [layer for layer in _all_layers(model)
             if isinstance(layer, keras.layers.RNN) and not getattr(layer, "unroll", False)]
    try:
        for layer in loops:
            layer.unroll = True
        yield
    finally:
        for layer in loops:
            layer.unroll = False


# ----- one scale per state -----------------------------------------------------------------------------------------
def _signature_tensors(model, key: str = SIGNATURE) -> tuple[int, dict[str, int], dict[str, int]] | None:
    """(subgraph index, {input name: tensor}, {output name: tensor}) of signature `key` of a `ModelT`."""
    for signature in model.signatureDefs or []:
        name = signature.signatureKey.decode() if isinstance(signature.signatureKey, bytes) else signature.signatureKey
        if name == key:
            def names(maps):
                return {(m.name.decode() if isinstance(m.name, bytes) else m.name): m.tensorIndex for m in maps or []}
            return signature.subgraphIndex, names(signature.inputs), names(signature.outputs)
    return None


# TFLite int8 kernels that require their data input(s) and output to share one scale and zero point: the MLIR
# quantizer gives the whole chain one range, and it takes one tensor's calibrated range, not their union, so a
# wider tensor of the chain clips (a streamed causal AveragePooling: concat(buffer, x) -> AVERAGE_POOL_2D ->
# concat(...) took the pooled output's [-1.9, 1.6] for inputs in [-3.5, 3.4]; found by the fuzzer's int8 check).
SAME_SCALE_OPS = ("AVERAGE_POOL_2D", "MAX_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "STRIDED_SLICE", "SLICE",
                  "CONCATENATION", "TRANSPOSE", "GATHER", "PAD", "PADV2", "SPLIT", "SPLIT_V", "PACK", "UNPACK",
                  "MAXIMUM", "MINIMUM", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "TILE", "BROADCAST_TO")


def _calibrated(tensor) -> bool:
    q = tensor.quantization
    return q is not None and q.min is not None and q.max is not None and len(q.min) == 1


def tie_state_ranges(calibrated: bytes) -> bytes:
    """Gives every group of tensors that int8 quantizes with one scale the union of their calibrated ranges.

    Two kinds of groups. An external-state streaming signature has a state input and a state output of the same
    name (step t's output is step t+1's input); calibrated apart, their min/max differ slightly, so the quantizer
    gave them different scales and an app could not feed the raw int8 output back. And the tensors chained by
    ops whose int8 kernels need one scale in and out (`SAME_SCALE_OPS`: pooling, concatenation, reshapes, slices),
    to which the quantizer gives one tensor's range, clipping the others. Widening a calibrated range is always
    safe (values stay representable, the step grows by the ratio of the ranges). `calibrated` is the float
    flatbuffer with min/max the calibrator wrote (see `tfx_ext._compat.edit_calibration`).
    """
    import flatbuffers

    schema = tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(calibrated, 0))
    same_scale = {code: name for code, name in _enum_names(schema.BuiltinOperator).items() if name in SAME_SCALE_OPS}
    found = _signature_tensors(model)
    changed = False
    for index, subgraph in enumerate(model.subgraphs or []):
        tensors = subgraph.tensors or []
        parent = list(range(len(tensors)))
        padded: set[int] = set()  # PADV2 outputs: their range holds the pad constant (-3e38 for max pooling),
        # which int8 clamps to the group's lowest value, as a max pool wants; it must not widen the group

        def root(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        def join(members):
            members = [m for m in members if 0 <= m < len(tensors) and _calibrated(tensors[m])]
            for m in members[1:]:
                parent[root(m)] = root(members[0])

        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            kind = same_scale.get(builtin)
            if kind is not None:
                if kind == "PADV2":
                    padded.update(op.outputs)
                merges = kind in ("CONCATENATION", "PACK", "MAXIMUM", "MINIMUM")  # every input is data
                data = list(op.inputs) if merges else list(op.inputs[:1])
                join(data + list(op.outputs))
        if found is not None and found[0] == index:
            _, inputs, outputs = found
            for name in set(inputs) & set(outputs):
                join([inputs[name], outputs[name]])
        groups: dict[int, list[int]] = {}
        for i in range(len(tensors)):
            if _calibrated(tensors[i]):
                groups.setdefault(root(i), []).append(i)
        for members in groups.values():
            if len(members) < 2:
                continue
            ranged = [m for m in members if m not in padded] or members
            low = min(float(tensors[m].quantization.min[0]) for m in ranged)
            high = max(float(tensors[m].quantization.max[0]) for m in ranged)
            for m in members:
                q = tensors[m].quantization
                if (float(q.min[0]), float(q.max[0])) != (low, high):
                    q.min, q.max = [low], [high]
                    changed = True
    if not changed:
        return calibrated
    builder = flatbuffers.Builder(len(calibrated) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def share_state_quantization(flatbuffer: bytes, model_name: str = "model") -> bytes:
    """Gives every external state's output tensor exactly its input's scale and zero point in a quantized export.

    With tied ranges (`tie_state_ranges`) the quantizer still derives the two scales by different paths when one
    side comes from a learned (QAT fake-quant) range and the other from calibration: they can differ in the last
    float bit (QAT gru `gru2_h`: 0.0027502519 in, 0.0027502517 out), and feeding the raw int8 output back then
    is off by a requantization. A rounding-level difference (relative 1e-5, same zero point) is snapped to the
    input's parameters; TFLite kernels read tensor scales when they prepare, so the producing op follows.

    Raises:
        ExportError: a state whose input and output quantization differ by more than rounding.
    """
    import flatbuffers

    schema = tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    found = _signature_tensors(model)
    if found is None:
        return flatbuffer
    subgraph, inputs, outputs = found
    tensors = model.subgraphs[subgraph].tensors
    changed = False
    for name in sorted(set(inputs) & set(outputs)):
        given, produced = tensors[inputs[name]].quantization, tensors[outputs[name]].quantization
        if given is None or produced is None or given.scale is None or produced.scale is None or \
                len(given.scale) != 1 or len(produced.scale) != 1:
            continue  # a float state (hybrid export)
        same = (float(given.scale[0]), int(given.zeroPoint[0])) == (float(produced.scale[0]),
                                                                     int(produced.zeroPoint[0]))
        if same:
            continue
        if int(given.zeroPoint[0]) != int(produced.zeroPoint[0]) or \
                abs(float(produced.scale[0]) / float(given.scale[0]) - 1.0) > 1e-5:
            raise ExportError(
                f"int8 export of model {model_name!r}: state {name!r} is quantized with scale/zero point "
                f"{float(given.scale[0]):.6g}/{int(given.zeroPoint[0])} as input but "
                f"{float(produced.scale[0]):.6g}/{int(produced.zeroPoint[0])} as output, so its raw int8 output "
                "cannot be fed back; calibrate with streaming_calibration_data(runner, clips)."
            )
        produced.scale, produced.zeroPoint = [float(given.scale[0])], [int(given.zeroPoint[0])]
        changed = True
    if not changed:
        return flatbuffer
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def state_quantization(flatbuffer: bytes) -> dict[str, tuple[tuple[float, int], tuple[float, int]]]:
    """{state name: ((input scale, zero point), (output scale, zero point))} of an external-state export's
    serving signature (names that are both inputs and outputs); empty for other models."""
    schema = tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    found = _signature_tensors(model)
    if found is None:
        return {}
    subgraph, inputs, outputs = found
    tensors = model.subgraphs[subgraph].tensors

    def params(index):
        q = tensors[index].quantization
        if q is None or q.scale is None or len(q.scale) != 1:
            return (0.0, 0)
        return float(q.scale[0]), int(q.zeroPoint[0])

    return {name: (params(inputs[name]), params(outputs[name])) for name in sorted(set(inputs) & set(outputs))}


# ----- patterns that crash the converter ---------------------------------------------------------------------------
def _while_loops(model: keras.Model, batch_size: int | None) -> list[str]:
    """Names of the TF while loops in `model`'s serving function (traced, not converted)."""
    from tfx_ext.lite.signatures import serving_function

    serve, signature = serving_function(model, batch_size)
    graph = tf.function(serve).get_concrete_function(signature[0]).graph
    return [op.name for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]


def _owner(op_name: str, layers: list) -> str:
    """The name of the innermost layer whose name scope holds `op_name` (Keras adds `_<n>` to repeated scopes)."""
    scopes = op_name.split("/")
    owner = None
    for scope in scopes:
        for layer in layers:
            if re.fullmatch(re.escape(layer.name) + r"(_\d+)?", scope):
                owner = layer.name
    return owner or op_name


def check_crash_patterns(model: keras.Model, batch_size: int | None) -> None:
    """Raises `ExportError` for the patterns that crash TF 2.21's int8 calibrator (a segfault: a dead process or a
    dead Colab kernel, no Python error), before the converter runs. Call it with recurrences unrolled
    (`unrolled_recurrences`), as the export traces them.

    Known: a TF while loop left in the graph (the calibrator crashes on WHILE): a scan over time in a
    user's layer. (`DeltaActivation(method="gated")` unrolls its scan over the static time axis TFLite needs.)

    Raises:
        ExportError: names every offending layer and the workaround.
    """
    layers = _all_layers(model)
    loops = _while_loops(model, batch_size)
    if loops:
        owners = sorted({_owner(name, layers) for name in loops})
        raise ExportError(
            f"int8 export of model {model.name!r} would crash TF's int8 calibrator (segfault): layer(s) {owners} "
            "compute a while loop (a scan or a recurrence that cannot be unrolled). Replace them by frame-local or "
            "unrollable layers, or export as float32, 'dynamic' or 'float16'. (to_tflite(..., isolate=True) "
            "converts in a child process: a crash then raises ExportError instead of killing this one.)"
        )


# ----- conversion --------------------------------------------------------------------------------------------------
def recurrent_layers(model: keras.Model) -> list[str]:
    """Names of the recurrent layers of `model` as the user named them: Keras RNNs, and the `tfx_ext` GRU/LSTM
    wrappers (named by the wrapper, not by their inner RNN)."""
    layers = _all_layers(model)
    inner = {id(layer.rnn) for layer in layers if isinstance(getattr(layer, "rnn", None), keras.layers.RNN)}
    return sorted({layer.name for layer in layers
                   if id(layer) not in inner
                   and (isinstance(layer, keras.layers.RNN) or id(getattr(layer, "rnn", None)) in inner)})


def is_streaming(model: keras.Model) -> bool:
    """True for a streaming model (streaming layers in an internal- or external-state mode)."""
    return any(Mode.of(layer.mode) in (Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE)
               for layer in streaming_layers(model))


def warn_whole_window_recurrence(model: keras.Model, flatbuffer: bytes) -> None:
    """Warns (UserWarning) that a whole-window int8 export of a recurrent model unrolled every frame, with the
    size ratio of the file to the float32 weights, and points to the streaming form."""
    names = recurrent_layers(model)
    if not names or is_streaming(model):
        return
    ratio = len(flatbuffer) / max(1, 4 * model.count_params())
    warnings.warn(
        f"int8 export of the whole-window model {model.name!r} unrolls its recurrent layer(s) {names} over every "
        f"frame (TFLite's WHILE has no int8 kernels): the file is {ratio:.1f}x the float32 weights "
        f"({len(flatbuffer)} B for {model.count_params()} parameters). The streaming form unrolls one step: "
        "export to_streaming(model, 'stream_external_state') (or 'stream_internal_state') instead.",
        UserWarning, stacklevel=4,
    )


def require_calibration(model: keras.Model, representative_data) -> bool:
    """Checks that an int8 export of `model` has calibration: representative data, or learned ranges (a
    `quantize_aware` model without recurrent layers). Returns whether the model has learned ranges.

    Raises:
        ValueError: no representative data for a model without learned ranges, or for a quantize-aware model with
            recurrent layers (their gate internals have no learned range).
    """
    qat = is_quantize_aware(model)
    recurrent = recurrent_layers(model) if qat and representative_data is None else []
    if recurrent:
        raise ValueError(
            f"quantize='int8' of the quantize-aware model {model.name!r} needs `representative_data`: its recurrent "
            f"layer(s) {recurrent} learn ranges for their states only, not for the gate pre-activations and "
            "products inside each step (calibrate them with streaming_calibration_data(runner, clips) for a "
            "streaming model, or dicts of input name -> array). Received: representative_data=None"
        )
    if representative_data is None and not qat:
        raise ValueError(
            "quantize='int8' needs `representative_data` (calibration samples: dicts of input name -> array, "
            "streaming states included; see streaming_calibration_data), unless the model was trained with "
            "tfx_ext.transforms.qat.quantize_aware. Received: representative_data=None"
        )
    return qat


def configure_int8(converter: tf.lite.TFLiteConverter, specs: Mapping[str, Mapping[str, tf.TensorSpec]], *,
                   representative_data=None, int8_io: bool = True, allow_float_ops: bool = False) -> None:
    """Sets up `converter` (made by `tfx_ext.lite.convert.saved_model_converter` with `reset_input=True`) for a
    full-integer export: checked calibration data for every signature, int8 kernels, int8 I/O, int8 state variables.

    Raises:
        DataError: representative data of the wrong names, shapes or dtypes.
    """
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if representative_data is not None:
        samples = check_representative_data(representative_data, specs)
        if RESET_SIGNATURE in specs and not any(key == RESET_SIGNATURE for key, _ in samples):
            samples.append(reset_sample())

        def generator():
            for key, values in samples:
                yield (key, values) if len(specs) > 1 else values

        converter.representative_dataset = generator
        edit_calibration(converter, tie_state_ranges)  # one scale and zero point per external state
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
            [tf.lite.OpsSet.TFLITE_BUILTINS] if allow_float_ops else [])
    # (QAT without representative data: TFLITE_BUILTINS_INT8 would make the converter demand a representative
    # dataset before it looks for the fake-quant ops; full-integer is checked on the result instead.)
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # State variables (internal-state streaming) quantized too: no QUANTIZE/DEQUANTIZE around READ/ASSIGN_VARIABLE.
    enable_variable_quantization(converter)


def conversion_error(model: keras.Model, error: Exception) -> ExportError:
    """The `ExportError` for a failed int8 conversion: names the op without an int8 kernel when the converter's
    message does."""
    message = str(error)
    op = _unsupported_op(message) if ("quantiz" in message.lower() or "int8" in message.lower()) else None
    if op is not None:
        return ExportError(
            f"int8 export of model {model.name!r} failed: op {op!r} has no int8 kernel. Replace the layer that "
            f"produces it, or pass allow_float_ops=True for a hybrid model. Converter message: {message}"
        )
    return ExportError(f"int8 TFLite conversion of model {model.name!r} failed: {message}")


__all__ = [
    "require_calibration",
    "configure_int8",
    "conversion_error",
    "unrolled_recurrences",
    "streaming_calibration_data",
    "check_representative_data",
    "check_full_integer",
    "non_integer_ops",
    "model_ops",
    "tie_state_ranges",
    "share_state_quantization",
    "check_crash_patterns",
    "recurrent_layers",
    "is_streaming",
    "warn_whole_window_recurrence",
    "state_quantization",
]
