"""The workload shared by the MultiWorkerMirroredStrategy test and its worker processes."""

import keras
import numpy as np

from tfx_ext.federated import ClientData

KWARGS = dict(rounds=3, clients_per_round=5, batch_size=8, seed=2, progress=False,
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              client_optimizer=lambda: keras.optimizers.SGD(0.1))


def model_fn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


def toy_arrays():
    """200 examples of 6 features, 3 classes decided by two features (the strategy tests share them)."""
    r = np.random.default_rng(0)
    x = r.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
    return x, y


def population():
    x, y = toy_arrays()
    return ClientData.iid(x, y, 10, seed=0), (x[:50], y[:50])
