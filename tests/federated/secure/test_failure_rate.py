"""SecAgg's threshold at the configured dropout rate makes failed rounds rare (graph.py: the binomial-tail bound)."""

import numpy as np

from tfx_ext.errors import SecureAggregationError
from tfx_ext.federated import SecAgg
from tfx_ext.federated.payload import Payload
from tfx_ext.federated.secure.graph import _binom_tail_ge, choose_parameters


def _failures(secure, n, rounds):
    payloads = [Payload([np.full(2, 0.01 * i)], weight=1.0 + i) for i in range(n)]  # tiny vectors: protocol cost only
    failed = 0
    for r in range(rounds):
        try:
            secure.secure_sum(payloads, list(range(n)), np.random.default_rng(r))
        except SecureAggregationError:
            failed += 1
    return failed


def test_no_failed_round_in_100_at_ten_percent_dropout_and_20_clients():
    secure = SecAgg(variant="secagg+", dropout_rate=0.1, seed=0)
    params = secure.parameters(20)
    assert (params.degree, params.threshold) == (19, 10)  # was t = 17: tolerated 2 dropouts, failed 25 of 100
    bound = 20 * _binom_tail_ge(19, 0.1, 19 - 10 + 1)  # n P[B(k, delta) >= k - t + 1]
    assert params.correctness_failure == bound < 1e-4
    assert _failures(secure, 20, 100) == 0


def test_the_bound_predicts_the_failure_rate_of_a_tight_threshold():
    params = choose_parameters(20, variant="secagg", dropout_rate=0.1, threshold=17)
    exact = _binom_tail_ge(19, 0.1, 3)  # one client's secrets lost: more than k - t = 2 of 19 neighbours dropped
    assert params.correctness_failure == min(1.0, 20 * exact)
    failed = _failures(SecAgg(variant="secagg", dropout_rate=0.1, threshold=17, seed=0), 20, 40)
    assert 0.05 * 40 <= failed <= 0.6 * 40  # often, as the bound says (~0.3 per round)
