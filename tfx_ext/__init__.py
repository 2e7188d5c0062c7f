"""tfx-ext: Keras 3 layers and tools for streaming, on-device (LiteRT int8) and federated learning.

Public API:
    tfx_ext.layers      Keras layers (streaming wrappers, temporal-sparsity, tensor and hypernetwork layers).
    tfx_ext.federated   the federated simulator, FedAvg family, FedMA and secure aggregation.
    tfx_ext.data        Speech Commands layout, keyword synthesis, features, digits.
    tfx_ext.models      reference keyword-spotting models (ds_cnn, crnn, gru, tc_resnet); tfx_ext.kws trains them.
    Mode, StateSpec     the streaming-mode contract; to_streaming / to_non_streaming / StreamingRunner convert.
    to_tflite, TFLiteModel   LiteRT export (float, dynamic, float16, full int8) and runner (bound by names).
    verify, streaming_calibration_data, quantize_aware   int8 verification, state calibration, Keras 3 QAT.
    bake                turns hypernetwork layers into plain layers for export.
    insert_delta_activations, sparsity_report, delta_mac_savings   DeltaActivation model helpers.

Names other than the contract are loaded on first use, so `import tfx_ext` stays light and free of cycles.
"""

from tfx_ext.backend import require_tensorflow_backend as _require_tensorflow_backend

_require_tensorflow_backend()

from tfx_ext import errors  # noqa: E402
from tfx_ext.errors import (  # noqa: E402
    BackendError,
    ClusterConfigError,
    ClusterTimeoutError,
    DistributeError,
    WorkerFailedError,
    DataError,
    ExportError,
    FederatedError,
    MalformedUpdateError,
    NotStreamableError,
    SecureAggregationError,
    TfxExtError,
)
from tfx_ext.modes import Mode, StateSpec, StreamingLayer, reset_model_states, streaming_layers  # noqa: E402

__version__ = "0.1.0"

# Importing the layers registers them with Keras, so `keras.saving.load_model` finds them after `import tfx_ext`.
from tfx_ext import layers  # noqa: E402

# Public names loaded on first access: name -> module that defines it.
_LAZY = {
    "to_streaming": "tfx_ext.streaming",
    "to_non_streaming": "tfx_ext.streaming",
    "StreamingRunner": "tfx_ext.streaming",
    "to_tflite": "tfx_ext.export",
    "TFLiteModel": "tfx_ext.export",
    "verify": "tfx_ext.verify",
    "Verification": "tfx_ext.verify",
    "streaming_calibration_data": "tfx_ext.quantize_export",
    "check_full_integer": "tfx_ext.quantize_export",
    "non_integer_ops": "tfx_ext.quantize_export",
    "quantize_aware": "tfx_ext.quantization",
    "FakeQuant": "tfx_ext.quantization",
    "is_quantize_aware": "tfx_ext.quantization",
    "bake": "tfx_ext.hyper",
    "insert_delta_activations": "tfx_ext.delta",
    "sparsity_report": "tfx_ext.delta",
    "delta_mac_savings": "tfx_ext.delta",
    "get_model": "tfx_ext.models",
}
_SUBMODULES = (
    "data", "delta", "demo", "distribute", "export", "hyper", "kws", "layers", "federated", "models", "quantization",
    "streaming",
)


def __getattr__(name):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"tfx_ext.{name}")
    else:
        raise AttributeError(f"module 'tfx_ext' has no attribute {name!r}")
    globals()[name] = value
    return value

__all__ = [
    "__version__",
    "errors",
    "BackendError",
    "ClusterConfigError",
    "ClusterTimeoutError",
    "DistributeError",
    "WorkerFailedError",
    "DataError",
    "ExportError",
    "FederatedError",
    "MalformedUpdateError",
    "NotStreamableError",
    "SecureAggregationError",
    "TfxExtError",
    "Mode",
    "StateSpec",
    "StreamingLayer",
    "reset_model_states",
    "streaming_layers",
    *_LAZY,
]
