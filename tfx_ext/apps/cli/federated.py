"""`tfx-ext federated`: federated simulation.

    tfx-ext federated simulate --dataset=digits --partition=dirichlet --alpha=0.5 --clients=100 \
        --clients_per_round=10 --rounds=30 --aggregator=fedavg [--output_dir=out/fed]
        Partitions the data set, runs the simulation, and writes history.json, history.csv, learning_curve.png,
        label_distribution.png, summary.json (and TensorBoard summaries) into --output_dir (default: a fresh
        timestamped folder under out/, printed).
        --aggregator=fedma is server-side matched averaging, --aggregator=matched client-side matching;
        --secure=secagg|secagg+ sums the updates with secure aggregation (--secure_threshold, --dropout_rate,
        --consistency_check, --threat_model=semi-malicious|active); a failed secure round is skipped and
        counted (summary: failed_rounds).
        --dp=central adds DP-FedAvg (--clip_norm, --noise_multiplier or --target_epsilon, --target_delta,
        --adaptive_clip_quantile) and prints the epsilon spent; --dp=distributed has the clients add discrete
        Gaussian noise inside secure aggregation (needs --secure; --clip_norm, --noise_multiplier, --target_delta,
        --dp_bits: the field's bits per coordinate, default 16).
        --aggregator=median|trimmed_mean|krum|multi_krum|geometric_median|bulyan|centered_clipping|norm_bounding
        (--trim_fraction, --krum_byzantine, --multi_krum_m, --norm_bound, --cc_tau, --cc_iterations, and for the
        server-side rules --pre_clip=median|C and --server_momentum=B) aggregates robustly; all but norm_bounding
        refuse --secure.
        --attack=sign_flip|scale|gaussian|label_flip|replace --malicious_fraction=F [--attack_scale=S] makes a seeded
        fraction of the clients attack; --compression=quantize|topk|randomk (--compression_bits,
        --compression_fraction) compresses each client update before DP clips it. The summary names both.
        --dataset=speech_commands needs --data_dir (a Speech Commands directory, e.g. from `tfx-ext data
        synthesize`); --partition=natural splits it by speaker.
        --client_runtime=litert trains every client through the model's LiteRT training signatures (what a phone
        runs; whole batches of --batch_size only), --client_runtime=keras (default) as one compiled Keras graph.
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags

from tfx_ext.errors import TfxExtError
from tfx_ext.apps.cli import flags as cli_flags
from tfx_ext.apps.cli import parse_subcommand
from tfx_ext.apps.federated_experiments import (AGGREGATOR_NAMES, ATTACK_NAMES, COMPRESSION_NAMES, DATASETS,
                                                DEFAULT_CLIENT_LR, DEFAULT_LOCAL_EPOCHS, PARTITIONS, run_experiment)
from tfx_ext.distribute import is_chief, remove_temp_dirpath, write_dirpath

FLAGS = flags.FLAGS

SUBCOMMANDS = {"simulate": "run a federated simulation and write its history, learning curve and summary"}

cli_flags.define_strategy_flags()  # --strategy (cohort sharded over replicas), --local_workers, ...
flags.DEFINE_enum("dataset", "digits", list(DATASETS), "Data set.")
flags.DEFINE_string("data_dir", None, "Speech Commands directory (for --dataset=speech_commands).")
flags.DEFINE_enum("partition", "dirichlet", list(PARTITIONS), "How to split into clients.")
flags.DEFINE_float("alpha", 0.5, "Dirichlet concentration for --partition=dirichlet (smaller = more skew).")
flags.DEFINE_integer("shards_per_client", 2, "Shards per client for --partition=shards.", lower_bound=1)
flags.DEFINE_integer("clients", 100, "Number of clients (not used by --partition=natural).", lower_bound=1)
flags.DEFINE_integer("clients_per_round", 10, "Clients sampled per round.", lower_bound=1)
flags.DEFINE_integer("rounds", 30, "Rounds.", lower_bound=1)
flags.DEFINE_integer("local_epochs", DEFAULT_LOCAL_EPOCHS, "Local epochs per client.", lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Local batch size.", lower_bound=1)
flags.DEFINE_enum("client_optimizer", "sgd", ["sgd", "adam"], "Client optimizer.")
flags.DEFINE_float("client_lr", DEFAULT_CLIENT_LR, "Client learning rate.", lower_bound=0.0)
flags.DEFINE_enum("aggregator", "fedavg", list(AGGREGATOR_NAMES),
                  "Aggregator (fedma: server-side matched averaging; matched: client-side matching; median, "
                  "trimmed_mean, krum, multi_krum, geometric_median, bulyan, centered_clipping: Byzantine-robust, "
                  "refuse --secure; "
                  "norm_bounding: clients clip, composes with --secure).")
flags.DEFINE_float("trim_fraction", 0.1, "trimmed_mean: fraction trimmed at each end, in [0, 0.5).")
flags.DEFINE_integer("krum_byzantine", 1, "krum / multi_krum / bulyan: the number f of Byzantine clients tolerated.",
                     lower_bound=0)
flags.DEFINE_integer("multi_krum_m", 1, "multi_krum: how many lowest-score updates are averaged.", lower_bound=1)
flags.DEFINE_float("norm_bound", 1.0, "norm_bounding: L2 bound of each client update.")
flags.DEFINE_float("cc_tau", None, "centered_clipping: clipping radius (default: the median distance to the center, "
                   "per round).")
flags.DEFINE_integer("cc_iterations", 3, "centered_clipping: clipping iterations per round.", lower_bound=1)
flags.DEFINE_string("pre_clip", None, "Server-side robust rules: clip each update's L2 norm to this bound, or "
                    "'median' (the round's median norm), before the rule.")
flags.DEFINE_float("server_momentum", 0.0, "Server-side robust rules: server momentum after the rule (0: none).",
                   lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_enum("attack", "none", list(ATTACK_NAMES), "Simulated attack by --malicious_fraction of the clients.")
flags.DEFINE_float("malicious_fraction", 0.0, "Fraction of the clients that attack (fixed for the run, seeded).")
flags.DEFINE_float("attack_scale", None, "sign_flip: scale (default 1), scale and replace: boost (default 10), "
                   "gaussian: std (default 1). replace = label_flip, then scale (model replacement).")
flags.DEFINE_enum("compression", "none", list(COMPRESSION_NAMES), "Update compression (client side, before DP).")
flags.DEFINE_integer("compression_bits", None, "quantize: bits per value (default 8).")
flags.DEFINE_float("compression_fraction", None, "topk / randomk: fraction of coordinates sent (default 0.01).")
flags.DEFINE_enum("client_runtime", "keras", ["keras", "litert"],
                  "How clients train: one compiled Keras graph, or LiteRT training signatures (on-device).")
flags.DEFINE_enum("secure", "none", ["none", "secagg", "secagg+"], "Secure aggregation of the client updates.")
flags.DEFINE_float("secure_threshold", None, "Shamir threshold: a count (>= 1) or a fraction of the neighbours in "
                   "(0, 1) (default: sized for --dropout_rate).")
flags.DEFINE_float("dropout_rate", 0.0, "Simulated client dropout rate during secure aggregation, in [0, 1).")
flags.DEFINE_bool("consistency_check", False, "Run SecAgg's consistency-check round (active-adversary variant).")
flags.DEFINE_enum("threat_model", "semi-malicious", ["semi-malicious", "active"],
                  "Secure aggregation's threat model (README's table); active signs every message and sizes (k, t) "
                  "against forked views.")
flags.DEFINE_enum("dp", "none", ["none", "central", "distributed"],
                  "Differential privacy: central DP-FedAvg (server noise) or distributed (client discrete Gaussian "
                  "noise inside --secure aggregation).")
flags.DEFINE_integer("dp_bits", None, "--dp=distributed: bits per coordinate of the secure sum (default 16).")
flags.DEFINE_float("clip_norm", 1.0, "DP: L2 clip norm of each client update (start value when adaptive).",
                   lower_bound=0.0)
flags.DEFINE_float("noise_multiplier", None, "DP: noise standard deviation over the clip norm.")
flags.DEFINE_float("target_epsilon", None, "DP: calibrate the noise so the run spends at most this epsilon.")
flags.DEFINE_float("target_delta", None, "DP: delta at which epsilon is reported (default 1 / clients^1.1).")
flags.DEFINE_float("adaptive_clip_quantile", None, "DP: adapt the clip norm towards this quantile of update norms.")
flags.DEFINE_float("mu", 0.01, "FedProx proximal coefficient.")
flags.DEFINE_float("server_lr", None, "Server learning rate (default: 1.0 for fedavg/fedavgm, 0.01 for adam/yogi).")
flags.DEFINE_integer("eval_every", 1, "Evaluate every k rounds.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of partition, sampling and training.")
flags.DEFINE_string("output_dir", None, "Where to write the results (default: a fresh out/federated-TIMESTAMP).")
flags.DEFINE_bool("checkpoint", False, "Checkpoint every round into OUTPUT_DIR/checkpoint.")
flags.DEFINE_bool("resume", False, "Resume from OUTPUT_DIR/checkpoint.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")


def format_summary(summary: dict) -> str:
    acc = summary["final_eval_accuracy"]
    secure = f" with {summary['secure']}" if summary.get("secure", "none") != "none" else ""
    lines = [
        f"{summary['aggregator']}{secure} on {summary['dataset']} ({summary['partition']}, {summary['clients']} clients, "
        f"{summary['clients_per_round']} per round, {summary['rounds']} rounds)",
        f"  final eval accuracy   {acc:.4f}" if acc is not None else "  final eval accuracy   n/a",
        f"  client updates / s    {summary['client_updates_per_s']:.1f} ({summary['client_runtime']} clients)",
        *([f"  failed rounds         {summary['failed_rounds']}"] if secure else []),
        *([f"  privacy               epsilon {summary['epsilon']:.3f} at delta {summary['delta']:.2g} "
           f"(noise multiplier {summary['noise_multiplier']:.3f}"
           + (f", distributed in {summary['dp_bits']}-bit secure sums" if summary.get("dp_bits") else "") + ")"]
          if summary.get("epsilon") is not None else []),
        *([f"  attack                {summary['attack']}: {summary['attackers']} malicious clients "
           f"(fraction {summary['malicious_fraction']:g})"] if summary.get("attack", "none") != "none" else []),
        *([f"  compression           {', '.join(summary['compression_options'])}: "
           f"{summary['bytes_up_per_client']:,.0f} bytes up per client"]
          if summary.get("compression", "none") != "none" else []),
        f"  wall time             {summary['wall_time_s']:.1f} s",
        f"  bytes down / up       {summary['bytes_down']:,} / {summary['bytes_up']:,}",
        f"  history               {summary['history_json']}",
        f"  learning curve        {summary['learning_curve_png']}",
    ]
    return "\n".join(lines)


def _pre_clip(value):
    """--pre_clip's value: None, "median" or a float."""
    if value is None or value == "median":
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--pre_clip must be 'median' or a number. Received: --pre_clip={value!r}") from None


def fresh_output_dir(root: str = "out") -> str:
    """A new folder `root/federated-YYYYmmdd-HHMMSS` (with a suffix when that exists already)."""
    base = os.path.join(root, time.strftime("federated-%Y%m%d-%H%M%S"))
    path, k = base, 1
    while os.path.exists(path):
        path, k = f"{base}-{k}", k + 1
    return path


def main(argv):
    if parse_subcommand("federated", argv, SUBCOMMANDS, "[--output_dir=DIR] [--flags]") is None:
        return 2
    if not FLAGS.output_dir:
        FLAGS.output_dir = fresh_output_dir()
        print(f"tfx-ext federated simulate: writing to {FLAGS.output_dir}")
    try:
        return _simulate()
    except (ValueError, TfxExtError) as e:  # bad flag values or combinations, named by the library's checks
        print(f"tfx-ext federated simulate: error: {e}", file=sys.stderr)
        return 2


def _dp_options() -> dict:
    """`make_privacy`'s keyword arguments from the DP flags that were given (the clip norm when DP is on)."""
    names = {"noise_multiplier": "noise_multiplier", "target_epsilon": "target_epsilon",
             "target_delta": "target_delta", "adaptive_clip_quantile": "adaptive_clip_quantile", "dp_bits": "bits"}
    options = {key: getattr(FLAGS, flag) for flag, key in names.items() if getattr(FLAGS, flag) is not None}
    return options | ({"clip_norm": FLAGS.clip_norm} if FLAGS.dp != "none" else {})


def _simulate():
    if cli_flags.run_local_cluster_if_requested():
        return 0  # The local worker processes ran the simulation.
    strategy = cli_flags.strategy_from_flags() if FLAGS.strategy != "default" else None
    output_dir = FLAGS.output_dir
    if strategy is not None:  # Only the chief writes into --output_dir; other workers use a temporary directory.
        output_dir = write_dirpath(FLAGS.output_dir, strategy)
    summary = run_experiment(
        output_dir, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, partition=FLAGS.partition,
        alpha=FLAGS.alpha, shards_per_client=FLAGS.shards_per_client, clients=FLAGS.clients,
        clients_per_round=FLAGS.clients_per_round, rounds=FLAGS.rounds, local_epochs=FLAGS.local_epochs,
        batch_size=FLAGS.batch_size, client_optimizer=FLAGS.client_optimizer, client_lr=FLAGS.client_lr,
        aggregator=FLAGS.aggregator, mu=FLAGS.mu, server_lr=FLAGS.server_lr, eval_every=FLAGS.eval_every,
        seed=FLAGS.seed, checkpoint=FLAGS.checkpoint, resume=FLAGS.resume, progress=FLAGS.progress,
        strategy=strategy, secure=FLAGS.secure, secure_threshold=FLAGS.secure_threshold,
        dropout_rate=FLAGS.dropout_rate, consistency_check=FLAGS.consistency_check, threat_model=FLAGS.threat_model,
        dp=FLAGS.dp, dp_options=_dp_options(),
        client_runtime=FLAGS.client_runtime,
        aggregator_options={k: getattr(FLAGS, k) for k in ("trim_fraction", "krum_byzantine", "multi_krum_m",
                                                           "norm_bound", "cc_tau", "cc_iterations",
                                                           "server_momentum")} | {"pre_clip": _pre_clip(FLAGS.pre_clip)},
        attack=FLAGS.attack, malicious_fraction=FLAGS.malicious_fraction, attack_scale=FLAGS.attack_scale,
        compression=FLAGS.compression, compression_options={"bits": FLAGS.compression_bits,
                                                            "fraction": FLAGS.compression_fraction},
    )
    if strategy is not None:
        if not is_chief(strategy):
            remove_temp_dirpath(output_dir, strategy)
            return 0
    print(format_summary(summary))
    return 0
