"""Every private Keras / TensorFlow / LiteRT internal tfx-ext relies on, in one place.

Each entry exists because no public route does the job; each says what it is for and what breaks without it.
`tests/core/test_compat.py` checks that every internal used here still exists with the expected shape, so an
upgrade that removes one fails loudly in that test, never silently at a user's call. Nothing here falls back.
Add to this module rather than reaching into a private name elsewhere.
"""

from __future__ import annotations

__all__: list[str] = ["enable_variable_quantization", "signature_invoker", "tflite_schema", "seed_generators"]

# ----- TensorFlow Lite converter ------------------------------------------------------------------------------------
def enable_variable_quantization(converter) -> None:
    """Makes an int8 `TFLiteConverter` quantize resource variables (internal streaming states) too.

    Without it the states of an internal-state streaming model stay float, with QUANTIZE/DEQUANTIZE around every
    READ_VARIABLE/ASSIGN_VARIABLE, so the model is not full-integer. TF 2.21 has no public option for it: the
    converter reads the private attribute `_experimental_variable_quantization` (the route google-research's
    kws_streaming uses too).
    """
    if not hasattr(converter, "_experimental_variable_quantization"):
        raise AttributeError(
            "TFLiteConverter has no `_experimental_variable_quantization` any more; int8 internal-state streaming "
            "export needs a new route (see tfx_ext._compat.enable_variable_quantization)."
        )
    converter._experimental_variable_quantization = True


__all__ += ["edit_calibration"]


def edit_calibration(converter, edit) -> None:
    """Makes a post-training int8 `TFLiteConverter` pass its calibrated model through `edit` before quantizing.

    `edit(calibrated: bytes) -> bytes` receives the float flatbuffer whose tensors carry the calibrated min/max and
    returns it with ranges changed (`tfx_ext.lite.int8.tie_state_ranges` widens a streaming state's input and
    output ranges to their union, so both get one scale and zero point). Why private: TF 2.21 has no public hook
    between calibration and quantization. The converter's `_quantize` calibrates then quantizes with the MLIR
    quantizer (`tensorflow.lite.python.convert.mlir_quantize`); with `_experimental_calibrate_only` it returns
    the calibrated model instead. This wraps the instance's `_quantize`: calibrate only, `edit`, then
    `mlir_quantize` with the arguments TF's own `_quantize` passes.

    Raises:
        AttributeError: the converter lacks one of these internals (see tests/core/test_compat.py).
    """
    from tensorflow.lite.python.convert import mlir_quantize

    original = converter._quantize  # Raises if TensorFlow removed it: no fallback.
    for name in ("_experimental_calibrate_only", "_experimental_disable_per_channel",
                 "_experimental_disable_per_channel_quantization_for_dense_layers", "experimental_new_quantizer"):
        getattr(converter, name)
    if not converter.experimental_new_quantizer:
        raise AttributeError("edit_calibration needs the MLIR quantizer (converter.experimental_new_quantizer)")

    def quantize(result, input_type, output_type, activations_type, bias_type, allow_float,
                 enable_variable_quantization, debug_options):
        converter._experimental_calibrate_only = True
        try:
            calibrated = original(result, input_type, output_type, activations_type, bias_type, allow_float,
                                  enable_variable_quantization, debug_options)
        finally:
            converter._experimental_calibrate_only = False
        return mlir_quantize(
            edit(bytes(calibrated)),
            converter._experimental_disable_per_channel,
            input_data_type=input_type,
            output_data_type=output_type,
            enable_variable_quantization=enable_variable_quantization,
            disable_per_channel_for_dense_layers=converter._experimental_disable_per_channel_quantization_for_dense_layers,
            debug_options_str=debug_options.SerializeToString(),
        )

    converter._quantize = quantize


# ----- LiteRT interpreter -------------------------------------------------------------------------------------------
def signature_invoker(runner):
    """A zero-argument function that runs one bare `Invoke` of a LiteRT `SignatureRunner`'s subgraph, on the inputs
    already set.

    Latency of a tiny streaming step is dominated by what `SignatureRunner.__call__` adds (binding, allocation,
    output copies). The public `Interpreter.invoke()` runs the primary subgraph only, not a signature's, so the
    runner's private `_interpreter_wrapper` and `_subgraph_index` are the only way to time the signature alone.
    """
    wrapper, index = runner._interpreter_wrapper, runner._subgraph_index
    return lambda: wrapper.Invoke(index)


def tflite_schema():
    """The flatbuffer schema module LiteRT generates (`ai_edge_litert.schema_py_generated`), to read a .tflite's ops
    and tensor types.

    The full-integer check must know every op's code and every tensor's type in every subgraph. No documented API
    reads a flatbuffer: `tf.lite.experimental.Analyzer` only prints text, and the interpreter lists tensors of the
    primary subgraph without op codes. LiteRT ships the generated schema as an undocumented module; it replaced
    TensorFlow's private `tensorflow.lite.python.schema_py_generated`.
    """
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


# ----- TensorFlow gradients ----------------------------------------------------------------------------------------
__all__ += ["default_gradient"]


def default_gradient(op_type: str):
    """TensorFlow's registered gradient function of `op_type` (`ops._gradient_registry`).

    `tfx_ext.lite.gradients` overrides some gradients with builtin-op versions and falls back to TensorFlow's own
    where a case is not covered; `tf.RegisterGradient` registers but offers no public lookup.
    """
    from tensorflow.python.framework import ops

    return ops._gradient_registry.lookup(op_type)


# ----- Keras internals ----------------------------------------------------------------------------------------------
def seed_generators(layer) -> list:
    """The `keras.random.SeedGenerator`s a layer tracks (`Layer._seed_generators`).

    Keras has no public accessor for them (its own `run_layer_test` reads the same attribute).
    `tfx_ext.testing.run_layer_test(expected_num_seed_generators=...)` checks the count a layer declares.
    """
    return list(layer._seed_generators)


# ----- tf.distribute ------------------------------------------------------------------------------------------------

__all__ += ["advance_mirrored_collective_keys"]


def advance_mirrored_collective_keys(offset: int) -> None:
    """Moves the collective group/instance keys of every MirroredStrategy created from now on by `offset`.

    Why: TensorFlow starts every `tf.distribute.MirroredStrategy`'s collective keys at the same values, so two
    strategies over the same devices that both run collectives in one process collide ("Shape mismatch in the
    collective instance 100 ... Restart your program"). TF offsets them only in its own tests, through the class
    attribute `MirroredStrategy._collective_key_base` ("Only set this in tests"), read when a strategy is created.
    No public route: `tf.distribute.MirroredStrategy` takes no key argument, and `CommunicationOptions` has none.
    Used by `tfx_ext.distribute.strategy` (one strategy per device set, keys moved before and after creating it).

    Raises:
        AttributeError: TensorFlow no longer has the class attribute (see tests/core/test_compat.py).
    """
    import tensorflow as tf

    base = tf.distribute.MirroredStrategy._collective_key_base  # Raises if TensorFlow removed it: no fallback.
    tf.distribute.MirroredStrategy._collective_key_base = base + offset
