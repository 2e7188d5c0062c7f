"""Reference oracle: our Keras 3 QAT against tfmot's `quantize_model` on tf_keras, same DS-CNN, same start.

A small DS-CNN (conv + BN + ReLU, depthwise + BN + ReLU, pointwise + BN + ReLU, global pooling, dense softmax) is
trained in Keras 3; the same architecture in tf_keras gets the same weights; each is made quantize-aware by its
library, fine-tuned on the same data with the same seed and exported to full-integer int8 TFLite. Sizes must be
within 10% and accuracies within 1 point. Needs `tf-keras` and `tensorflow-model-optimization` (skipped without).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.export.conftest import BINS, CLASSES, FRAMES, synthetic
from tfx_ext.lite.convert import to_tflite
from tfx_ext.lite.runtime import TFLiteModel
from tfx_ext.transforms.qat import quantize_aware
from tfx_ext.lite.verification import tflite_predict


def _ds_cnn(layers, Model, Input):
    inputs = Input((FRAMES, BINS, 1), name="features")
    x = layers.Conv2D(8, (3, 3), strides=(1, 2), padding="same", use_bias=False, name="conv0")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="bn0")(x)
    x = layers.ReLU(name="relu0")(x)
    x = layers.DepthwiseConv2D((3, 3), padding="same", use_bias=False, name="dw1")(x)
    x = layers.BatchNormalization(momentum=0.9, name="dw1_bn")(x)
    x = layers.ReLU(name="dw1_relu")(x)
    x = layers.Conv2D(8, (1, 1), use_bias=False, name="pw1")(x)
    x = layers.BatchNormalization(momentum=0.9, name="pw1_bn")(x)
    x = layers.ReLU(name="pw1_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(CLASSES, name="logits")(x)
    return Model(inputs, layers.Softmax(name="probs")(x))


@pytest.mark.slow  # trains three small models and converts two: ~40 s on a loaded 2-core machine
def test_qat_matches_tfmot_on_the_same_ds_cnn():
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    tf_keras = pytest.importorskip("tf_keras")
    x, y = synthetic(256, 0)
    x_test, y_test = synthetic(128, 1)
    x, x_test = x[..., None], x_test[..., None]

    keras.utils.set_random_seed(0)
    ours = _ds_cnn(keras.layers, keras.Model, keras.Input)
    ours.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    ours.fit(x, y, epochs=10, batch_size=32, verbose=0)
    theirs = _ds_cnn(tf_keras.layers, tf_keras.Model, tf_keras.Input)
    for layer in ours.layers[1:]:
        theirs.get_layer(layer.name).set_weights(layer.get_weights())
    float_accuracy = float(np.mean(ours.predict(x_test, verbose=0).argmax(-1) == y_test))

    keras.utils.set_random_seed(1)
    ours_qat = quantize_aware(ours)
    ours_qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    ours_qat.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    ours_lite = TFLiteModel(to_tflite(ours_qat, quantize="int8"))

    tf_keras.utils.set_random_seed(1)
    theirs_qat = tfmot.quantization.keras.quantize_model(theirs)
    theirs_qat.compile(tf_keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    theirs_qat.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    converter = tf.lite.TFLiteConverter.from_keras_model(theirs_qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    theirs_bytes = converter.convert()
    theirs_lite = TFLiteModel(theirs_bytes, signature=next(iter(
        tf.lite.Interpreter(model_content=theirs_bytes).get_signature_list())))

    ours_accuracy = float(np.mean(tflite_predict(ours_lite, x_test).argmax(-1) == y_test))
    theirs_accuracy = float(np.mean(tflite_predict(theirs_lite, x_test).argmax(-1) == y_test))
    print(f"\ntfmot oracle: float {float_accuracy:.3f}; int8 QAT ours {ours_accuracy:.3f} "
          f"({ours_lite.size_bytes} B), tfmot {theirs_accuracy:.3f} ({theirs_lite.size_bytes} B)")
    assert abs(ours_lite.size_bytes - theirs_lite.size_bytes) <= 0.10 * theirs_lite.size_bytes
    assert abs(ours_accuracy - theirs_accuracy) <= 0.01 + 1e-9
