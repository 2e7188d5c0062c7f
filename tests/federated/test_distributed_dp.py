"""Distributed DP (the distributed discrete Gaussian inside secure aggregation): the sampler against its pmf, the
decoded sum's noise variance against the target (chi-square bounds), the rotation inverted, the bit budget (no wrap,
named errors), dropouts lowering the noise as documented, epsilon against dp-accounting called directly and the
DDG formula against hand-computed values, and a simulate() run under SecAgg against a numpy FedAvg oracle."""

import math

import dp_accounting as dp
import keras
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tfx_ext.errors import FederatedError, SecureAggregationError
from tfx_ext.federated import ClientData, Payload, SecAgg, simulate
from tfx_ext.federated.aggregators import RoundContext
from tfx_ext.federated.distributed_dp import (DistributedDP, ddg_epsilon, ddg_scale, discrete_gaussian, hadamard,
                                              padded_size, rotate, rotation_signs, rounding_bound, unrotate,
                                              wrap_bound)
from tfx_ext.federated.payload import FieldPayload, sum_payloads


def ctx(rnd, client, m, seed):
    return RoundContext(rnd, client, np.random.default_rng(seed), m)


def make(m=10, z=1.0, clip=1.0, bits=16, **kw):
    return DistributedDP(clip_norm=clip, noise_multiplier=z, population_size=10 * m, cohort_size=m, bits=bits, **kw)


def encoded(ddp, updates, rnd=1):
    """Each update (list of arrays, weight 1) through the client hook, after the round's layout is set."""
    ddp.payload_layout(Payload([np.zeros_like(a) for a in updates[0]], 1.0))
    return [ddp.on_client(Payload(u, 1.0), ctx(rnd, k, ddp.accountant.cohort_size, 1000 * rnd + k))[0]
            for k, u in enumerate(updates)]


def decoded(ddp, payloads, rnd=1):
    out, metrics = ddp.on_server(sum_payloads(payloads), ctx(rnd, None, ddp.accountant.cohort_size, 0))
    return np.concatenate([a.ravel() for a in out.arrays]), metrics


def chi_square_ok(errors, variance, k=5.0):
    """`sum(e^2) / variance` is within `k` standard deviations of a chi-square with `len(errors)` degrees."""
    n = errors.size
    stat = float(np.sum(np.square(errors)) / variance)
    return abs(stat - n) < k * math.sqrt(2 * n), stat / n


def test_discrete_gaussian_matches_its_pmf():
    sigma = 2.5
    x = discrete_gaussian(sigma, 200_000, np.random.default_rng(0))
    support = np.arange(-25, 26)
    pmf = np.exp(-support**2 / (2 * sigma**2))
    pmf /= pmf.sum()  # the tail beyond 10 sigma is below 1e-20
    counts = np.array([(x == v).sum() for v in support])
    keep = pmf * x.size > 5
    expected = pmf[keep] * x.size
    chi2 = float(np.sum((counts[keep] - expected) ** 2 / expected))
    dof = int(keep.sum()) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof) and counts[~keep].sum() < 50
    assert x.dtype == np.int64 and abs(x.var() / float(np.sum(pmf * support**2)) - 1) < 0.02


@pytest.mark.parametrize("m", [4, 10])
def test_the_decoded_sum_of_zero_updates_is_the_target_noise(m):
    """Zero updates round exactly, so the decoded sum is the noise alone; the rotation keeps its sum of squares
    (d is a power of two: nothing unpadded). Target: variance (z C)^2 per coordinate."""
    ddp = make(m=m, z=0.8, clip=0.5)
    errors = []
    for rnd in range(1, 7):
        total, metrics = decoded(ddp, encoded(ddp, [[np.zeros((32, 64))]] * m, rnd), rnd)
        errors.append(total)
    ok, ratio = chi_square_ok(np.concatenate(errors), (0.8 * 0.5) ** 2)
    assert ok, f"noise variance / target = {ratio:.4f}"
    assert metrics["noise_stddev"] == pytest.approx(0.4) and metrics["survivors"] == m


def test_the_decoded_sum_is_the_clipped_sum_plus_noise_and_rounding():
    m, z, clip = 8, 0.5, 1.0
    ddp = make(m=m, z=z, clip=clip, bits=12)
    r = np.random.default_rng(3)
    updates = [[r.normal(0, 0.1, (20, 30)), r.normal(0, 0.1, (7,))] for _ in range(m)]
    updates[0] = [40 * a for a in updates[0]]  # far above the clip norm
    clipped = []
    for u in updates:
        flat = np.concatenate([a.ravel() for a in u])
        clipped.append(flat * min(1.0, clip / np.linalg.norm(flat)))
    total, _ = decoded(ddp, encoded(ddp, updates))
    lay = ddp._last
    err = total - np.sum(clipped, axis=0)
    noise = (z * clip) ** 2
    # rounding adds at most 1/4 per client and coordinate (integer units), spread by the inverse rotation
    assert noise * 0.85 < np.mean(err**2) < (noise + m / (4 * lay.scale**2)) * 1.15
    assert lay.d == 1024 and err.size == 607


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 3000), seed=st.integers(0, 2**31 - 1))
def test_rotation_is_inverted_and_keeps_norms(size, seed):
    d = padded_size(size)
    assert d >= size and d & (d - 1) == 0 and (d == 1 or d < 2 * size)
    x = np.zeros(d)
    x[:size] = np.random.default_rng(seed).normal(size=size)
    signs = rotation_signs(d, seed, 3)
    y = rotate(x, signs)
    assert np.allclose(unrotate(y, signs), x, rtol=0, atol=1e-12 * max(1.0, np.abs(x).max()))
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    q = np.random.default_rng(seed).integers(-1000, 1000, size=d)
    assert np.array_equal(hadamard(hadamard(q)), d * q)  # exact in integers: H H = d I


def test_the_rotation_signs_are_public_per_round():
    a, b = rotation_signs(64, 7, 1), rotation_signs(64, 7, 2)
    assert np.array_equal(a, rotation_signs(64, 7, 1)) and not np.array_equal(a, b)
    assert set(np.unique(a)) == {-1.0, 1.0}


def test_aligned_worst_case_updates_do_not_wrap_at_the_chosen_bits():
    """Every client sends the same update of norm C (the sum's norm is n C); the integer sum, taken without modular
    reduction, stays inside the signed range, and the modular decode equals it."""
    m, bits = 16, 14
    ddp = make(m=m, z=0.3, bits=bits)
    u = np.random.default_rng(0).normal(size=(30, 17))
    u /= np.linalg.norm(u)
    payloads = encoded(ddp, [[u]] * m)
    lay, half = ddp._last, 1 << (bits - 1)
    signed = [np.where(p.arrays[0] >= half, p.arrays[0] - 2 * half, p.arrays[0]) for p in payloads]
    integer_sum = np.sum(signed, axis=0)
    assert np.abs(integer_sum).max() < half
    assert wrap_bound(m, 1.0, lay.d, lay.scale, ddp.local_stddev, 6.0) <= half
    total, _ = decoded(ddp, payloads)
    want = unrotate(integer_sum / lay.scale, rotation_signs(lay.d, 0, 1))[:u.size]
    assert np.allclose(total, want, atol=1e-9)
    assert np.allclose(total, m * u.ravel(), atol=8 * 0.3 + 0.1)


def test_too_few_bits_are_refused_by_name_with_the_bits_that_work():
    with pytest.raises(SecureAggregationError, match=r"bits=6 cannot hold the sum of 100 clients .* use bits >= (\d+)"):
        ddg_scale(bits=6, num_clients=100, clip_norm=1.0, noise_multiplier=1.0, d=4096)
    try:
        ddg_scale(bits=6, num_clients=100, clip_norm=1.0, noise_multiplier=1.0, d=4096)
    except SecureAggregationError as e:
        need = int(str(e).split("bits >= ")[1].split()[0])
    scale = ddg_scale(bits=need, num_clients=100, clip_norm=1.0, noise_multiplier=1.0, d=4096)
    assert scale * 1.0 / math.sqrt(100) >= 1  # the noise share is at least one integer step
    ddp = make(m=100, bits=6)
    with pytest.raises(SecureAggregationError, match="use bits >="):
        ddp.payload_layout(Payload([np.zeros(4096)], 1.0))


def test_dropouts_leave_the_survivors_noise_and_are_accounted_with_it():
    """m of n clients survive: the decoded noise variance is m / n of the target, reported as such, and the round's
    epsilon is that of m noise shares (larger than with all n)."""
    n, survive = 10, 6
    full = make(m=n, z=0.8)
    dropped = make(m=n, z=0.8)
    errors = []
    for rnd in range(1, 5):
        payloads = encoded(dropped, [[np.zeros(2048)]] * n, rnd)[:survive]
        total, metrics = decoded(dropped, payloads, rnd)
        errors.append(total)
        decoded(full, encoded(full, [[np.zeros(2048)]] * n, rnd), rnd)
    ok, ratio = chi_square_ok(np.concatenate(errors), 0.8**2 * survive / n)
    assert ok, f"variance / (m/n target) = {ratio:.4f}"
    assert metrics["survivors"] == survive
    assert metrics["noise_stddev"] == pytest.approx(0.8 * math.sqrt(survive / n))
    assert metrics["target_noise_stddev"] == pytest.approx(0.8)
    assert dropped.epsilon() > full.epsilon()
    assert metrics["noise_multiplier_equivalent"] < full.round_multipliers[-1]


def test_secagg_sums_field_payloads_modulo_their_bits_and_reports_the_survivors():
    n = 6
    ddp = make(m=n, z=0.5, bits=16)
    payloads = encoded(ddp, [[np.full(20, 0.05 * k)] for k in range(n)])
    secure = SecAgg(variant="secagg", seed=1, dropout_rate=0.25, tolerated_dropout=0.4)
    total, sm = secure.secure_sum(payloads, list(range(n)), np.random.default_rng(5))
    want = sum(payloads[p].arrays[0] for p in range(n) if p in sm["survivor_ids"]) % (1 << 16)
    assert np.array_equal(total.arrays[0], want) and total.weight == sm["survivors"]
    assert sm["sim_only_relative_error"] == 0.0
    _, metrics = ddp.on_server(total, ctx(1, None, n, 0))
    assert metrics["survivors"] == sm["survivors"]


def test_ddg_epsilon_against_hand_computed_values():
    # s = 0.5, n = 3, d = 4, D = 2: tau = 10 (e^{-pi^2/4} + e^{-pi^2/3}) = 1.22064;
    # sqrt(4 / 0.75 + 1.22064 * 2) = 2.78830 < 2 / (sqrt(3) / 2) + 1.22064 * 2 = 4.75068
    assert ddg_epsilon(sensitivity=2, num_clients=3, local_stddev=0.5, d=4) == pytest.approx(2.788298, rel=1e-6)
    # s = 0.6, n = 2, d = 1024, D = 1: tau = 10 e^{-0.36 pi^2} = 0.286369;
    # sqrt(1 / 0.72 + 0.286369 * 512) = 12.1659 > 1 / (0.6 sqrt 2) + 0.286369 * 32 = 10.3423
    assert ddg_epsilon(sensitivity=1, num_clients=2, local_stddev=0.6, d=1024) == pytest.approx(10.342334, rel=1e-6)
    # large noise: tau vanishes and eps is the Gaussian's D / (sqrt(n) s)
    assert ddg_epsilon(sensitivity=10, num_clients=25, local_stddev=40, d=2**20) == pytest.approx(0.05, rel=1e-12)


def test_rounding_bound_hand_case():
    # scale C = 3, d = 16, beta = e^{-1/2}: min((3 + 4)^2, 9 + 4 + 1 * (3 + 2)) = 18
    assert rounding_bound(3.0, 1.0, 16) == pytest.approx(math.sqrt(18))
    assert rounding_bound(3.0, 1.0, 16, beta=1e-300) == pytest.approx(7.0)  # the deterministic bound


def test_epsilon_equals_dp_accounting_on_the_same_gaussian_event():
    m, population = 10, 200
    ddp = DistributedDP(clip_norm=1.0, noise_multiplier=1.2, population_size=population, cohort_size=m, bits=14,
                        target_delta=1e-5)
    for rnd in range(1, 4):
        decoded(ddp, encoded(ddp, [[np.zeros(300)]] * m, rnd), rnd)
    decoded(ddp, encoded(ddp, [[np.zeros(300)]] * m, 4)[:7], 4)  # a round with 3 dropouts
    lay = ddp._last
    s = lay.scale * 1.2 / math.sqrt(m)  # integer noise share
    events = [dp.SampledWithoutReplacementDpEvent(population, m, dp.GaussianDpEvent(
        1 / ddg_epsilon(sensitivity=2 * lay.bound, num_clients=k, local_stddev=s, d=lay.d))) for k in (m, m, m, 7)]
    accountant = dp.rdp.RdpAccountant(neighboring_relation=dp.NeighboringRelation.REPLACE_ONE)
    for event in events:
        accountant.compose(event)
    assert ddp.epsilon() == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    # at 14 bits the equivalent multiplier is within 1% of the central z (the rounding's inflation is small)
    assert 0.99 * 1.2 < ddp.round_multipliers[0] < 1.2


def test_simulate_refuses_distributed_dp_without_secure_aggregation_or_not_last():
    cd, _ = regression_population()
    ddp = make(m=4)
    with pytest.raises(FederatedError, match=r"DistributedDP needs secure aggregation.*secure=SecAgg"):
        simulate(linear_model, cd, rounds=1, clients_per_round=4, postprocessors=[ddp], progress=False)
    from tfx_ext.federated import StochasticQuantizer

    with pytest.raises(FederatedError, match="must be the last postprocessor"):
        simulate(linear_model, cd, rounds=1, clients_per_round=4, postprocessors=[ddp, StochasticQuantizer(8)],
                 secure=SecAgg(), progress=False)


def linear_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(loss="mse")
    return model


def regression_population(n_clients=6, per_client=4):
    r = np.random.default_rng(0)
    x = r.normal(size=(n_clients * per_client, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * r.normal(size=(len(x), 1))).astype(np.float32)
    parts = [np.arange(k * per_client, (k + 1) * per_client) for k in range(n_clients)]
    return ClientData.from_partition(x, y, parts), (x, y)


def test_simulate_under_secagg_with_distributed_dp_equals_the_clipped_fedavg_step_within_the_noise():
    """One round, every client sampled, one full-batch SGD step each: the oracle is numpy's gradient of the MSE,
    each delta clipped to C and averaged; the simulated global step must match it within the noise (z C / m)."""
    cd, (x, y) = regression_population()
    m, lr, clip, z = 6, 0.1, 0.05, 0.05
    ddp = DistributedDP(clip_norm=clip, noise_multiplier=z, population_size=m, cohort_size=m, bits=16)
    keras.utils.set_random_seed(0)
    w0 = linear_model().get_weights()[0].astype(np.float64)
    h, model = simulate(linear_model, cd, rounds=1, clients_per_round=m, batch_size=4, shuffle=False,
                        client_optimizer=keras.optimizers.SGD(lr), postprocessors=[ddp], progress=False,
                        secure=SecAgg(variant="secagg", seed=0), seed=0)
    deltas, norms = [], []
    for k in range(m):
        xk, yk = x[4 * k:4 * k + 4].astype(np.float64), y[4 * k:4 * k + 4].astype(np.float64)
        delta = -lr * 2 / len(xk) * xk.T @ (xk @ w0 - yk)
        norms.append(np.linalg.norm(delta))
        deltas.append(delta * min(1.0, clip / norms[-1]))
    want = w0 + np.mean(deltas, axis=0)
    got = model.get_weights()[0]
    assert np.all(np.abs(got - want) < 6 * z * clip / m + 1e-5), (got - want).ravel()
    assert np.linalg.norm(np.mean(deltas, axis=0)) > 20 * z * clip / m  # the signal is far above the tolerance
    assert h["DistributedDP/survivors"] == [m] and h["secure/survivors"] == [m]
    assert h["DistributedDP/epsilon"] == [ddp.epsilon()] and ddp.epsilon() > 0
    assert h["DistributedDP/bits"] == [16] and h["DistributedDP/clipped"][0] == pytest.approx(np.mean(np.array(norms) > clip))


def test_composition_refusals_are_named_and_the_accounting_survives_a_checkpoint():
    from tfx_ext.federated import CentralDP

    ddp = make(m=4)
    central = CentralDP(clip_norm=1.0, population_size=40, cohort_size=4, noise_multiplier=1.0)
    with pytest.raises(FederatedError, match="does not compose with another DP postprocessor"):
        ddp.check_composition(secure=SecAgg(), postprocessors=[central, ddp])
    ddp.check_composition(secure=SecAgg(), postprocessors=[ddp])
    for rnd in (1, 2):
        decoded(ddp, encoded(ddp, [[np.zeros(64)]] * 4, rnd)[:3 + rnd % 2], rnd)
    again = make(m=4)
    again.set_state(ddp.get_state())
    assert again.epsilon() == ddp.epsilon() > again.epsilon(1) > 0
