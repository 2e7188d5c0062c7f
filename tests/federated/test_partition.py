"""Partitioners: every example exactly once, skew where promised, seeded, errors named."""

import numpy as np
import pytest

from tfx_ext.federated import dirichlet_partition, iid_partition, natural_partition, shard_partition

LABELS = np.repeat(np.arange(10), 60)  # 600 examples, 10 classes


def _assert_partition(parts, n):
    cat = np.concatenate(parts)
    assert len(cat) == n
    np.testing.assert_array_equal(np.sort(cat), np.arange(n))  # each example exactly once


def _label_skew(parts, labels):
    """Example-weighted total-variation distance of client label distributions to the global one."""
    glob = np.bincount(labels) / len(labels)
    tv = [0.5 * np.abs(np.bincount(labels[p], minlength=len(glob)) / len(p) - glob).sum() for p in parts]
    return float(np.average(tv, weights=[len(p) for p in parts]))


def test_iid_partition_covers_and_balances():
    parts = iid_partition(103, 10, seed=1)
    _assert_partition(parts, 103)
    assert {len(p) for p in parts} == {10, 11}
    assert all(p.dtype == np.int64 for p in parts)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 100.0])
def test_dirichlet_partition_covers_every_example_once(alpha):
    parts = dirichlet_partition(LABELS, 20, alpha=alpha, seed=3)
    _assert_partition(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 1


def test_dirichlet_skew_is_measurable_and_decreases_with_alpha():
    skew = {a: _label_skew(dirichlet_partition(LABELS, 20, alpha=a, seed=0), LABELS) for a in (0.1, 0.5, 100.0)}
    assert skew[0.1] > skew[0.5] > skew[100.0]
    assert skew[0.1] > 0.5 and skew[100.0] < 0.2
    # IID is the low-skew reference.
    assert _label_skew(iid_partition(len(LABELS), 20, seed=0), LABELS) < 0.25


def test_dirichlet_partition_is_seeded_and_uses_no_global_rng():
    np.random.seed(0)
    a = dirichlet_partition(LABELS, 10, alpha=0.5, seed=7)
    np.random.seed(99)
    b = dirichlet_partition(LABELS, 10, alpha=0.5, seed=7)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = dirichlet_partition(LABELS, 10, alpha=0.5, seed=8)
    assert any(len(x) != len(y) or np.any(x != y) for x, y in zip(a, c))


def test_dirichlet_min_examples_is_enforced():
    parts = dirichlet_partition(LABELS, 50, alpha=0.05, seed=0, min_examples=5, max_attempts=1)
    _assert_partition(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 5


def test_shard_partition_limits_classes_per_client():
    parts = shard_partition(LABELS, 30, shards_per_client=2, seed=0)
    _assert_partition(parts, len(LABELS))
    assert max(len(np.unique(LABELS[p])) for p in parts) <= 2
    assert {len(p) for p in parts} == {20}


def test_natural_partition_by_id_column():
    ids = np.array(["bob", "amy", "bob", "cid", "amy", "bob"])
    client_ids, parts = natural_partition(ids)
    assert client_ids == ["amy", "bob", "cid"]
    np.testing.assert_array_equal(parts[0], [1, 4])
    np.testing.assert_array_equal(parts[1], [0, 2, 5])
    np.testing.assert_array_equal(parts[2], [3])
    _assert_partition(parts, len(ids))


def test_partition_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"`num_clients` must be a positive integer. Received: num_clients=0"):
        iid_partition(10, 0)
    with pytest.raises(ValueError, match=r"`num_clients` must not exceed the number of examples"):
        iid_partition(5, 6)
    with pytest.raises(ValueError, match=r"`alpha` must be a positive number. Received: alpha=0"):
        dirichlet_partition(LABELS, 5, alpha=0)
    with pytest.raises(ValueError, match=r"`labels` must be a 1-D array"):
        dirichlet_partition(LABELS.reshape(2, -1), 5)
    with pytest.raises(ValueError, match=r"`min_examples` must be in"):
        dirichlet_partition(LABELS, 5, min_examples=1000)
    with pytest.raises(ValueError, match=r"`shards_per_client` must be a positive integer"):
        shard_partition(LABELS, 5, shards_per_client=0)
    with pytest.raises(ValueError, match=r"`num_clients \* shards_per_client` \(1200\) must not exceed"):
        shard_partition(LABELS, 600, shards_per_client=2)
    with pytest.raises(ValueError, match=r"`ids` must be a non-empty 1-D array"):
        natural_partition([])
    with pytest.raises(TypeError, match=r"`seed` must be an int or a numpy.random.Generator"):
        iid_partition(10, 2, seed="x")
