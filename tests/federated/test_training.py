"""Compiled local training: parity with Keras training, FedProx, and one trace for every cohort."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfx_ext.federated import ClientData, ClientOptimizer, FedAvg, FedProx, LocalTrainer, simulate

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])


def data(n=40, seed=0):
    r = np.random.default_rng(seed)
    return r.normal(size=(n, 6)).astype(np.float32), r.integers(0, 3, n).astype(np.int32)


def keras_reference(weights, x, y, optimizer, batch_size, epochs=1):
    ref = tiny_model()
    ref.set_weights(weights)
    ref.compile(optimizer=optimizer, loss=LOSS)
    ref.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return ref.get_weights()


def test_fedavg_one_client_one_step_equals_centralized_sgd():
    x, y = data(16)
    model = tiny_model()
    w0 = model.get_weights()
    cd = ClientData.from_partition(x, y, [np.arange(16)])
    _, fed = simulate(tiny_model, cd, rounds=1, clients_per_round=1, batch_size=16, loss=LOSS,
                      client_optimizer=keras.optimizers.SGD(0.1), aggregator=FedAvg(), progress=False)
    central = keras_reference(w0, x, y, keras.optimizers.SGD(0.1), batch_size=16)
    for a, b in zip(fed.get_weights(), central):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(fed.get_weights()[0], w0[0])  # it did train


@pytest.mark.parametrize(
    "make_opt",
    [lambda: keras.optimizers.SGD(0.05, momentum=0.9), lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
     lambda: keras.optimizers.Adam(0.01)],
    ids=["momentum", "nesterov", "adam"],
)
def test_local_training_matches_keras_fit(make_opt):
    x, y = data(40)  # batches of 16, 16 and 8: the last one is partial
    model = tiny_model()
    w0 = model.get_weights()
    trainer = LocalTrainer(model, loss=LOSS, client_optimizer=make_opt(), batch_size=16, local_epochs=2,
                           shuffle=False)
    stacked, metrics = trainer.train_cohort(trainer.get_weights(), x, y, [0, 40], [[1, 2]])
    ref = keras_reference(w0, x, y, make_opt(), batch_size=16, epochs=2)
    # trainer order = trainable + non-trainable = model.weights order for this model
    for a, b in zip(stacked, ref):
        np.testing.assert_allclose(a[0], b, atol=2e-6)
    assert metrics[0, 2] == 40


def test_fedprox_proximal_term_matches_hand_written_step():
    x, y = data(32)
    model = tiny_model()
    w0 = [tf.constant(w) for w in model.trainable_weights]
    mu, lr = 0.5, 0.1
    trainer = LocalTrainer(model, loss=LOSS, client_optimizer=keras.optimizers.SGD(lr), batch_size=16,
                           proximal_mu=mu, shuffle=False)
    stacked, _ = trainer.train_cohort(trainer.get_weights(), x, y, [0, 32], [[0, 0]])
    ref = tiny_model()
    w = [tf.Variable(v) for v in w0]
    for b in range(2):
        xb, yb = x[16 * b: 16 * b + 16], y[16 * b: 16 * b + 16]
        with tf.GradientTape() as tape:
            out, _ = ref.stateless_call(w, [], xb)
            loss = LOSS(yb, out) + 0.5 * mu * tf.add_n([tf.reduce_sum((v - v0) ** 2) for v, v0 in zip(w, w0)])
        for v, g in zip(w, tape.gradient(loss, w)):
            v.assign_sub(lr * g)
    for a, b in zip(stacked, w):
        np.testing.assert_allclose(a[0], b.numpy(), atol=1e-6)


def test_fedprox_mu_zero_equals_fedavg():
    x, y = data(120)
    cd = ClientData.iid(x, y, 6, seed=0)
    kw = dict(rounds=2, clients_per_round=3, batch_size=8, loss=LOSS, client_optimizer=keras.optimizers.SGD(0.1),
              progress=False, seed=3)
    h1, m1 = simulate(tiny_model, cd, aggregator=FedAvg(), **kw)
    h2, m2 = simulate(tiny_model, cd, aggregator=FedProx(mu=0.0), **kw)
    h3, m3 = simulate(tiny_model, cd, aggregator=FedProx(mu=1.0), **kw)
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert h1["train_loss"] == h2["train_loss"]
    assert not np.allclose(m1.get_weights()[0], m3.get_weights()[0])


def test_no_retracing_for_clients_and_cohorts_of_different_sizes():
    x, y = data(200)
    trainer = LocalTrainer(tiny_model(), loss=LOSS, client_optimizer="sgd", batch_size=16, local_epochs=2)
    w = trainer.get_weights()
    cohorts = [[0, 5, 40], [0, 17], [0, 1, 2, 3, 100, 180, 200], [0, 33, 33, 70]]  # incl. a zero-example client
    for off in cohorts:
        k = len(off) - 1
        stacked, metrics = trainer.train_cohort(w, x[: off[-1]], y[: off[-1]], off, np.zeros((k, 2)))
        assert stacked[0].shape == (k, 6, 8)
        np.testing.assert_array_equal(metrics[:, 2], np.diff(off))
    assert trainer.trace_count == 1
    # The zero-example client got the start weights back.
    np.testing.assert_array_equal(stacked[0][1], w[0])


def test_clients_of_a_cohort_are_independent():
    """Training a client inside a cohort equals training it alone (weights and slots reset per client)."""
    x, y = data(60)
    trainer = LocalTrainer(tiny_model(), loss=LOSS, client_optimizer=keras.optimizers.Adam(0.01), batch_size=8)
    w = trainer.get_weights()
    seeds = np.array([[1, 2], [3, 4], [5, 6]])
    together, _ = trainer.train_cohort(w, x, y, [0, 20, 45, 60], seeds)
    alone, _ = trainer.train_cohort(w, x[20:45], y[20:45], [0, 25], seeds[1:2])
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a[1], b[0], atol=1e-6)


def test_training_errors():
    with pytest.raises(ValueError, match=r"`client_optimizer` must be a keras.optimizers.SGD or Adam"):
        ClientOptimizer(keras.optimizers.RMSprop())
    with pytest.raises(ValueError, match=r"option clipnorm is not supported"):
        ClientOptimizer(keras.optimizers.SGD(clipnorm=1.0))
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive integer. Received: batch_size=0"):
        LocalTrainer(tiny_model(), loss=LOSS, client_optimizer="sgd", batch_size=0)
    with pytest.raises(ValueError, match=r"`local_epochs` must be a positive integer"):
        LocalTrainer(tiny_model(), loss=LOSS, client_optimizer="sgd", batch_size=4, local_epochs=0)
    with pytest.raises(ValueError, match=r"`model` must be built"):
        LocalTrainer(keras.Sequential([keras.layers.Dense(2)]), loss=LOSS, client_optimizer="sgd", batch_size=4)
