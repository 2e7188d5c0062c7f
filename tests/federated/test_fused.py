"""Fused rounds (`federated/fused.py`) give today's results: the host path of `round.aggregate_round` is the oracle.

Every comparison is against `Execution(fused=False)`, the per-client host path (validate -> payload -> float64
sum -> finalize) that the fused graph replaces; weights must be equal to the bit, metrics equal.
"""

import numpy as np
import pytest

from tfx_ext.federated import ClientData, Execution, FedAdam, simulate
from tfx_ext.federated import profile
from tfx_ext.errors import MalformedUpdateError

from tests.federated.test_simulation import KW, population, tiny_model

HOST = Execution(fused=False)


def _strip_time(history):
    return [{k: v for k, v in r.items() if k not in ("wall_time_s", "client_updates_per_s")} for r in history.rounds]


def _assert_same(run_a, run_b):
    (ha, ma), (hb, mb) = run_a, run_b
    for a, b in zip(ma.get_weights(), mb.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert _strip_time(ha) == _strip_time(hb)


@pytest.mark.parametrize("aggregator", ["fedavg", lambda: FedAdam(learning_rate=0.05)], ids=["fedavg", "fedadam"])
def test_fused_rounds_equal_the_host_path_and_micro_cohorts_equal_the_whole_cohort(aggregator):
    cd, ev = population()
    make = aggregator if callable(aggregator) else (lambda: aggregator)
    kw = dict(KW, rounds=4, eval_data=ev, seed=3, local_epochs=2)
    host = simulate(tiny_model, cd, aggregator=make(), execution=HOST, **kw)
    fused = simulate(tiny_model, cd, aggregator=make(), **kw)
    micro = simulate(tiny_model, cd, aggregator=make(), execution=Execution(micro_cohort=3), **kw)
    _assert_same(host, fused)
    _assert_same(host, micro)
    assert fused[0]["graph_traces"] == [1] * 4  # micro-cohorts of 3 and 1 clients: still one trace


def test_on_demand_clients_with_prefetch_equal_the_same_clients_as_arrays():
    cd, _ = population()
    lazy = ClientData.from_fn(len(cd), lambda cid: cd[cid])  # the same clients, made on demand
    kw = dict(KW, rounds=3, seed=5)
    arrays = simulate(tiny_model, cd, execution=HOST, **kw)
    _assert_same(arrays, simulate(tiny_model, lazy, execution=Execution(micro_cohort=1), **kw))
    _assert_same(arrays, simulate(tiny_model, lazy, execution=Execution(micro_cohort=3, prefetch=False), **kw))


def _poisoned_population():
    """Client 0's inputs hold Inf (its update becomes NaN and is rejected); client 1 has no examples."""
    cd, _ = population()
    x, y = cd._x.copy(), cd._y
    x[cd.indices(0)] = np.inf
    parts = [cd.indices(c) for c in cd.client_ids]
    parts[1] = parts[1][:0]
    return ClientData.from_partition(x, y, parts)


def test_rejections_are_named_as_on_the_host_path(caplog):
    cd = _poisoned_population()
    kw = dict(KW, rounds=3, seed=0, clients_per_round=len(cd))
    host, fused = simulate(tiny_model, cd, execution=HOST, **kw), simulate(tiny_model, cd, **kw)
    _assert_same(host, fused)
    assert fused[0].rounds[0]["rejected"] == [[0, "weight 0 holds NaN or Inf"],
                                              [1, "zero or invalid number of examples (0)"]]
    with pytest.raises(MalformedUpdateError, match=r"only 6 valid client results, fewer than min_clients=7"):
        simulate(tiny_model, cd, **dict(kw, min_clients=7))


def test_the_profile_hook_sees_every_phase_and_costs_nothing_when_off():
    cd, ev = population()
    with profile.profiling() as p:
        simulate(tiny_model, cd, rounds=2, eval_data=ev, seed=0, **KW)
    assert p.rounds == 2 and {"sampling", "training", "validation", "aggregation", "evaluation", "bookkeeping",
                              "callbacks"} <= set(p.totals)
    assert profile.phase("training") is profile.phase("data")  # off: one shared no-op context


def test_several_rounds_per_graph_call_equal_the_one_round_path():
    cd, ev = population()
    kw = dict(KW, rounds=5, eval_data=ev, eval_every=2, seed=1)
    host = simulate(tiny_model, cd, execution=HOST, **kw)
    _assert_same(host, simulate(tiny_model, cd, execution=Execution(rounds_per_call=3), **kw))
    lazy = ClientData.from_fn(len(cd), lambda cid: cd[cid])
    _assert_same(host, simulate(tiny_model, lazy, execution=Execution(rounds_per_call=2), **kw))
    with pytest.raises(ValueError, match="does not combine with `micro_cohort`"):
        Execution(rounds_per_call=2, micro_cohort=2)


class _Crash(Exception):
    pass


def test_a_crash_inside_a_multi_round_call_resumes_exactly(tmp_path):
    """The checkpoint of round 2, written while rounds 1-3 were trained in one call, resumes to the same run."""
    cd, ev = population()
    kw = dict(KW, eval_data=ev, seed=11, execution=Execution(rounds_per_call=3))

    def crash(metrics, model):
        if metrics["round"] == 2:
            raise _Crash

    full = simulate(tiny_model, cd, rounds=5, **dict(kw, execution=HOST))
    with pytest.raises(_Crash):
        simulate(tiny_model, cd, rounds=5, checkpoint_dir=tmp_path, callbacks=[crash], **kw)
    resumed = simulate(tiny_model, cd, rounds=5, checkpoint_dir=tmp_path, resume=True, **kw)
    _assert_same(full, resumed)


def test_callbacks_see_each_rounds_global_weights_unless_they_say_they_never_read_the_model():
    cd, _ = population()
    seen = []

    def reader(metrics, model):
        seen.append([w.copy() for w in model.get_weights()])

    class Timer:
        reads_model = False

        def on_round_end(self, metrics, model):
            pass

    history, model = simulate(tiny_model, cd, rounds=2, seed=2, callbacks=[reader], **KW)
    _, alone = simulate(tiny_model, cd, rounds=1, seed=2, **KW)
    for a, b in zip(seen[0], alone.get_weights()):  # round 1's weights, as a one-round run returns them
        np.testing.assert_array_equal(a, b)
    _assert_same((history, model), simulate(tiny_model, cd, rounds=2, seed=2, callbacks=[Timer()], **KW))
