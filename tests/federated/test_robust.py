"""Robust aggregators: median, trimmed mean, (Multi-)Krum and norm bounding against hand-computed cases, hypothesis
properties, and the composition rules with secure aggregation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfx_ext.errors import FederatedError, SecureAggregationError
from tfx_ext.federated import (
    Bulyan,
    CenteredClipping,
    ClientResult,
    FedAvg,
    GeometricMedian,
    Krum,
    Median,
    MultiKrum,
    NormBounding,
    SecAgg,
    ServerMomentum,
    TrimmedMean,
)
from tfx_ext.federated import aggregators as agg
from tfx_ext.federated.robust import (
    bulyan,
    centered_clip,
    clip_to_bound,
    clip_update_norm,
    cohort_attackers_bound,
    coordinate_median,
    geometric_median,
    krum,
    krum_scores,
    trimmed_mean,
)
from tfx_ext.federated.secure.wrapper import check_aggregator


def updates_of(*rows):
    """One client update per row: layer 0 = the row's first value (scalar), layer 1 = the rest."""
    return [[np.array(r[0], np.float64), np.array(r[1:], np.float64)] for r in rows]


def test_median_by_hand_odd_and_even():
    odd = coordinate_median(updates_of([1, 5, 0], [2, -1, 7], [10, 0, 7]))
    assert odd[0] == 2 and list(odd[1]) == [0, 7]
    even = coordinate_median(updates_of([1, 0], [2, 0], [3, 0], [100, 0]))
    assert even[0] == 2.5  # mean of the two middle values


def test_trimmed_mean_by_hand():
    ups = updates_of([1, -50], [2, 0], [3, 1], [4, 2], [100, 3])
    out = trimmed_mean(ups, 0.2)  # floor(0.2 * 5) = 1 trimmed each side
    assert out[0] == pytest.approx(3.0) and out[1][0] == pytest.approx(1.0)  # (2+3+4)/3, (0+1+2)/3
    untrimmed = trimmed_mean(ups, 0.1)  # floor(0.5) = 0: the plain mean
    assert untrimmed[0] == pytest.approx(22.0) and untrimmed[1][0] == pytest.approx(-44 / 5)


# Points 0, 1, 3, 5, 20 on a line, f = 1: each score sums the n - f - 2 = 2 smallest squared distances.
#   0: {1, 9, 25, 400} -> 10;  1: {1, 4, 16, 361} -> 5;  3: {9, 4, 4, 289} -> 8;  5: {25, 16, 4, 225} -> 20;
#   20: {400, 361, 289, 225} -> 514.  Krum picks 1; Multi-Krum m=2 averages 1 and 3 (= 2), m=3 adds 0 (= 4/3).
KRUM_POINTS = [0.0, 1.0, 3.0, 5.0, 20.0]


def test_krum_scores_and_picks_by_hand():
    ups = updates_of(*[[p, 0.0, 0.0] for p in KRUM_POINTS])
    np.testing.assert_allclose(krum_scores(ups, 1), [10, 5, 8, 20, 514])
    best, chosen = krum(ups, 1)
    assert list(chosen) == [1] and best[0] == 1.0
    two, chosen = krum(ups, 1, m=2)
    assert list(chosen) == [1, 2] and two[0] == 2.0
    three, _ = krum(ups, 1, m=3)
    assert three[0] == pytest.approx(4 / 3)


def test_krum_aggregator_applies_the_pick_and_reports_client_ids():
    g = [np.array(0.5, np.float32), np.zeros(2, np.float32)]
    results = [ClientResult(f"c{k}", [np.array(0.5 + p, np.float32), np.zeros(2, np.float32)], 10)
               for k, p in enumerate(KRUM_POINTS)]
    new, _, metrics = Krum(f=1).aggregate(g, results, {})
    assert float(new[0]) == 1.5 and new[0].dtype == np.float32
    assert metrics["selected"] == ["c1"] and metrics["update_norm"] == pytest.approx(1.0)
    new, _, metrics = MultiKrum(f=1, m=2).aggregate(g, results, {})
    assert float(new[0]) == 2.5 and metrics["selected"] == ["c1", "c2"]


# Bulyan on the line 0, 1, 2, 3, 5, 50, 100 with f = 1 (n = 7 = 4f + 3): theta = 5 picks, beta = 3.
#   Krum (4 nearest): 0: 1+4+9+25=39, 1: 1+1+4+16=22, 2: 4+1+1+9=15, 3: 9+4+1+4=18, 5: 54, 50, 100 larger -> 2.
#   Left 0,1,3,5,50,100 (3 nearest): 0: 1+9+25=35, 1: 1+4+16=21, 3: 9+4+4=17, 5: 45 -> 3.
#   Left 0,1,5,50,100 (2 nearest): 0: 1+25=26, 1: 1+16=17, 5: 41 -> 1.  Left 0,5,50,100 (1 nearest): 0 and 5 are
#   each other's nearest (25) -> 0, the first.  Left 5,50,100 (f drops to 0, 1 nearest): 5 and 50 (45^2) -> 5.
#   Selected 2, 3, 1, 0, 5; their median is 2 and the 3 closest to it are 2, 1, 3: mean 2.
#   Second column: 10, 0, 7, 1, 9, 0, 0 over the same clients; the selection's values 7, 1, 0, 10, 9 (median 7),
#   the 3 closest 7, 9, 10 (distances 0, 2, 3): mean 26/3. Scaled by 1e-3, it moves no Krum score past another.
def test_bulyan_by_hand():
    second = [10, 0, 7, 1, 9, 0, 0]
    ups = [[np.array(p, np.float64), np.array([1e-3 * q])] for p, q in zip([0, 1, 2, 3, 5, 50, 100], second)]
    out, chosen = bulyan(ups, 1)
    assert [int(i) for i in chosen] == [2, 3, 1, 0, 4]
    assert out[0] == pytest.approx(2.0) and out[1][0] == pytest.approx(1e-3 * 26 / 3)
    everything, chosen = bulyan(updates_of([1, 2], [3, 4], [8, 0]), 0)  # f = 0: every update, the plain mean
    assert sorted(chosen) == [0, 1, 2] and everything[0] == pytest.approx(4.0) and everything[1][0] == 2.0
    with pytest.raises(ValueError, match=r"Bulyan needs n >= 4f \+ 3 clients per round \(n=10\); lower `f` \(at most 1\)"):
        bulyan(updates_of(*[[p, 0.0] for p in range(10)]), 2)
    with pytest.raises(FederatedError, match=r"Bulyan with f=2 needs at least 11 clients per round but the round has 10"):
        Bulyan(f=2).combine(updates_of(*[[p, 0.0] for p in range(10)]))


# Centered clipping from center 0 over the scalars 1, 2, 100 with tau = 3: the differences 1, 2, 100 clip to 1, 2,
# 3, mean 2; the second iteration from 2: -1, 0, 98 -> 3, mean 2/3, so v = 8/3. tau=None takes the median distance
# 2 from the first iteration: 1, 2, 2 -> v = 5/3.
def test_centered_clip_by_hand():
    ups = [[np.array([v], np.float64)] for v in (1.0, 2.0, 100.0)]
    zero = [np.zeros(1)]
    v, tau, clipped = centered_clip(ups, zero, 3.0, iterations=1)
    assert v[0][0] == pytest.approx(2.0) and tau == 3.0 and clipped == 1
    v, _, clipped = centered_clip(ups, zero, 3.0, iterations=2)
    assert v[0][0] == pytest.approx(8 / 3) and clipped == 1
    v, tau, _ = centered_clip(ups, zero, None, iterations=1)
    assert tau == 2.0 and v[0][0] == pytest.approx(5 / 3)
    # the norm is global over the layers: (3 | 4) from the center (0 | 0) has norm 5, clipped to 2.5: (1.5 | 2)
    v, _, _ = centered_clip([[np.array(3.0), np.array([4.0])]], [np.array(0.0), np.zeros(1)], 2.5)
    assert float(v[0]) == pytest.approx(1.5) and v[1][0] == pytest.approx(2.0)
    # a center other than 0: from 10, the scalars 9 and 13 with tau 1 move v by (-1 + 1) / 2 = 0
    v, _, _ = centered_clip([[np.array([9.0])], [np.array([13.0])]], [np.array([10.0])], 1.0)
    assert v[0][0] == pytest.approx(10.0)
    with pytest.raises(ValueError, match=r"`center` must have the updates' 1 values. Received: 2 values"):
        centered_clip(ups, [np.zeros(2)], 1.0)


def test_centered_clipping_starts_each_round_from_the_last_aggregate():
    g = [np.zeros(1, np.float32)]
    cc = CenteredClipping(tau=1.0, iterations=1)
    state = cc.init_state(g)
    assert set(state) == {"cc_center"} and state["cc_center"][0][0] == 0
    results = [ClientResult(k, [np.array([v], np.float32)], 1) for k, v in enumerate([1.0, 3.0])]
    new, state, metrics = cc.aggregate(g, results, state)  # from 0: 1 and 3 clip to 1 and 1: v = 1
    assert new[0][0] == pytest.approx(1.0) and state["cc_center"][0][0] == pytest.approx(1.0)
    assert metrics["cc_tau"] == 1.0 and metrics["cc_clipped"] == 1
    new, state, _ = cc.aggregate(g, results, state)  # from 1: differences 0 and 2 -> 0 and 1: v = 1.5
    assert new[0][0] == pytest.approx(1.5) and state["cc_center"][0][0] == pytest.approx(1.5)
    # with server momentum: the optimizer's velocity and the center live side by side in the state
    ccm = CenteredClipping(tau=1.0, iterations=1, server_optimizer=ServerMomentum(1.0, 0.5))
    state = ccm.init_state(g)
    assert set(state) == {"velocity", "cc_center"}
    new, state, _ = ccm.aggregate(g, results, state)  # v = 1, velocity 1
    new, state, _ = ccm.aggregate(new, results, state)  # updates -> 0 and 2 from the new weights 1: centre 1 -> 1
    assert state["velocity"][0][0] == pytest.approx(0.5 * 1 + 1.0) and new[0][0] == pytest.approx(1 + 1.5)


def test_cohort_attackers_bound_is_the_hypergeometric_quantile():
    # 2 malicious of 4, cohort of 2: P(0) = C(2,0)C(2,2)/C(4,2) = 1/6, P(1) = 4/6, P(2) = 1/6
    assert [cohort_attackers_bound(4, 2, 2, q) for q in (0.1, 1 / 6, 0.5, 5 / 6, 0.9, 1.0)] == [0, 0, 1, 1, 2, 2]
    assert cohort_attackers_bound(100, 0, 20) == 0 and cohort_attackers_bound(10, 10, 3) == 3
    with pytest.raises(ValueError, match=r"`confidence` must be a finite number > 0 and <= 1"):
        cohort_attackers_bound(10, 2, 3, 0)


def test_pre_clip_bounds_every_update_before_the_rule():
    # norms 1, 2, 10: the median 2 clips the third to 2 (direction kept), then the coordinate-wise median
    ups = updates_of([1, 0], [0, 2], [-6, 8])
    clipped, metrics = clip_to_bound(ups, "median")
    assert metrics == {"clip_bound": 2.0, "clipped": 1}
    assert float(clipped[2][0]) == pytest.approx(-1.2) and clipped[2][1][0] == pytest.approx(1.6)
    g = [np.array(0.0, np.float32), np.zeros(1, np.float32)]
    results = [ClientResult(k, [np.array(u[0], np.float32), u[1].astype(np.float32)], 1) for k, u in enumerate(ups)]
    new, _, m = GeometricMedian(pre_clip=1.0).aggregate(g, results, {})
    assert m["clip_bound"] == 1.0 and m["clipped"] == 2
    new, _, m = Median(pre_clip="median").aggregate(g, results, {})
    assert float(new[0]) == pytest.approx(0.0) and new[1][0] == pytest.approx(1.6)  # medians of (1,0,-1.2), (0,2,1.6)
    with pytest.raises(ValueError, match=r"`pre_clip` must be a finite number > 0 or None"):
        Median(pre_clip=0)
    assert repr(Median(pre_clip="median")).endswith("pre_clip='median')")


def test_median_and_trimmed_mean_aggregators_ignore_example_counts():
    g = [np.zeros(1, np.float32)]
    results = [ClientResult(k, [np.array([v], np.float32)], n) for k, (v, n) in enumerate([(1, 1), (2, 1000), (9, 1)])]
    assert Median().aggregate(g, results, {})[0][0][0] == 2.0
    assert TrimmedMean(beta=0.34).aggregate(g, results, {})[0][0][0] == 2.0  # one trimmed each side


def test_norm_bounding_by_hand_and_under_secagg():
    # Client a: update (3, 4), norm 5 -> clipped to bound 1: (0.6, 0.8); client b: (0.3, 0) is kept.
    # Example-weighted mean with n = 1, 3: (0.6 + 0.9, 0.8) / 4 = (0.375, 0.2).
    g = [np.array([1.0, 1.0], np.float32)]
    results = [ClientResult("a", [np.array([4.0, 5.0], np.float32)], 1),
               ClientResult("b", [np.array([1.3, 1.0], np.float32)], 3)]
    plain, _, _ = NormBounding(bound=1.0).aggregate(g, results, {})
    np.testing.assert_allclose(plain[0], [1.375, 1.2], atol=1e-6)
    check_aggregator(NormBounding())  # sum-based: accepted
    secure, _, _ = SecAgg(clip=2.0, variant="secagg", seed=0).aggregate(NormBounding(bound=1.0), g, results, {})
    np.testing.assert_allclose(secure[0], [1.375, 1.2], atol=1e-5)
    unbounded, _, _ = FedAvg().aggregate(g, results, {})  # positive control: without the bound the mean differs
    assert not np.allclose(unbounded[0], plain[0], atol=0.1)


def test_geometric_median_by_hand():
    # Collinear 0, 1, 10: the point minimising the summed distances is the middle one.
    med, _ = geometric_median(updates_of([0.0, 0.0], [1.0, 0.0], [10.0, 0.0]))
    assert med[0] == pytest.approx(1.0, abs=1e-6) and med[1][0] == pytest.approx(0.0, abs=1e-9)
    # Equilateral triangle: the Fermat point is the centroid (1, sqrt(3) / 3), here split over two layers.
    med, _ = geometric_median(updates_of([0.0, 0.0], [2.0, 0.0], [1.0, np.sqrt(3)]))
    assert med[0] == pytest.approx(1.0, abs=1e-6) and med[1][0] == pytest.approx(np.sqrt(3) / 3, abs=1e-6)
    g = [np.array(0.0, np.float32), np.zeros(1, np.float32)]
    far = [ClientResult(k, [np.array(v, np.float32), np.zeros(1, np.float32)], 1)
           for k, v in enumerate([0.9, 1.0, 1.1, 1000.0])]
    new, _, metrics = GeometricMedian().aggregate(g, far, {})
    assert 0.9 < float(new[0]) < 1.1 and metrics["weiszfeld_iterations"] >= 1  # the outlier barely moves it


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(2, 7), st.integers(1, 4)), elements=st.floats(-100, 100)))
def test_geometric_median_beats_every_client_and_the_mean_on_its_objective(points):
    """The objective sum_i ||z - u_i|| at the result is no worse than at any client's update or at the mean (an
    oracle that does not use the iteration)."""
    med, _ = geometric_median([[p] for p in points])

    def cost(z):
        return float(np.sum(np.linalg.norm(points - z, axis=1)))

    best = min([cost(p) for p in points] + [cost(points.mean(axis=0))])
    assert cost(med[0]) <= best * (1 + 1e-6) + 1e-6


def test_clip_update_norm_is_global_over_layers():
    clipped, was = clip_update_norm([np.array([3.0]), np.array([[4.0]])], 2.5)
    assert was and clipped[0][0] == pytest.approx(1.5) and clipped[1][0, 0] == pytest.approx(2.0)
    kept, was = clip_update_norm([np.array([0.3])], 1.0)
    assert not was and kept[0][0] == 0.3


@pytest.mark.parametrize("aggregator,why", [
    (Median(), "to take the coordinate-wise median"),
    (TrimmedMean(), "to sort and trim each coordinate"),
    (Krum(), "to score pairwise distances"),
    (MultiKrum(m=2), "to score pairwise distances"),
    (GeometricMedian(), "for the Weiszfeld iterations"),
    (Bulyan(), "to run Krum and sort each coordinate"),
    (CenteredClipping(), "to clip its distance to the center"),
])
def test_secure_aggregation_refuses_individual_update_aggregators_by_name(aggregator, why):
    name = type(aggregator).__name__
    with pytest.raises(SecureAggregationError,
                       match=rf"cannot be used with {name}: it needs each client's individual update at the server "
                             rf"{why}, and secure aggregation reveals only their sum\. Use NormBounding"):
        check_aggregator(aggregator)
    with pytest.raises(SecureAggregationError, match=rf"cannot be used with {name}"):
        SecAgg().aggregate(aggregator, [np.zeros(1)], [], {})


def test_names_resolve_through_the_registry():
    assert isinstance(agg.get("median"), Median) and isinstance(agg.get("krum"), Krum)
    assert agg.get("trimmed_mean", beta=0.2).beta == 0.2
    assert agg.get("multi_krum", f=2, m=3).m == 3 and isinstance(agg.get("norm_bounding"), NormBounding)
    assert isinstance(agg.get("geometric_median"), GeometricMedian)
    assert agg.get("bulyan", f=2).f == 2 and agg.get("centered_clipping", tau=0.5).tau == 0.5


def test_argument_errors():
    with pytest.raises(ValueError, match=r"`beta` must be a finite number >= 0 and < 0.5. Received: beta=0.5"):
        TrimmedMean(beta=0.5)
    with pytest.raises(ValueError, match=r"Krum needs n - f - 2 >= 1 clients \(n=4\)"):
        krum_scores(updates_of(*[[p, 0.0] for p in range(4)]), 2)
    with pytest.raises(FederatedError, match=r"Multi-Krum averages m=5 updates but the round has 4"):
        MultiKrum(f=0, m=5).combine(updates_of(*[[p, 0.0] for p in range(4)]))
    with pytest.raises(ValueError, match=r"`bound` must be a finite number > 0"):
        NormBounding(bound=0)
    with pytest.raises(TypeError, match=r"`server_optimizer` must be a ServerSGD"):
        Median(server_optimizer="sgd")
    with pytest.raises(ValueError, match=r"`updates` must hold at least one client update"):
        coordinate_median([])


finite = st.floats(-1e6, 1e6, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6), elements=finite),
       st.floats(0, 0.49))
def test_median_and_trimmed_mean_stay_within_the_clients_range(stack, beta):
    ups = [[row] for row in stack]  # first axis = clients
    lo, hi = stack.min(axis=0), stack.max(axis=0)
    med = coordinate_median(ups)[0]
    assert np.all(med >= lo) and np.all(med <= hi)
    tm = trimmed_mean(ups, beta)[0]
    tol = 1e-9 * np.maximum(np.abs(lo), np.abs(hi))  # float rounding of the mean
    assert np.all(tm >= lo - tol) and np.all(tm <= hi + tol)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(0, 2**32 - 1), st.booleans())
def test_krum_never_picks_a_far_away_byzantine_update_when_n_exceeds_2f_plus_2(f, extra, dim, seed, clustered):
    n = 2 * f + 2 + extra
    rng = np.random.default_rng(seed)
    honest = rng.uniform(-1, 1, size=(n - f, dim))
    direction = rng.normal(size=(f, dim)) + 1e-3
    if clustered:  # the attackers agree on one point: their distances to each other are 0
        direction[:] = direction[0]
    byzantine = 1e3 * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    points = np.concatenate([honest, byzantine])
    order = rng.permutation(n)
    ups = [[points[i]] for i in order]
    _, chosen = krum(ups, f, m=n - f)
    assert all(order[i] < n - f for i in chosen), "Krum picked a Byzantine update"


def test_simulate_refuses_secagg_with_the_median_by_name():
    from tfx_ext.federated import ClientData, simulate

    cd = ClientData.iid(np.zeros((8, 2), np.float32), np.zeros(8, np.int64), num_clients=4, seed=0)
    with pytest.raises(SecureAggregationError, match=r"cannot be used with Median: .*coordinate-wise median"):
        simulate(lambda: None, cd, rounds=1, clients_per_round=2, aggregator="median", secure=SecAgg())
