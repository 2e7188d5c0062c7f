"""TFLite export variants side by side (issue 4): float vs dynamic vs int8 (PTQ) vs int8 (QAT).

    python -m bench.export                 # DS-CNN and CRNN at full size on synthetic keywords; bench/results/export.json
    python -m bench.export --smoke         # seconds: tiny models, (12, 10) features, few steps (tests/bench runs it)

Per reference model and form (non-streaming over the whole window; streaming one frame per step with internal
state), in one process: file size and its ratio to float, top-1 accuracy on a held-out synthetic split and its loss
vs the float Keras model (points), median per-invoke LiteRT latency (1 thread, timings interleaved round-robin) and
its ratio to float. The data are the separable synthetic features of tests/export (class c lifts bins [2c, 2c+3)),
so accuracies are high for every variant: the accuracy columns check the export, not the model.
QAT exports get the representative data too (their learned ranges win where they exist; GRU internals and
streaming states are calibrated). A variant that cannot be exported (CRNN non-streaming int8: its GRU is a WHILE
loop) gets an `error` and no numbers.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.harness import RESULTS_DIR, Benchmark, compare

MODELS = ("ds_cnn", "crnn")
FULL = {"ds_cnn": {}, "crnn": {"width": 16, "units": 64, "dense": 32}}
SMOKE = {"ds_cnn": {"width": 8, "num_blocks": 1}, "crnn": {"width": 3, "units": 6, "dense": 5}}
VARIANTS = ("float", "dynamic", "int8_ptq", "int8_qat")


def synthetic(n: int, frames: int, bins: int, classes: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, frames, bins)).astype("float32")
    width = max(bins // (classes + 1), 1)
    for i, c in enumerate(y):
        x[i, :, width * c:width * c + width + 1] += 2.0
    return x, y


def _export(target, variant: str, calibration):
    from tfx_ext.export import to_tflite

    model = getattr(target, "model", target)
    if variant in ("float", "dynamic"):
        return to_tflite(model, quantize=None if variant == "float" else "dynamic")
    return to_tflite(model, quantize="int8", representative_data=calibration)


def bench_model(name, kwargs, *, shape, classes, train, test, epochs, qat_epochs, repeats, warmup, seed,
                learning_rate=3e-3):
    import keras

    from tfx_ext.errors import ExportError
    from tfx_ext.export import TFLiteModel
    from tfx_ext.models import get_model
    from tfx_ext.quantization import quantize_aware
    from tfx_ext.quantize_export import streaming_calibration_data
    from tfx_ext.streaming import to_streaming
    from tfx_ext.verify import verify

    keras.utils.set_random_seed(seed)
    model = get_model(name, shape, classes, **kwargs)
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
    model.fit(*train, epochs=epochs, batch_size=32, verbose=0)
    qat = quantize_aware(model)
    qat.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    qat.fit(*train, epochs=qat_epochs, batch_size=32, verbose=0)
    float_accuracy = float(np.mean(model.predict(test[0], verbose=0).argmax(-1) == test[1]))
    x_cal = train[0][:32]
    rows = []
    for form in ("non_stream", "stream_internal_state"):
        if form == "non_stream":
            sources = {"float": model, "qat": qat}
            calibration = [{"features": x_cal[i:i + 1]} for i in range(len(x_cal))]
        else:
            sources = {"float": to_streaming(model, form, 1, 1), "qat": to_streaming(qat, form, 1, 1)}
            calibration = streaming_calibration_data(sources["float"], x_cal[:8])
        # QAT ranges cover convs/dense/activations; recurrent internals and states still need calibration
        qat_calibration = calibration if form == "non_stream" else streaming_calibration_data(sources["qat"],
                                                                                             x_cal[:8])
        runners, results = {}, {}
        for variant in VARIANTS:
            source = sources["qat" if variant == "int8_qat" else "float"]
            try:
                runners[variant] = TFLiteModel(
                    _export(source, variant, qat_calibration if variant == "int8_qat" else calibration),
                    num_threads=1)
            except ExportError as error:
                results[variant] = {"error": str(error).split(":")[1].strip()[:60]}
                continue
            check = verify(model, runners[variant], test)
            results[variant] = {"size_kb": check.size_bytes / 1024, "accuracy": check.accuracy_tflite,
                                "acc_loss_pt": 100 * (float_accuracy - check.accuracy_tflite),
                                "agreement": check.agreement}
        step = test[0][:1, :shape[0] if form == "non_stream" else 1]
        timings = compare({v: (lambda r=r: r({"features": step})) for v, r in runners.items()},
                          warmup=warmup, repeats=repeats, baseline="float")
        for variant in VARIANTS:
            row = {"model": name, "params": model.count_params(), "form": form, "variant": variant,
                   **results[variant]}
            if variant in timings:
                row["latency_ms"] = 1000 * timings[variant]["median_s"]
                row["latency_ratio"] = timings[variant]["median_s"] / timings["float"]["median_s"]
                row["size_ratio"] = row["size_kb"] / results["float"]["size_kb"]
            rows.append(row)
    return rows


def run(models=MODELS, *, smoke: bool = False, seed: int = 0, name: str = "export", results_dir=RESULTS_DIR):
    shape, classes = ((12, 10), 4) if smoke else ((49, 40), 12)
    config = {"models": list(models), "smoke": smoke, "seed": seed, "input_shape": list(shape),
              "classes": classes, "model_kwargs": SMOKE if smoke else FULL,
              "epochs": 6 if smoke else 4, "qat_epochs": 1, "learning_rate": 1e-2 if smoke else 3e-3, "train": 256 if smoke else 1024,
              "test": 64 if smoke else 256}
    train = synthetic(config["train"], *shape, classes, seed)
    test = synthetic(config["test"], *shape, classes, seed + 1)
    bench = Benchmark(name, config=config, results_dir=results_dir)
    for model_name in models:
        for row in bench_model(model_name, config["model_kwargs"][model_name], shape=shape, classes=classes,
                               train=train, test=test, epochs=config["epochs"], qat_epochs=config["qat_epochs"],
                               repeats=5 if smoke else 50, warmup=1 if smoke else 5, seed=seed,
                               learning_rate=config["learning_rate"]):
            bench.add_row(row)
    return bench.finish(columns=["model", "params", "form", "variant", "size_kb", "size_ratio", "accuracy",
                                 "acc_loss_pt", "agreement", "latency_ms", "latency_ratio", "error"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models and data, seconds")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated reference models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run(tuple(m for m in args.models.split(",") if m), smoke=args.smoke, seed=args.seed,
               name="export_smoke" if args.smoke else "export")


if __name__ == "__main__":
    main()
