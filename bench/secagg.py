"""Secure aggregation cost: plain summation vs SecAgg vs SecAgg+ on the same client vectors, side by side.

Workload (issue 11): n clients in {10, 100, 500} (`--smoke`: n = 5, short vectors), each with a float32 update of
length 100,000 drawn from N(0, 0.01^2) and an example count uniform in [10, 100] (FedAvg's `[w x, w]` payload),
default `SecAgg` settings (32-bit modulus, clip 1.0, stochastic rounding, max_weight 1000, tolerated dropout 0.1,
corrupt fraction 0.1, no simulated dropouts). One aggregation round excludes local training.

- `plain`: every client serializes its float32 update and count to bytes; the server parses and sums in float64
  (what `simulate` does without `secure`, plus the serialization the byte count assumes);
- `secagg`, `secagg+`: `SecAgg.secure_sum`: fixed-point encoding, the full protocol in-process (X25519, HKDF,
  AES-GCM shares, Shamir, AES-CTR masks, every message serialized to bytes), unmasking, decoding.

Columns: `round_s` is the wall time of the whole simulated round in one process (all clients run one after the
other); `critical_path_s` is what a deployment with clients in parallel would wait for (per stage: the server
plus the slowest client); `client_s` is one client's mean compute; bytes are per client (up, down) and at the
server (in); ratios are against `plain` at the same n; `rel_error` is `||secure - plain|| / ||plain||` of the
aggregate; `time_x` and `crit_x` are `round_s` and `critical_path_s` over plain's. Writes `bench/results/<name>.json` and the scaling curves `bench/results/<name>.png`.

    .venv/bin/python -m bench.secagg            # n = 10, 100, 500 (several minutes on 2 cores)
    .venv/bin/python -m bench.secagg --smoke    # seconds
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

from bench.harness import RESULTS_DIR, Benchmark, time_callable
from tfx_ext.federated.payload import Payload


def make_payloads(n, length, seed):
    rng = np.random.default_rng(seed)
    payloads = []
    for _ in range(n):
        w = float(rng.integers(10, 101))
        x = rng.normal(scale=0.01, size=length).astype(np.float32)
        payloads.append(Payload([w * x.astype(np.float64)], w))
    return payloads


def plain_client(payload) -> bytes:
    """A plain client's upload: its float32 update `x` and its example count, as bytes."""
    w = payload.weight
    return (payload.arrays[0] / w).astype(np.float32).tobytes() + np.float64(w).tobytes()


def plain_server(wire):
    """The plain server: parses the uploads and sums `[w x, w]` in float64."""
    acc = np.zeros((len(wire[0]) - 8) // 4, np.float64)
    wsum = 0.0
    for data in wire:
        w = float(np.frombuffer(data[-8:], np.float64)[0])
        acc += w * np.frombuffer(data[:-8], np.float32)
        wsum += w
    return Payload([acc], wsum)


def plain_round(payloads):
    wire = [plain_client(p) for p in payloads]
    return plain_server(wire), [len(d) for d in wire]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--ns", default="10,100,500")
    parser.add_argument("--length", type=int, default=100_000)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="secagg,secagg+")
    parser.add_argument("--clip", type=float, default=1.0, help="SecAgg clip (default: SecAgg's default)")
    parser.add_argument("--max_weight", type=float, default=1000.0, help="SecAgg max_weight (default: SecAgg's)")
    parser.add_argument("--rounding", default="stochastic")
    parser.add_argument("--name", default=None)
    parser.add_argument("--results_dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    from tfx_ext.federated.secure import SecAgg

    ns = [5] if args.smoke else [int(v) for v in args.ns.split(",")]
    length = 1000 if args.smoke else args.length
    name = args.name or ("secagg_smoke" if args.smoke else "secagg")
    variants = args.variants.split(",")
    bench = Benchmark(name, config={"ns": ns, "length": length, "bits": args.bits, "seed": args.seed,
                                    "smoke": args.smoke, "variants": variants, "clip": args.clip,
                                    "max_weight": args.max_weight, "rounding": args.rounding}, results_dir=args.results_dir)
    for n in ns:
        payloads = make_payloads(n, length, args.seed + n)
        ref, sizes = plain_round(payloads)
        wire = [plain_client(p) for p in payloads]
        t_client = time_callable(lambda: plain_client(payloads[0]), warmup=1, repeats=5)["median_s"]
        t_server = time_callable(lambda: plain_server(wire), warmup=1, repeats=5)["median_s"]
        t_plain = n * t_client + t_server
        plain_up = float(np.mean(sizes))
        bench.add_row({"n": n, "method": "plain", "round_s": t_plain, "critical_path_s": t_client + t_server,
                       "client_s": t_client, "server_s": t_server, "up_B": plain_up,
                       "down_B": 0.0, "server_in_B": plain_up * n, "time_x": 1.0, "crit_x": 1.0, "bytes_x": 1.0,
                       "rel_error": 0.0, "degree": None, "threshold": None})
        t_crit_plain = t_client + t_server
        for variant in variants:
            secure = SecAgg(variant=variant, bits=args.bits, seed=args.seed, clip=args.clip,
                            max_weight=args.max_weight, rounding=args.rounding)
            start = time.perf_counter()
            total, m = secure.secure_sum(payloads, list(range(n)), np.random.default_rng(args.seed))
            wall = time.perf_counter() - start
            err = float(np.linalg.norm(np.concatenate([total.arrays[0], [total.weight]])
                                       - np.concatenate([ref.arrays[0], [ref.weight]]))
                        / np.linalg.norm(np.concatenate([ref.arrays[0], [ref.weight]])))
            crit = m["time_critical_path_s"] + (m["time_encode_s"] + m["time_decode_s"]) / n
            bench.add_row({"n": n, "method": variant, "round_s": wall, "critical_path_s": crit,
                           "client_s": m["time_clients_total_s"] / n + m["time_encode_s"] / n,
                           "server_s": m["time_server_s"] + m["time_decode_s"],
                           "up_B": m["bytes_up_per_client"], "down_B": m["bytes_down_per_client"],
                           "server_in_B": float(m["server_bytes_in"]), "time_x": wall / t_plain,
                           "crit_x": crit / t_crit_plain,
                           "bytes_x": m["bytes_up_per_client"] / plain_up, "rel_error": err,
                           "degree": m["degree"], "threshold": m["threshold"]})
            print(f"n={n} {variant}: {wall:.2f} s, {m['bytes_up_per_client'] / plain_up:.3f}x bytes, "
                  f"rel. error {err:.2e}", flush=True)
    bench.note("round_s runs every party in one process one after the other; critical_path_s assumes clients "
               "in parallel (server + slowest client per stage). down_B for plain excludes the model broadcast, "
               "which is the same for every method.")
    doc = bench.finish(["n", "method", "round_s", "critical_path_s", "client_s", "server_s", "up_B", "down_B",
                        "server_in_B", "time_x", "crit_x", "bytes_x", "rel_error", "degree", "threshold"])
    _plot(bench.rows, pathlib.Path(args.results_dir) / f"{name}.png")
    return doc


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        ns = [r["n"] for r in rs]
        axes[0].plot(ns, [r["round_s"] for r in rs], "o-", label=method)
        axes[1].plot(ns, [r["critical_path_s"] for r in rs], "o-", label=method)
        axes[2].plot(ns, [r["up_B"] + r["down_B"] for r in rs], "o-", label=method)
    titles = ("round wall time, all parties sequential (s)", "critical path, clients in parallel (s)",
              "bytes per client (up + down)")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("clients n")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
