"""One worker of the 2-worker MultiWorkerMirroredStrategy test (run as a subprocess with TF_CONFIG set).

Usage: python multiworker_worker.py OUT_DIR. Writes OUT_DIR/worker<index>.npz with the final global weights and
OUT_DIR/worker<index>.json with the history.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()  # must exist before any other TF op

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from multiworker_setup import KWARGS, model_fn, population  # noqa: E402

from tfx_ext.federated import simulate  # noqa: E402


def main(out_dir):
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    cd, ev = population()
    history, model = simulate(model_fn, cd, eval_data=ev, strategy=strategy, **KWARGS)
    np.savez(os.path.join(out_dir, f"worker{index}.npz"), *model.get_weights())
    with open(os.path.join(out_dir, f"worker{index}.json"), "w") as f:
        json.dump({"rounds": history.rounds, "replicas": strategy.num_replicas_in_sync}, f)


if __name__ == "__main__":
    main(sys.argv[1])
