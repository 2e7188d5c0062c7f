"""Named exceptions, so users can catch exactly the failure they expect.

Every error is raised at the boundary where the user's input enters, and its message says what was given and
what is allowed.
"""


class TfxExtError(Exception):
    """Base class of every error tfx-ext raises on purpose."""


class BackendError(TfxExtError, ImportError):
    """Keras runs on a backend other than TensorFlow."""


class NotStreamableError(TfxExtError, ValueError):
    """A layer or model has no streaming form (names the layer and what to change)."""


class AttentionWindowWarning(UserWarning):
    """A causal attention converted to a sliding window: streams longer than the window attend to its last frames
    only, where the whole-sequence layer would attend to every earlier frame."""


class ExportError(TfxExtError, RuntimeError):
    """Conversion to TFLite/LiteRT failed or produced a model that is not what was asked for."""


class DistributeError(TfxExtError, RuntimeError):
    """A distribution strategy cannot be created or used as asked (says what to change)."""


class ClusterConfigError(DistributeError, ValueError):
    """TF_CONFIG is missing or malformed (names the key that is wrong and what it holds)."""


class WorkerFailedError(DistributeError):
    """A local worker process exited with an error; names the worker, its exit status and its log tail.

    Attributes:
        worker: index of the worker that failed first (None when the whole cluster timed out).
        returncode: its exit status (negative: killed by that signal), or None.
        log_tail: the last lines of its output.
        logs: {worker index: log tail} for every worker.
    """

    def __init__(self, message: str, *, worker=None, returncode=None, log_tail: str = "", logs=None):
        super().__init__(message)
        self.worker = worker
        self.returncode = returncode
        self.log_tail = log_tail
        self.logs = dict(logs or {})


class ClusterTimeoutError(WorkerFailedError, TimeoutError):
    """The local cluster did not finish within its timeout (names the workers that were still running)."""


class DataError(TfxExtError, ValueError):
    """A data directory or array is missing or malformed (says what was expected and where)."""


class FederatedError(TfxExtError, RuntimeError):
    """A federated round cannot proceed (too few valid clients, incompatible checkpoint, ...)."""


class MalformedUpdateError(FederatedError, ValueError):
    """A client sent an update with NaN/Inf, wrong shapes or dtypes, or zero examples (names the client)."""


class SecureAggregationError(FederatedError):
    """The secure aggregation protocol cannot complete (too many dropouts, tampering, overflow)."""


__all__ = [
    "TfxExtError",
    "BackendError",
    "NotStreamableError",
    "ExportError",
    "DistributeError",
    "ClusterConfigError",
    "WorkerFailedError",
    "ClusterTimeoutError",
    "DataError",
    "FederatedError",
    "MalformedUpdateError",
    "SecureAggregationError",
]
