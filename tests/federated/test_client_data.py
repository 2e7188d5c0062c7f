"""ClientData: lazy per-client materialization, flat memory, gather, statistics and the label plot."""

import gc
import tracemalloc

import numpy as np
import pytest

from tfx_ext.federated import ClientData, plot_label_distribution

X = np.arange(600 * 4, dtype=np.float32).reshape(600, 2, 2)
Y = np.repeat(np.arange(10), 60).astype(np.int32)


def test_getitem_returns_the_partitioned_examples():
    parts = [np.array([5, 1]), np.array([0, 2, 3])]
    cd = ClientData.from_partition(X[:6], Y[:6], parts, client_ids=["a", "b"])
    x, y = cd["a"]
    np.testing.assert_array_equal(x, X[[5, 1]])
    np.testing.assert_array_equal(y, Y[[5, 1]])
    assert len(cd) == 2 and list(cd) == ["a", "b"] and "b" in cd and "z" not in cd
    assert cd.num_examples("b") == 3
    np.testing.assert_array_equal(cd.sizes(), [2, 3])


def test_gather_concatenates_clients_with_offsets():
    cd = ClientData.iid(X, Y, 6, seed=0)
    x, y, off = cd.gather([3, 0])
    np.testing.assert_array_equal(off, [0, 100, 200])
    np.testing.assert_array_equal(x[:100], cd[3][0])
    np.testing.assert_array_equal(y[100:], cd[0][1])


def test_natural_clients_keyed_by_id():
    ids = np.array(["s%d" % (i % 7) for i in range(600)])
    cd = ClientData.natural(X, Y, ids)
    assert len(cd) == 7 and cd.client_ids[0] == "s0"
    np.testing.assert_array_equal(cd.indices("s1"), np.arange(1, 600, 7))


def test_summary_statistics():
    cd = ClientData.shards(X, Y, 30, shards_per_client=1, seed=0)
    s = cd.summary()
    assert s["num_clients"] == 30 and s["num_examples"] == 600 and s["num_classes"] == 10
    assert s["examples_per_client"] == {"min": 20, "max": 20, "mean": 20.0, "std": 0.0, "median": 20.0}
    assert s["classes_per_client_mean"] == 1.0
    assert s["label_skew_tv"] == pytest.approx(0.9)  # one class of ten: TV = 1 - 1/10
    assert ClientData.iid(X, Y, 3, seed=0).summary()["label_skew_tv"] < 0.1


def test_label_counts_and_plot(tmp_path):
    cd = ClientData.dirichlet(X, Y, 12, alpha=0.3, seed=0)
    counts = cd.label_counts()
    assert counts.shape == (12, 10) and counts.sum() == 600
    np.testing.assert_array_equal(counts.sum(0), np.full(10, 60))
    path = plot_label_distribution(cd, tmp_path / "labels.png", max_clients=8)
    assert (tmp_path / "labels.png").stat().st_size > 1000 and path.endswith("labels.png")


def _peak_while_visiting(cd):
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    total = 0
    for cid in cd.client_ids:
        x, y = cd[cid]
        total += len(y)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak, total


def test_lazy_client_data_keeps_memory_flat_on_10000_clients():
    rng = np.random.default_rng(0)

    def synthetic(cid):  # deterministic per client, generated on demand
        r = np.random.default_rng(cid)
        n = 16
        return r.random((n, 8, 8, 1), dtype=np.float32), r.integers(0, 10, n).astype(np.int32)

    one_client_bytes = 16 * 64 * 4
    small_peak, n_small = _peak_while_visiting(ClientData.from_fn(100, synthetic))
    big_peak, n_big = _peak_while_visiting(ClientData.from_fn(10_000, synthetic))
    assert n_big == 160_000 and n_small == 1_600
    # Visiting 100x more clients does not grow the peak: a handful of clients' worth of memory, not 10,000.
    assert big_peak < 20 * one_client_bytes + 64 * 1024, big_peak
    assert big_peak < 2 * small_peak + 16 * 1024
    # Array-backed population: 10,000 clients over 160,000 examples; visiting all keeps the peak at a few clients.
    x = rng.random((160_000, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 160_000).astype(np.int32)
    cd = ClientData.iid(x, y, 10_000, seed=0)
    peak, total = _peak_while_visiting(cd)
    assert total == 160_000
    assert peak < 20 * one_client_bytes + 64 * 1024, peak


def test_client_data_errors():
    with pytest.raises(ValueError, match=r"`x` and `y` must have the same length. Received: len\(x\)=600, len\(y\)=5"):
        ClientData(X, Y[:5], [np.arange(5)])
    with pytest.raises(ValueError, match=r"assigns some example to more than one client"):
        ClientData(X, Y, [np.array([0, 1]), np.array([1, 2])])
    with pytest.raises(ValueError, match=r"`partition` indices must be in \[0, 600\)"):
        ClientData(X, Y, [np.array([0, 600])])
    with pytest.raises(ValueError, match=r"`client_ids` must be unique"):
        ClientData(X, Y, [np.array([0]), np.array([1])], client_ids=["a", "a"])
    with pytest.raises(KeyError, match=r"Unknown client id. Received: client_id=7"):
        ClientData.iid(X, Y, 5)[7]
    with pytest.raises(TypeError, match=r"`fn` must be callable"):
        ClientData.from_fn(3, None)
    with pytest.raises(TypeError, match=r"`indices` is not available for ClientData.from_fn"):
        ClientData.from_fn(3, lambda c: (X[:2], Y[:2])).indices(0)


# ----- from_fn checks and per-client tf.data.Datasets (issue 18) ------------------------------------------------------
def test_from_fn_checks_that_x_and_y_are_aligned():
    from tfx_ext.errors import DataError

    cd = ClientData.from_fn(2, lambda cid: (np.zeros((5, 2)), np.zeros(4 + cid)))
    with pytest.raises(DataError, match=r"Client 0: `x` and `y` must have the same length. .*len\(x\)=5, len\(y\)=4"):
        cd[0]
    assert cd.num_examples(1) == 5


def _dataset(cid, batch=None):
    import tensorflow as tf

    n = 3 + cid % 4
    ds = tf.data.Dataset.from_tensor_slices((tf.fill([n, 2], float(cid)), tf.range(n) % 3))
    return ds.batch(batch) if batch else ds


@pytest.mark.parametrize("batch", [None, 2], ids=["unbatched", "batched"])
def test_from_datasets_mapping_and_function(batch):
    cd = ClientData.from_datasets({"a": _dataset(1, batch), "b": _dataset(2, batch)})
    assert list(cd.client_ids) == ["a", "b"]
    x, y = cd["b"]
    assert x.shape == (5, 2) and y.tolist() == [0, 1, 2, 0, 1] and np.all(x == 2.0)
    fn = ClientData.from_datasets(lambda cid: _dataset(cid, batch), client_ids=4)
    assert fn.sizes().tolist() == [3, 4, 5, 6]
    ffn = ClientData.from_fn(2, lambda cid: _dataset(cid, batch))  # from_fn may return a dataset too
    assert ffn.num_examples(1) == 4
    with pytest.raises(ValueError, match="`client_ids` is needed"):
        ClientData.from_datasets(lambda cid: _dataset(cid))


def test_from_datasets_is_lazy_at_ten_thousand_clients():
    import keras

    from tfx_ext.federated import simulate

    made = []

    def make(cid):
        made.append(cid)
        return _dataset(cid, batch=4)

    cd = ClientData.from_datasets(make, client_ids=10_000)
    assert len(cd) == 10_000 and made == []

    def model():
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])

    h, _ = simulate(model, cd, rounds=3, clients_per_round=4, batch_size=4, progress=False,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert len(h) == 3 and len(made) == 12  # only the sampled clients were ever read
    assert len(set(made)) >= 10
