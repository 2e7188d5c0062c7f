"""Secure aggregation cost: plain summation vs SecAgg vs SecAgg+ (and Flower's SecAgg+) on the same client vectors.

Workload (issues 11, 19): n clients in {100, 300, 1000} (`--smoke`: n = 5, short vectors), each with a float32
update of length 100,000 drawn from N(0, 0.01^2) and an example count uniform in [10, 100] (FedAvg's `[w x, w]`
payload), default `SecAgg` settings (64-bit modulus, clip 1.0, stochastic rounding, max_weight 1000, tolerated
dropout 0.1, corrupt fraction 0.1, no simulated dropouts). One aggregation round excludes local training.

- `plain`: every client serializes its float32 update and count to bytes; the server parses and sums in float64
  (what `simulate` does without `secure`, plus the serialization the byte count assumes);
- `secagg`, `secagg+`: `SecAgg.secure_sum` (semi-honest): fixed-point encoding, the full protocol in-process
  (X25519, HKDF, AES-GCM shares, Shamir, AES-CTR masks, every message serialized to bytes), unmasking, decoding;
- `secagg+cc`: SecAgg+ with the Ed25519 consistency-check round (`consistency_check=True`);
- `secagg+active`: SecAgg+ in the active threat model (signed adverts and masked inputs, consistency round, and
  the larger `(k, t)` that forked views require);
- `flower-plain`, `flower-secagg+` (with `--flower_python`): Flower's FedAvg without and with `SecAggPlusWorkflow`
  at the same n, vector length, seeds and (k, t) as our SecAgg+ (`bench/secagg_flower.py` in Flower's own venv,
  started from this run, right after our rows at that n).

Columns: `round_s` is the wall time of the whole simulated round in one process (all clients run one after the
other); `critical_path_s` is what a deployment with clients in parallel would wait for (per stage: the server
plus the slowest client); `client_s` is one client's mean compute, `server_s` the server's; bytes are per client
(up, down) and at the server (in, out); `time_x`, `crit_x`, `bytes_x` are against `plain` at the same n;
`rel_error` is `||sum - exact|| / ||exact||` of the aggregate against the exact float64 sum computed apart
(plain's is float32 rounding on the wire; Flower's is against its own plain run);
`server_vs_nlogn` is `server_s` growth from the smallest n over `n log n` growth (<= 1: within n log n);
`flower_x` is Flower's SecAgg+ round time over ours (serial `round_s`, and `flower_x_crit` over our critical
path). Writes `bench/results/<name>.json` and the scaling curves `bench/results/<name>.png`.

    .venv/bin/python -m bench.secagg --flower_python=/tmp/flwr-venv/bin/python   # n = 100, 300, 1000
    .venv/bin/python -m bench.secagg --smoke    # seconds
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import subprocess
import tempfile
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


VARIANTS = {"secagg": {"variant": "secagg"}, "secagg+": {"variant": "secagg+"},
            "secagg+cc": {"variant": "secagg+", "consistency_check": True},
            "secagg+active": {"variant": "secagg+", "threat_model": "active"}}
COLUMNS = ["n", "method", "round_s", "critical_path_s", "client_s", "server_s", "up_B", "down_B", "server_in_B",
           "server_out_B", "time_x", "crit_x", "bytes_x", "rel_error", "degree", "threshold", "server_vs_nlogn",
           "flower_x", "flower_x_crit"]


def relative_error(total, ref) -> float:
    got = np.concatenate([total.arrays[0], [total.weight]])
    want = np.concatenate([ref.arrays[0], [ref.weight]])
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def plain_rows(n, payloads):
    """The exact float64 reference sum and the plain row (its error is float32 on the wire)."""
    ref = Payload([np.sum([p.arrays[0] for p in payloads], axis=0)], float(sum(p.weight for p in payloads)))
    total, sizes = plain_round(payloads)
    wire = [plain_client(p) for p in payloads]
    t_client = time_callable(lambda: plain_client(payloads[0]), warmup=1, repeats=5)["median_s"]
    t_server = time_callable(lambda: plain_server(wire), warmup=1, repeats=5)["median_s"]
    up = float(np.mean(sizes))
    return ref, {"n": n, "method": "plain", "round_s": n * t_client + t_server, "critical_path_s": t_client + t_server,
                 "client_s": t_client, "server_s": t_server, "up_B": up, "down_B": 0.0, "server_in_B": up * n,
                 "server_out_B": 0.0, "time_x": 1.0, "crit_x": 1.0, "bytes_x": 1.0,
                 "rel_error": relative_error(total, ref)}


def secure_row(n, variant, payloads, ref, plain, args):
    secure = make_secagg(variant, args)
    start = time.perf_counter()
    total, m = secure.secure_sum(payloads, list(range(n)), np.random.default_rng(args.seed))
    wall = time.perf_counter() - start
    crit = m["time_critical_path_s"] + (m["time_encode_s"] + m["time_decode_s"]) / n
    return {"n": n, "method": variant, "round_s": wall, "critical_path_s": crit,
            "client_s": m["time_clients_total_s"] / n + m["time_encode_s"] / n,
            "server_s": m["time_server_s"] + m["time_decode_s"], "up_B": m["bytes_up_per_client"],
            "down_B": m["bytes_down_per_client"], "server_in_B": float(m["server_bytes_in"]),
            "server_out_B": float(m["server_bytes_out"]), "time_x": wall / plain["round_s"],
            "crit_x": crit / plain["critical_path_s"], "bytes_x": m["bytes_up_per_client"] / plain["up_B"],
            "rel_error": relative_error(total, ref), "degree": m["degree"], "threshold": m["threshold"]}


def make_secagg(variant, args):
    """The `SecAgg` of a `--variants` entry with the run's settings."""
    from tfx_ext.federated.secure import SecAgg

    if variant not in VARIANTS:
        raise ValueError(f"`--variants` entries must be among {sorted(VARIANTS)}. Received: {variant!r}")
    extra = {} if args.bits is None else {"bits": args.bits}
    return SecAgg(seed=args.seed, clip=args.clip, max_weight=args.max_weight, rounding=args.rounding,
                  **VARIANTS[variant], **extra)


def flower_rows(python, n, length, seed, degree, threshold):
    """Flower's plain and SecAgg+ rounds at (k, t) = (degree, threshold), run by `bench/secagg_flower.py` in `python`.

    Flower counts a client among its own share holders, so its `num_shares` is our degree + 1."""
    script = pathlib.Path(__file__).with_name("secagg_flower.py")
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "flower.json"
        cmd = [python, str(script), "--ns", str(n), "--length", str(length), "--seed", str(seed),
               "--num_shares", str(degree + 1), "--threshold", str(threshold), "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"Flower run failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
        doc = json.loads(out.read_text())
    r = doc["rows"][0]
    common = {"n": n, "critical_path_s": None, "degree": degree, "threshold": threshold}
    return doc["flwr"], [{**common, "method": "flower-plain", "round_s": r["flower_plain_s"], "rel_error": 0.0},
                         {**common, "method": "flower-secagg+", "round_s": r["flower_secaggplus_s"],
                          "rel_error": r["rel_error"]}]


def add_ratios(rows):
    """`server_vs_nlogn` (server time growth from the smallest n over n log n growth) and `flower_x`."""
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = sorted((r for r in rows if r["method"] == method and r.get("server_s")), key=lambda r: r["n"])
        for r in rs[1:]:
            r["server_vs_nlogn"] = (r["server_s"] / rs[0]["server_s"]) / (
                r["n"] * math.log(r["n"]) / (rs[0]["n"] * math.log(rs[0]["n"])))
    for f in (r for r in rows if r["method"] == "flower-secagg+"):
        for r in rows:
            if r["n"] == f["n"] and r["method"] in VARIANTS:
                r["flower_x"] = f["round_s"] / r["round_s"]
                r["flower_x_crit"] = f["round_s"] / r["critical_path_s"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--ns", default="100,300,1000")
    parser.add_argument("--length", type=int, default=100_000)
    parser.add_argument("--bits", type=int, default=None, help="modulus exponent (default: SecAgg's, 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="secagg,secagg+,secagg+cc,secagg+active")
    parser.add_argument("--full_max_n", type=int, default=1000, help="largest n for full SecAgg (n^2 masks)")
    parser.add_argument("--clip", type=float, default=1.0, help="SecAgg clip (default: SecAgg's default)")
    parser.add_argument("--max_weight", type=float, default=1000.0, help="SecAgg max_weight (default: SecAgg's)")
    parser.add_argument("--rounding", default="stochastic")
    parser.add_argument("--flower_python", default=None, help="a Python with flwr[simulation] (optional)")
    parser.add_argument("--flower_n", type=int, default=100)
    parser.add_argument("--name", default=None)
    parser.add_argument("--results_dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)

    ns = [5] if args.smoke else [int(v) for v in args.ns.split(",")]
    length = 1000 if args.smoke else args.length
    name = args.name or ("secagg_smoke" if args.smoke else "secagg")
    variants = args.variants.split(",")
    bits = make_secagg(variants[0], args).bits
    bench = Benchmark(name, config={"ns": ns, "length": length, "bits": bits, "seed": args.seed,
                                    "smoke": args.smoke, "variants": variants, "clip": args.clip,
                                    "max_weight": args.max_weight, "rounding": args.rounding,
                                    "full_max_n": args.full_max_n, "flower_n": args.flower_n if args.flower_python
                                    else None}, results_dir=args.results_dir)
    for n in ns:
        payloads = make_payloads(n, length, args.seed + n)
        ref, plain = plain_rows(n, payloads)
        bench.add_row(plain)
        for variant in variants:
            if variant == "secagg" and n > args.full_max_n:
                bench.note(f"secagg (complete graph) skipped at n={n} > --full_max_n={args.full_max_n}")
                continue
            row = secure_row(n, variant, payloads, ref, plain, args)
            bench.add_row(row)
            print(f"n={n} {variant}: {row['round_s']:.2f} s (critical path {row['critical_path_s']:.3f} s), "
                  f"{row['bytes_x']:.3f}x bytes, rel. error {row['rel_error']:.2e}", flush=True)
        if args.flower_python and n == args.flower_n:
            params = make_secagg("secagg+", args).parameters(n)
            version, rows = flower_rows(args.flower_python, n, length, args.seed, params.degree, params.threshold)
            for row in rows:
                bench.add_row(row)
                print(f"n={n} {row['method']}: {row['round_s']:.2f} s, rel. error {row['rel_error']:.2e}", flush=True)
            bench.config["flwr"] = version
    add_ratios(bench.rows)
    bench.note("round_s runs every party in one process one after the other; critical_path_s assumes clients "
               "in parallel (server + slowest client per stage). down_B for plain excludes the model broadcast, "
               "which is the same for every method. Flower's round_s is its SecAggPlusWorkflow / default fit "
               "workflow timed inside the ServerApp (Ray start-up excluded; Ray runs clients on every core).")
    doc = bench.finish(COLUMNS)
    _plot([r for r in bench.rows if r["method"] in VARIANTS or r["method"] == "plain"],
          pathlib.Path(args.results_dir) / f"{name}.png")
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
