"""FedMA vs client-side matching vs FedAvg vs FedProx on the digits CNN, 16 Dirichlet(0.5) clients.

Workload (issue 10): scikit-learn's bundled 8x8 digits (`tfx_ext.data.load_digits`, 75/25 stratified split),
16 clients under Dirichlet(alpha=0.5) label skew, all 16 clients every round, the same number of rounds and the
same local epochs for every method, SGD, batch 16. Model: Conv2D 16 -> Conv2D 32 -> Flatten -> Dense 32 -> Dense 10
(logits); FedMA may grow the three hidden layers up to `--max_growth` times their width.

- `fedma`: `run_fedma` (one layer-wise round per matched layer + one for the output layer, then "FedMA with
  communication" rounds, server-side matching with growth);
- `fedma_indep`: the same with every client starting from its own random initialization (as the FedMA
  reference code does), so the layer-wise matching has genuinely different units to reconcile;
- `fedma_comm`: `simulate` with the `FedMA` aggregator from round 1 (full-network server-side matching every
  round, no layer-wise stage);
- `client_matching`: `simulate` with `ClientSideMatching` (clients align to the global model; the server sums);
- `fedavg`, `fedprox` (mu = 0.01): `simulate` with `FedAvg` / `FedProx`.

Reported per method (mean over seeds): final test accuracy, total bytes up and down, bytes (up + down) until the
test accuracy first reaches FedAvg's final accuracy of the same seed, and the global model's size. Writes
`bench/results/fedma.json` and the learning curves `bench/results/fedma_curves.png`.

    .venv/bin/python -m bench.fedma                 # full run (3 seeds, 12 rounds; ~2 minutes on 2 cores)
    .venv/bin/python -m bench.fedma --local_epochs=5 --rounds=10 --name=fedma_e5   # longer local training
    .venv/bin/python -m bench.fedma --smoke         # seconds
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

METHODS = ("fedma", "fedma_indep", "fedma_comm", "client_matching", "fedavg", "fedprox")


def digits_cnn(widths=None, seed=0):
    """Conv2D 16 -> Conv2D 32 -> Dense 32 -> Dense 10 on (8, 8, 1); `widths` overrides the hidden widths by name."""
    import keras

    widths = widths or {}
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(widths.get("conv1", 16), 3, activation="relu", name="conv1"),
        keras.layers.Conv2D(widths.get("conv2", 32), 3, activation="relu", name="conv2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(widths.get("hidden", 32), activation="relu", name="hidden"),
        keras.layers.Dense(10, name="logits"),
    ], name="digits_cnn")


def _load(seed, num_clients, alpha):
    from tfx_ext.federated import ClientData

    try:
        from tfx_ext.data import load_digits
    except ImportError:  # pragma: no cover
        from tfx_ext.data.digits import load_digits
    (x_tr, y_tr), test = load_digits(seed=seed)
    return ClientData.dirichlet(x_tr, y_tr, num_clients, alpha=alpha, seed=seed), test


def _curve(history, key="eval_accuracy"):
    return [float(v) if v is not None else float("nan") for v in history[key]]


def _cumulative_bytes(history):
    up = np.asarray(history["bytes_up"], np.float64)
    down = np.asarray(history["bytes_down"], np.float64)
    return np.cumsum(up + down)


def run_method(method, cd, test, *, rounds, local_epochs, lr, seed, max_growth, sigma, gamma, batch_size=16):
    import keras

    from tfx_ext.federated import FedAvg, FedProx, simulate
    from tfx_ext.federated.fedma import ClientSideMatching, FedMA, run_fedma

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def model_fn(widths=None):
        return digits_cnn(widths, seed=seed)

    common = dict(rounds=rounds, local_epochs=local_epochs, batch_size=batch_size,
                  client_optimizer=keras.optimizers.SGD(lr), loss=loss, eval_data=test, seed=seed)
    t0 = time.perf_counter()
    if method in ("fedma", "fedma_indep"):
        history, model = run_fedma(model_fn, cd, max_growth=max_growth, sigma=sigma, gamma=gamma, passes=2,
                                   independent_init=method == "fedma_indep", **common)
    else:
        aggregator = {"client_matching": lambda: ClientSideMatching(model_fn, class_counts=cd),
                      "fedma_comm": lambda: FedMA(model_fn, sigma=sigma, gamma=gamma, passes=2, max_growth=max_growth,
                                                  class_counts=cd, seed=seed),
                      "fedavg": FedAvg, "fedprox": lambda: FedProx(mu=0.01)}[method]()
        history, model = simulate(model_fn, cd, clients_per_round=len(cd), aggregator=aggregator, progress=False,
                                  **common)
    keys = [k for k in ("moved_fraction", "aggregator/moved_fraction") if k in history.keys()]
    moved = [v for v in history[keys[0]] if v is not None] if keys else []  # FedAvg and FedProx move nothing
    return {
        "moved_fraction": float(np.mean(moved)) if moved else None,
        "accuracy": _curve(history),
        "bytes": _cumulative_bytes(history).tolist(),
        "params": int(sum(int(np.prod(v.shape)) for v in model.weights)),
        "model_bytes": int(sum(np.asarray(v).nbytes for v in model.weights)),
        "widths": {l.name: getattr(l, "filters", getattr(l, "units", None)) for l in model.layers if l.weights},
        "seconds": time.perf_counter() - t0,
    }


def _bytes_to_reach(run, target):
    for acc, b in zip(run["accuracy"], run["bytes"]):
        if np.isfinite(acc) and acc >= target - 1e-9:
            return b
    return float("nan")


def plot_curves(results, path, rounds):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, runs in results.items():
        acc = np.nanmean(np.array([r["accuracy"] for r in runs], np.float64), axis=0)
        mb = np.mean(np.array([r["bytes"] for r in runs], np.float64), axis=0) / 2**20
        axes[0].plot(np.arange(1, len(acc) + 1), acc, marker="o", label=method)
        axes[1].plot(mb, acc, marker="o", label=method)
    axes[0].set_xlabel("round")
    axes[1].set_xlabel("MiB communicated (up + down, cumulative)")
    for ax in axes:
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"digits CNN, 16 clients, Dirichlet(0.5), {rounds} rounds (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--local_epochs", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--max_growth", type=float, default=1.25)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--results_dir", default=None)
    parser.add_argument("--name", default="fedma", help="results file name (bench/results/<name>.json)")
    parser.add_argument("--smoke", action="store_true", help="1 seed, 4 clients, 5 rounds, 1 local epoch")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.rounds, args.local_epochs, args.clients = "0", 5, 1, 4

    from bench.harness import RESULTS_DIR, Benchmark

    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    results_dir = args.results_dir or RESULTS_DIR
    config = {k: v for k, v in vars(args).items() if k not in ("results_dir", "name")}
    bench = Benchmark(args.name if not args.smoke else "fedma_smoke", config=config, results_dir=results_dir)
    results = {m: [] for m in methods}
    for seed in seeds:
        cd, test = _load(seed, args.clients, args.alpha)
        for method in methods:
            run = run_method(method, cd, test, rounds=args.rounds, local_epochs=args.local_epochs, lr=args.lr,
                             seed=seed, max_growth=args.max_growth, sigma=args.sigma, gamma=args.gamma)
            results[method].append(run)
            print(f"seed {seed} {method:16s} acc {run['accuracy'][-1]:.4f}  {run['seconds']:.1f}s  "
                  f"widths {run['widths']}", flush=True)
    for method in methods:
        runs = results[method]
        final = np.array([r["accuracy"][-1] for r in runs])
        row = {
            "method": method,
            "rounds": args.rounds,
            "local_epochs": args.local_epochs,
            "test_acc_mean": float(final.mean()),
            "test_acc_std": float(final.std()),
            "MiB_total": float(np.mean([r["bytes"][-1] for r in runs]) / 2**20),
            "global_params": int(np.mean([r["params"] for r in runs])),
            "global_KiB": float(np.mean([r["model_bytes"] for r in runs]) / 1024),
            "seconds": float(np.mean([r["seconds"] for r in runs])),
        }
        moved = [r["moved_fraction"] for r in runs if r["moved_fraction"] is not None]
        row["units_moved"] = float(np.mean(moved)) if moved else None
        if "fedavg" in results:
            reach = [_bytes_to_reach(r, base["accuracy"][-1]) for r, base in zip(runs, results["fedavg"])]
            row["MiB_to_fedavg_final"] = float(np.nanmean(reach) / 2**20) if np.isfinite(reach).any() else None
            row["seeds_reaching"] = f"{int(np.isfinite(reach).sum())}/{len(runs)}"
        bench.add_row(row)
    if "fedma" in results and "fedavg" in results:
        gap = 100 * (np.mean([r["accuracy"][-1] for r in results["fedma"]])
                     - np.mean([r["accuracy"][-1] for r in results["fedavg"]]))
        bench.note(f"FedMA - FedAvg at equal rounds: {gap:+.2f} points (target: >= +1).")
    png = os.path.join(str(results_dir), f"{bench.name}_curves.png")
    os.makedirs(str(results_dir), exist_ok=True)
    plot_curves(results, png, args.rounds)
    bench.config["curves_png"] = png
    bench.config["curves"] = {m: [r["accuracy"] for r in rs] for m, rs in results.items()}
    bench.config["cumulative_bytes"] = {m: [r["bytes"] for r in rs] for m, rs in results.items()}
    return bench.finish()


if __name__ == "__main__":
    main()
