"""Choosing a `tf.distribute` strategy by name, reading TF_CONFIG, splitting the CPU into logical devices.

Names (`get_strategy`):
    "default"       `tf.distribute.get_strategy()`: one device, no replication (also `None`).
    "mirrored"      `tf.distribute.MirroredStrategy` over every local GPU, or, on a machine without GPUs, every
                    logical CPU device (`logical_cpus=N` splits the CPU into N devices first, e.g. for tests).
                    One instance per device set is created and then reused (see `_mirrored` for why).
    "multi_worker"  `tf.distribute.MultiWorkerMirroredStrategy` configured by the TF_CONFIG environment variable
                    (validated first; `launch_local_cluster` sets it for local worker processes).
    "auto"          "multi_worker" when TF_CONFIG names a cluster of more than one task, else "mirrored" when
                    there are several GPUs (or `logical_cpus` > 1), else "default".
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from tfx_ext._compat import advance_mirrored_collective_keys
from tfx_ext._validate import check_int, is_int
from tfx_ext.distribute.errors import ClusterConfigError, DistributeError

STRATEGY_NAMES = ("default", "mirrored", "multi_worker", "auto")
_TASK_TYPES = ("chief", "worker", "ps", "evaluator")


def parse_tf_config(value: str | None = None) -> dict[str, Any]:
    """Parses and validates a TF_CONFIG JSON string (by default the environment variable).

    Args:
        value: the JSON text; `None` reads `os.environ["TF_CONFIG"]`.

    Returns:
        The parsed dict with `cluster` (task type -> list of "host:port") and `task` (`type`, `index`).

    Raises:
        ClusterConfigError: TF_CONFIG is missing, not JSON, or a key is missing or wrong; the message names the
            key, what is allowed and what it holds.
    """
    if value is None:
        value = os.environ.get("TF_CONFIG")
        if value is None or not value.strip():
            raise ClusterConfigError(
                "strategy 'multi_worker' needs the TF_CONFIG environment variable, which is not set. Set it to "
                'JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", '
                '"index": 0}} on every worker, or start local workers with '
                "`tfx_ext.distribute.launch_local_cluster` (CLI: --local_workers=N). Received: TF_CONFIG="
                f"{value!r}"
            )
    try:
        config = json.loads(value)
    except json.JSONDecodeError as error:
        raise ClusterConfigError(f"TF_CONFIG is not valid JSON ({error}). Received: TF_CONFIG={value!r}") from None
    if not isinstance(config, dict):
        raise ClusterConfigError(f"TF_CONFIG must be a JSON object. Received: TF_CONFIG={value!r}")
    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise ClusterConfigError(
            "TF_CONFIG['cluster'] must be a non-empty object mapping task types to lists of 'host:port'. "
            f"Received: TF_CONFIG['cluster']={cluster!r}"
        )
    for task_type, addresses in cluster.items():
        if task_type not in _TASK_TYPES:
            raise ClusterConfigError(
                f"TF_CONFIG['cluster'] keys must be among {list(_TASK_TYPES)}. Received: key {task_type!r}"
            )
        if not isinstance(addresses, list) or not addresses:
            raise ClusterConfigError(
                f"TF_CONFIG['cluster'][{task_type!r}] must be a non-empty list of 'host:port' strings. "
                f"Received: TF_CONFIG['cluster'][{task_type!r}]={addresses!r}"
            )
        for i, address in enumerate(addresses):
            host, sep, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
            if not sep or not host or not port.isdigit():
                raise ClusterConfigError(
                    f"TF_CONFIG['cluster'][{task_type!r}][{i}] must be a 'host:port' string. "
                    f"Received: {address!r}"
                )
    if "ps" in cluster:
        raise ClusterConfigError(
            "TF_CONFIG['cluster'] has 'ps' tasks: that is ParameterServerStrategy, which tfx-ext does not "
            f"support; use 'chief'/'worker' tasks for MultiWorkerMirroredStrategy. Received: {sorted(cluster)}"
        )
    task = config.get("task")
    if not isinstance(task, dict):
        raise ClusterConfigError(
            "TF_CONFIG['task'] must be an object like {\"type\": \"worker\", \"index\": 0}. "
            f"Received: TF_CONFIG['task']={task!r}"
        )
    task_type = task.get("type")
    if task_type not in cluster:
        raise ClusterConfigError(
            f"TF_CONFIG['task']['type'] must be one of the cluster's task types {sorted(cluster)}. "
            f"Received: TF_CONFIG['task']['type']={task_type!r}"
        )
    index = task.get("index")
    if not is_int(index) or not 0 <= index < len(cluster[task_type]):
        raise ClusterConfigError(
            f"TF_CONFIG['task']['index'] must be an integer in [0, {len(cluster[task_type])}) for task type "
            f"{task_type!r}. Received: TF_CONFIG['task']['index']={index!r}"
        )
    return config


def configure_logical_cpus(num: int) -> list[str]:
    """Splits the first physical CPU into `num` logical devices (must run before TensorFlow initialises).

    Calling it again with the same `num` after initialisation is fine (nothing changes).

    Args:
        num: number of logical CPU devices, >= 1.

    Returns:
        The names of the logical CPU devices.

    Raises:
        ValueError: `num` is not a positive integer.
        DistributeError: TensorFlow already initialised its devices with a different number of logical CPUs.
    """
    num = check_int("logical_cpus", num, minimum=1)
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    current_count = len(current) if current else 1
    if current_count != num:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num)
        except RuntimeError:
            raise DistributeError(
                f"logical CPU devices can no longer be configured: TensorFlow already initialised its devices "
                f"with {current_count} logical CPU(s). Ask for them before any TensorFlow op runs (call "
                f"get_strategy(..., logical_cpus={num}) or configure_logical_cpus({num}) first thing in the "
                f"program). Received: logical_cpus={num}"
            ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _local_devices(logical_cpus: int | None) -> list[str]:
    if logical_cpus is not None:
        configure_logical_cpus(logical_cpus)
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


_MIRRORED: dict[tuple[str, ...], tf.distribute.MirroredStrategy] = {}
_KEY_OFFSET = 100000  # Far more collective keys than one strategy uses.


def _mirrored(devices: list[str]) -> tf.distribute.MirroredStrategy:
    """One MirroredStrategy per device set, reused.

    TensorFlow starts every MirroredStrategy's collective group and instance keys at the same values (it offsets
    them only in its own tests, through a private class attribute: `_compat.advance_mirrored_collective_keys`).
    Two strategies over the same devices that both run collectives in one process then collide: "Shape mismatch
    in the collective instance 100 ... Restart your program" (reproduced with plain `model.fit`). So we create
    one strategy per device set and move the key base on before and after creating it, so strategies made
    directly elsewhere (earlier or later) never share its keys.
    """
    key = tuple(devices)
    if key not in _MIRRORED:
        advance_mirrored_collective_keys(_KEY_OFFSET)  # Keys unused by any strategy made before (directly) ...
        _MIRRORED[key] = tf.distribute.MirroredStrategy(list(key))
        advance_mirrored_collective_keys(_KEY_OFFSET)  # ... and by any made after.
    return _MIRRORED[key]


def _cluster_size(config: dict[str, Any]) -> int:
    return sum(len(v) for k, v in config["cluster"].items() if k in ("chief", "worker"))


def get_strategy(name: str | tf.distribute.Strategy | None = None, *, logical_cpus: int | None = None
                 ) -> tf.distribute.Strategy:
    """Returns a `tf.distribute.Strategy` by name.

    Args:
        name: "default" (or None), "mirrored", "multi_worker" or "auto" (see the module docstring); a
            `tf.distribute.Strategy` is returned unchanged.
        logical_cpus: with "mirrored" or "auto", first split the CPU into this many logical devices (only
            possible before TensorFlow initialises; mirrored then uses them when there is no GPU).

    Returns:
        The strategy. Build and compile models inside `with strategy.scope():`.

    Raises:
        ValueError: unknown `name`, or `logical_cpus` with "default"/"multi_worker".
        ClusterConfigError: "multi_worker" (or "auto" with TF_CONFIG set) and TF_CONFIG is missing or malformed.
        DistributeError: the logical devices or the collective ops can no longer be configured because
            TensorFlow already initialised.

    Example:
        >>> strategy = get_strategy("default")
        >>> strategy.num_replicas_in_sync
        1
    """
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name is None:
        name = "default"
    if name not in STRATEGY_NAMES:
        raise ValueError(f"`name` must be one of {list(STRATEGY_NAMES)} or None. Received: name={name!r}")
    if logical_cpus is not None and name in ("default", "multi_worker"):
        raise ValueError(
            f"`logical_cpus` only applies to 'mirrored' and 'auto'. Received: name={name!r}, "
            f"logical_cpus={logical_cpus!r}"
        )
    if name == "auto":
        if os.environ.get("TF_CONFIG", "").strip() and _cluster_size(parse_tf_config()) > 1:
            name = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1 or (logical_cpus or 0) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return _mirrored(_local_devices(logical_cpus))
    config = parse_tf_config()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as error:
        if "initialized" in str(error) or "startup" in str(error) or "configure" in str(error).lower():
            raise DistributeError(
                "MultiWorkerMirroredStrategy must be created before TensorFlow runs any op (collective ops are "
                "configured at start-up): create it first thing in the worker program. TensorFlow said: "
                f"{error}. Received: TF_CONFIG task={config['task']}"
            ) from None
        raise


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process should write checkpoints, saved models and logs (True outside multi-worker)."""
    strategy = strategy or tf.distribute.get_strategy()
    return bool(strategy.extended.should_checkpoint)


def is_multi_worker(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether `strategy` spans several worker processes (MultiWorkerMirroredStrategy with a cluster)."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return False
    spec = resolver.cluster_spec().as_dict()
    return sum(len(spec.get(k, [])) for k in ("chief", "worker")) > 1


def worker_id(strategy: tf.distribute.Strategy | None = None) -> int:
    """This worker's index among chief+workers (chief first); 0 outside multi-worker."""
    strategy = strategy or tf.distribute.get_strategy()
    if not is_multi_worker(strategy):
        return 0
    resolver = strategy.cluster_resolver
    offset = 1 if resolver.task_type == "worker" and "chief" in resolver.cluster_spec().as_dict() else 0
    return int(resolver.task_id) + offset


__all__ = [
    "STRATEGY_NAMES",
    "configure_logical_cpus",
    "get_strategy",
    "is_chief",
    "is_multi_worker",
    "parse_tf_config",
    "worker_id",
]
