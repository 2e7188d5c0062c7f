"""tf.distribute for tfx-ext: strategies by name, a local multi-worker launcher, and a training loop that works
under every strategy (Keras 3's `model.fit` does not under MultiWorkerMirroredStrategy, keras-team/keras#20585).

    strategy = get_strategy("mirrored")            # or "default", "multi_worker" (TF_CONFIG), "auto"
    with strategy.scope():
        model = make_model(); model.compile(...)
    history = fit(model, x, y, batch_size=64, epochs=3, strategy=strategy)   # global batch

    launch_local_cluster(2, "my_pkg.train:main", config, timeout=600)      # 2 workers on 127.0.0.1
"""

from tfx_ext.distribute.cluster import (
    free_ports,
    in_local_worker,
    launch_local_cluster,
    launch_local_command,
    make_tf_configs,
)
from tfx_ext.distribute.errors import ClusterConfigError, ClusterTimeoutError, DistributeError, WorkerFailedError
from tfx_ext.distribute.strategy import (
    STRATEGY_NAMES,
    configure_logical_cpus,
    get_strategy,
    is_chief,
    is_multi_worker,
    parse_tf_config,
    worker_id,
)
from tfx_ext.distribute.trainer import evaluate, fit, remove_temp_dirpath, write_dirpath, write_filepath

__all__ = [
    "STRATEGY_NAMES",
    "ClusterConfigError",
    "ClusterTimeoutError",
    "DistributeError",
    "WorkerFailedError",
    "configure_logical_cpus",
    "evaluate",
    "fit",
    "free_ports",
    "get_strategy",
    "in_local_worker",
    "is_chief",
    "is_multi_worker",
    "launch_local_cluster",
    "launch_local_command",
    "make_tf_configs",
    "parse_tf_config",
    "remove_temp_dirpath",
    "worker_id",
    "write_dirpath",
    "write_filepath",
]
