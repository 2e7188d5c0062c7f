"""Train where you deploy (issue 23): LiteRT training signatures against Keras, side by side in one run.

    .venv/bin/python -m bench.ondevice            # bench/results/ondevice.json
    .venv/bin/python -m bench.ondevice --smoke    # seconds: what tests/bench runs

Rows (`baseline` is Keras's figure, `litert` the on-device one, `ratio` = litert / baseline):

- `train step ms`, per model: one optimizer step on the same batch (SGD 0.1, batch 16), LiteRT's `train`
  signature (`TrainableTFLiteModel.train`, one interpreter thread) vs Keras `train_on_batch` (its compiled train
  function), timed interleaved (`harness.compare`) after warm-up;
- `tflite KB`, per model: the export with training signatures (`to_trainable_tflite`) vs the inference-only float
  export (`to_tflite`) of the same model;
- `client updates/s`, `eval accuracy`, `max weight gap`: FedAvg on digits (Dirichlet 0.5 clients cut to whole
  batches, `ClientData.whole_batches`), the same rounds, seed and clients, with Keras clients (one compiled
  cohort graph) and LiteRT clients (`client_runtime="litert"`); throughput is local training only (the
  simulator's `client_updates_per_s`), averaged over rounds 2.. (round 1 traces / exports), the median of 3
  runs per runtime in alternating order (`samples` in the JSON).

Models: `mlp` (Dense 64 relu + Dense 10 on the flattened 8x8 digits), `digits_cnn` (the federated workload:
Conv2D 16, Conv2D 32, Dense 10), `ds_cnn head` (the keyword DS-CNN, width 16, trained head only as in on-device
personalization; baseline: `train_on_batch` with the body frozen).
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.harness import Benchmark, compare

BATCH, LR, SEED = 16, 0.1, 0


def _models(smoke: bool):
    import keras

    from tfx_ext.apps.federated_experiments import digits_cnn
    from tfx_ext.models import get_model

    def mlp():
        keras.utils.set_random_seed(SEED)
        return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
                                 keras.layers.Dense(10, name="logits")], name="mlp")

    def ds_cnn():
        keras.utils.set_random_seed(SEED)
        return get_model("ds_cnn", input_shape=(49, 40), num_classes=12, width=8 if smoke else 16,
                         num_blocks=1 if smoke else 4, dropout=0.0)

    logits = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return {"mlp": (mlp, logits, None), "digits_cnn": (lambda: digits_cnn(10, seed=SEED), logits, None),
            "ds_cnn head": (ds_cnn, keras.losses.SparseCategoricalCrossentropy(), ["logits"])}


def _step_and_size_rows(bench: Benchmark, smoke: bool):
    import keras

    import tfx_ext

    repeats = 5 if smoke else 50
    for name, (build, loss, head) in _models(smoke).items():
        model = build()
        rng = np.random.default_rng(SEED)
        x = rng.normal(size=(BATCH, *model.inputs[0].shape[1:])).astype(np.float32)
        y = rng.integers(0, model.outputs[0].shape[-1], BATCH).astype(np.int32)
        trainable = tfx_ext.to_trainable_tflite(model, loss=loss, optimizer=keras.optimizers.SGD(LR), batch_size=BATCH,
                                                trainable_layers=head)
        device = tfx_ext.TrainableTFLiteModel(trainable, num_threads=1)
        inference = tfx_ext.to_tflite(model)
        if head:
            for layer in model.layers:
                layer.trainable = layer.name in head
        model.compile(keras.optimizers.SGD(LR), loss)
        timing = compare({"keras": lambda: model.train_on_batch(x, y), "litert": lambda: device.train(x, y)},
                         warmup=3, repeats=repeats)
        keras_ms, litert_ms = (1e3 * timing[k]["median_s"] for k in ("keras", "litert"))
        bench.add_row({"model": name, "metric": "train step ms", "baseline": keras_ms, "litert": litert_ms,
                       "ratio": litert_ms / keras_ms})
        bench.add_row({"model": name, "metric": "tflite KB (baseline: inference only)",
                       "baseline": len(inference) / 1024, "litert": len(trainable) / 1024,
                       "ratio": len(trainable) / len(inference)})


def _simulation_rows(bench: Benchmark, smoke: bool, rounds: int, repeats: int):
    import keras

    from tfx_ext.apps.federated_experiments import digits_cnn
    from tfx_ext.data import load_digits
    from tfx_ext.federated import ClientData, simulate

    (x, y), (x_test, y_test) = load_digits(seed=SEED)
    clients = ClientData.dirichlet(x, y, 6 if smoke else 20, alpha=0.5, seed=SEED).whole_batches(BATCH)
    runs, speeds = {}, {"keras": [], "litert": []}
    for rep in range(repeats):  # alternating order, so drift in machine load hits both runtimes alike
        for runtime in ("keras", "litert") if rep % 2 == 0 else ("litert", "keras"):
            history, model = simulate(lambda: digits_cnn(10, seed=SEED), clients, rounds=rounds,
                                      clients_per_round=3 if smoke else 5, local_epochs=1, batch_size=BATCH,
                                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                      client_optimizer=keras.optimizers.SGD(LR), eval_data=(x_test, y_test),
                                      seed=SEED, progress=False, client_runtime=runtime)
            steady = history["client_updates_per_s"][1:] or history["client_updates_per_s"]
            speeds[runtime].append(float(np.mean(steady)))
            runs[runtime] = (history.last("eval_accuracy"), model.get_weights())  # the same every repeat
    k_ups, l_ups = (float(np.median(speeds[k])) for k in ("keras", "litert"))
    (k_acc, k_w), (l_acc, l_w) = runs["keras"], runs["litert"]
    gap = max(float(np.max(np.abs(a - b))) for a, b in zip(k_w, l_w))
    bench.add_row({"model": "digits_cnn", "metric": f"client updates/s (FedAvg, median of {repeats})",
                   "baseline": k_ups, "litert": l_ups, "ratio": l_ups / k_ups,
                   "samples": {k: [round(v, 1) for v in speeds[k]] for k in speeds}})
    bench.add_row({"model": "digits_cnn", "metric": f"eval accuracy after {rounds} rounds", "baseline": k_acc,
                   "litert": l_acc, "ratio": l_acc / k_acc if k_acc else None})
    bench.add_row({"model": "digits_cnn", "metric": "max |global weight gap|", "litert": gap})
    return k_acc, l_acc, gap


def run(*, smoke: bool = False, rounds: int | None = None, name: str = "ondevice", results_dir=None) -> dict:
    rounds = rounds or (2 if smoke else 10)
    bench = Benchmark(name, config={"seed": SEED, "batch_size": BATCH, "learning_rate": LR, "rounds": rounds,
                                    "smoke": smoke}, **({} if results_dir is None else {"results_dir": results_dir}))
    _step_and_size_rows(bench, smoke)
    k_acc, l_acc, gap = _simulation_rows(bench, smoke, rounds, 1 if smoke else 3)
    steps = [r["ratio"] for r in bench.rows if r["metric"] == "train step ms"]
    bench.note(f"LiteRT train step / Keras train_on_batch: {min(steps):.2f}x to {max(steps):.2f}x the time.")
    same = abs(k_acc - l_acc) <= 0.01
    bench.note(f"accuracy after {rounds} rounds: Keras clients {k_acc:.4f}, LiteRT clients {l_acc:.4f} "
               f"({'equal within noise' if same else 'NOT equal'}; max global weight gap {gap:.1e}).")
    bench.note("Layers whose training runs on builtin LiteRT ops (tests/export/test_trainable.py): Dense, Conv1D, "
               "Conv2D (strides or dilations), DepthwiseConv2D, BatchNormalization (training or frozen), GRU "
               "(unrolled), ReLU/ReLU6/LeakyReLU, non-overlapping pooling, Flatten/Reshape, softmax "
               "cross-entropy; SGD, momentum/Nesterov and Adam. Overlapping max pooling needs Flex (MaxPoolGrad): "
               "train the layers after it only.")
    return bench.finish(columns=["model", "metric", "baseline", "litert", "ratio"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models and 2 rounds (seconds)")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    return run(smoke=args.smoke, rounds=args.rounds, name="ondevice_smoke" if args.smoke else "ondevice")


if __name__ == "__main__":
    main()
