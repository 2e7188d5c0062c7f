"""Each private internal in `tfx_ext._compat` still exists with the shape tfx-ext relies on.

These tests fail loudly after an upgrade that removes or changes one, naming which; the library never falls back.
"""

import tfx_ext._compat as compat


def test_compat_exports_only_what_it_defines():
    for name in compat.__all__:
        assert hasattr(compat, name), name

# ----- TensorFlow Lite converter ------------------------------------------------------------------------------------
def test_converter_has_private_variable_quantization():
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([], None)
    assert converter._experimental_variable_quantization is False
    compat.enable_variable_quantization(converter)
    assert converter._experimental_variable_quantization is True


def test_variable_quantization_fails_loudly_without_the_attribute():
    import pytest

    class Converter:
        pass

    with pytest.raises(AttributeError, match="_experimental_variable_quantization"):
        compat.enable_variable_quantization(Converter())


# ----- LiteRT interpreter -------------------------------------------------------------------------------------------
def test_signature_runner_has_private_wrapper_and_subgraph_index():
    import keras
    import numpy as np

    from tfx_ext.lite import TFLiteModel, to_tflite

    inputs = keras.Input((3,), batch_size=1, name="x")
    runner = TFLiteModel(to_tflite(keras.Model(inputs, keras.layers.Dense(2)(inputs))))
    runner({"x": np.ones((1, 3), np.float32)})
    invoke = compat.signature_invoker(runner.runner)  # raises AttributeError if LiteRT dropped either internal
    invoke()
    assert isinstance(runner.runner._subgraph_index, int)


def test_litert_ships_the_flatbuffer_schema_with_the_names_the_full_integer_check_reads():
    schema = compat.tflite_schema()
    for name in ("ModelT", "Model", "BuiltinOperator", "TensorType"):
        assert hasattr(schema, name), name
    assert schema.BuiltinOperator.FULLY_CONNECTED >= 0 and schema.TensorType.INT8 >= 0
    assert callable(schema.Model.GetRootAsModel) and callable(schema.ModelT.InitFromObj)


# ----- Keras internals ----------------------------------------------------------------------------------------------
def test_seed_generators_counts_the_generators_a_layer_tracks():
    import keras

    assert len(compat.seed_generators(keras.layers.Dropout(0.5))) == 1
    assert compat.seed_generators(keras.layers.Dense(2)) == []


# ----- tf.distribute ------------------------------------------------------------------------------------------------


def test_mirrored_strategy_reads_its_collective_key_base_at_creation():
    import tensorflow as tf

    base = tf.distribute.MirroredStrategy._collective_key_base
    assert isinstance(base, int)
    try:
        compat.advance_mirrored_collective_keys(12345)
        assert tf.distribute.MirroredStrategy._collective_key_base == base + 12345
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
        # The strategy's extended object copies the class attribute when it is created (TF's own test hook).
        assert strategy.extended._collective_key_base == base + 12345
    finally:
        tf.distribute.MirroredStrategy._collective_key_base = base



def test_edit_calibration_sees_the_calibrated_min_max_and_its_edit_is_quantized():
    import keras
    import numpy as np
    import pytest
    import tensorflow as tf

    inputs = keras.Input((3,), batch_size=1, name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="y")(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([np.full((1, 3), v, np.float32)] for v in (-1.0, 2.0))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    seen = []

    def edit(calibrated):
        schema = compat.tflite_schema()
        graph = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(calibrated, 0))
        seen.append([(t.quantization.min, t.quantization.max) for t in graph.subgraphs[0].tensors
                     if t.quantization is not None and t.quantization.min is not None])
        return calibrated

    compat.edit_calibration(converter, edit)  # raises AttributeError if TF dropped `_quantize` or its options
    flatbuffer = converter.convert()
    assert seen and any(low == [-1.0] and high == [2.0] for low, high in seen[0])  # the input's calibrated range
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_content=flatbuffer).get_input_details()[0]
    assert detail["dtype"] == np.int8 and detail["quantization"][0] == pytest.approx(3.0 / 255, rel=1e-6)


# ----- TensorFlow gradients -----------------------------------------------------------------------------------------
def test_default_gradient_is_tensorflows_relu_gradient():
    import tensorflow as tf

    grad = compat.default_gradient("Relu")
    x = tf.constant([-1.0, 2.0])

    @tf.function
    def check():
        y = tf.nn.relu(x)
        return grad(y.op, tf.ones_like(y))

    assert check().numpy().tolist() == [0.0, 1.0]
