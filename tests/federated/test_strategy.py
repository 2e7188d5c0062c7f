"""Strategy execution: the cohort sharded over a MirroredStrategy's replicas equals the single-device run.

The two logical CPU devices come from tests/conftest.py. Tolerance: the per-client training is the same graph
with the same seeds, only the order of the float32 all-reduce sum differs from the float64 host sum, so weights
agree to 1e-5 (measured max error ~1e-7).
"""

import keras
import numpy as np
import pytest

from tests.federated.multiworker_setup import model_fn as tiny_model
from tests.federated.multiworker_setup import toy_arrays
from tfx_ext.testing import two_cpu_strategy
from tfx_ext.federated import ClientData, FedAvg, FedAvgM, simulate

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
ATOL = 1e-5


def population():
    x, y = toy_arrays()
    parts = list(np.array_split(np.arange(200), 9)) + [np.array([], np.int64)]  # client 9 has no examples
    return ClientData.from_partition(x, y, parts), (x[:50], y[:50])


@pytest.mark.parametrize("aggregator", [FedAvg, lambda: FedAvgM(learning_rate=1.0, momentum=0.5)],
                         ids=["fedavg", "fedavgm"])
def test_mirrored_strategy_equals_single_device(aggregator):
    cd, ev = population()
    kw = dict(rounds=3, clients_per_round=5, batch_size=8, loss=LOSS, client_optimizer=keras.optimizers.SGD(0.1),
              eval_data=ev, seed=2, progress=False)
    h1, m1 = simulate(tiny_model, cd, aggregator=aggregator(), **kw)
    strategy = two_cpu_strategy()
    h2, m2 = simulate(tiny_model, cd, aggregator=aggregator(), strategy=strategy, **kw)
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(m1.get_weights(), m2.get_weights()))
    assert worst < ATOL, worst
    assert not np.allclose(m1.get_weights()[0], tiny_model().get_weights()[0])
    assert h1["graph_traces"] == [1, 1, 1]
    assert len(set(h2["graph_traces"])) == 1  # traced in round 1 (once per replica), never again
    for r1, r2 in zip(h1.rounds, h2.rounds):
        for key in ("clients_accepted", "clients_rejected", "examples"):
            assert r1[key] == r2[key], key
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], abs=1e-5)
        assert r1["eval_accuracy"] == pytest.approx(r2["eval_accuracy"], abs=1e-6)


def test_mirrored_strategy_rejects_the_empty_client_in_graph():
    cd, _ = population()
    kw = dict(rounds=1, clients_per_round=10, batch_size=8, loss=LOSS, progress=False)
    h1, _ = simulate(tiny_model, cd, **kw)
    h2, _ = simulate(tiny_model, cd, strategy=two_cpu_strategy(), **kw)
    assert h1.rounds[0]["clients_rejected"] == h2.rounds[0]["clients_rejected"] == 1
    assert h1.rounds[0]["rejected"] == [[9, "zero or invalid number of examples (0)"]]


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow  # two worker processes importing TensorFlow
def test_two_worker_multiworker_mirrored_equals_single_device(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from tests.federated.multiworker_setup import KWARGS, model_fn
    from tests.federated.multiworker_setup import population as mw_population

    here = os.path.dirname(os.path.abspath(__file__))
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        env.pop("CUDA_VISIBLE_DEVICES", None)
        procs.append(subprocess.Popen([sys.executable, os.path.join(here, "multiworker_worker.py"), str(tmp_path)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("MultiWorkerMirroredStrategy workers timed out")
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)

    cd, ev = mw_population()
    history, single = simulate(model_fn, cd, eval_data=ev, **KWARGS)
    for index in range(2):
        with np.load(tmp_path / f"worker{index}.npz") as f:
            weights = [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]
        worst = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, single.get_weights()))
        assert worst < ATOL, (index, worst)
        info = json.loads((tmp_path / f"worker{index}.json").read_text())
        assert info["replicas"] == 2
        assert [r["examples"] for r in info["rounds"]] == history["examples"]
