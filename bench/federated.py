"""Federated simulation throughput: tfx-ext's compiled cohort training vs a plain `model.fit`-per-client loop.

Workload (issue 9): the digits CNN (Conv2D 16 -> Conv2D 32 -> Dense 10), 100 clients under Dirichlet(0.5) over the
digits training split, 10 clients per round, 1 local epoch, batch 16, SGD (lr 0.1), FedAvg, the same number of
rounds for every candidate. Reported: client updates per second in steady state (rounds after the first, which
traces the graph), the first round's time, and test accuracy after the last round.

Second table: population growth 100 -> 1,000 -> 10,000 clients (synthetic clients of 16 digits each, drawn on
demand from a per-client seed via `ClientData.from_fn`): mean round time and resident memory stay flat.

    .venv/bin/python -m bench.federated                      # full run (~2 min on 2 cores)
    .venv/bin/python -m bench.federated --rounds=5 --populations=100,1000 --fit_rounds=2   # smoke run

pfl-research is compared when `--pfl_python` names a Python that has `pfl[tf]` installed (pfl is not a dependency
of tfx-ext and may pin other versions, so it runs in its own environment, in a subprocess that receives the same
partition). pfl 0.6.0's `TFModel` keys variables by `variable.name`, which Keras 3 does not keep unique (every
Conv2D and Dense has a `kernel`): stock pfl then averages only some tensors. The benchmark uses a subclass that keys
them by `variable.path` (`PathKeyedTFModel` below) and says so in its output.

    python3 -m venv /tmp/pflvenv && /tmp/pflvenv/bin/pip install "pfl[tf]==0.6.0" tensorflow==2.21.0 keras==3.15.1
    .venv/bin/python -m bench.federated --pfl_python=/tmp/pflvenv/bin/python

Flower is compared the same way with `--flower_python` (a Python with `flwr[simulation]`, tensorflow and keras):
Flower's Ray simulation with one Keras model built per client fit, as Flower's Keras examples do.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _rss_mb() -> float:
    """Current resident set size (MiB) from /proc, or the peak from getrusage elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(seed):
    import keras

    from tfx_ext.data import load_digits
    from tfx_ext.federated import ClientData

    (x_tr, y_tr), (x_te, y_te) = load_digits(seed=seed)
    cd = ClientData.dirichlet(x_tr, y_tr, 100, alpha=0.5, seed=seed)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return cd, (x_te, y_te), loss


class RoundClock:
    """The benchmark's own clock: a `simulate` callback stamping the end of every round (the last hook, so a round's
    span covers sampling, training, aggregation, evaluation, checkpointing and the other callbacks)."""

    reads_model = False  # it never reads the model's weights (see `Callback.reads_model`)

    def __init__(self, on_warm=None, warm_rounds=1):
        self.start = time.perf_counter()
        self.stamps, self.cpu = [], []
        self.on_warm, self.warm_rounds = on_warm, warm_rounds

    def __call__(self, metrics, model):
        self.stamps.append(time.perf_counter())
        self.cpu.append(time.process_time())
        if len(self.stamps) == self.warm_rounds and self.on_warm is not None:
            self.on_warm()

    def round_times(self) -> list[float]:
        return list(np.diff([self.start, *self.stamps]))


def steady_rates(times, cpu, per_round, skip=1):
    """Updates/s (wall and process CPU) over the rounds after the first `skip` (the first traces the graph; with
    `rounds_per_call`, the first call's rounds are all trained before the first round ends)."""
    skip = skip if len(times) > skip else 0
    steady = times[skip:]
    return {"updates_per_s": per_round * len(steady) / sum(steady),
            "updates_per_cpu_s": per_round * (len(cpu) - skip) / (cpu[-1] - cpu[skip - 1]) if skip else None,
            "first_round_s": times[0]}


def run_tfx_ext(cd, test, loss, *, rounds, seed, lr, clients_per_round=10, profile=False, **options):
    """tfx-ext's `simulate`, timed per round by `RoundClock`; with `profile`, also the per-phase breakdown."""
    import contextlib

    import keras

    from tfx_ext.federated import simulate
    from tfx_ext.federated import profile as prof
    from tfx_ext.apps.federated_experiments import digits_cnn

    skip = options["execution"].rounds_per_call if "execution" in options else 1
    with prof.profiling() if profile else contextlib.nullcontext() as active:
        clock = RoundClock(on_warm=(lambda: prof.reset(active)) if profile else None, warm_rounds=skip)
        history, model = simulate(lambda: digits_cnn(seed=seed), cd, rounds=rounds,
                                  clients_per_round=clients_per_round, local_epochs=1, batch_size=16,
                                  client_optimizer=keras.optimizers.SGD(lr), loss=loss, eval_data=test,
                                  eval_every=rounds, seed=seed, progress=False, callbacks=[clock], **options)
    inner = history["wall_time_s"]
    row = {**steady_rates(clock.round_times(), clock.cpu, clients_per_round, skip),
           "inner_updates_per_s": clients_per_round * len(inner[1:]) / sum(inner[1:]) if len(inner) > 1 else None,
           "test_accuracy": history.last("eval_accuracy")}
    if profile:
        active.rounds = rounds - skip  # the rounds after the reset (the hook counts the reset round too)
        row["profile_ms"], row["profile_cpu_ms"] = active.per_round_ms(), active.per_round_ms(cpu=True)
        row["round_ms"] = 1000 * float(np.mean(clock.round_times()[skip:]))
        row["round_cpu_ms"] = 1000 * float(np.mean(np.diff(clock.cpu[skip - 1:])))
    return row


def run_fit_loop(cd, test, loss, *, rounds, seed, lr):
    """The baseline most users write: one compiled Keras model, `set_weights` + `fit` per client, numpy FedAvg."""
    import keras

    from tfx_ext.federated import weighted_average
    from tfx_ext.apps.federated_experiments import digits_cnn

    model = digits_cnn(seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss, metrics=["accuracy"])
    weights = model.get_weights()
    rng = np.random.default_rng(seed)
    times, cpu = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        cohort = rng.choice(len(cd), size=10, replace=False)
        results = []
        for cid in cohort:
            x, y = cd[int(cid)]
            model.set_weights(weights)
            model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=True)
            results.append((model.get_weights(), len(y)))
        weights = weighted_average(results)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time())
    model.set_weights(weights)
    acc = float(model.evaluate(*test, verbose=0, batch_size=512)[1])
    return {**steady_rates(times, cpu, 10), "test_accuracy": acc}


def run_population(num_clients, *, rounds, seed, lr, loss, clients_per_round=10, **options):
    import keras

    from tfx_ext.data import load_digits
    from tfx_ext.federated import ClientData, simulate
    from tfx_ext.apps.federated_experiments import digits_cnn

    (x_tr, y_tr), _ = load_digits(seed=seed)

    def client(cid):  # 16 digits per client, chosen by the client's own seed: nothing stored per client
        idx = np.random.default_rng([seed, cid]).integers(0, len(x_tr), 16)
        return x_tr[idx], y_tr[idx]

    rss0 = _rss_mb()
    cd = ClientData.from_fn(num_clients, client)
    clock = RoundClock()
    simulate(lambda: digits_cnn(seed=seed), cd, rounds=rounds, clients_per_round=clients_per_round, batch_size=16,
             client_optimizer=keras.optimizers.SGD(lr), loss=loss, seed=seed, progress=False, callbacks=[clock],
             **options)
    times = clock.round_times()[1:] or clock.round_times()
    return {"round_ms": 1000 * float(np.mean(times)), "rss_mb": _rss_mb(), "rss_growth_mb": _rss_mb() - rss0}


def run_in_env(cd, test, *, rounds, seed, lr, python, worker="--pfl_worker"):
    """Runs pfl's FederatedAveraging (or Flower) on the same partition in `python` (a subprocess); returns its row."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.npz")
        x, y, offsets = cd.gather(list(cd.client_ids))  # client u = x[offsets[u]:offsets[u + 1]]
        np.savez(data, x=x, y=y, offsets=offsets, x_test=test[0], y_test=test[1])
        out = os.path.join(tmp, "out.json")
        cmd = [python, os.path.abspath(__file__), worker, data, out, str(rounds), str(lr), str(seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=""))
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise RuntimeError(f"the {worker[2:]} subprocess failed")
        with open(out) as f:
            return json.load(f)


def _pfl_worker(data_path, out_path, rounds, lr, seed):
    """Runs inside the pfl environment: FederatedAveraging with variables keyed by `variable.path`."""
    import json

    import keras
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.metrics import Metrics
    from pfl.model.tensorflow import TFModel

    class PathKeyedTFModel(TFModel):
        """pfl 0.6.0 keys variables by `variable.name`, not unique in Keras 3; key them by `variable.path`."""

        def __init__(self, model, **kwargs):
            super().__init__(model, **kwargs)
            self._variable_map = {v.path: v for v in model.trainable_variables}

        @property
        def central_optimizer_variable_map(self):
            variables = self._get_variables(self._central_optimizer)
            return {v.path: v for v in variables} if len(variables) else None

    class Timer(TrainingProcessCallback):
        def __init__(self):
            self.times, self.cpu = [], []
            self.last = None

        def on_train_begin(self, *, model):
            self.last = time.perf_counter()
            return Metrics()

        def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.cpu.append(time.process_time())
            self.last = now
            return False, Metrics()

    d = np.load(data_path)
    x, y, offsets = d["x"], d["y"], d["offsets"]
    users = {u: [x[offsets[u]:offsets[u + 1]], y[offsets[u]:offsets[u + 1]]] for u in range(len(offsets) - 1)}
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    fed = FederatedDataset.from_slices(users, get_user_sampler("random", list(users)))
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                              keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(lr), loss=loss)
    pfl_model = PathKeyedTFModel(model, metrics={"accuracy": keras.metrics.SparseCategoricalAccuracy()},
                                 central_optimizer=keras.optimizers.SGD(1.0))
    backend = SimulatedBackend(training_data=fed, val_data=None, postprocessors=[WeightByDatapoints()])
    params = NNAlgorithmParams(central_num_iterations=rounds, evaluation_frequency=rounds + 1,
                               train_cohort_size=10, val_cohort_size=0)
    timer = Timer()
    FederatedAveraging().run(algorithm_params=params, backend=backend, model=pfl_model,
                             model_train_params=NNTrainHyperParams(local_learning_rate=lr, local_num_epochs=1,
                                                                   local_batch_size=16),
                             model_eval_params=NNEvalHyperParams(local_batch_size=512), callbacks=[timer])
    logits = model.predict(d["x_test"], verbose=0, batch_size=512)
    acc = float(np.mean(np.argmax(logits, -1) == d["y_test"]))
    steady = timer.times[1:] or timer.times
    with open(out_path, "w") as f:
        cpu = timer.cpu
        json.dump({"updates_per_s": 10 * len(steady) / sum(steady), "first_round_s": timer.times[0],
                   "updates_per_cpu_s": 10 * (len(cpu) - 1) / (cpu[-1] - cpu[0]) if len(cpu) > 1 else None,
                   "test_accuracy": acc}, f)


def _flower_worker(data_path, out_path, rounds, lr, seed):
    """Runs inside the Flower environment: Flower's Ray simulation, one Keras model per client as its examples do."""
    import json

    import keras
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    d = np.load(data_path)
    x, y, offsets = d["x"], d["y"], d["offsets"]
    num_clients = len(offsets) - 1

    def make_model():
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                                  keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.Flatten(),
                                  keras.layers.Dense(10)])
        model.compile(keras.optimizers.SGD(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    class DigitsClient(NumPyClient):
        def __init__(self, pid):
            self.pid = pid

        def fit(self, parameters, config):
            model = make_model()
            model.set_weights(parameters)
            xs, ys = x[offsets[self.pid]:offsets[self.pid + 1]], y[offsets[self.pid]:offsets[self.pid + 1]]
            model.fit(xs, ys, batch_size=16, epochs=1, verbose=0)
            return model.get_weights(), len(ys), {}

    def client_fn(context):
        return DigitsClient(int(context.node_config["partition-id"])).to_client()

    stamps = []
    final = {}

    class TimedFedAvg(FedAvg):
        def aggregate_fit(self, server_round, results, failures):
            params, metrics = super().aggregate_fit(server_round, results, failures)
            stamps.append(time.perf_counter())
            final["weights"] = parameters_to_ndarrays(params)
            return params, metrics

    keras.utils.set_random_seed(seed)
    strategy = TimedFedAvg(fraction_fit=10 / num_clients, fraction_evaluate=0.0, min_fit_clients=10,
                           min_evaluate_clients=0, min_available_clients=num_clients,
                           initial_parameters=ndarrays_to_parameters(make_model().get_weights()))

    def server_fn(context):
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    start = time.perf_counter()
    run_simulation(server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
                   num_supernodes=num_clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    model = make_model()
    model.set_weights(final["weights"])
    acc = float(np.mean(np.argmax(model.predict(d["x_test"], verbose=0, batch_size=512), -1) == d["y_test"]))
    steady = np.diff(stamps)
    with open(out_path, "w") as f:
        json.dump({"updates_per_s": 10 * len(steady) / float(np.sum(steady)), "updates_per_cpu_s": None,
                   "first_round_s": stamps[0] - start, "test_accuracy": acc}, f)


def _profile_rows(bench, ours, label):
    """The per-phase table of `--profile`: one row per phase, then the total of the phases and the bench clock."""
    wall, cpu = ours["profile_ms"], ours["profile_cpu_ms"]
    for name, ms in wall.items():
        bench.add_row({"candidate": label, "phase": name, "ms_per_round": ms, "cpu_ms_per_round": cpu[name],
                       "cpu_share": cpu[name] / ours["round_cpu_ms"]})
    bench.add_row({"candidate": label, "phase": "(sum of phases)", "ms_per_round": sum(wall.values()),
                   "cpu_ms_per_round": sum(cpu.values()), "cpu_share": sum(cpu.values()) / ours["round_cpu_ms"]})
    bench.add_row({"candidate": label, "phase": "round, bench clock", "ms_per_round": ours["round_ms"],
                   "cpu_ms_per_round": ours["round_cpu_ms"], "cpu_share": 1.0, "updates_per_s": ours["updates_per_s"],
                   "updates_per_cpu_s": ours["updates_per_cpu_s"]})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="rounds for tfx-ext (and the fit loop)")
    parser.add_argument("--fit_rounds", type=int, default=None, help="rounds for the fit loop (default --rounds)")
    parser.add_argument("--clients_per_round", default="10",
                        help="tfx-ext cohort sizes, comma-separated (the peers run the first)")
    parser.add_argument("--rounds_per_call", type=int, default=1, help="Execution(rounds_per_call=...) for tfx-ext")
    parser.add_argument("--micro_cohort", type=int, default=None, help="Execution(micro_cohort=...) for tfx-ext")
    parser.add_argument("--populations", default="100,1000,10000")
    parser.add_argument("--population_cohort", type=int, default=10, help="clients per round of the population rows")
    parser.add_argument("--population_rounds", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results_dir", default=None)
    parser.add_argument("--name", default=None, help="results file name (default federated, or federated_profile)")
    parser.add_argument("--profile", action="store_true",
                        help="only tfx-ext, with the per-round breakdown by phase (sampling, data, training, ...)")
    parser.add_argument("--only_populations", action="store_true", help="only the population rows (memory)")
    parser.add_argument("--pfl_python", default=None, help="a Python with pfl[tf] installed (optional)")
    parser.add_argument("--flower_python", default=None, help="a Python with flwr[simulation] installed (optional)")
    args = parser.parse_args(argv)

    from bench.harness import RESULTS_DIR, Benchmark

    fit_rounds = args.fit_rounds or args.rounds
    cohorts = [int(c) for c in args.clients_per_round.split(",") if c]
    config = {"workload": "digits CNN, 100 clients Dirichlet(0.5), 1 epoch, batch 16, SGD",
              "clients_per_round": cohorts, "rounds": args.rounds, "fit_rounds": fit_rounds, "lr": args.lr,
              "seed": args.seed, "timing": "every candidate: consecutive round-end stamps of the benchmark's clock"}
    name = args.name or ("federated_profile" if args.profile else "federated")
    bench = Benchmark(name, config=config, results_dir=args.results_dir or RESULTS_DIR)
    from tfx_ext.federated import Execution

    execution = Execution(rounds_per_call=args.rounds_per_call, micro_cohort=args.micro_cohort)
    config["execution"] = repr(execution)
    cd, test, loss = _setup(args.seed)
    if args.profile:  # the host path (before the fused rounds) and `execution`, one after the other, same run
        variants = [("host path", Execution(fused=False)), ("fused", execution)]
        for k in cohorts:
            for label, variant in variants:
                ours = run_tfx_ext(cd, test, loss, rounds=args.rounds, seed=args.seed, lr=args.lr,
                                   clients_per_round=k, profile=True, execution=variant)
                _profile_rows(bench, ours, f"{label}, {k}/round")
        bench.note("ms per round after the first (tracing; with rounds_per_call, after the first call); phases timed "
                   "inside simulate by the profile hook, the round by the benchmark's clock (round-end stamps); the "
                   "rest is loop overhead outside phases. CPU ms: process time, all threads (steadier on a shared "
                   "machine).")
        return bench.finish(["candidate", "phase", "ms_per_round", "cpu_ms_per_round", "cpu_share", "updates_per_s",
                             "updates_per_cpu_s"])
    if args.only_populations:
        cohorts, args.pfl_python, args.flower_python = [], None, None
    rows = [run_tfx_ext(cd, test, loss, rounds=args.rounds, seed=args.seed, lr=args.lr, clients_per_round=k,
                        execution=execution) for k in cohorts]
    ours = rows[0] if rows else None
    fit = run_fit_loop(cd, test, loss, rounds=fit_rounds, seed=args.seed, lr=args.lr) if rows else None
    for k, row in zip(cohorts, rows):
        bench.add_row({"candidate": "tfx-ext simulate" + (f", {k}/round" if k != 10 else ""), "rounds": args.rounds,
                       **row, "speedup": row["updates_per_s"] / fit["updates_per_s"]})
    if fit is not None:
        bench.add_row({"candidate": "model.fit per client", "rounds": fit_rounds, **fit, "speedup": 1.0})
    if args.pfl_python:
        pfl = run_in_env(cd, test, rounds=args.rounds, seed=args.seed, lr=args.lr, python=args.pfl_python)
        bench.add_row({"candidate": "pfl 0.6.0 (keyed by path)", "rounds": args.rounds, **pfl,
                       "speedup": pfl["updates_per_s"] / fit["updates_per_s"]})
        bench.note("pfl runs with a TFModel subclass keying variables by variable.path (stock pfl 0.6.0 keys by "
                   "variable.name, which is not unique in Keras 3, and silently averages only some tensors).")
        bench.note(f"tfx-ext / pfl throughput: {ours['updates_per_s'] / pfl['updates_per_s']:.2f}x")
    if args.flower_python:
        flower = run_in_env(cd, test, rounds=args.rounds, seed=args.seed, lr=args.lr, python=args.flower_python,
                            worker="--flower_worker")
        bench.add_row({"candidate": "Flower (Ray simulation)", "rounds": args.rounds, **flower,
                       "speedup": flower["updates_per_s"] / fit["updates_per_s"]})
        bench.note("Flower's first_round_s includes starting Ray; its CPU time is spread over Ray worker processes "
                   "and is not measured.")
        bench.note(f"tfx-ext / Flower throughput: {ours['updates_per_s'] / flower['updates_per_s']:.1f}x")
    for n in [int(p) for p in args.populations.split(",") if p]:
        k = args.population_cohort
        row = run_population(n, rounds=args.population_rounds, seed=args.seed, lr=args.lr, loss=loss,
                             clients_per_round=k, execution=execution)
        bench.add_row({"candidate": f"tfx-ext, population {n}, {k}/round", "rounds": args.population_rounds,
                       "updates_per_s": 1000.0 * k / row["round_ms"], **row})
    bench.note("Every candidate is timed the same way: the benchmark's clock stamps the end of each round (a "
               "simulate callback, pfl's after_central_iteration, Flower's aggregate_fit, the fit loop's own round); "
               "updates_per_s excludes the first round (graph tracing), reported as first_round_s. "
               "inner_updates_per_s is simulate's own history['wall_time_s'] (stops before the callbacks).")
    if not args.pfl_python:
        bench.note("pfl not run (pass --pfl_python).")
    if not args.flower_python:
        bench.note("Flower not run (pass --flower_python).")
    bench.note("updates_per_cpu_s divides by the process CPU time of those rounds (all threads): a fairer figure "
               "when other processes share the cores.")
    return bench.finish(["candidate", "rounds", "updates_per_s", "inner_updates_per_s", "updates_per_cpu_s",
                         "first_round_s", "test_accuracy", "speedup", "round_ms", "rss_mb", "rss_growth_mb"])


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1 and sys.argv[1] in ("--pfl_worker", "--flower_worker"):
        worker = _pfl_worker if sys.argv[1] == "--pfl_worker" else _flower_worker
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
    else:
        main()
