"""Plain CNN vs hypernetwork CNN (one generator shared by all conv layers) on scikit-learn's 8x8 digits.

Same architecture, optimizer, epochs and batch size for both; several seeds. Reports trainable parameters,
test accuracy (mean and std over seeds), the parameter ratio, the accuracy drop, and the target of issue 7
(>= 5x fewer trainable parameters at <= 1.5 pt accuracy loss). Also reports the baked hyper model (plain
layers with the generated kernels: what ships to the device) and its parity with the hyper model.

    python -m bench.hypernet                # full run: 5 seeds, 40 epochs (a few minutes on 2 CPU cores)
    python -m bench.hypernet --smoke        # seconds: 1 seed, 1 epoch, tiny models (what tests/bench runs)
    python -m bench.hypernet --task keywords --seeds 2 --epochs 15 --embedding_dim 8
                                            # DS-CNN on synthetic keywords (pointwise convs generated)

Writes bench/results/hypernet.json (hypernet_keywords.json, hypernet_smoke.json).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.harness import RESULTS_DIR, Benchmark  # noqa: E402

TARGET_RATIO = 5.0
TARGET_DROP_PT = 1.5


def load_data(seed: int = 0):
    """Digits train/test split (tfx_ext.data.load_digits: stratified, seeded; images (n, 8, 8, 1) in [0, 1])."""
    from tfx_ext.data.digits import load_digits

    return load_digits(test_fraction=0.25, seed=seed)


def build_cnn(kind: str, widths=(32, 64, 64), embedding_dim: int = 16, chunk: int = 16, hidden_dim=None):
    """conv(w0) -> conv(w1) -> maxpool -> conv(w2) -> global average pool -> dense(10), 3x3 'same' convs.

    `kind="plain"` uses Conv2D; `kind="hyper"` uses HyperConv2D with one HyperNetwork (chunks (3, 3, chunk,
    chunk)) shared by all three convs. The classifier head is a plain Dense layer in both.
    """
    from tfx_ext.layers import HyperConv2D, HyperNetwork

    x = keras.Input((8, 8, 1), name="image")
    if kind == "plain":
        def conv(filters, name):
            return keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)
    elif kind == "hyper":
        generator = HyperNetwork(embedding_dim, (3, 3, chunk, chunk), hidden_dim=hidden_dim, name="generator")

        def conv(filters, name):
            return HyperConv2D(filters, 3, hypernetwork=generator, padding="same", activation="relu", name=name)
    else:
        raise ValueError(f"`kind` must be 'plain' or 'hyper'. Received: kind={kind!r}")
    h = conv(widths[0], "conv1")(x)
    h = conv(widths[1], "conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = conv(widths[2], "conv3")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    y = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(x, y, name=f"{kind}_cnn")


def build_ds_cnn(kind: str, width: int = 64, num_blocks: int = 4, embedding_dim: int = 8, chunk: int = 16,
                 input_shape=(49, 40), num_classes: int = 12):
    """DS-CNN (Zhang et al. 2017; the layout of tfx_ext.models._ds_cnn without Stream wrappers): a (5, 3) conv with
    frequency stride 2, `num_blocks` x (3x3 depthwise + BN + ReLU, 1x1 pointwise + BN + ReLU), global average pool,
    dense. `kind="hyper"` generates every pointwise kernel with one shared HyperNetwork (chunks (1, 1, chunk,
    chunk)); the (5, 3) conv and the depthwise kernels have other spatial sizes (a generator serves one chunk
    shape) and are few parameters, so they stay plain.
    """
    from tfx_ext.layers import HyperConv2D, HyperNetwork

    L = keras.layers
    if kind not in ("plain", "hyper"):
        raise ValueError(f"`kind` must be 'plain' or 'hyper'. Received: kind={kind!r}")
    generator = HyperNetwork(embedding_dim, (1, 1, chunk, chunk), name="generator") if kind == "hyper" else None
    inputs = keras.Input(input_shape, name="features")
    x = L.BatchNormalization(name="input_norm")(inputs)
    x = L.Reshape((*input_shape, 1), name="expand")(x)
    x = L.Conv2D(width, (5, 3), strides=(1, 2), padding="same", use_bias=False, name="conv0")(x)
    x = L.ReLU(name="relu0")(L.BatchNormalization(name="bn0")(x))
    for i in range(1, num_blocks + 1):
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = L.ReLU(name=f"dw{i}_relu")(L.BatchNormalization(name=f"dw{i}_bn")(x))
        if kind == "hyper":
            x = HyperConv2D(width, 1, hypernetwork=generator, use_bias=False, name=f"pw{i}")(x)
        else:
            x = L.Conv2D(width, 1, use_bias=False, name=f"pw{i}")(x)
        x = L.ReLU(name=f"pw{i}_relu")(L.BatchNormalization(name=f"pw{i}_bn")(x))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(num_classes, name="logits")(x), name=f"{kind}_ds_cnn")


def load_keywords(root: str, seed: int = 0):
    """Synthetic keywords (tfx_ext.apps.synthesis, numpy engine, default 14 words x 36 speakers x 3 clips) as
    log-mel features (49, 40); 12 labels; the synthesizer's speaker split (train / test)."""
    from tfx_ext.data.speech_commands import load_speech_commands_arrays
    from tfx_ext.apps.synthesis import synthesize_keywords

    synthesize_keywords(root, engine="numpy", seed=seed, progress=False)
    x_train, y_train, _ = load_speech_commands_arrays(root, "training")
    x_test, y_test, _ = load_speech_commands_arrays(root, "testing")
    return (x_train, y_train), (x_test, y_test)


def trainable_params(model: keras.Model) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def train_and_evaluate(kind: str, seed: int, data, *, epochs: int, batch_size: int, learning_rate: float,
                       model_kwargs: dict, builder=None) -> dict:
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = (builder or build_cnn)(kind, **model_kwargs)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    train_s = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    row = {"model": kind, "seed": seed, "trainable_params": trainable_params(model),
           "test_acc_pct": round(100.0 * float(accuracy), 2), "train_s": round(train_s, 1)}
    if kind == "hyper":
        from tfx_ext.transforms.baking import bake, hyper_parameter_report

        baked = bake(model)
        row["baked_params"] = trainable_params(baked)
        row["bake_max_abs_err"] = float(np.max(np.abs(np.asarray(baked(x_test)) - np.asarray(model(x_test)))))
        row["generator_params"] = hyper_parameter_report(model)["generator"]
    return row


def run(*, seeds=(0, 1, 2, 3, 4), epochs: int = 40, batch_size: int = 32, learning_rate: float = 3e-3,
        model_kwargs: dict | None = None, name: str = "hypernet", results_dir=RESULTS_DIR, task: str = "digits",
        data_root: str = "/tmp/tfx_ext_hypernet_keywords") -> dict:
    """Runs the comparison and returns the JSON document (also printed as a table and written to disk).

    `task="digits"`: the 3-conv CNN on sklearn digits; `task="keywords"`: the DS-CNN on synthetic keywords
    (written to `data_root` on first use).
    """
    if task not in ("digits", "keywords"):
        raise ValueError(f"`task` must be 'digits' or 'keywords'. Received: task={task!r}")
    model_kwargs = dict(model_kwargs or {})
    description = ("sklearn digits 8x8, 25% stratified test split (seed 0)" if task == "digits" else
                   "synthetic keywords (numpy engine, 12 labels, speaker split), log-mel (49, 40)")
    config = {"task": task, "seeds": list(seeds), "epochs": epochs, "batch_size": batch_size,
              "learning_rate": learning_rate, "optimizer": "Adam", "data": description,
              "model_kwargs": model_kwargs, "target": f">= {TARGET_RATIO}x fewer trainable params at <= "
                                                        f"{TARGET_DROP_PT} pt accuracy loss"}
    bench = Benchmark(name, config=config, results_dir=results_dir)
    data = load_data(0) if task == "digits" else load_keywords(data_root)
    builder = build_cnn if task == "digits" else build_ds_cnn
    per_kind: dict[str, list[dict]] = {"plain": [], "hyper": []}
    for seed in seeds:
        for kind in ("plain", "hyper"):
            row = train_and_evaluate(kind, seed, data, epochs=epochs, batch_size=batch_size,
                                     learning_rate=learning_rate, model_kwargs=model_kwargs, builder=builder)
            per_kind[kind].append(row)
            bench.add_row(row)
            print(f"[hypernet] {row}", file=sys.stderr, flush=True)
    summary = {}
    for kind, rows in per_kind.items():
        accs = np.array([r["test_acc_pct"] for r in rows])
        summary[kind] = {"params": rows[0]["trainable_params"], "acc_mean": float(accs.mean()),
                         "acc_std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0}
        bench.add_row({"model": f"{kind} (mean)", "seed": "all", "trainable_params": summary[kind]["params"],
                       "test_acc_pct": round(summary[kind]["acc_mean"], 2),
                       "acc_std_pt": round(summary[kind]["acc_std"], 2)})
    ratio = summary["plain"]["params"] / summary["hyper"]["params"]
    drop = summary["plain"]["acc_mean"] - summary["hyper"]["acc_mean"]
    met = ratio >= TARGET_RATIO and drop <= TARGET_DROP_PT
    bench.add_row({"model": "hyper vs plain", "seed": "all", "param_ratio": round(ratio, 2),
                   "acc_drop_pt": round(drop, 2), "target_met": met})
    bench.note(
        f"hyper uses {ratio:.2f}x fewer trainable parameters than plain with an accuracy drop of {drop:.2f} pt "
        f"(mean over {len(seeds)} seeds); target >= {TARGET_RATIO}x at <= {TARGET_DROP_PT} pt: "
        f"{'met' if met else 'NOT met'}."
    )
    document = bench.finish(columns=["model", "seed", "trainable_params", "test_acc_pct", "acc_std_pt", "train_s",
                                     "generator_params", "baked_params", "bake_max_abs_err", "param_ratio",
                                     "acc_drop_pt", "target_met"])
    document["summary"] = {"plain": summary["plain"], "hyper": summary["hyper"], "param_ratio": ratio,
                           "acc_drop_pt": drop, "target_met": met}
    return document


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1 seed, 1 epoch, tiny models (seconds)")
    parser.add_argument("--task", choices=("digits", "keywords"), default="digits",
                        help="digits: 3-conv CNN on sklearn digits; keywords: DS-CNN on synthetic keywords")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0..n-1)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--embedding_dim", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=16, help="chunk in/out width: chunks are (3, 3, chunk, chunk)")
    args = parser.parse_args(argv)
    if args.smoke:
        return run(seeds=(0,), epochs=1, model_kwargs={"widths": (8, 8, 8), "embedding_dim": 4, "chunk": 4},
                   name="hypernet_smoke")
    if args.task == "keywords":
        return run(seeds=tuple(range(args.seeds)), epochs=args.epochs, batch_size=args.batch_size,
                   learning_rate=args.learning_rate, task="keywords", name="hypernet_keywords",
                   model_kwargs={"embedding_dim": args.embedding_dim, "chunk": args.chunk})
    return run(seeds=tuple(range(args.seeds)), epochs=args.epochs, batch_size=args.batch_size,
               learning_rate=args.learning_rate,
               model_kwargs={"embedding_dim": args.embedding_dim, "chunk": args.chunk})


if __name__ == "__main__":
    main()
