"""Flower 1.41's SecAgg+ on the workload of `bench/secagg.py`, for the side-by-side table (optional).

Flower needs protobuf < 7 and the project's TensorFlow has protobuf 7, so this script runs in its own virtual
environment with only Flower and NumPy (it imports nothing from tfx_ext):

    python -m venv /tmp/flwr-venv && /tmp/flwr-venv/bin/pip install "flwr[simulation]==1.41.0" numpy
    /tmp/flwr-venv/bin/python bench/secagg_flower.py --ns 10,100 --length 100000
    .venv/bin/python -m bench.secagg --flower_python=/tmp/flwr-venv/bin/python   # side by side, same (k, t)

Each client returns the same float32 vectors and example counts as `bench/secagg.py` (`make_payloads`, seeded the
same way); one round of Flower's FedAvg runs with the default fit workflow (plain) and with `SecAggPlusWorkflow`
(`num_shares`, `reconstruction_threshold` as given: Flower's `num_shares` counts the client itself, so
`bench/secagg.py` passes our SecAgg+ degree + 1 and our threshold; Flower's default quantization: clipping range 8,
quantization range 2^22, modulus 2^32). The time is measured inside the ServerApp around the workflow (Ray start-up excluded);
the relative error compares the SecAgg+ aggregate with the plain one. Writes `bench/results/secagg_flower.json`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def make_payloads(n, length, seed):  # same draws as bench/secagg.py
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = int(rng.integers(10, 101))
        x = rng.normal(scale=0.01, size=length).astype(np.float32)
        out.append((x, w))
    return out


def run(n, length, seed, secure, num_shares, threshold, outfile):
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    payloads = make_payloads(n, length, seed + n)

    class Client(NumPyClient):
        def __init__(self, pid):
            self.pid = pid

        def fit(self, parameters, config):
            x, w = payloads[self.pid]
            return [x], w, {}

    def client_fn(context: Context):
        return Client(int(context.node_config["partition-id"])).to_client()

    class Recording(FedAvg):
        def aggregate_fit(self, server_round, results, failures):
            params, metrics = super().aggregate_fit(server_round, results, failures)
            np.save(outfile, parameters_to_ndarrays(params)[0])
            return params, metrics

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = Recording(fraction_fit=1.0, fraction_evaluate=0.0, min_available_clients=n, min_fit_clients=n,
                             initial_parameters=ndarrays_to_parameters([np.zeros(length, np.float32)]))
        ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=1), strategy=strategy)
        fit = SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=threshold) if secure else None
        workflow = DefaultWorkflow(fit_workflow=fit) if secure else DefaultWorkflow()
        start = time.perf_counter()
        workflow(grid, ctx)
        pathlib.Path(str(outfile) + ".time").write_text(str(time.perf_counter() - start))

    client = ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if secure else [])
    run_simulation(server_app=server, client_app=client, num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    return float(pathlib.Path(str(outfile) + ".time").read_text()), np.load(str(outfile) + ".npy")


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--ns", default="10,100")
    p.add_argument("--length", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_shares", type=int, default=5)
    p.add_argument("--threshold", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "secagg_flower.json"))
    args = p.parse_args(argv)
    import flwr

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(v) for v in args.ns.split(",")]:
            t_plain, plain = run(n, args.length, args.seed, False, args.num_shares, args.threshold, f"{tmp}/p{n}")
            t_sec, sec = run(n, args.length, args.seed, True, args.num_shares, args.threshold, f"{tmp}/s{n}")
            err = float(np.linalg.norm(sec.astype(np.float64) - plain) / np.linalg.norm(plain))
            rows.append({"n": n, "flower_plain_s": t_plain, "flower_secaggplus_s": t_sec,
                         "time_x": t_sec / t_plain, "rel_error": err, "num_shares": args.num_shares,
                         "threshold": args.threshold})
            print(rows[-1], flush=True)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "secagg_flower", "flwr": flwr.__version__, "config": vars(args), "rows": rows}
    out.write_text(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()
