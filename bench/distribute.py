"""tf.distribute throughput on this machine: 1 vs 2 logical CPU devices, 1 vs 2 local worker processes.

    python -m bench.distribute            # full run (a few minutes on 2 cores)
    python -m bench.distribute --smoke    # seconds: tiny model, in-process rows only

Rows (same KWS-like conv model, same global batch, synthetic data; the first epoch (tracing) is not timed, and
steps/s comes from the fastest of the timed epochs, the median beside it):
    default     / model.fit and tfx fit    one device
    mirrored-2  / model.fit and tfx fit    MirroredStrategy over 2 logical CPU devices of one process
    mwms-1w     / tfx fit                  MultiWorkerMirroredStrategy, 1 local worker process
    mwms-2w     / tfx fit                  MultiWorkerMirroredStrategy, 2 local worker processes (gRPC on loopback)
    mwms-2w     / model.fit                attempted in the workers: records Keras 3's error (keras-team/keras#20585)

Logical CPU devices share one process's thread pools and the machine's cores: on a 2-core machine they add
no compute, only the cost of splitting each batch and summing gradients; two worker processes each spawn thread
pools sized for the whole machine and compete for the same 2 cores, plus a ring all-reduce over gRPC per step.
So the honest expectation here is a slowdown, and the table measures its size; the gain needs more cores or
more machines than one 2-core box.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

FULL = {"frames": 49, "features": 40, "filters": 64, "classes": 12, "batch_size": 64, "steps": 16, "epochs": 5}
SMOKE = {"frames": 12, "features": 8, "filters": 8, "classes": 4, "batch_size": 8, "steps": 2, "epochs": 2}


def _data(cfg: dict):
    import numpy as np

    rng = np.random.default_rng(cfg["seed"])
    n = cfg["batch_size"] * cfg["steps"]
    x = rng.normal(size=(n, cfg["frames"], cfg["features"])).astype("float32")
    return x, rng.integers(0, cfg["classes"], n)


def _model(cfg: dict):
    import keras

    keras.utils.set_random_seed(cfg["seed"])
    inputs = keras.Input((cfg["frames"], cfg["features"]))
    h = keras.layers.Conv1D(cfg["filters"], 3, activation="relu")(inputs)
    h = keras.layers.Conv1D(cfg["filters"], 3, strides=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    outputs = keras.layers.Dense(cfg["classes"], activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def measure(strategy, loop: str, cfg: dict) -> dict:
    """Trains `epochs` epochs; times all but the first (tracing, warm-up); returns steps/s and examples/s."""
    import numpy as np

    from tfx_ext.distribute import fit

    x, y = _data(cfg)
    with strategy.scope():
        model = _model(cfg)
    timer = _epoch_timer()
    if loop == "model.fit":
        model.fit(x, y, batch_size=cfg["batch_size"], epochs=cfg["epochs"], shuffle=False, verbose=0,
                  callbacks=[timer])
    else:
        fit(model, x, y, batch_size=cfg["batch_size"], epochs=cfg["epochs"], strategy=strategy, verbose=0,
            callbacks=[timer])
    best, median = float(np.min(timer.seconds[1:])), float(np.median(timer.seconds[1:]))
    # Best epoch = least disturbed by other jobs on a shared machine; the median is reported beside it.
    return {"steps_per_s": cfg["steps"] / best, "examples_per_s": cfg["steps"] * cfg["batch_size"] / best,
            "median_steps_per_s": cfg["steps"] / median, "epoch_s": best}


def worker_run(cfg: dict) -> dict:
    """One local worker: MultiWorkerMirroredStrategy first thing, then `measure` (and model.fit attempted)."""
    from tfx_ext.distribute import get_strategy

    strategy = get_strategy("multi_worker")
    result = {"replicas": strategy.num_replicas_in_sync, **measure(strategy, "tfx fit", cfg)}
    if cfg.get("try_model_fit"):
        try:
            measure(strategy, "model.fit", {**cfg, "epochs": 2})
            result["model_fit"] = "works"
        except Exception as error:  # Recorded, not raised: Keras 3's model.fit under MWMS is the known wall.
            result["model_fit"] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, in-process rows only (seconds)")
    parser.add_argument("--workers", default=None, help="comma-separated local worker counts (default 1,2; "
                        "none with --smoke)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results_dir", default=None, help="where the JSON goes (default bench/results)")
    args = parser.parse_args(argv)

    from tfx_ext.distribute import configure_logical_cpus

    configure_logical_cpus(2)  # Before anything else runs a TensorFlow op.
    import tensorflow as tf

    from bench.harness import RESULTS_DIR, Benchmark
    from tfx_ext.distribute import get_strategy, launch_local_cluster

    cfg = {**(SMOKE if args.smoke else FULL), "seed": args.seed}
    worker_counts = [int(w) for w in (args.workers or ("" if args.smoke else "1,2")).split(",") if w]
    bench = Benchmark("distribute", config={**cfg, "smoke": args.smoke, "worker_counts": worker_counts,
                                            "load_average_at_start": os.getloadavg()},
                      results_dir=args.results_dir or RESULTS_DIR)
    baselines = {}
    for setup, strategy in (("default", tf.distribute.get_strategy()), ("mirrored-2cpu", get_strategy("mirrored"))):
        for loop in ("model.fit", "tfx fit"):
            row = measure(strategy, loop, cfg)
            baselines.setdefault(loop, row["steps_per_s"])
            bench.add_row({"setup": setup, "loop": loop, "replicas": strategy.num_replicas_in_sync, "processes": 1,
                           **row, "speedup": row["steps_per_s"] / baselines[loop], "note": ""})
    for count in worker_counts:
        results = launch_local_cluster(count, "bench.distribute:worker_run", {**cfg, "try_model_fit": count == 2},
                                       timeout=600)
        chief = results[0]
        # Workers run in lockstep; the slowest one's timing is the cluster's.
        slowest = min(r["steps_per_s"] for r in results)
        row = {"steps_per_s": slowest, "examples_per_s": slowest * cfg["batch_size"],
               "median_steps_per_s": min(r["median_steps_per_s"] for r in results),
               "epoch_s": max(r["epoch_s"] for r in results)}
        bench.add_row({"setup": f"mwms-{count}worker", "loop": "tfx fit", "replicas": chief["replicas"],
                       "processes": count, **row, "speedup": row["steps_per_s"] / baselines["tfx fit"], "note": ""})
        if "model_fit" in chief:
            bench.add_row({"setup": f"mwms-{count}worker", "loop": "model.fit", "replicas": chief["replicas"],
                           "processes": count, "note": chief["model_fit"]})
    bench.note("speedup = steps/s over the same loop on one device; global batch "
               f"{cfg['batch_size']} in every row, so examples/s = steps/s x {cfg['batch_size']}.")
    bench.note(f"machine: {os.cpu_count()} CPU cores, load average at start {os.getloadavg()[0]:.1f} (other jobs "
               "share the machine: absolute numbers are noisy, ratios in one run less so).")
    bench.note("2 logical CPUs are one process's thread pools split in two: no extra compute on 2 cores, only "
               "the batch split, a collective all-reduce of the gradients and synchronised metric reads per step; "
               "2 worker processes compete for the same 2 cores and add a gRPC ring all-reduce per step. Every "
               "collective is a barrier: all replicas' threads must be scheduled at once, so on an oversubscribed "
               "machine (load average >> cores) each step waits for the slowest thread and the slowdown grows far "
               "beyond the arithmetic. Expect < 1x on one 2-core box; the gain needs real extra devices or machines.")
    bench.note("model.fit under MultiWorkerMirroredStrategy fails in Keras 3 (keras-team/keras#20585): the "
               "error in the last row is what the workers raised; tfx fit is the loop that works there.")
    return bench.finish(["setup", "loop", "replicas", "processes", "steps_per_s", "examples_per_s",
                         "median_steps_per_s", "epoch_s", "speedup", "note"])


if __name__ == "__main__":
    main(sys.argv[1:])
