"""LiteRT clients in the simulator: each client's update, trained through the exported signatures, equals a Keras
client computed apart (`model.train_on_batch` on the same batches in the same order); aggregators and SecAgg
compose unchanged; what LiteRT cannot do is refused by name."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfx_ext.errors import ExportError
from tfx_ext.federated import (ClientData, ClientSideMatching, FedAdam, FedAvg, FedAvgM, FedMA, FedProx, SecAgg,
                               simulate)
from tfx_ext.federated.litert import LiteRTTrainer

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BATCH, LR, EPOCHS = 4, 0.1, 2


def tiny_model():
    return keras.Sequential([keras.Input((6, 2)), L.Conv1D(4, 3, activation="relu", name="conv"),
                             L.GlobalAveragePooling1D(name="pool"), L.Dense(8, activation="relu", name="hidden"),
                             L.Dense(3, name="head")], name="tiny")


def population(sizes=(8, 12, 9, 5), seed=0):
    """Clients of uneven sizes (9 and 5 are not whole batches of 4), deterministic labels."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    x = rng.normal(size=(n, 6, 2)).astype(np.float32)
    y = ((x[:, :, 0].mean(1) > 0).astype(np.int32) + (x[:, 0, 1] > 0.5)).astype(np.int32)
    bounds = np.cumsum([0, *sizes])
    return ClientData.from_partition(x, y, [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])])


def keras_client(start, x, y):
    """The oracle: a fresh Keras model from `start`, `train_on_batch` over whole batches, `EPOCHS` times."""
    model = tiny_model()
    model.set_weights(start)
    model.compile(keras.optimizers.SGD(LR), LOSS)
    for _ in range(EPOCHS):
        for b in range(len(x) // BATCH):
            model.train_on_batch(x[b * BATCH:(b + 1) * BATCH], y[b * BATCH:(b + 1) * BATCH])
    return model.get_weights()


def fedavg_oracle(start, cd):
    """One FedAvg round (server learning rate 1) over every client, each client trained by `keras_client`."""
    clients = [(keras_client(start, *cd[c]), cd.num_examples(c)) for c in cd.client_ids]
    total = sum(n for _, n in clients)
    return [sum(w[i] * n for w, n in clients) / total for i in range(len(start))]


KW = dict(local_epochs=EPOCHS, batch_size=BATCH, loss=LOSS, client_optimizer=keras.optimizers.SGD(LR), shuffle=False,
          progress=False, seed=3)


def start_weights():
    keras.utils.set_random_seed(KW["seed"])  # what simulate does before model_fn()
    return tiny_model().get_weights()


def assert_close(actual, expected, rtol=1e-5, atol=1e-6):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def test_each_litert_client_update_equals_keras_train_on_batch():
    cd = population().whole_batches(BATCH)
    model = tiny_model()
    start = model.get_weights()
    trainer = LiteRTTrainer(model, label_spec=cd.element_spec[1], loss=LOSS, client_optimizer=keras.optimizers.SGD(LR),
                            batch_size=BATCH, local_epochs=EPOCHS, shuffle=False)
    x, y, offsets = cd.gather(list(cd.client_ids))
    stacked, metrics = trainer.train_cohort(start, x, y, offsets, np.zeros((len(cd), 2), np.int32))
    for k, cid in enumerate(cd.client_ids):
        expected = keras_client(start, *cd[cid])
        assert_close([s[k] for s in stacked], expected)
        assert not np.allclose(stacked[0][k], start[0])  # it trained
        assert metrics[k, 2] == cd.num_examples(cid)


def test_litert_simulation_equals_a_fedavg_of_keras_clients_and_reports_throughput():
    cd = population().whole_batches(BATCH)
    history, model = simulate(tiny_model, cd, rounds=1, clients_per_round=len(cd), client_runtime="litert", **KW)
    assert_close(model.get_weights(), fedavg_oracle(start_weights(), cd))
    assert history["client_updates_per_s"][0] > 0 and history["graph_traces"] == [1]  # exported once


@pytest.mark.parametrize("optimizer", [lambda: keras.optimizers.SGD(LR),
                                       lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                                       lambda: keras.optimizers.Adam(0.01)], ids=["sgd", "nesterov", "adam"])
def test_litert_and_keras_runtimes_agree_with_shuffling_and_fedadam(optimizer):
    cd = population().whole_batches(BATCH)
    kw = dict(KW, shuffle=True, rounds=2, clients_per_round=2, client_optimizer=optimizer)
    h_litert, litert = simulate(tiny_model, cd, aggregator=FedAdam(learning_rate=0.05), client_runtime="litert", **kw)
    h_ref, ref = simulate(tiny_model, cd, aggregator=FedAdam(learning_rate=0.05), client_runtime="keras", **kw)
    assert_close(litert.get_weights(), ref.get_weights(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h_litert["train_loss"], h_ref["train_loss"], rtol=1e-5)  # last-epoch metrics too
    assert h_litert["train_accuracy"] == h_ref["train_accuracy"] and h_litert["examples"] == h_ref["examples"]


def test_a_loss_given_by_name_trains_the_same_in_both_runtimes():
    def softmax_model():
        return keras.Sequential([keras.Input((6, 2)), L.Flatten(), L.Dense(3, activation="softmax")])

    cd = population().whole_batches(BATCH)
    kw = dict(KW, rounds=1, clients_per_round=2, loss="sparse_categorical_crossentropy")
    h_litert, litert = simulate(softmax_model, cd, client_runtime="litert", **kw)
    h_ref, ref = simulate(softmax_model, cd, client_runtime="keras", **kw)
    assert_close(litert.get_weights(), ref.get_weights())
    np.testing.assert_allclose(h_litert["train_loss"], h_ref["train_loss"], rtol=1e-5)


def test_secagg_composes_with_litert_clients():
    cd = population().whole_batches(BATCH)
    _, model = simulate(tiny_model, cd, rounds=1, clients_per_round=len(cd), client_runtime="litert",
                        aggregator=FedAvg(), secure=SecAgg(variant="secagg", seed=0), **KW)
    assert_close(model.get_weights(), fedavg_oracle(start_weights(), cd), rtol=1e-4, atol=1e-5)
    _, momentum = simulate(tiny_model, cd, rounds=1, clients_per_round=len(cd), client_runtime="litert",
                           aggregator=FedAvgM(learning_rate=1.0), secure=SecAgg(seed=0), **KW)
    assert_close(momentum.get_weights(), fedavg_oracle(start_weights(), cd), rtol=1e-4, atol=1e-5)


def conv_model():
    return keras.Sequential([keras.Input((6, 2)), L.Conv1D(4, 3, activation="relu", name="conv"), L.Flatten(),
                             L.Dense(3, name="head")], name="conv")


@pytest.mark.parametrize("matching", ["fedma", "client-side+secagg"])
def test_matched_averaging_composes_with_litert_clients(matching):
    """FedMA (server-side, may rebuild the model: the LiteRT export follows) and client-side matching under
    SecAgg give the same global model with LiteRT clients as with Keras clients."""
    cd = population().whole_batches(BATCH)

    def settings():
        if matching == "fedma":
            return dict(aggregator=FedMA(conv_model, class_counts=cd))
        return dict(aggregator=ClientSideMatching(conv_model, class_counts=cd), secure=SecAgg(seed=0))

    kw = dict(KW, rounds=2, clients_per_round=3)
    _, litert = simulate(conv_model, cd, client_runtime="litert", **settings(), **kw)
    _, ref = simulate(conv_model, cd, client_runtime="keras", **settings(), **kw)
    assert [w.shape for w in litert.get_weights()] == [w.shape for w in ref.get_weights()]
    assert_close(litert.get_weights(), ref.get_weights(), rtol=1e-4, atol=1e-5)


def test_a_resumed_litert_run_equals_an_uninterrupted_one(tmp_path):
    cd = population().whole_batches(BATCH)
    kw = dict(KW, clients_per_round=2, client_runtime="litert", shuffle=True)
    full, m_full = simulate(tiny_model, cd, rounds=3, **kw)
    simulate(tiny_model, cd, rounds=1, checkpoint_dir=tmp_path, **kw)
    resumed, m_resumed = simulate(tiny_model, cd, rounds=3, checkpoint_dir=tmp_path, resume=True, **kw)
    assert resumed["train_loss"] == full["train_loss"]
    for a, b in zip(m_full.get_weights(), m_resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_central_dp_with_secagg_composes_with_litert_clients():
    """DP-FedAvg (clip, noise on the secure sum) draws the same noise from the round's Generator in both runtimes,
    so LiteRT clients give the Keras clients' global model and the same privacy spent."""
    from tfx_ext.federated.privacy import CentralDP

    cd = population().whole_batches(BATCH)
    kw = dict(KW, rounds=2, clients_per_round=3, secure=SecAgg(seed=0))
    runs = {runtime: simulate(tiny_model, cd, client_runtime=runtime, postprocessors=[CentralDP(
        clip_norm=0.5, population_size=len(cd), cohort_size=3, noise_multiplier=0.3)], **kw)
        for runtime in ("litert", "keras")}
    (h_litert, litert), (h_ref, ref) = runs["litert"], runs["keras"]
    assert_close(litert.get_weights(), ref.get_weights(), rtol=1e-4, atol=1e-5)
    assert h_litert["CentralDP/epsilon"] == h_ref["CentralDP/epsilon"] and h_litert["CentralDP/epsilon"][-1] > 0


def test_a_remainder_is_dropped_with_a_warning_and_small_clients_send_nothing():
    raw = population(sizes=(8, 12, 9, 3))
    with pytest.warns(RuntimeWarning, match=r"whole_batches\(4\)"):
        history, model = simulate(tiny_model, raw, rounds=1, clients_per_round=len(raw), client_runtime="litert",
                                  **KW)
    assert history["examples"] == [8 + 12 + 8] and history["clients_rejected"] == [1]  # the 3-example client
    assert_close(model.get_weights(), fedavg_oracle(start_weights(), raw.whole_batches(BATCH)))


def flex_model():
    """An overlapping max pool: its gradient is `MaxPoolGrad`, a Flex op."""
    return keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(2, 3, activation="relu", name="body"),
                             L.MaxPooling2D(3, strides=1, name="overlap"), L.Flatten(), L.Dense(3, name="head")])


def images():
    rng = np.random.default_rng(0)
    return ClientData.iid(rng.normal(size=(16, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 16), 2)


def test_a_model_that_needs_flex_is_refused_naming_the_layer_and_head_only_is_the_way_out():
    kw = dict(KW, rounds=1, clients_per_round=2)
    with pytest.raises(ExportError, match=r"(?s)\['overlap'\].*client_runtime='keras'.*trainable = False"):
        simulate(flex_model, images(), client_runtime="litert", **kw)

    def head_only():
        model = flex_model()
        model.get_layer("body").trainable = False
        return model

    _, model = simulate(head_only, images(), client_runtime="litert", **kw)
    keras.utils.set_random_seed(KW["seed"])
    start = head_only()
    np.testing.assert_array_equal(model.get_layer("body").get_weights()[0], start.get_layer("body").get_weights()[0])
    assert not np.allclose(model.get_layer("head").get_weights()[0], start.get_layer("head").get_weights()[0])


def test_a_model_with_dropout_is_refused_naming_the_layer():
    def with_dropout():
        return keras.Sequential([keras.Input((6, 2)), L.Flatten(), L.Dropout(0.5, name="drop"), L.Dense(3)])

    with pytest.raises(ExportError, match=r"(?s)'drop' \(Dropout\).*client_runtime='keras'.*rate 0"):
        simulate(with_dropout, population(), **dict(KW, rounds=1, clients_per_round=2), client_runtime="litert")


def mixed_model():
    return keras.Sequential([keras.Input((6, 2)), L.Flatten(), L.Dense(3, dtype="mixed_float16")])


@pytest.mark.parametrize("kwargs,match", [
    (dict(client_runtime="tflite"), "client_runtime"),
    (dict(client_runtime="litert", aggregator=FedProx(mu=0.1)), "proximal"),
    (dict(client_runtime="litert", strategy=object()), "strategy"),
    (dict(client_runtime="litert", client_optimizer=keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5))), "constant client learning rate"),
    (dict(client_runtime="litert", model_fn=mixed_model), "mixed precision"),
])
def test_options_litert_cannot_honour_are_refused_by_name(kwargs, match):
    kw = dict(KW, rounds=1, clients_per_round=2)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        simulate(kw.pop("model_fn", tiny_model), population(), **kw)


def test_whole_batches_cuts_each_client_and_keeps_ids():
    cd = ClientData.from_partition(np.arange(10.0), np.arange(10), [np.arange(0, 7), np.arange(7, 10)],
                                   client_ids=["a", "b"])
    cut = cd.whole_batches(3)
    assert list(cut.client_ids) == ["a", "b"] and cut.num_examples("a") == 6 and cut.num_examples("b") == 3
    np.testing.assert_array_equal(cut["a"][1], np.arange(6))
    lazy = ClientData.from_fn(2, lambda c: (np.zeros((5 + c, 2)), np.zeros(5 + c))).whole_batches(4)
    assert [lazy.num_examples(c) for c in range(2)] == [4, 4]
    with pytest.raises(ValueError, match="batch_size"):
        cd.whole_batches(0)


def test_the_model_is_exported_once_per_simulation(monkeypatch):
    import tfx_ext.federated.litert as litert

    exports = []
    real = litert.to_trainable_tflite
    monkeypatch.setattr(litert, "to_trainable_tflite", lambda *a, **k: exports.append(1) or real(*a, **k))
    history, _ = simulate(tiny_model, population().whole_batches(BATCH), **dict(KW, rounds=3, clients_per_round=3),
                          client_runtime="litert")
    assert len(exports) == 1 and len(history) == 3 and history["clients_accepted"] == [3, 3, 3]
