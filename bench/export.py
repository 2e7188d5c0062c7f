"""TFLite export variants side by side (issue 4): float vs dynamic vs int8 (PTQ) vs int8 (QAT).

    python -m bench.export                 # the 4 reference models at full size on synthesized keywords (~8 min)
    python -m bench.export --models=ds_cnn # one model
    python -m bench.export --smoke         # seconds: tiny DS-CNN on separable noise features (tests/bench runs it)

Data (full run): spoken keywords synthesized by `tfx_ext.apps.synthesis.synthesize_keywords` (espeak-ng when installed, else
its numpy voices) into bench/.cache, log-mel features (49, 40), 12 labels, split by speaker (a quarter of the
speakers for the test split, ~500 clips). Each model trains from scratch (Adam, `--epochs`), then its QAT copy
(`quantize_aware`) fine-tunes `--qat_epochs` more epochs at a lower learning rate.

Per model and form (non-streaming over the whole window; streaming with internal state, `min_frames_per_step`
frames per step), in one process: file size and its ratio to float, top-1 test accuracy and its loss vs the float
Keras model (points), the accuracy of the Keras model it was exported from (the QAT model for `int8_qat`) and the
top-1 agreement with that model, and the median latency of one bare LiteRT
invocation (`TFLiteModel.invoker`: inputs bound once, 1 thread, variants timed round-robin) and its ratio to float.
PTQ calibrates on training clips (streamed for the streaming form, so states are realistic); QAT exports get the
same representative data (their learned ranges win where they exist; recurrent internals and states are
calibrated). The smoke run's data are separable by construction, so its accuracy columns only check the plumbing.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

from bench.harness import RESULTS_DIR, Benchmark, compare

MODELS = ("ds_cnn", "tc_resnet", "crnn", "gru")
SMOKE_KWARGS = {"ds_cnn": {"width": 8, "num_blocks": 1}, "tc_resnet": {"channels": (4, 6, 8), "kernel_size": 3},
                "crnn": {"width": 3, "units": 6, "dense": 5}, "gru": {"units": 6, "num_layers": 2, "dense": 5}}
VARIANTS = ("float", "dynamic", "int8_ptq", "int8_qat")
FORMS = ("non_stream", "stream_internal_state")
CACHE = pathlib.Path(__file__).resolve().parent / ".cache"


def separable(n: int, frames: int, bins: int, classes: int, seed: int):
    """Noise features where class c lifts a band of bins (the smoke run's data)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, frames, bins)).astype("float32")
    width = max(bins // (classes + 1), 1)
    for i, c in enumerate(y):
        x[i, :, width * c:width * c + width + 1] += 2.0
    return x, y


def keywords(speakers: int, seed: int, cache=CACHE):
    """Synthesized keyword clips as log-mel arrays: (x_train, y_train), (x_test, y_test)."""
    from tfx_ext.apps.synthesis import synthesize_keywords
    from tfx_ext.data.speech_commands import load_speech_commands_arrays

    root = pathlib.Path(cache) / f"export_keywords_{speakers}x3_seed{seed}"
    synthesize_keywords(root, speakers=speakers, clips_per_speaker=3, seed=seed, test_fraction=0.25)
    train = load_speech_commands_arrays(root, "training", seed=seed)[:2]
    test = load_speech_commands_arrays(root, "testing", seed=seed)[:2]
    return tuple(np.asarray(a) for a in train), tuple(np.asarray(a) for a in test)


def _export(model, variant: str, calibration):
    from tfx_ext.lite.convert import to_tflite

    if variant in ("float", "dynamic"):
        return to_tflite(model, quantize=None if variant == "float" else "dynamic")
    return to_tflite(model, quantize="int8", representative_data=calibration)


def _calibration(source, form: str, x_cal):
    from tfx_ext.lite.int8 import streaming_calibration_data

    if form == "non_stream":
        return [{"features": x_cal[i:i + 1]} for i in range(len(x_cal))]
    return streaming_calibration_data(source, x_cal[:8])  # every step of 8 clips, from a fresh stream each


def train_pair(name, kwargs, *, train, epochs, qat_epochs, seed, learning_rate):
    """The float model trained from scratch and its quantize-aware copy fine-tuned from it."""
    import keras

    from tfx_ext.models import get_model
    from tfx_ext.transforms.qat import quantize_aware

    keras.utils.set_random_seed(seed)
    classes = int(train[1].max()) + 1
    model = get_model(name, train[0].shape[1:], classes, **kwargs)
    steps = epochs * -(-len(train[0]) // 32)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps)),
                  "sparse_categorical_crossentropy")
    model.fit(*train, epochs=epochs, batch_size=32, verbose=0)
    qat = quantize_aware(model)
    qat.compile(keras.optimizers.Adam(learning_rate / 10), "sparse_categorical_crossentropy")
    qat.fit(*train, epochs=qat_epochs, batch_size=32, verbose=0)
    return model, qat


def bench_model(name, kwargs, *, train, test, epochs, qat_epochs, repeats, warmup, seed, learning_rate):
    from tfx_ext.errors import ExportError
    from tfx_ext.lite.runtime import TFLiteModel
    from tfx_ext.models import get_model
    from tfx_ext.streaming.convert import min_frames_per_step, to_streaming
    from tfx_ext.lite.verification import verify

    frames_per_step = min_frames_per_step(get_model(name, train[0].shape[1:], 2, **kwargs))
    frames = train[0].shape[1] - train[0].shape[1] % frames_per_step  # TC-ResNet streams 8 frames: 48 of 49
    train, test = (train[0][:, :frames], train[1]), (test[0][:, :frames], test[1])
    started = time.perf_counter()
    model, qat = train_pair(name, kwargs, train=train, epochs=epochs, qat_epochs=qat_epochs, seed=seed,
                            learning_rate=learning_rate)
    print(f"{name}: trained float + QAT in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    float_accuracy = float(np.mean(model.predict(test[0], verbose=0).argmax(-1) == test[1]))
    x_cal = train[0][:32]
    rows = []
    for form in FORMS:
        if form == "non_stream":
            sources = {"float": model, "qat": qat}
        else:
            sources = {k: to_streaming(m, form, 1, frames_per_step) for k, m in (("float", model), ("qat", qat))}
        calibrations = {kind: _calibration(source, form, x_cal) for kind, source in sources.items()}
        runners, results = {}, {}
        for variant in VARIANTS:
            kind = "qat" if variant == "int8_qat" else "float"
            source = sources[kind]
            try:
                keras_model = source if form == "non_stream" else source.model
                runners[variant] = TFLiteModel(_export(keras_model, variant, calibrations[kind]), num_threads=1)
            except ExportError as error:
                results[variant] = {"error": str(error)[:120]}
                continue
            check = verify(qat if variant == "int8_qat" else model, runners[variant], test)  # vs its own Keras model
            print(f"{name} {form} {variant}: accuracy {check.accuracy_tflite:.3f} (Keras {check.accuracy_model:.3f},"
                  f" float {float_accuracy:.3f}), {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
            results[variant] = {"size_kb": check.size_bytes / 1024, "accuracy": check.accuracy_tflite,
                                "keras_accuracy": check.accuracy_model,
                                "acc_loss_pt": 100 * (float_accuracy - check.accuracy_tflite),
                                "agreement": check.agreement}
        step = test[0][:1, :test[0].shape[1] if form == "non_stream" else frames_per_step]
        timings = compare({v: r.invoker({"features": step}) for v, r in runners.items()},
                          warmup=warmup, repeats=repeats, baseline="float")
        for variant in VARIANTS:
            row = {"model": name, "params": model.count_params(), "form": form, "variant": variant,
                   "float_accuracy": float_accuracy, **results[variant]}
            if variant in timings and "float" in timings:
                row["latency_ms"] = 1000 * timings[variant]["median_s"]
                row["latency_ratio"] = timings[variant]["median_s"] / timings["float"]["median_s"]
                row["size_ratio"] = row["size_kb"] / results["float"]["size_kb"]
            rows.append(row)
    return rows


def run(models=MODELS, *, smoke: bool = False, seed: int = 0, epochs: int = 12, qat_epochs: int = 3,
        speakers: int = 48, name: str = "export", results_dir=RESULTS_DIR, cache=CACHE):
    config = {"models": list(models), "smoke": smoke, "seed": seed, "epochs": 6 if smoke else epochs,
              "qat_epochs": 1 if smoke else qat_epochs, "learning_rate": 1e-2 if smoke else 3e-3,
              "model_kwargs": {m: SMOKE_KWARGS[m] for m in models} if smoke else {m: {} for m in models}}
    if smoke:
        train, test = separable(256, 12, 10, 4, seed), separable(64, 12, 10, 4, seed + 1)
        config["data"] = "separable noise features (12, 10), 4 classes, 256 train / 64 test"
    else:
        train, test = keywords(speakers, seed, cache)
        config["data"] = (f"synthesized keywords, {speakers} speakers x 3 clips per word, log-mel (49, 40), "
                          f"12 labels, {len(train[0])} train / {len(test[0])} test clips")
    bench = Benchmark(name, config=config, results_dir=results_dir)
    for model_name in models:
        for row in bench_model(model_name, config["model_kwargs"][model_name], train=train, test=test,
                               epochs=config["epochs"], qat_epochs=config["qat_epochs"],
                               repeats=5 if smoke else 200, warmup=1 if smoke else 20, seed=seed,
                               learning_rate=config["learning_rate"]):
            bench.add_row(row)
    return bench.finish(columns=["model", "params", "form", "variant", "size_kb", "size_ratio", "keras_accuracy",
                                 "accuracy", "acc_loss_pt", "agreement", "latency_ms", "latency_ratio", "error"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model and separable data, seconds")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated reference models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12, help="float training epochs")
    parser.add_argument("--qat_epochs", type=int, default=3, help="quantization-aware fine-tuning epochs")
    parser.add_argument("--speakers", type=int, default=48, help="synthetic speakers per word (3 clips each)")
    args = parser.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    return run(models if not args.smoke or args.models != ",".join(MODELS) else ("ds_cnn",), smoke=args.smoke,
               seed=args.seed, epochs=args.epochs, qat_epochs=args.qat_epochs, speakers=args.speakers,
               name="export_smoke" if args.smoke else "export")


if __name__ == "__main__":
    main()
