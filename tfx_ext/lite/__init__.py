"""TFLite/LiteRT: export (`convert`, with full int8 in `int8`), the LiteRT runner and verification.

    signatures     signature names, named inputs/outputs, the serving function, state variables
    runtime        TFLiteModel: LiteRT, inputs and outputs by name, int8 (de)quantized
    convert        to_tflite: float / dynamic / float16 / int8 dispatch, the SavedModel converter
    int8           calibration data, unrolled recurrences, int8 converter setup, the full-integer check
    gradients      gradients of ReLU, convolutions, max pooling and slices in builtin ops (no Flex)
    training       to_trainable_tflite (train/infer/get_weights/set_weights signatures), TrainableTFLiteModel
    verification   verify: a .tflite against its Keras model, whole clips or streamed
"""

from tfx_ext.lite.convert import to_tflite
from tfx_ext.lite.runtime import TFLiteModel
from tfx_ext.lite.int8 import check_full_integer, non_integer_ops, streaming_calibration_data
from tfx_ext.lite.training import TrainableTFLiteModel, to_trainable_tflite
from tfx_ext.lite.verification import Verification, tflite_predict, verify

__all__ = [
    "TFLiteModel",
    "TrainableTFLiteModel",
    "Verification",
    "check_full_integer",
    "non_integer_ops",
    "streaming_calibration_data",
    "tflite_predict",
    "to_tflite",
    "to_trainable_tflite",
    "verify",
]
