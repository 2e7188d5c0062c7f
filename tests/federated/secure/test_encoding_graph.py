"""Fixed-point encoding (bounds, overflow guard, weighting) and the SecAgg+ graph and parameter formula."""

import numpy as np
import pytest

from tfx_ext.errors import SecureAggregationError
from tfx_ext.federated.secure.encoding import FixedPointEncoder, WeightedEncoder, required_bits
from tfx_ext.federated.secure.graph import choose_parameters, graph_seed, neighbours, neighbours_of


@pytest.mark.parametrize("rounding", ["stochastic", "deterministic"])
@pytest.mark.parametrize("bits", [16, 32, 48, 64])
def test_round_trip_and_sum_errors_within_the_stated_bound(rounding, bits):
    n = 20
    enc = FixedPointEncoder(bound=2.0, bits=bits, num_clients=n, rounding=rounding)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-3, 3, 500) for _ in range(n)]  # some values get clipped
    one = enc.decode(enc.encode(xs[0], rng))
    assert np.max(np.abs(one - enc.clip(xs[0]))) <= enc.error_bound(1)
    total = enc.decode_sum(np.sum([enc.encode(x, rng) for x in xs], axis=0, dtype=enc.dtype))
    assert np.max(np.abs(total - np.sum([enc.clip(x) for x in xs], axis=0))) <= enc.error_bound(n)


def test_full_range_sum_never_wraps():
    for bits in (8, 32, 63, 64):
        n = 7
        enc = FixedPointEncoder(bound=1.0, bits=bits, num_clients=n, rounding="stochastic")
        rng = np.random.default_rng(1)
        for sign in (1.0, -1.0):
            s = enc.decode_sum(sum(enc.encode(np.full(50, sign * 5.0), rng) for _ in range(n)))
            assert np.all(np.abs(s - sign * n) <= enc.error_bound(n))


def test_stochastic_rounding_is_unbiased_and_seeded():
    enc = FixedPointEncoder(bound=1.0, bits=8, num_clients=1, rounding="stochastic")
    x = np.full(20000, 0.3 * enc.step)  # well below one step
    q = enc.decode(enc.encode(x, np.random.default_rng(0)))
    assert abs(q.mean() - x[0]) < 0.02 * enc.step
    assert np.array_equal(enc.encode(x, np.random.default_rng(5)), enc.encode(x, np.random.default_rng(5)))


def test_overflow_guard_and_errors():
    with pytest.raises(SecureAggregationError, match=r"Overflow guard: the sum of 10 clients clipped to 1.0"):
        FixedPointEncoder(bound=1.0, bits=16, num_clients=10, scale=4000.0)
    FixedPointEncoder(bound=1.0, bits=16, num_clients=10, scale=3000.0)  # 10 * 3001 < 2^15 - 1
    with pytest.raises(SecureAggregationError, match=r"Overflow guard: a modulus of 2\^4 cannot hold"):
        FixedPointEncoder(bound=1.0, bits=4, num_clients=10)
    assert required_bits(10, 1.0, 1 / 3000) == 16
    with pytest.raises(ValueError, match=r"`rounding` must be one of"):
        FixedPointEncoder(bound=1.0, bits=16, num_clients=2, rounding="up")
    with pytest.raises(ValueError, match=r"`bound` must be a finite number > 0. Received: bound=0"):
        FixedPointEncoder(bound=0, bits=16, num_clients=2)
    enc = FixedPointEncoder(bound=1.0, bits=16, num_clients=2)
    with pytest.raises(ValueError, match=r"Values to encode must be finite"):
        enc.encode(np.array([np.nan]), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"Stochastic rounding needs a seeded `rng`"):
        enc.encode(np.zeros(2))


def test_weighted_encoder_gives_weighted_mean():
    enc = WeightedEncoder(clip=1.0, bits=32, num_clients=3, rounding="deterministic", max_weight=100.0)
    xs = [np.array([0.1, -0.5]), np.array([0.3, 0.2]), np.array([0.9, 5.0])]  # the last gets clipped
    ws = [10, 30, 200]  # the last gets capped at 100
    total = np.sum([enc.encode(x, w) for x, w in zip(xs, ws)], axis=0, dtype=np.uint32)
    wx, wsum = enc.decode_sum(total)
    expected = (10 * xs[0] + 30 * xs[1] + 100 * np.clip(xs[2], -1, 1)) / 140
    np.testing.assert_allclose(wx / wsum, expected, atol=1e-7)
    with pytest.raises(ValueError, match=r"Client weights must be positive and finite"):
        enc.encode(xs[0], 0.0)


def test_parameters_grow_logarithmically_and_meet_their_bounds():
    ks = {n: choose_parameters(n, variant="secagg+", dropout_rate=0.1, corrupt_fraction=0.1) for n in
          (100, 1000, 10**4, 10**6)}
    assert [p.degree for p in ks.values()] == sorted(p.degree for p in ks.values())
    assert ks[10**6].degree < 70 and ks[100].degree < 99  # sparse: O(log n), not O(n)
    for p in ks.values():
        assert p.degree // 2 < p.threshold <= p.degree
        assert p.correctness_failure <= 2.0**-20 and p.privacy_failure <= 2.0**-40
    full = choose_parameters(100, variant="secagg")
    assert full.degree == 99 and full.threshold >= 50
    assert choose_parameters(20, variant="secagg", threshold=0.75).threshold == 15
    with pytest.raises(ValueError, match=r"`threshold` must exceed half the degree"):
        choose_parameters(20, variant="secagg", threshold=5)
    with pytest.raises(ValueError, match=r"`variant` must be one of"):
        choose_parameters(20, variant="plain")
    with pytest.raises(ValueError, match=r"`dropout_rate` must be a finite number >= 0 and < 0.5"):
        choose_parameters(20, dropout_rate=0.7)


def test_neighbour_graph_is_public_symmetric_and_regular():
    ids = list(range(1, 41))
    keys = {i: (bytes([i]) * 32, bytes([i + 1]) * 32) for i in ids}
    seed = graph_seed(3, b"public", keys)
    g = neighbours(ids, 8, seed)
    assert g == neighbours(ids, 8, seed)  # every client recomputes the same graph
    assert all(len(v) == 8 and u not in v for u, v in g.items())
    assert all(u in g[v] for u, vs in g.items() for v in vs)
    assert g != neighbours(ids, 8, graph_seed(4, b"public", keys))  # fresh per round
    assert neighbours(ids, 39, seed)[1] == tuple(range(2, 41))  # complete graph
    assert all(neighbours_of(u, ids, 8, seed) == g[u] for u in ids)  # a client's own row, computed alone
    assert neighbours_of(7, ids, 39, seed) == tuple(i for i in ids if i != 7)
