"""tfx-ext: Keras 3 layers and tools for streaming, on-device (LiteRT int8) and federated learning.

Public API:
    tfx_ext.layers      Keras layers (streaming wrappers, temporal-sparsity, tensor and hypernetwork layers).
    tfx_ext.federated   the federated simulator, aggregators and secure aggregation.
    tfx_ext.data        Speech Commands layout, keyword synthesis, features, digits.
    Mode, StateSpec     the streaming-mode contract.
"""

from tfx_ext.backend import require_tensorflow_backend as _require_tensorflow_backend

_require_tensorflow_backend()

from tfx_ext import errors  # noqa: E402
from tfx_ext.errors import (  # noqa: E402
    BackendError,
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

__all__ = [
    "__version__",
    "errors",
    "BackendError",
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
]
