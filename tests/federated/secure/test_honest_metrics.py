"""Metrics the simulator computes from plaintext are named `sim_only_*`, and clipping or capping warns."""

import warnings

import numpy as np
import pytest

from tfx_ext.federated.payload import Payload
from tfx_ext.federated.secure import SecAgg


def payloads(values, weights):
    return [Payload([w * np.asarray(v, np.float64)], float(w)) for v, w in zip(values, weights)]


def test_plaintext_metrics_are_labelled_simulation_only():
    _, metrics = SecAgg(seed=0).secure_sum(payloads([[0.1, 0.2]] * 3, [1, 2, 3]), "abc", np.random.default_rng(0))
    plaintext = {"sim_only_relative_error", "sim_only_clipped_fraction", "sim_only_weights_capped"}
    assert plaintext <= set(metrics)
    assert not {"relative_error", "clipped_fraction", "weights_capped"} & set(metrics)
    from tfx_ext.federated.secure import wrapper

    assert "cannot compute them" in wrapper.__doc__ and "sim_only_" in wrapper.__doc__


def test_no_warning_when_nothing_is_clipped_or_capped():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, metrics = SecAgg(seed=0).secure_sum(payloads([[0.5, -0.5]] * 4, [5] * 4), "abcd", np.random.default_rng(0))
    assert metrics["sim_only_clipped_fraction"] == 0 and metrics["sim_only_weights_capped"] == 0


def test_clipping_warns_with_the_fraction_and_the_fix():
    values = [[0.5, 2.0], [0.5, -0.5], [3.0, -4.0], [0.1, 0.1]]  # 3 of 8 coordinates beyond clip=1
    with pytest.warns(UserWarning, match=r"0\.375 of the update coordinates exceeded clip=1\.0 .*raise `clip`"):
        total, metrics = SecAgg(seed=0).secure_sum(payloads(values, [1] * 4), "abcd", np.random.default_rng(0))
    assert metrics["sim_only_clipped_fraction"] == pytest.approx(3 / 8)
    np.testing.assert_allclose(total.arrays[0], [0.5 + 0.5 + 1.0 + 0.1, 1.0 - 0.5 - 1.0 + 0.1], atol=1e-9)


def test_weight_capping_warns_with_the_count():
    with pytest.warns(UserWarning, match=r"2 of 3 client weights exceeded max_weight=10\.0"):
        total, metrics = SecAgg(seed=0, max_weight=10.0).secure_sum(
            payloads([[0.2]] * 3, [5, 50, 500]), "abc", np.random.default_rng(0))
    assert metrics["sim_only_weights_capped"] == 2
    assert total.weight == pytest.approx(5 + 10 + 10, abs=1e-9)  # capped weights count as max_weight
