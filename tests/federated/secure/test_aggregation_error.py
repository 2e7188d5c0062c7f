"""The decoded secure sum against a plain numpy sum computed apart: <= 1e-6 relative at the defaults, and within
`SecAgg.error_bound` coordinate by coordinate for any modulus."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfx_ext.federated.payload import Payload
from tfx_ext.federated.secure import SecAgg


def fedavg_payloads(n, length, seed, scale=0.01):
    """FedAvg-shaped payloads `[w x], w` with example counts in [10, 100] (the bench workload, shorter)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = float(rng.integers(10, 101))
        out.append(Payload([w * rng.normal(scale=scale, size=length)], w))
    return out


def plain_sum(payloads):
    return np.sum([p.arrays[0] for p in payloads], axis=0), float(sum(p.weight for p in payloads))


@pytest.mark.parametrize("variant", ["secagg", "secagg+"])
def test_defaults_meet_one_in_a_million(variant):
    payloads = fedavg_payloads(40, 3000, seed=1)
    secure = SecAgg(variant=variant, seed=0)
    total, metrics = secure.secure_sum(payloads, list(range(40)), np.random.default_rng(0))
    ref, wref = plain_sum(payloads)
    rel = np.linalg.norm(np.append(total.arrays[0], total.weight) - np.append(ref, wref)) / np.linalg.norm(
        np.append(ref, wref))
    assert rel <= 1e-6
    bound, wbound = secure.error_bound(40)
    assert np.max(np.abs(total.arrays[0] - ref)) <= bound and abs(total.weight - wref) <= wbound
    assert metrics["bytes_up_per_client"] > 8 * 3000  # 64-bit words: the price of the precision


def test_a_32_bit_modulus_misses_the_target_and_says_so_in_its_bound():
    """The documented trade-off: at 32 bits (float32's bytes) the same workload is off by more than 1e-6."""
    payloads = fedavg_payloads(100, 500, seed=2)
    secure = SecAgg(bits=32, seed=0)
    total, _ = secure.secure_sum(payloads, list(range(100)), np.random.default_rng(0))
    ref, _ = plain_sum(payloads)
    assert np.linalg.norm(total.arrays[0] - ref) / np.linalg.norm(ref) > 1e-6
    assert np.max(np.abs(total.arrays[0] - ref)) <= secure.error_bound(100)[0]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 12), bits=st.sampled_from([20, 32, 48, 63, 64]), seed=st.integers(0, 2**31),
       weighted=st.booleans(), rounding=st.sampled_from(["stochastic", "deterministic"]),
       clip=st.floats(0.05, 5.0), max_weight=st.floats(1.0, 500.0))
def test_error_bound_holds_coordinate_by_coordinate(n, bits, seed, weighted, rounding, clip, max_weight):
    rng = np.random.default_rng(seed)
    payloads = []
    for _ in range(n):  # values anywhere within clip, including exactly +-clip; weights up to max_weight
        w = float(rng.uniform(0.01, 1.0) * max_weight)
        x = rng.uniform(-clip, clip, size=64)
        x[:2] = [clip, -clip] if not weighted else np.array([clip, -clip]) * (1 - 1e-12)  # w x / w may round up
        payloads.append(Payload([w * x if weighted else x], w if weighted else float(rng.uniform(-clip, clip))))
    secure = SecAgg(bits=bits, seed=seed, weighted=weighted, rounding=rounding, clip=clip, max_weight=max_weight,
                    variant="secagg")
    total, _ = secure.secure_sum(payloads, list(range(n)), rng)
    ref, wref = plain_sum(payloads)
    bound, wbound = secure.error_bound(n)
    assert np.max(np.abs(total.arrays[0] - ref)) <= bound
    assert abs(total.weight - wref) <= wbound


def test_error_bound_rejects_bad_counts():
    with pytest.raises(ValueError, match="`num_clients` must be an integer >= 2"):
        SecAgg().error_bound(1)
