"""Matching whole Keras networks: adapters, permutation invariance, recovery, growth, client-side matching."""

import numpy as np
import pytest
import keras

from tfx_ext.errors import FederatedError
from tfx_ext.federated import ClientResult, FedAvg, sum_payloads
from tfx_ext.federated.fedma import (
    ClientSideMatching,
    FedMA,
    align_to_global,
    build_spec,
    grow_model,
    match_networks,
    permute_units,
)
from tfx_ext.federated.fedma.adapters import default_weight_paths


def _get(model):
    return [np.array(v.numpy()) for v in model.trainable_variables + model.non_trainable_variables]


def _set(model, weights):
    for v, w in zip(model.trainable_variables + model.non_trainable_variables, weights):
        v.assign(w)


def _predict(model, weights, x):
    _set(model, weights)
    return np.asarray(model(x, training=False))


def dense_model():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(10, activation="relu"),
                             keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])


def conv_bn_model():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(6, 3, use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(5, 2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(7, activation="relu"),
        keras.layers.Dense(4),
    ])


def lstm_model():
    return keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(6, return_sequences=True),
                             keras.layers.GRU(5), keras.layers.Dense(3)])


def exotic_model():
    return keras.Sequential([
        keras.Input((10, 2)),
        keras.layers.Conv1D(4, 3, activation="relu"),
        keras.layers.DepthwiseConv1D(3, depth_multiplier=2),
        keras.layers.LayerNormalization(),
        keras.layers.SeparableConv1D(5, 2, depth_multiplier=2),
        keras.layers.Dropout(0.1),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(3),
    ])


def stream_model():
    from tfx_ext.layers.stream import Stream

    return keras.Sequential([
        keras.Input((12, 3)),
        Stream(keras.layers.Conv1D(4, 3, activation="relu")),
        keras.layers.BatchNormalization(),
        Stream(keras.layers.DepthwiseConv1D(3, depth_multiplier=2)),
        Stream(keras.layers.Conv1D(5, 2, strides=2)),
        Stream(keras.layers.Flatten()),
        keras.layers.Dense(3),
    ])


def project_gru_model():
    """tfx_ext's own GRU after a Reshape that merges positions into channels (was refused by FedMA)."""
    from tfx_ext.layers import GRU

    return keras.Sequential([
        keras.Input((6, 4, 2)),
        keras.layers.Conv2D(3, 1, activation="relu"),
        keras.layers.Reshape((6, 12)),
        GRU(5, return_sequences=False),
        keras.layers.Dense(3),
    ])


def crnn_model():
    from tfx_ext.models import get_model

    return get_model("crnn", input_shape=(8, 8), num_classes=3, width=2, units=4, dense=4)


MODELS = {"dense": dense_model, "conv_bn": conv_bn_model, "lstm": lstm_model, "exotic": exotic_model,
          "stream": stream_model, "project_gru": project_gru_model, "crnn": crnn_model}


def _inputs(model, n=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *model.inputs[0].shape[1:])).astype("float32")


def _trained(name):
    model = MODELS[name]()
    x = _inputs(model, 64, 1)
    y = np.random.default_rng(2).integers(0, model.outputs[0].shape[-1], 64)
    # Eager fit: 8 small steps cost less than tracing a train function per model.
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return model


class _Lazy(dict):
    def __missing__(self, name):
        self[name] = _trained(name)
        return self[name]


@pytest.fixture(scope="module")
def trained():
    """Models trained for a few eager steps, built on first use (a broken layer module fails only its tests)."""
    return _Lazy()


def _random_perms(spec, rng):
    return {g.index: rng.permutation(g.units) for g in spec.groups}


@pytest.mark.parametrize("name", list(MODELS))
def test_permuting_units_keeps_the_function(trained, name):
    model = trained[name]
    spec = build_spec(model)
    w = _get(model)
    x = _inputs(model)
    ref = _predict(model, w, x)
    permuted = permute_units(w, spec, _random_perms(spec, np.random.default_rng(3)))
    assert any(not np.array_equal(a, b) for a, b in zip(w, permuted))
    np.testing.assert_allclose(_predict(model, permuted, x), ref, atol=1e-5)


def test_spec_of_conv_bn_model():
    model = conv_bn_model()
    spec = build_spec(model)
    assert [(g.layer, g.kind, g.units) for g in spec.groups] == [
        (model.layers[0].name, "conv", 6), (model.layers[4].name, "conv", 5), (model.layers[6].name, "dense", 7)]
    assert spec.output_layer == model.layers[7].name
    by_path = {w.path: w for w in spec.weights}
    bn = model.layers[1]
    for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance):
        ((axis, tag),) = by_path[v.path].axes
        assert (axis, tag.group, tag.role) == (0, 0, "def")
    flat_in = dict(by_path[model.layers[6].kernel.path].axes)[0]
    assert (flat_in.group, flat_in.role, flat_in.blocks) == (1, "in", 2 * 2)
    assert by_path[model.layers[7].kernel.path].class_axis == 1


def test_spec_of_stream_wrapped_convs_and_growth_through_the_cell(trained):
    model = trained["stream"]
    spec = build_spec(model)
    assert [(g.layer, g.units) for g in spec.groups] == [(model.layers[0].name, 4), (model.layers[3].name, 5)]
    grown = grow_model(model, {model.layers[0].name: 6, model.layers[3].name: 7})
    assert grown.layers[0].cell.filters == 6 and grown.layers[3].cell.filters == 7
    assert [g.units for g in build_spec(grown).groups] == [6, 7]


@pytest.mark.parametrize("name", ["dense", "conv_bn", "lstm"])
def test_matching_recovers_permuted_copies(trained, name):
    model = trained[name]
    spec = build_spec(model)
    w = _get(model)
    x = _inputs(model)
    ref = _predict(model, w, x)
    rng = np.random.default_rng(4)
    clients = []
    for _ in range(4):
        p = permute_units(w, spec, _random_perms(spec, rng))
        clients.append([a + 1e-4 * rng.normal(size=a.shape).astype(a.dtype) if a.dtype.kind == "f" else a
                        for a in p])
    new, info = match_networks(clients, spec, [10, 20, 30, 40], sigma=0.05, passes=2, max_units=spec.widths, rng=0)
    assert info["widths"] == {g.index: g.units for g in spec.groups}
    np.testing.assert_allclose(_predict(model, new, x), ref, atol=2e-3)
    # Plain averaging of the same clients computes something else.
    avg = [sum(n * c[i] for n, c in zip([10, 20, 30, 40], clients)) / 100 for i in range(len(w))]
    assert np.max(np.abs(_predict(model, avg, x) - ref)) > 0.05


def _results(clients, counts=(10, 20, 30)):
    return [ClientResult(k, c, n) for k, (c, n) in enumerate(zip(clients, counts))]


def test_fedma_ignores_a_clients_unit_order_fedavg_does_not(trained):
    model = trained["dense"]
    spec = build_spec(model)
    w = _get(model)
    rng = np.random.default_rng(5)
    clients = [[a + 0.05 * rng.normal(size=a.shape).astype(a.dtype) for a in w] for _ in range(3)]
    shuffled = list(clients)
    shuffled[1] = permute_units(clients[1], spec, _random_perms(spec, rng))
    fedma = FedMA(model, sigma=0.5, passes=2)
    a, _, _ = fedma.aggregate(w, _results(clients), fedma.init_state(w))
    b, _, _ = fedma.aggregate(w, _results(shuffled), fedma.init_state(w))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-6)
    fedavg = FedAvg()
    c, _, _ = fedavg.aggregate(w, _results(clients), fedavg.init_state(w))
    d, _, _ = fedavg.aggregate(w, _results(shuffled), fedavg.init_state(w))
    assert max(float(np.max(np.abs(x - y))) for x, y in zip(c, d)) > 0.1


def test_client_side_matching_equals_server_side_without_growth(trained):
    model = trained["conv_bn"]
    spec = build_spec(model)
    w = _get(model)
    rng = np.random.default_rng(6)
    clients = []
    for _ in range(3):
        p = permute_units(w, spec, _random_perms(spec, rng))
        clients.append([a + 0.01 * rng.normal(size=a.shape).astype(a.dtype) for a in p])
    counts = {0: [1, 2, 3, 4], 1: [4, 3, 2, 1], 2: [0, 5, 0, 5]}
    results = [ClientResult(k, c, int(np.sum(counts[k]))) for k, c in enumerate(clients)]
    server = FedMA(model, passes=1, max_growth=1.0, class_counts=counts)
    new_s, _, metrics = server.aggregate(w, results, server.init_state(w))
    assert metrics["units_added"] == 0
    client = ClientSideMatching(model, class_counts=counts)
    payloads = [client.client_payload(w, r) for r in results]
    assert all(set(p.extras) == {"class_counts"} and len(p.arrays) == len(w) for p in payloads)
    total = sum_payloads(payloads)
    new_c, _, _ = client.finalize(w, total, client.init_state(w))
    for a, b in zip(new_s, new_c):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not client.needs_individual_updates and server.needs_individual_updates


def test_align_to_global_inverts_the_permutation(trained):
    model = trained["lstm"]
    spec = build_spec(model)
    w = _get(model)
    perms = _random_perms(spec, np.random.default_rng(7))
    aligned, found = align_to_global(permute_units(w, spec, perms), w, spec)
    for g, p in perms.items():
        np.testing.assert_array_equal(found[g][p], np.arange(len(p)))
    for a, b in zip(aligned, w):
        np.testing.assert_array_equal(a, b)


def test_growth_is_capped_and_the_grown_model_trains_and_saves(trained, tmp_path):
    model = trained["dense"]
    spec = build_spec(model)
    w = _get(model)
    rng = np.random.default_rng(8)
    # Unrelated clients: every unit looks new, so the width grows up to the cap.
    clients = [[rng.normal(size=a.shape).astype(a.dtype) for a in w] for _ in range(4)]
    fedma = FedMA(model, sigma=0.1, sigma0=1.0, gamma=5.0, passes=2, max_growth=1.5)
    new, _, metrics = fedma.aggregate(w, _results(clients, (5, 5, 5, 5)), fedma.init_state(w))
    caps = fedma.max_units()
    widths = fedma.spec.widths_from_weights(new)
    assert metrics["units_added"] > 0
    for name, width in widths.items():
        assert spec.widths[name] <= width <= caps[name]
    grown = fedma.rebuild_model(None, new)
    assert [g.units for g in fedma.spec.groups] == list(widths.values())
    _set(grown, new)
    x = _inputs(grown, 32)
    y = np.arange(32) % 3
    grown.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = grown.evaluate(x, y, verbose=0)
    grown.fit(x, y, epochs=3, verbose=0)
    assert grown.evaluate(x, y, verbose=0) < before
    path = tmp_path / "grown.keras"
    grown.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(grown(x)), atol=1e-6)


def test_grow_model_from_model_fn_with_widths():
    def model_fn(widths=None):
        widths = widths or {}
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(widths.get("h", 3), name="h"),
                                 keras.layers.Dense(2, name="out")])

    grown = grow_model(model_fn(), {"h": 5}, model_fn=model_fn)
    assert grown.get_layer("h").units == 5
    with pytest.raises(FederatedError, match="must honour the widths"):
        grow_model(model_fn(), {"h": 5}, model_fn=lambda widths: model_fn())
    with pytest.raises(FederatedError, match=r"Layers \['nope'\] are not in the model config"):
        grow_model(model_fn(), {"nope": 5})


def test_unsupported_layers_are_named():
    model = keras.Sequential([keras.Input((4, 3)), keras.layers.Bidirectional(keras.layers.LSTM(2), name="bi"),
                              keras.layers.Dense(2)])
    with pytest.raises(FederatedError, match=r"cannot match layer 'bi' \(Bidirectional\)"):
        build_spec(model)
    inp = keras.Input((4,))
    h = keras.layers.Dense(4, name="a")(inp)
    out = keras.layers.Dense(2, name="out")(keras.layers.Add(name="skip")([h, inp]))
    with pytest.raises(FederatedError, match="layer 'skip'"):
        build_spec(keras.Model(inp, out))
    ends_in_lstm = keras.Sequential([keras.Input((4, 3)), keras.layers.LSTM(2, name="last")])
    with pytest.raises(FederatedError, match="to be Dense or Conv; layer 'last' \\(LSTM\\) is"):
        build_spec(ends_in_lstm)
    cf = keras.Sequential([keras.Input((1, 8, 8)), keras.layers.Conv2D(2, 3, data_format="channels_first", name="cf"),
                           keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(FederatedError, match="channels_last layers only; layer 'cf'"):
        build_spec(cf)
    grouped = keras.Sequential([keras.Input((8, 4)), keras.layers.Conv1D(4, 3, groups=2, name="grp"),
                                keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(FederatedError, match=r"cannot match layer 'grp' \(Conv1D\) with groups > 1"):
        build_spec(grouped)
    scrambling = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 1), keras.layers.Reshape((8, 6)),
                                   keras.layers.Flatten(), keras.layers.Dense(2)])  # splits a channel row in two
    with pytest.raises(FederatedError, match=r"keeps the channel axis last .* layer 'reshape\w*' maps \(4, 4, 3\)"):
        build_spec(scrambling)


def test_weight_paths_are_positional():
    model = conv_bn_model()
    spec = build_spec(model)
    assert [w.path for w in spec.weights] == default_weight_paths(model)
    reordered = list(reversed(default_weight_paths(model)))
    spec2 = build_spec(model, reordered)
    assert [w.path for w in spec2.weights] == reordered


def test_aggregator_argument_errors(trained):
    with pytest.raises(ValueError, match="`sigma` must be a finite number > 0"):
        FedMA(trained["dense"], sigma=0)
    with pytest.raises(ValueError, match="`max_growth` must be a finite number >= 1.0"):
        FedMA(trained["dense"], max_growth=0.5)
    with pytest.raises(ValueError, match="`passes` must be an integer >= 1"):
        FedMA(trained["dense"], passes=0)
    with pytest.raises(TypeError, match="`model_fn` must be a function"):
        FedMA(None)
    with pytest.raises(TypeError, match="`class_counts` must be None, a ClientData or a mapping"):
        ClientSideMatching(trained["dense"], class_counts=[1, 2])


def test_align_to_global_refuses_other_widths(trained):
    from tfx_ext.federated.fedma import to_global

    model = trained["dense"]
    spec = build_spec(model)
    w = _get(model)
    wider = to_global(w, spec, {0: np.arange(10)}, {0: 12})
    with pytest.raises(FederatedError, match=r"to have the global width 12. Received: 10 units"):
        align_to_global(w, wider, spec)
