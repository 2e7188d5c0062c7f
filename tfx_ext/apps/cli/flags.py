"""Shared absl flags of the training commands: --strategy, --local_workers, --logical_cpus, --worker_timeout.

A training command adds, at import time:

    from tfx_ext.apps.cli import flags as cli_flags
    cli_flags.define_strategy_flags()

and at the start of its `main(argv)`:

    if cli_flags.run_local_cluster_if_requested():
        return                          # the local workers did the training (this process only launched them)
    strategy = cli_flags.strategy_from_flags()
    with strategy.scope():
        model = ...; model.compile(...)
    tfx_ext.distribute.fit(model, ..., strategy=strategy)   # works under every strategy

`tfx-ext kws train --strategy=multi_worker --local_workers=2` then re-runs the same command line in 2 worker
processes on 127.0.0.1 (each with TF_CONFIG set), echoes the chief's output and fails with the failing worker's
log tail if one fails. With `--strategy=multi_worker` and no `--local_workers`, the process is one worker of a
cluster described by its own TF_CONFIG.
"""

from __future__ import annotations

import sys

from absl import flags

from tfx_ext.distribute.cluster import in_local_worker, launch_local_command
from tfx_ext.distribute.strategy import STRATEGY_NAMES, get_strategy

FLAGS = flags.FLAGS


def define_strategy_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines --strategy, --local_workers, --logical_cpus and --worker_timeout (once; later calls do nothing)."""
    if "strategy" in flag_values:
        return
    flags.DEFINE_enum(
        "strategy", "default", list(STRATEGY_NAMES),
        "tf.distribute strategy: default (one device), mirrored (all local GPUs, or logical CPUs), multi_worker "
        "(MultiWorkerMirroredStrategy from TF_CONFIG, or --local_workers), auto.", flag_values=flag_values)
    flags.DEFINE_integer(
        "local_workers", 0, "With --strategy=multi_worker: run this many worker processes on 127.0.0.1 "
        "(0: this process is one worker of the cluster in TF_CONFIG).", lower_bound=0, flag_values=flag_values)
    flags.DEFINE_integer(
        "logical_cpus", None, "With --strategy=mirrored/auto: split the CPU into this many logical devices "
        "(for trying data parallelism on a CPU-only machine).", lower_bound=1, flag_values=flag_values)
    flags.DEFINE_float(
        "worker_timeout", 24 * 3600.0, "With --local_workers: seconds before the local cluster is killed.",
        lower_bound=1.0, flag_values=flag_values)


def _check(flag_values: flags.FlagValues) -> None:
    if flag_values.local_workers and flag_values.strategy != "multi_worker":
        raise flags.IllegalFlagValueError(
            f"--local_workers needs --strategy=multi_worker. Received: --strategy={flag_values.strategy} "
            f"--local_workers={flag_values.local_workers}")


def run_local_cluster_if_requested(flag_values: flags.FlagValues = FLAGS, argv: list[str] | None = None) -> bool:
    """If --strategy=multi_worker --local_workers=N and we are not a worker: runs our own command line in N local
    worker processes, waits for them and returns True (the caller returns). Otherwise returns False at once.

    Raises:
        absl.flags.IllegalFlagValueError: --local_workers without --strategy=multi_worker.
        WorkerFailedError, ClusterTimeoutError: a worker failed or the cluster ran past --worker_timeout.
    """
    _check(flag_values)
    if flag_values.strategy != "multi_worker" or not flag_values.local_workers or in_local_worker():
        return False
    command = [sys.executable, *(argv if argv is not None else sys.orig_argv[1:])]
    launch_local_command(flag_values.local_workers, command, timeout=flag_values.worker_timeout, echo_chief=True)
    return True


def strategy_from_flags(flag_values: flags.FlagValues = FLAGS):
    """The `tf.distribute.Strategy` the flags ask for (call it before any other TensorFlow op for multi_worker).

    Raises:
        ClusterConfigError: --strategy=multi_worker without a valid TF_CONFIG (and not started by --local_workers).
        DistributeError: --logical_cpus after TensorFlow initialised.
    """
    _check(flag_values)
    logical_cpus = flag_values.logical_cpus if flag_values.strategy in ("mirrored", "auto") else None
    return get_strategy(flag_values.strategy, logical_cpus=logical_cpus)


__all__ = ["define_strategy_flags", "run_local_cluster_if_requested", "strategy_from_flags"]
