"""Worker targets for the launcher tests (imported by name in fresh worker processes; keep imports light)."""

from __future__ import annotations

import os
import time


def echo(value, *, scale=1):
    """Returns what it got plus its worker index (tests argument and result passing)."""
    import numpy as np

    index = int(os.environ["TFX_EXT_LOCAL_WORKER"])
    return {"value": value, "index": index, "array": np.arange(3) * scale + index, "tuple": (index, "x")}


def crash_or_sleep(crash_index: int, sleep_s: float = 600.0):
    """Worker `crash_index` crashes at once; the others hang (as in a collective waiting for the dead peer)."""
    if int(os.environ["TFX_EXT_LOCAL_WORKER"]) == crash_index:
        raise RuntimeError(f"deliberate crash of worker {crash_index}")
    time.sleep(sleep_s)


def sleep_forever():
    time.sleep(600.0)


KWS_SHAPE = (20, 8)  # frames x features of the tiny keyword-spotting-like input
KWS_CLASSES = 4


def kws_data(num_examples: int = 64, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, KWS_CLASSES, num_examples)
    x = rng.normal(size=(num_examples, *KWS_SHAPE)).astype("float32")
    x[np.arange(num_examples), :, y] += 1.0  # Learnable: the class lights up one feature channel.
    return x, y


def kws_model(seed: int = 1):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(KWS_SHAPE, name="features")
    h = keras.layers.Conv1D(8, 3, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3), name="conv")(
        inputs)
    h = keras.layers.Conv1D(8, 3, strides=2, activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling1D(name="gap")(h)
    outputs = keras.layers.Dense(KWS_CLASSES, activation="softmax", name="probs")(h)
    model = keras.Model(inputs, outputs, name="tiny_kws")
    model.compile(optimizer=keras.optimizers.SGD(0.2, momentum=0.5), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def train_kws(config: dict):
    """Trains the tiny KWS model with `tfx_ext.distribute.fit` under config["strategy"]; returns what the tests
    compare (weights, history, where this worker wrote)."""
    from tfx_ext.distribute import fit, get_strategy, is_chief

    strategy = get_strategy(config.get("strategy", "multi_worker"))  # First TF thing the worker does.
    import keras

    x, y = kws_data(config.get("num_examples", 64))
    with strategy.scope():
        model = kws_model()
    callbacks = []
    if config.get("early_stop"):  # Stops after the 2nd epoch: the loss never improves by 10.
        callbacks.append(keras.callbacks.EarlyStopping(monitor="loss", min_delta=10.0, patience=0))
    if config.get("epoch_checkpoint"):
        callbacks.append(keras.callbacks.ModelCheckpoint(config["epoch_checkpoint"]))
    history = fit(model, x, y, batch_size=config.get("batch_size", 16), epochs=config.get("epochs", 2),
                  strategy=strategy, verbose=0, checkpoint_dir=config.get("checkpoint_dir"),
                  save_path=config.get("save_path"), callbacks=callbacks)
    return {
        "weights": [w for w in model.get_weights()],
        "history": history.history,
        "chief": is_chief(strategy),
        "replicas": strategy.num_replicas_in_sync,
    }


def spawn_grandchild_and_sleep(pid_file: str):
    """Starts a grandchild (pid written to `pid_file`) that would outlive us unless the whole group is killed."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.replace(pid_file + ".tmp", pid_file)
    time.sleep(600.0)


def kill_self():
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def multi_worker_after_tf_started():
    """Runs a TF op first, then asks for the multi-worker strategy: returns the error's class and message."""
    import tensorflow as tf

    tf.constant(1.0) + 1.0
    from tfx_ext.distribute import get_strategy

    try:
        get_strategy("multi_worker")
    except Exception as error:  # The test checks the class name and the message.
        return [type(error).__name__, str(error)]
    return ["no error", ""]
