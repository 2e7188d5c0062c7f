"""tfx-ext: Keras 3 layers and tools for streaming, on-device (LiteRT int8) and federated learning.

The library, one room per job (arrows go one way, see docs/architecture.md):
    tfx_ext.layers       Keras layers (streaming wrappers, temporal sparsity, tensor and hypernetwork layers).
    tfx_ext.streaming    the streaming contract (Mode, StateSpec, StreamingLayer) and to_streaming.
    tfx_ext.lite         TFLite/LiteRT export (float, dynamic, float16, full int8), TFLiteModel, verify.
    tfx_ext.transforms   model-to-model rewrites: quantize_aware, bake, insert_delta_activations.
    tfx_ext.models       reference keyword-spotting models (ds_cnn, crnn, gru, tc_resnet).
    tfx_ext.data         Speech Commands layout, the speech front end, digits, Keras image sets.
    tfx_ext.distribute   strategies, a fit that runs under every strategy, the local cluster launcher.
    tfx_ext.federated    the federated simulator, FedAvg family, FedMA and secure aggregation.
    tfx_ext.testing      run_layer_test and the streaming checks, for users' own layers.
The application (KWS training, synthesis, the demo, the CLI) lives in `tfx_ext.apps` and is never imported here.

The subpackages `data`, `distribute`, `federated` and `testing` load on first access.
"""

from tfx_ext.backend import require_tensorflow_backend as _require_tensorflow_backend

_require_tensorflow_backend()

from tfx_ext import errors  # noqa: E402
from tfx_ext.errors import (  # noqa: E402
    BackendError,
    ClusterConfigError,
    ClusterTimeoutError,
    DataError,
    DistributeError,
    ExportError,
    FederatedError,
    MalformedUpdateError,
    NotStreamableError,
    SecureAggregationError,
    TfxExtError,
    WorkerFailedError,
)
from tfx_ext.streaming.contract import (  # noqa: E402
    Mode,
    StateSpec,
    StreamingLayer,
    reset_model_states,
    streaming_layers,
)

# Importing the layers registers them with Keras, so `keras.saving.load_model` finds them after `import tfx_ext`.
from tfx_ext import layers  # noqa: E402
from tfx_ext.streaming.convert import to_non_streaming, to_streaming  # noqa: E402
from tfx_ext.streaming.runner import StreamingRunner  # noqa: E402
from tfx_ext.streaming.streamable import make_streamable  # noqa: E402
from tfx_ext.lite.convert import to_tflite  # noqa: E402
from tfx_ext.lite.runtime import TFLiteModel  # noqa: E402
from tfx_ext.lite.training import TrainableTFLiteModel, to_trainable_tflite  # noqa: E402
from tfx_ext.lite.int8 import check_full_integer, non_integer_ops, streaming_calibration_data  # noqa: E402
from tfx_ext.lite.verification import Verification, verify  # noqa: E402
from tfx_ext.transforms.qat import FakeQuant, is_quantize_aware, quantize_aware  # noqa: E402
from tfx_ext.transforms.baking import bake  # noqa: E402
from tfx_ext.transforms.temporal_sparsity import (  # noqa: E402
    delta_mac_savings,
    insert_delta_activations,
    sparsity_report,
)
from tfx_ext.models import get_model  # noqa: E402
from tfx_ext import lite, models, streaming, transforms  # noqa: E402

__version__ = "0.1.0"

_LAZY_SUBPACKAGES = ("data", "distribute", "federated", "testing")


def __getattr__(name):
    if name in _LAZY_SUBPACKAGES:
        import importlib

        value = importlib.import_module(f"tfx_ext.{name}")
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfx_ext' has no attribute {name!r}")


__all__ = [
    "__version__",
    "errors",
    "BackendError",
    "ClusterConfigError",
    "ClusterTimeoutError",
    "DataError",
    "DistributeError",
    "ExportError",
    "FederatedError",
    "MalformedUpdateError",
    "NotStreamableError",
    "SecureAggregationError",
    "TfxExtError",
    "WorkerFailedError",
    "Mode",
    "StateSpec",
    "StreamingLayer",
    "reset_model_states",
    "streaming_layers",
    "to_streaming",
    "to_non_streaming",
    "make_streamable",
    "StreamingRunner",
    "to_tflite",
    "TFLiteModel",
    "to_trainable_tflite",
    "TrainableTFLiteModel",
    "verify",
    "Verification",
    "streaming_calibration_data",
    "check_full_integer",
    "non_integer_ops",
    "quantize_aware",
    "FakeQuant",
    "is_quantize_aware",
    "bake",
    "insert_delta_activations",
    "sparsity_report",
    "delta_mac_savings",
    "get_model",
]
