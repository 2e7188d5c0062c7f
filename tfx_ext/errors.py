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


class ExportError(TfxExtError, RuntimeError):
    """Conversion to TFLite/LiteRT failed or produced a model that is not what was asked for."""


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
    "DataError",
    "FederatedError",
    "MalformedUpdateError",
    "SecureAggregationError",
]
