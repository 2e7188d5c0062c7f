"""Ready-made federated experiments: the digits CNN workload, the keyword workload, and `run_federated_demo`.

`run_experiment(...)` is what `tfx-ext federated simulate` runs: it loads a data set, partitions it, simulates,
and writes `history.json`, `history.csv`, `learning_curve.png`, `label_distribution.png` and `summary.json`.
`run_federated_demo(output_dir, ...)` is the short digits run the end-to-end demo calls.
"""

from __future__ import annotations

import json
import os
import time

import keras
import numpy as np

from tfx_ext._validate import check_choice
from tfx_ext.data import label_names, list_examples, load_digits, load_speech_commands
from tfx_ext.federated import aggregators as agg
from tfx_ext.federated.client_data import ClientData, plot_label_distribution
from tfx_ext.federated.history import atomic_write_text, plot_history
from tfx_ext.federated.simulation import simulate

DATASETS = ("digits", "speech_commands")
PARTITIONS = ("iid", "dirichlet", "shards", "natural")
KEYWORD_LABELS = "12"  # The Speech Commands label view of the keyword workload.
AGGREGATOR_NAMES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedavgm", "fedma", "matched", "median", "trimmed_mean",
                    "krum", "multi_krum", "geometric_median", "norm_bounding", "bulyan", "centered_clipping")
ROBUST_NAMES = AGGREGATOR_NAMES[7:]  # `tfx_ext.federated.robust`: Byzantine-robust, by name
SECURE = ("none", "secagg", "secagg+")
# Defaults that learn: FedAvg on Dirichlet(0.5) digits, 16 clients, 8 per round, 8 rounds reaches >= 0.85 with
# client SGD(0.1) and 2 local epochs (0.62 with the former 0.05 and 1 epoch).
DEFAULT_CLIENT_LR = 0.1
DEFAULT_LOCAL_EPOCHS = 2


def digits_cnn(num_classes: int = 10, seed: int = 0):
    """The benchmark workload's model: Conv2D 16 -> Conv2D 32 -> Dense 10 on 8x8x1 digits (logits)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="digits_cnn",
    )


def keyword_cnn(input_shape, num_classes: int, seed: int = 0):
    """A small keyword model over (frames, features): two strided Conv1D, global pooling, Dense (logits)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(tuple(input_shape)),
            keras.layers.Conv1D(32, 3, strides=2, activation="relu", name="conv1"),
            keras.layers.Conv1D(48, 3, strides=2, activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling1D(name="pool"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="keyword_cnn",
    )


def load_dataset(dataset: str, *, data_dir=None, seed: int = 0):
    """Returns `(x_train, y_train, ids_train, x_test, y_test, num_classes)` (`ids_train` may be None)."""
    check_choice("dataset", dataset, DATASETS)
    if dataset == "digits":
        (x_tr, y_tr), (x_te, y_te) = load_digits(seed=seed)
        return x_tr, y_tr, None, x_te, y_te, int(max(y_tr.max(), y_te.max())) + 1
    if data_dir is None:
        raise ValueError("`data_dir` is required for dataset='speech_commands'. Received: data_dir=None")

    def arrays(split):
        ds = load_speech_commands(data_dir, split, labels=KEYWORD_LABELS, batch_size=256, shuffle=False, seed=seed)
        xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
        return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int32)

    x_tr, y_tr = arrays("train")
    x_te, y_te = arrays("test")
    examples = list_examples(data_dir, "train", KEYWORD_LABELS, seed=seed)
    speakers = np.array([e.speaker or "_silence_" for e in examples])
    if len(speakers) != len(x_tr):
        speakers = None
    return x_tr, y_tr, speakers, x_te, y_te, len(label_names(KEYWORD_LABELS))


def make_client_data(x, y, ids, *, partition: str, clients: int, alpha: float = 0.5, shards_per_client: int = 2,
                     seed: int = 0) -> ClientData:
    """Partitions `(x, y)` into a `ClientData` by name (`iid`, `dirichlet`, `shards`, `natural`)."""
    check_choice("partition", partition, PARTITIONS)
    if partition == "iid":
        return ClientData.iid(x, y, clients, seed=seed)
    if partition == "dirichlet":
        return ClientData.dirichlet(x, y, clients, alpha=alpha, seed=seed)
    if partition == "shards":
        return ClientData.shards(x, y, clients, shards_per_client=shards_per_client, seed=seed)
    if ids is None:
        raise ValueError("`partition='natural'` needs an id column (speakers); digits has none. "
                         "Received: partition='natural'")
    return ClientData.natural(x, y, ids)


def make_aggregator(name: str, *, mu: float = 0.01, server_lr: float | None = None, model_fn=None,
                    class_counts=None, trim_fraction: float = 0.1, krum_byzantine: int = 1, multi_krum_m: int = 1,
                    norm_bound: float = 1.0, cc_tau: float | None = None, cc_iterations: int = 3,
                    server_momentum: float = 0.0, pre_clip=None):
    """An aggregator by CLI name, with the server learning rate where it applies.

    "fedma" is server-side matched averaging (`FedMA`), "matched" client-side matching (`ClientSideMatching`,
    which composes with secure aggregation); both need `model_fn` (and use `class_counts` for the output layer).
    The robust ones (`ROBUST_NAMES`) take `trim_fraction` (trimmed_mean's beta), `krum_byzantine` (Krum's and
    Bulyan's f), `multi_krum_m`, `norm_bound`, `cc_tau` / `cc_iterations` (centered clipping's radius, None: the
    median distance, and iterations) and `server_momentum` (> 0: `ServerMomentum(server_lr or 1, momentum)` after
    the robust rule) and `pre_clip` (a float or "median": each update's norm clipped before the rule,
    `robust.clip_to_bound`); all but norm_bounding refuse `secure=` by name.
    """
    name = name.lower()
    if name not in AGGREGATOR_NAMES:
        raise ValueError(f"`aggregator` must be one of {AGGREGATOR_NAMES}. Received: aggregator={name!r}")
    if (server_momentum or pre_clip is not None) and name not in ROBUST_NAMES:
        raise ValueError(f"`server_momentum` and `pre_clip` apply to the robust aggregators {ROBUST_NAMES} (for FedAvg "
                         f"with momentum use aggregator='fedavgm'). Received: aggregator={name!r}")
    if name in ("fedma", "matched"):
        from tfx_ext.federated.fedma.aggregator import ClientSideMatching, FedMA

        if model_fn is None:
            raise ValueError(f"`aggregator={name!r}` needs the `model_fn` it matches. Received: model_fn=None")
        cls = FedMA if name == "fedma" else ClientSideMatching
        return cls(model_fn, class_counts=class_counts)
    if name == "fedprox":
        return agg.FedProx(mu=mu)
    if name in ("fedadam", "fedyogi"):
        return agg.get(name, learning_rate=server_lr if server_lr is not None else 1e-2)
    if name == "fedavgm":
        return agg.FedAvgM(learning_rate=server_lr if server_lr is not None else 1.0)
    server_sgd = agg.ServerSGD(server_lr) if server_lr not in (None, 1.0) else None
    if server_momentum:
        server_sgd = agg.ServerMomentum(learning_rate=1.0 if server_lr is None else server_lr,
                                        momentum=server_momentum)
    if name == "fedavg":
        return agg.FedAvg(server_optimizer=server_sgd)
    import tfx_ext.federated.robust  # noqa: F401  (registers the robust names with `aggregators.get`)

    options = {"trimmed_mean": {"beta": trim_fraction}, "krum": {"f": krum_byzantine},
               "multi_krum": {"f": krum_byzantine, "m": multi_krum_m}, "norm_bounding": {"bound": norm_bound},
               "bulyan": {"f": krum_byzantine}, "centered_clipping": {"tau": cc_tau, "iterations": cc_iterations}}
    if pre_clip is not None:
        if name == "norm_bounding":
            raise ValueError("`pre_clip` applies to the rules that see individual updates; norm_bounding clips on "
                             "the clients with `norm_bound`. Received: aggregator='norm_bounding', "
                             f"pre_clip={pre_clip!r}")
        options.setdefault(name, {})["pre_clip"] = pre_clip
    return agg.get(name, server_optimizer=server_sgd, **options.get(name, {}))


def make_secure(secure: str = "none", *, threshold=None, dropout_rate: float = 0.0, consistency_check: bool = False,
                seed: int = 0, threat_model: str = "semi-malicious"):
    """`SecAgg` for `secure="secagg"|"secagg+"` (threshold sized for `dropout_rate` unless given), None for "none"."""
    if secure not in SECURE:
        raise ValueError(f"`secure` must be one of {SECURE}. Received: secure={secure!r}")
    if secure == "none":
        if threshold is not None or dropout_rate or consistency_check or threat_model != "semi-malicious":
            raise ValueError("`secure_threshold`, `dropout_rate`, `consistency_check` and `threat_model` need "
                             f"`secure=secagg` or `secagg+`. Received: secure={secure!r}")
        return None
    from tfx_ext.federated.secure.wrapper import SecAgg

    if threshold is not None and float(threshold).is_integer() and threshold >= 1:
        threshold = int(threshold)
    return SecAgg(variant=secure, threshold=threshold, dropout_rate=dropout_rate,
                  consistency_check=consistency_check, seed=seed, threat_model=threat_model)


DP_MODES = ("none", "central", "distributed")


def make_privacy(dp: str = "none", *, population_size: int, cohort_size: int, rounds: int,
                 noise_multiplier=None, clip_norm: float = 1.0, adaptive_clip_quantile=None, target_delta=None,
                 target_epsilon=None, bits=None):
    """`[CentralDP(...)]` for `dp="central"` (noise from `noise_multiplier`, or calibrated to `target_epsilon` over
    `rounds`), `[DistributedDP(...)]` for "distributed" (clients add discrete Gaussian noise inside secure
    aggregation, field of `bits` bits, default 16; needs `secure=`), `[]` for "none"."""
    check_choice("dp", dp, DP_MODES)
    if dp == "none":
        if noise_multiplier is not None or target_epsilon is not None or adaptive_clip_quantile is not None \
                or bits is not None:
            raise ValueError("`noise_multiplier`, `target_epsilon`, `adaptive_clip_quantile` and `dp_bits` need "
                             f"`dp='central'` or `'distributed'`. Received: dp={dp!r}")
        return []
    if dp == "distributed":
        from tfx_ext.federated.distributed_dp import DistributedDP

        if noise_multiplier is None or target_epsilon is not None or adaptive_clip_quantile is not None:
            raise ValueError("`dp='distributed'` needs `noise_multiplier` and supports neither `target_epsilon` nor "
                             f"`adaptive_clip_quantile` (use `dp='central'` for those). Received: noise_multiplier="
                             f"{noise_multiplier}, target_epsilon={target_epsilon}, "
                             f"adaptive_clip_quantile={adaptive_clip_quantile}")
        return [DistributedDP(clip_norm=clip_norm, noise_multiplier=noise_multiplier, population_size=population_size,
                              cohort_size=cohort_size, bits=16 if bits is None else bits, target_delta=target_delta)]
    from tfx_ext.federated.privacy import CentralDP

    if bits is not None:
        raise ValueError(f"`dp_bits` needs `dp='distributed'`. Received: dp={dp!r}, bits={bits}")
    if noise_multiplier is None and target_epsilon is None:
        raise ValueError("`dp='central'` needs `noise_multiplier` or `target_epsilon`.")
    return [CentralDP(clip_norm=clip_norm, population_size=population_size, cohort_size=cohort_size,
                      noise_multiplier=noise_multiplier, target_epsilon=target_epsilon, rounds=rounds,
                      target_delta=target_delta, adaptive_clip_quantile=adaptive_clip_quantile)]


ATTACK_NAMES = ("none", "sign_flip", "scale", "gaussian", "label_flip", "replace")


def make_attack(attack: str = "none", *, malicious_fraction: float = 0.0, attack_scale=None, num_classes: int = 10):
    """The attack object for `attack` (None for "none"); `attack_scale` is sign_flip's scale, scale's boost or
    gaussian's std (each attack's default when None). "replace" is model replacement of a poisoned model
    (Bagdasaryan et al. 2020): train on flipped labels, then boost the update by `attack_scale` (default 10).
    `run_experiment` applies it with `attacks.with_attack`."""
    check_choice("attack", attack, ATTACK_NAMES)
    if attack == "none":
        if malicious_fraction or attack_scale is not None:
            raise ValueError("`malicious_fraction` and `attack_scale` need an `attack` (sign_flip, scale, gaussian or "
                             f"label_flip). Received: attack='none', malicious_fraction={malicious_fraction}")
        return None
    from tfx_ext.federated.attacks import get_attack

    if not 0 < malicious_fraction <= 1:
        raise ValueError(f"`attack={attack!r}` needs `malicious_fraction` in (0, 1]. "
                         f"Received: malicious_fraction={malicious_fraction}")
    if attack == "label_flip":
        if attack_scale is not None:
            raise ValueError(f"`attack_scale` does not apply to attack='label_flip'. Received: {attack_scale}")
        return get_attack(attack, num_classes=num_classes)
    if attack == "replace":
        return get_attack([get_attack("label_flip", num_classes=num_classes),
                           get_attack("scale", **({} if attack_scale is None else {"boost": attack_scale}))])
    param = {"sign_flip": "scale", "scale": "boost", "gaussian": "std"}[attack]
    return get_attack(attack, **({} if attack_scale is None else {param: attack_scale}))


COMPRESSION_NAMES = ("none", "quantize", "topk", "randomk")


def make_compression(compression: str = "none", *, bits=None, fraction=None, error_feedback: bool = True):
    """`[StochasticQuantizer(bits)]` (default 8), `[TopK(fraction)]` / `[RandomK(fraction)]` (default 0.01, with
    error feedback), `[]` for "none". `run_experiment` puts them before DP's postprocessor in `postprocessors=`,
    so a client compresses, then clips: the update DP's sensitivity bounds is the one on the wire."""
    check_choice("compression", compression, COMPRESSION_NAMES)
    if compression != "quantize" and bits is not None or compression not in ("topk", "randomk") and fraction is not None:
        raise ValueError("`compression_bits` needs `compression='quantize'` and `compression_fraction` "
                         f"`compression='topk'` or `'randomk'`. Received: compression={compression!r}, bits={bits}, "
                         f"fraction={fraction}")
    from tfx_ext.federated import compression as comp

    if compression == "none":
        return []
    if compression == "quantize":
        return [comp.StochasticQuantizer(8 if bits is None else bits)]
    cls = comp.TopK if compression == "topk" else comp.RandomK
    return [cls(0.01 if fraction is None else fraction, error_feedback=error_feedback)]


def run_experiment(output_dir, *, dataset="digits", data_dir=None, partition="dirichlet", alpha=0.5,
                   shards_per_client=2, clients=100, clients_per_round=10, rounds=20,
                   local_epochs=DEFAULT_LOCAL_EPOCHS, batch_size=16, client_optimizer="sgd",
                   client_lr=DEFAULT_CLIENT_LR, aggregator="fedavg", mu=0.01, server_lr=None, eval_every=1, seed=0,
                   checkpoint=False, resume=False, strategy=None, progress=True, secure="none",
                   secure_threshold=None, dropout_rate=0.0, consistency_check=False, threat_model="semi-malicious",
                   dp="none", dp_options=None, client_runtime="keras", aggregator_options=None, attack="none",
                   malicious_fraction=0.0, attack_scale=None, compression="none", compression_options=None,
                   data=None) -> dict:
    """Loads, partitions, simulates and writes the results into `output_dir`; returns the summary dict.

    `secure`, `secure_threshold`, `dropout_rate`, `consistency_check` and `threat_model` configure secure
    aggregation (`make_secure`); `dp` and `dp_options` (keyword arguments of `make_privacy`) differential
    privacy; `aggregator` is one of `AGGREGATOR_NAMES` (`make_aggregator`, whose robust parameters
    `aggregator_options` holds); `attack`, `malicious_fraction` and `attack_scale` an attack (`make_attack`);
    `compression` and `compression_options` (`bits`, `fraction`) update compression (`make_compression`);
    `client_runtime` is "keras" or "litert" (`simulate`). `data`, when given, is what `load_dataset(dataset, ...)`
    returns, loaded once by a caller that runs many experiments on it (a benchmark), instead of loading again.
    """
    import keras

    secure_sum = make_secure(secure, threshold=secure_threshold, dropout_rate=dropout_rate,
                             consistency_check=consistency_check, seed=seed, threat_model=threat_model)

    os.makedirs(output_dir, exist_ok=True)
    if data is not None and len(data) != 6:
        raise ValueError("`data` must be load_dataset's (x_train, y_train, ids_train, x_test, y_test, num_classes). "
                         f"Received: {len(data)} items")
    x_tr, y_tr, ids, x_te, y_te, num_classes = (data if data is not None else
                                                load_dataset(dataset, data_dir=data_dir, seed=seed))
    cd = make_client_data(x_tr, y_tr, ids, partition=partition, clients=clients, alpha=alpha,
                          shards_per_client=shards_per_client, seed=seed)
    if dp == "distributed" and secure == "none":
        raise ValueError("`dp='distributed'` adds the noise on the clients inside secure aggregation: it needs "
                         "`secure='secagg'` or `'secagg+'` (CLI: --secure=secagg+).")
    privacy = make_privacy(dp, population_size=len(cd), cohort_size=min(clients_per_round, len(cd)), rounds=rounds,
                           **(dp_options or {}))
    compressors = make_compression(compression, **(compression_options or {}))
    threat = make_attack(attack, malicious_fraction=malicious_fraction, attack_scale=attack_scale,
                         num_classes=num_classes)
    if dataset == "digits":
        def model_fn():
            return digits_cnn(num_classes, seed=seed)
    else:
        def model_fn():
            return keyword_cnn(x_tr.shape[1:], num_classes, seed=seed)
    optimizers = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}
    opt = optimizers[check_choice("client_optimizer", client_optimizer, optimizers)](client_lr)
    aggregator_obj = make_aggregator(aggregator, mu=mu, server_lr=server_lr, model_fn=model_fn, class_counts=cd,
                                     **(aggregator_options or {}))
    if threat is not None:
        from tfx_ext.federated.attacks import with_attack

        cd, aggregator_obj = with_attack(cd, aggregator_obj, threat, fraction=malicious_fraction, seed=seed)
    label_png = plot_label_distribution(cd, os.path.join(output_dir, "label_distribution.png"),
                                        num_classes=num_classes)
    t0 = time.perf_counter()
    history, model = simulate(
        model_fn, cd, rounds=rounds, clients_per_round=min(clients_per_round, len(cd)), local_epochs=local_epochs,
        batch_size=batch_size, client_optimizer=opt,
        aggregator=aggregator_obj,
        secure=secure_sum, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), eval_data=(x_te, y_te),
        eval_every=eval_every, strategy=strategy, seed=seed, log_dir=output_dir,
        checkpoint_dir=os.path.join(output_dir, "checkpoint") if (checkpoint or resume) else None, resume=resume,
        progress=progress, postprocessors=compressors + privacy, client_runtime=client_runtime,
    )
    wall = time.perf_counter() - t0
    curve = plot_history(history, os.path.join(output_dir, "learning_curve.png"),
                         title=f"{aggregator} on {dataset} ({partition}, {len(cd)} clients)")
    steady = history.rounds[1:] or history.rounds  # round 1 includes tracing the training graph
    train_time = sum(r["wall_time_s"] for r in steady)
    summary = {
        "dataset": dataset,
        "partition": partition,
        "alpha": alpha if partition == "dirichlet" else None,
        "aggregator": aggregator,
        "secure": secure,
        "threat_model": threat_model if secure != "none" else None,
        "dp": dp,
        "epsilon": privacy[0].epsilon() if privacy else None,
        "delta": privacy[0].target_delta if privacy else None,
        "noise_multiplier": privacy[0].noise_multiplier if privacy else None,
        "dp_bits": privacy[0].bits if dp == "distributed" else None,
        "attack": attack,
        "malicious_fraction": malicious_fraction if threat is not None else None,
        "attackers": len(aggregator_obj.malicious) if threat is not None else 0,
        "compression": compression,
        "compression_options": [repr(p) for p in compressors],
        "bytes_up_per_client": (sum(r["bytes_up"] for r in history.rounds)
                                / max(1, sum(r.get("clients_accepted", 0) for r in history.rounds))),
        "client_runtime": client_runtime,
        "failed_rounds": int(sum(r.get("round_failed", 0) for r in history)),
        "clients": len(cd),
        "clients_per_round": min(clients_per_round, len(cd)),
        "rounds": len(history),
        "final_eval_accuracy": history.last("eval_accuracy"),
        "final_eval_loss": history.last("eval_loss"),
        "final_train_loss": history.last("train_loss"),
        "client_updates_per_s": sum(r["clients_sampled"] for r in steady) / max(train_time, 1e-9),
        "first_round_s": history.rounds[0]["wall_time_s"] if history.rounds else None,
        "wall_time_s": wall,
        "bytes_down": int(sum(r["bytes_down"] for r in history.rounds)),
        "bytes_up": int(sum(r["bytes_up"] for r in history.rounds)),
        "population": cd.summary(num_classes),
        "history_json": os.path.join(output_dir, "history.json"),
        "learning_curve_png": curve,
        "label_distribution_png": label_png,
    }
    atomic_write_text(os.path.join(output_dir, "summary.json"), json.dumps(summary, indent=1))
    del model
    return summary


def run_federated_demo(output_dir, *, rounds: int = 30, clients: int = 100, clients_per_round: int = 10,
                       alpha: float = 0.5, aggregator: str = "fedavg", seed: int = 0, progress: bool = False) -> dict:
    """A short federated run on digits (Dirichlet(alpha) over `clients`), for the end-to-end demo.

    Returns:
        The summary dict of `run_experiment`, with `final_eval_accuracy`, `client_updates_per_s`,
        `learning_curve_png` (path of the learning-curve PNG) and `history_json` among its keys.
    """
    return run_experiment(output_dir, dataset="digits", partition="dirichlet", alpha=alpha, clients=clients,
                          clients_per_round=clients_per_round, rounds=rounds, aggregator=aggregator,
                          client_lr=0.1, batch_size=16, seed=seed, eval_every=max(1, rounds // 10), progress=progress)


__all__ = ["AGGREGATOR_NAMES", "ATTACK_NAMES", "COMPRESSION_NAMES", "DP_MODES", "ROBUST_NAMES", "SECURE", "digits_cnn",
           "keyword_cnn", "load_dataset", "make_aggregator", "make_attack", "make_client_data", "make_compression",
           "make_privacy", "make_secure", "run_experiment", "run_federated_demo"]
