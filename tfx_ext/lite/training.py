"""On-device training: `to_trainable_tflite` exports a Keras model with `train`, `infer`, `get_weights` and
`set_weights` signatures that run in LiteRT on builtin ops only; `TrainableTFLiteModel` runs them by name.

Why: what a phone runs in federated learning or personalization is a `.tflite` with a training signature. The
export follows TensorFlow's on-device training guide (a `tf.Module` of `tf.function` signatures over resource
variables), with the gradients that TensorFlow would emit as Flex ops replaced by builtin ones
(`tfx_ext.lite.gradients`). The optimizer step is the Keras optimizer's own (`apply`), so a LiteRT step is a
Keras `train_on_batch` step.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import tempfile
from typing import Any, Mapping

import keras
import numpy as np
import tensorflow as tf

from tfx_ext._compat import seed_generators, tflite_schema
from tfx_ext._validate import check_int
from tfx_ext.errors import ExportError
from tfx_ext.lite.gradients import builtin_gradients
from tfx_ext.lite.int8 import _all_layers, model_ops
from tfx_ext.lite.runtime import TFLiteModel

TRAIN, INFER, GET_WEIGHTS, SET_WEIGHTS = "train", "infer", "get_weights", "set_weights"
SIGNATURES = (TRAIN, INFER, GET_WEIGHTS, SET_WEIGHTS)
LOSS = "loss"
SUPPORTED_OPTIMIZERS = ("SGD", "Adam")

__all__ = ["to_trainable_tflite", "TrainableTFLiteModel", "flex_layers", "flex_ops", "SIGNATURES"]


# ----- checks at the boundary -----------------------------------------------------------------------------------
def _optimizer(optimizer, learning_rate) -> keras.optimizers.Optimizer:
    """A fresh copy of `optimizer` (never the caller's: its slots are exported), SGD or Adam only."""
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
    kind = type(optimizer).__name__
    if kind not in SUPPORTED_OPTIMIZERS:
        raise ExportError(f"`optimizer` must be SGD (with or without momentum) or Adam: their updates lower to "
                          f"builtin ops. Received: optimizer={optimizer!r}")
    config = optimizer.get_config()
    for key in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema", "amsgrad"):
        if config.get(key):
            raise ExportError(f"`optimizer` option {key} is not supported in a training signature. "
                              f"Received: {key}={config[key]!r}")
    if (config.get("gradient_accumulation_steps") or 1) > 1 or isinstance(config["learning_rate"], dict):
        raise ExportError("`optimizer` must have a constant learning rate and no gradient accumulation. "
                          f"Received: config={config!r}")
    if learning_rate is not None:
        config["learning_rate"] = float(learning_rate)
    return type(optimizer).from_config(config)


def _trained_variables(model: keras.Model, trainable_layers) -> list:
    if trainable_layers is None:
        return list(model.trainable_variables)
    names = [trainable_layers] if isinstance(trainable_layers, str) else list(trainable_layers)
    layers = {layer.name: layer for layer in model.layers}
    unknown = [name for name in names if name not in layers]
    if unknown or not names:
        raise ValueError(f"`trainable_layers` must name layers of the model ({sorted(layers)}). "
                         f"Received: trainable_layers={trainable_layers!r}")
    return [v for name in names for v in layers[name].trainable_variables]


_RATES = ("rate", "dropout", "recurrent_dropout")


def _rates(layer) -> dict:
    return {name: getattr(layer, name) for name in _RATES if isinstance(getattr(layer, name, None), (int, float))}


def _draws_random(layer) -> bool:
    """Whether `layer` draws random numbers in training: it has a seed generator and a rate above 0 (GRU and
    Dropout keep a generator even at rate 0; a random layer without a rate is taken to draw)."""
    if not seed_generators(layer):
        return False
    rates = _rates(layer)
    return not rates or any(rate > 0 for rate in rates.values())


@contextlib.contextmanager
def _dropout_off(model: keras.Model, enabled: bool):
    """With `enabled`, every dropout rate of `model` is 0 inside the block (the `train` signature traced there
    runs dropout layers as identities); restored afterwards."""
    saved = [(layer, _rates(layer)) for layer in _all_layers(model) if enabled and seed_generators(layer)]
    try:
        for layer, rates in saved:
            for name in rates:
                setattr(layer, name, 0.0)
        yield
    finally:
        for layer, rates in saved:
            for name, rate in rates.items():
                setattr(layer, name, rate)


@contextlib.contextmanager
def _frozen(model: keras.Model, trained: list):
    """Inside the block, the top-level layers holding none of the `trained` variables are `trainable = False`, as
    Keras freezes a layer: a frozen BatchNormalization then runs in inference mode (moving statistics, which stay
    unchanged), as in `train_on_batch` with the body frozen. Every layer's flag is restored afterwards."""
    ids = {id(v) for v in trained}
    saved = [(layer, layer.trainable) for layer in _all_layers(model)]
    try:
        for layer in model.layers:
            if not any(id(v) in ids for v in layer.trainable_variables):
                layer.trainable = False
        yield
    finally:
        for layer, flag in saved:  # parents before their sublayers, so a sublayer's own flag wins
            layer.trainable = flag


def _check_model(model: keras.Model, disable_dropout: bool) -> None:
    if not isinstance(model, keras.Model) or not model.built or not getattr(model, "inputs", None):
        raise ValueError("`model` must be a built functional or Sequential Keras model with an Input. "
                         f"Received: {type(model).__name__}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"to_trainable_tflite exports models with one input and one output; {model.name!r} has "
                          f"{len(model.inputs)} and {len(model.outputs)}")
    random = [] if disable_dropout else [f"{layer.name!r} ({type(layer).__name__})" for layer in _all_layers(model)
              if _draws_random(layer)]
    if random:
        raise ExportError(f"layers that draw random numbers in training cannot train in LiteRT (no builtin random "
                          f"ops with Keras's seeds): {', '.join(random)}; pass disable_dropout=True to train "
                          "without dropout, or remove them")


def flex_ops(flatbuffer: bytes) -> list[str]:
    """Select-TF (Flex) ops in a flatbuffer: what LiteRT's builtin-only interpreter cannot run."""
    return sorted({op["op"] for op in model_ops(flatbuffer) if op["op"].startswith("Flex")})


def flex_layers(flatbuffer: bytes, model: keras.Model) -> dict[str, list[str]]:
    """`{layer name: [Flex ops]}`: the layers whose ops (or gradients) lowered to Flex, read from the Flex ops'
    output tensor names (`gradients/<model>/<layer>_1/...`; TensorFlow's name scopes add `_<n>` suffixes)."""
    schema = tflite_schema()
    flat = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    names = {layer.name for layer in _all_layers(model)}
    found: dict[str, set] = {}
    for subgraph in flat.subgraphs:
        for op in subgraph.operators or []:
            code = flat.operatorCodes[op.opcodeIndex].customCode
            code = code.decode() if isinstance(code, bytes) else str(code or "")
            if not code.startswith("Flex"):
                continue
            for t in np.atleast_1d(op.outputs).tolist():
                tensor = subgraph.tensors[t].name
                parts = (tensor.decode() if isinstance(tensor, bytes) else str(tensor)).split("/")
                for part in parts:
                    layer = part if part in names else re.sub(r"_\d+$", "", part)
                    if layer in names and layer != model.name:
                        found.setdefault(layer, set()).add(code)
                        break
    return {layer: sorted(ops) for layer, ops in sorted(found.items())}


# ----- the module of signatures --------------------------------------------------------------------------------
class _Signatures(tf.Module):
    """`train`, `infer`, `get_weights`, `set_weights` over the model's variables and the optimizer's."""

    def __init__(self, model, loss, optimizer, trained, batch_size):
        super().__init__()
        self.model, self.loss, self.optimizer, self.trained = model, loss, optimizer, trained
        # `*_weights`, not `*_variables`: RNG seed states are not weights (they stay on the device, untouched).
        self.weights = list(model.trainable_weights) + list(model.non_trainable_weights)
        self.paths = [v.path for v in self.weights]
        if len(set(self.paths)) != len(self.paths):
            raise ExportError(f"variable paths are not unique: {self.paths}")
        optimizer.build(trained)
        self.slots = list(optimizer.variables)
        x = model.inputs[0]
        self.x_spec = tf.TensorSpec((batch_size, *x.shape[1:]), x.dtype, name="x")
        self.output_name = model.output_names[0] if getattr(model, "output_names", None) else "output"

    def y_spec(self, y_shape, y_dtype):
        return tf.TensorSpec((self.x_spec.shape[0], *y_shape), y_dtype, name="y")

    def train(self, x, y):
        with builtin_gradients():
            out = self.model(x, training=True)
            # A loss function (e.g. from a name) gives per-example values; Keras's compile averages them over the
            # batch ("sum_over_batch_size"), and so does this (a Loss object is already reduced: the mean is a no-op).
            loss = tf.reduce_mean(self.loss(y, out))
            if self.model.losses:
                loss = loss + tf.add_n([tf.cast(term, loss.dtype) for term in self.model.losses])
        grads = tf.gradients(loss, [v.value for v in self.trained])
        self.optimizer.apply(grads, self.trained)
        return {LOSS: loss, self.output_name: out}

    def infer(self, x):
        return {self.output_name: self.model(x, training=False)}

    def get_weights(self):
        return {path: tf.identity(v.value) for path, v in zip(self.paths, self.weights)}

    def set_weights(self, weights):
        """Loads every weight and restarts the optimizer (zero slots, step 0): a new round or a new user."""
        for path, v in zip(self.paths, self.weights):
            v.assign(weights[path])
        for slot in self.slots:
            if slot.name == "learning_rate":  # a Keras optimizer keeps its learning rate as a variable too
                continue
            slot.assign(tf.zeros_like(slot.value))
        return {"num_weights": tf.constant(len(self.weights), tf.int32)}


def _convert(module: _Signatures, y_spec, workdir: str) -> bytes:
    archive = keras.export.ExportArchive()
    archive.track(module.model)
    archive.add_variable_collection("optimizer", module.slots)
    archive.add_endpoint(name=TRAIN, fn=module.train, input_signature=[module.x_spec, y_spec])
    archive.add_endpoint(name=INFER, fn=module.infer, input_signature=[module.x_spec])
    archive.add_endpoint(name=GET_WEIGHTS, fn=module.get_weights, input_signature=[])
    weight_specs = {path: tf.TensorSpec(v.shape, v.dtype, name=path) for path, v in zip(module.paths, module.weights)}
    archive.add_endpoint(name=SET_WEIGHTS, fn=module.set_weights, input_signature=[weight_specs])
    # The SavedModel is only the converter's input: it needs no gradients of its own (tracing the override map's
    # gradients there fails, as they are only defined inside the training graph).
    archive.write_out(workdir, verbose=False, options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
    converter = tf.lite.TFLiteConverter.from_saved_model(workdir, signature_keys=list(SIGNATURES))
    converter.experimental_enable_resource_variables = True
    # Flex ops are allowed here only so that the check below can name them (LiteRT cannot run them).
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    try:
        return converter.convert()
    except Exception as error:  # the converter raises its own ConverterError with the MLIR diagnostics
        raise ExportError(f"training signatures of {module.model.name!r} did not convert: {error}") from error


def to_trainable_tflite(model: keras.Model, path: str | os.PathLike | None = None, *, loss=None,
                        optimizer="sgd", learning_rate: float | None = None, batch_size: int = 32,
                        trainable_layers=None, disable_dropout: bool = False, y_shape: tuple = (),
                        y_dtype=tf.int32) -> bytes:
    """Exports `model` with training signatures that run in LiteRT on builtin ops.

    Signatures: `train(x, y) -> {"loss", <output>}` (one optimizer step on the batch, the output of the forward
    pass before it), `infer(x) -> {<output>}`, `get_weights() -> {variable path: tensor}` and
    `set_weights(**{variable path: tensor})`, which also restarts the optimizer (zero slots, step 0).

    Args:
        model: a built Keras model with one input and one output.
        path: also write the flatbuffer there.
        loss: Keras loss (object or name); default the compiled model's.
        optimizer: "sgd", "adam", or a Keras SGD/Adam instance (copied: the caller's is never changed).
        learning_rate: replaces the optimizer's learning rate.
        batch_size: the static batch of `train` and `infer` (TFLite signatures have static shapes).
        trainable_layers: names of the layers to train (e.g. a head); the rest are frozen as Keras freezes a layer
            (`trainable = False`: BatchNormalization in inference mode, its statistics kept) and need no gradient.
        disable_dropout: train with every dropout rate at 0 (LiteRT has no builtin random ops that reproduce
            Keras's seeded dropout); without it a model with active dropout is refused.
        y_shape, y_dtype: a label's shape and dtype (default integer class labels).

    Raises:
        ExportError: unsupported optimizer or layer, or an op whose gradient needs Flex (each listed by name).
        ValueError: bad arguments (the argument and what is allowed).
    """
    _check_model(model, disable_dropout)
    check_int("batch_size", batch_size, minimum=1)
    loss = getattr(model, "loss", None) if loss is None else loss
    if loss is None:
        raise ValueError("`loss` must be given, or `model` compiled with one. Received: loss=None")
    loss = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
    trained = _trained_variables(model, trainable_layers)
    if not trained:
        raise ValueError(f"`model` has no trainable variables to train (trainable_layers={trainable_layers!r})")
    with tempfile.TemporaryDirectory() as workdir, _dropout_off(model, disable_dropout), _frozen(model, trained):
        module = _Signatures(model, loss, _optimizer(optimizer, learning_rate), trained, batch_size)
        flatbuffer = _convert(module, module.y_spec(tuple(y_shape), tf.as_dtype(y_dtype)), workdir)
    flex = flex_ops(flatbuffer)
    if flex:
        layers = flex_layers(flatbuffer, model)
        kinds = {layer.name: type(layer).__name__ for layer in _all_layers(model)}
        where = "; ".join(f"layer {name!r} ({kinds[name]}): {', '.join(ops)}" for name, ops in layers.items())
        error = ExportError(
            f"training {model.name!r} needs Select-TF (Flex) ops that LiteRT's builtin interpreter does not have: "
            f"{', '.join(flex)}{f' ({where})' if where else ''}. Train fewer layers (trainable_layers=[...], e.g. "
            "the head) or replace the layer")
        error.layers = layers
        raise error
    if path is not None:
        pathlib.Path(path).write_bytes(flatbuffer)
    return flatbuffer


# ----- the runner -----------------------------------------------------------------------------------------------
class TrainableTFLiteModel:
    """Runs a `to_trainable_tflite` export in LiteRT: each method binds one signature by name.

    Args:
        model: the flatbuffer bytes or a `.tflite` path.
        num_threads: interpreter threads.

    Example:
        >>> device = TrainableTFLiteModel(to_trainable_tflite(model, batch_size=8))   # doctest: +SKIP
        >>> device.train(x[:8], y[:8])["loss"]                                      # doctest: +SKIP
    """

    def __init__(self, model: bytes | str | os.PathLike, *, num_threads: int | None = None):
        try:
            loaded = TFLiteModel(model, signature=INFER, num_threads=num_threads)
            interpreter = loaded.interpreter
            missing = [name for name in SIGNATURES if name not in interpreter.get_signature_list()]
        except ExportError:
            missing = list(SIGNATURES)
        if missing:
            raise ExportError(f"not a trainable export (to_trainable_tflite makes one): signatures {missing} are "
                              "missing")
        self._runners = {name: interpreter.get_signature_runner(name) for name in SIGNATURES}
        self.content = loaded.content
        self.weight_names = list(self._runners[SET_WEIGHTS].get_input_details())
        self._weight_details = self._runners[SET_WEIGHTS].get_input_details()
        self._input_details = self._runners[TRAIN].get_input_details()

    @property
    def batch_size(self) -> int:
        return int(self._input_details["x"]["shape"][0])

    @property
    def size_bytes(self) -> int:
        return len(self.content)

    def _checked(self, name: str, value, detail: Mapping) -> np.ndarray:
        value = np.asarray(value)
        expected = tuple(int(d) for d in detail["shape"])
        if tuple(value.shape) != expected:
            raise ValueError(f"{name!r} must have shape {expected}. Received: shape={tuple(value.shape)}")
        dtype = np.dtype(detail["dtype"])
        if value.dtype.kind != dtype.kind and not (value.dtype.kind in "iu" and dtype.kind in "iu"):
            raise TypeError(f"{name!r} must be {dtype.name} (or castable within its kind). Received: "
                            f"dtype={value.dtype.name}")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ValueError(f"{name!r} has NaN or Inf values; a training step would spread them to every weight")
        return value.astype(dtype, copy=False)

    def train(self, x, y) -> dict[str, np.ndarray]:
        """One optimizer step on a batch of `batch_size` examples; returns `{"loss", <output>}`."""
        feed = {"x": self._checked("x", x, self._input_details["x"]),
                "y": self._checked("y", y, self._input_details["y"])}
        return {k: np.array(v) for k, v in self._runners[TRAIN](**feed).items()}

    def infer(self, x) -> np.ndarray:
        """The model's output (inference mode) for a batch of `batch_size` examples."""
        detail = self._runners[INFER].get_input_details()["x"]
        (out,) = self._runners[INFER](x=self._checked("x", x, detail)).values()
        return np.array(out)

    def get_weights(self) -> dict[str, np.ndarray]:
        """Every weight by variable path."""
        return {k: np.array(v) for k, v in self._runners[GET_WEIGHTS]().items()}

    def set_weights(self, weights: Mapping[str, Any] | list) -> None:
        """Loads weights (by variable path, or a list in `weight_names` order) and restarts the optimizer."""
        if not isinstance(weights, Mapping):
            weights = list(weights)
            if len(weights) != len(self.weight_names):
                raise ValueError(f"`weights` must have {len(self.weight_names)} arrays ({self.weight_names}). "
                                 f"Received: {len(weights)}")
            weights = dict(zip(self.weight_names, weights))
        missing, unknown = set(self.weight_names) - set(weights), set(weights) - set(self.weight_names)
        if missing or unknown:
            raise ValueError(f"`weights` must be keyed by exactly {self.weight_names}. Missing: {sorted(missing)}; "
                             f"unknown: {sorted(unknown)}")
        self._runners[SET_WEIGHTS](**{k: self._checked(k, v, self._weight_details[k]) for k, v in weights.items()})
