"""RNG state (Keras SeedGenerator, e.g. in Dropout) is per client: never federated, different per client and round."""

import keras
import numpy as np

from tfx_ext.federated import ClientData, FedAdam, LocalTrainer, Postprocessor, simulate
from tfx_ext.federated.checkpoint import load_checkpoint

DIM = 48


def dropout_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((DIM,)), keras.layers.Dropout(0.5),
                             keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])


def _data(n_clients):
    return ClientData.from_fn(n_clients, lambda cid: (np.ones((1, DIM), np.float32), np.zeros((1, 1), np.float32)))


class Masks(Postprocessor):
    """Records which kernel entries each client changed (a dropped input has an exactly zero gradient)."""

    def __init__(self):
        self.seen, self.deltas = {}, {}

    def on_client(self, payload, ctx):
        self.seen[(ctx.round, ctx.client_id)] = tuple(np.asarray(payload.arrays[0]).ravel() != 0)
        self.deltas[(ctx.round, ctx.client_id)] = [np.asarray(a) / payload.weight for a in payload.arrays]
        return payload, {}


def test_rng_state_is_not_a_federated_weight():
    trainer = LocalTrainer(dropout_model(), loss="mse", client_optimizer="sgd", batch_size=1)
    assert [p.split("/")[-1] for p in trainer.weight_paths] == ["kernel"]
    assert all(np.asarray(w).dtype.kind == "f" for w in trainer.get_weights())


def test_clients_of_a_round_draw_different_masks_and_a_client_new_masks_each_round(tmp_path):
    masks = Masks()
    h, _ = simulate(dropout_model, _data(2), rounds=2, clients_per_round=2, batch_size=1, loss="mse",
                    client_optimizer=keras.optimizers.SGD(0.01), aggregator=FedAdam(learning_rate=0.01),
                    postprocessors=[masks], shuffle=False, progress=False, checkpoint_dir=tmp_path)
    assert len(masks.seen) == 4 and all(0 < sum(m) < DIM for m in masks.seen.values())
    assert masks.seen[(1, 0)] != masks.seen[(1, 1)]  # two clients of a round: different masks (were identical)
    assert masks.seen[(1, 0)] != masks.seen[(2, 0)]  # one client in two rounds (FedAdam froze them)
    _, state, meta = load_checkpoint(tmp_path)
    assert [p.split("/")[-1] for p in meta["weight_paths"]] == ["kernel"]  # the seed counter is not sent, averaged, clipped
    assert [np.shape(m) for m in state["m"]] == [(DIM, 1)]  # FedAdam holds no moment for it
    mean = [(a + b) / 2 for a, b in zip(masks.deltas[(2, 0)], masks.deltas[(2, 1)])]
    assert len(mean) == 1  # the kernel only: no int64 counter delta in the payload or the norm
    np.testing.assert_allclose(h.rounds[-1]["aggregator/update_norm"], np.linalg.norm(mean[0]), rtol=1e-6)


def test_same_client_seed_same_masks():
    trainer = LocalTrainer(dropout_model(), loss="mse", client_optimizer=keras.optimizers.SGD(0.01), batch_size=1,
                           shuffle=False)
    w = trainer.get_weights()
    x, y = np.ones((2, DIM), np.float32), np.zeros((2, 1), np.float32)
    seeds = np.array([[1, 2], [1, 2]], np.int32)
    a, _ = trainer.train_cohort(w, x, y, np.array([0, 1, 2]), seeds)
    np.testing.assert_array_equal(a[0][0], a[0][1])  # reproducible: a client's stream is a function of its seed
    b, _ = trainer.train_cohort(w, x, y, np.array([0, 1, 2]), np.array([[1, 2], [3, 4]], np.int32))
    assert not np.array_equal(b[0][0], b[0][1])
