"""Named errors of `tfx_ext.distribute` (defined in `tfx_ext.errors` with the rest; re-exported here)."""

from tfx_ext.errors import ClusterConfigError, ClusterTimeoutError, DistributeError, WorkerFailedError

__all__ = ["DistributeError", "ClusterConfigError", "WorkerFailedError", "ClusterTimeoutError"]
