"""MultiWorkerMirroredStrategy with 2 real worker processes on 127.0.0.1 (keras-team/keras#20585 is why `fit`
exists: Keras 3's model.fit fails there).

Tolerance vs a single process with the same global batch and data order: 1e-5 absolute on the weights (each
gradient is the ring all-reduce sum of two half-batch gradients instead of one full-batch gradient).
"""

import glob
import os
import tempfile

import keras
import numpy as np
import pytest

from tests.distribute import workers
from tfx_ext.testing import assert_all_close
from tfx_ext.distribute import launch_local_cluster

WEIGHT_ATOL = 1e-5


def _worker_temp_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "tfx_ext_worker*")))


@pytest.mark.slow
def test_two_workers_train_the_kws_model_like_one_process(tmp_path):
    # 3 epochs asked, EarlyStopping stops both workers after the 2nd (they must agree, or one would hang).
    config = {"checkpoint_dir": str(tmp_path / "ckpt"), "save_path": str(tmp_path / "kws.keras"), "epochs": 3,
              "batch_size": 16, "num_examples": 64, "early_stop": True,
              "epoch_checkpoint": str(tmp_path / "epoch{epoch}.keras")}
    temp_before = _worker_temp_dirs()
    chief, worker = launch_local_cluster(2, workers.train_kws, config, timeout=240)
    assert chief["chief"] and not worker["chief"]
    assert chief["replicas"] == worker["replicas"] == 2

    # Both workers end with identical weights and identical logs.
    assert_all_close(worker["weights"], chief["weights"], 0.0, what="worker 1 vs worker 0 weights")
    assert worker["history"] == chief["history"]

    # Equal to one process with the same global batch and data order.
    single = workers.train_kws({"strategy": "default", "epochs": 3, "batch_size": 16, "num_examples": 64,
                                "early_stop": True})
    assert len(chief["history"]["loss"]) == len(single["history"]["loss"]) == 2
    error = assert_all_close(chief["weights"], single["weights"], WEIGHT_ATOL, what="2 workers vs 1 process")
    print(f"max |weights(2 workers) - weights(1 process)| = {error:.2e}")
    np.testing.assert_allclose(chief["history"]["loss"], single["history"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(chief["history"]["accuracy"], single["history"]["accuracy"], rtol=1e-6)
    assert single["history"]["loss"][1] < single["history"]["loss"][0]

    # The chief wrote the checkpoints and the .keras files; the other worker wrote to temp dirs it deleted.
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "epoch1.keras", "epoch2.keras", "kws.keras"]
    assert sorted(os.listdir(tmp_path / "ckpt")) == sorted(
        ["checkpoint", "ckpt-1.index", "ckpt-1.data-00000-of-00001", "ckpt-2.index", "ckpt-2.data-00000-of-00001"])
    assert _worker_temp_dirs() <= temp_before, "a worker left its temporary checkpoint directory behind"
    loaded = keras.saving.load_model(tmp_path / "kws.keras")
    assert_all_close(loaded.get_weights(), chief["weights"], 0.0, what="saved .keras vs chief weights")


@pytest.mark.slow
def test_multi_worker_strategy_after_tensorflow_started_is_a_named_error():
    (name, message), = launch_local_cluster(1, workers.multi_worker_after_tf_started, timeout=120)
    assert name == "DistributeError"
    assert "MultiWorkerMirroredStrategy must be created before TensorFlow runs any op" in message
