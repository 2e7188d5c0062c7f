"""Streaming vs non-streaming inference cost of the reference KWS models (issue 3).

    python -m bench.streaming                     # DS-CNN, CRNN, GRU at full size; writes bench/results/streaming.json
    python -m bench.streaming --smoke             # seconds: tiny models, few repeats (what tests/bench runs)
    python -m bench.streaming --model_dir=DIR     # use trained DIR/<model>.keras instead of seeded random weights

Per model, side by side in one process (timings interleaved round-robin by `bench.harness.compare`):
  - LiteRT float latency of one non-streaming inference over the 1 s window (49 frames) and of one streaming step
    (one 20 ms frame, or the model's time stride), internal and external state, same weights; the ratio
    non-streaming / streaming step is the speed-up the issue targets (>= 15x DS-CNN, >= 20x CRNN);
  - Keras step time of the internal-state streaming model, eager vs inside `tf.function`;
  - memory: .tflite sizes, state bytes per stream, and the RSS growth of loading + running each interpreter.
Latency does not depend on the weight values; the weights are shared by construction (`to_streaming` copies them).
"""

from __future__ import annotations

import argparse
import gc
import pathlib

import numpy as np

from bench.harness import RESULTS_DIR, Benchmark, compare, time_callable

FULL_MODELS = ("ds_cnn", "crnn", "gru")
TARGETS = {"ds_cnn": 15.0, "crnn": 20.0}


def _rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; 0 elsewhere)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _lite(model, batch_size=1):
    from tfx_ext.lite import TFLiteModel, to_tflite

    before = _rss_mb()
    runner = TFLiteModel(to_tflite(model, batch_size=batch_size), num_threads=1)
    return runner, before


def bench_model(name: str, *, model=None, model_kwargs=None, repeats: int = 50, warmup: int = 5, seed: int = 0):
    import keras
    import tensorflow as tf

    from tfx_ext.models import get_model
    from tfx_ext.streaming.contract import Mode
    from tfx_ext.streaming.convert import min_frames_per_step, to_non_streaming, to_streaming

    keras.utils.set_random_seed(seed)
    if model is None:
        model = get_model(name, (49, 40), 12, **(model_kwargs or {}))
    frames, bins = model.inputs[0].shape[1:]
    step = min_frames_per_step(model)
    rng = np.random.default_rng(seed)
    window = rng.normal(size=(1, frames, bins)).astype("float32")
    chunk = window[:, :step]

    full = to_non_streaming(model, batch_size=1)
    internal = to_streaming(model, Mode.STREAM_INTERNAL_STATE, batch_size=1, frames_per_step=step)
    external = to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=1, frames_per_step=step)

    lite_full, rss0 = _lite(full)
    lite_full({"features": window})
    rss_full = _rss_mb() - rss0
    lite_int, rss0 = _lite(internal.model)
    lite_int({"features": chunk})
    rss_int = _rss_mb() - rss0
    lite_ext, rss0 = _lite(external.model)
    states = {n: np.zeros(lite_ext.input_details[n]["shape"], "float32") for n in external.state_names}
    lite_ext({"features": chunk, **states})
    rss_ext = _rss_mb() - rss0

    # Bare invocations on both sides, inputs bound once (`TFLiteModel.invoker`); the external-state step also copies
    # each state output into its input in place (`TFLiteModel.stepper`), as an app feeding states back does.
    timings = compare(
        {
            "non_stream": lite_full.invoker({"features": window}),
            "stream_internal": lite_int.invoker({"features": chunk}),
            "stream_external": lite_ext.stepper({"features": chunk, **states}),
        },
        warmup=warmup,
        repeats=repeats,
        baseline="non_stream",
    )
    eager = time_callable(lambda: internal.model(chunk, training=False), warmup=warmup,
                          repeats=max(repeats // 2, 3))
    compiled_fn = tf.function(lambda x: internal.model(x, training=False))
    compiled = time_callable(lambda: compiled_fn(chunk), warmup=warmup, repeats=repeats)
    state_bytes = sum(int(np.prod(lite_ext.input_details[n]["shape"])) * 4 for n in external.state_names)
    full_ms = timings["non_stream"]["median_s"] * 1e3
    row = {
        "model": name,
        "params": int(model.count_params()),
        "frames_per_step": step,
        "non_stream_ms": full_ms,
        "stream_int_ms": timings["stream_internal"]["median_s"] * 1e3,
        "stream_ext_ms": timings["stream_external"]["median_s"] * 1e3,
        "speedup_int": timings["stream_internal"]["speedup_vs_non_stream"],
        "speedup_ext": timings["stream_external"]["speedup_vs_non_stream"],
        "target": TARGETS.get(name),
        "keras_eager_ms": eager["median_s"] * 1e3,
        "keras_compiled_ms": compiled["median_s"] * 1e3,
        "eager_vs_compiled": eager["median_s"] / compiled["median_s"],
        "tflite_kb_full": lite_full.size_bytes / 1024,
        "tflite_kb_stream": lite_int.size_bytes / 1024,
        "state_kb": state_bytes / 1024,
        "rss_mb_full": rss_full,
        "rss_mb_int": rss_int,
        "rss_mb_ext": rss_ext,
    }
    del lite_full, lite_int, lite_ext
    gc.collect()
    return row


def run(models=FULL_MODELS, *, model_kwargs=None, model_dir=None, repeats: int = 50, warmup: int = 5, seed: int = 0,
        name: str = "streaming", results_dir=RESULTS_DIR) -> dict:
    """Benchmarks each model; returns the JSON document (rows, config, environment, notes)."""
    import keras

    config = {"models": list(models), "model_kwargs": model_kwargs, "model_dir": model_dir, "repeats": repeats,
              "warmup": warmup, "seed": seed, "window_frames": 49, "hop_ms": 20, "tflite_threads": 1}
    bench = Benchmark(name, config=config, results_dir=results_dir)
    for model_name in models:
        model = None
        if model_dir is not None:
            model = keras.saving.load_model(pathlib.Path(model_dir) / f"{model_name}.keras")
        kwargs = (model_kwargs or {}).get(model_name) if model_kwargs else None
        bench.add_row(bench_model(model_name, model=model, model_kwargs=kwargs, repeats=repeats, warmup=warmup,
                                  seed=seed))
    for row in bench.rows:
        if row["target"] is not None and row["speedup_int"] < row["target"]:
            bench.note(f"{row['model']}: streaming step speed-up {row['speedup_int']:.1f}x is below the "
                       f"{row['target']:.0f}x target on this machine.")
    bench.note(f"peak process RSS {_rss_mb():.0f} MiB (rss_mb_* = growth while loading and running that interpreter)")
    return bench.finish(columns=["model", "params", "frames_per_step", "non_stream_ms", "stream_int_ms",
                                 "stream_ext_ms", "speedup_int", "speedup_ext", "target", "keras_eager_ms",
                                 "keras_compiled_ms", "eager_vs_compiled", "tflite_kb_full", "tflite_kb_stream",
                                 "state_kb", "rss_mb_full", "rss_mb_int", "rss_mb_ext"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models, few repeats (seconds)")
    parser.add_argument("--models", default=",".join(FULL_MODELS), help="comma-separated reference models")
    parser.add_argument("--model_dir", default=None, help="directory of trained <model>.keras files")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="streaming", help="results file name (bench/results/<name>.json)")
    args = parser.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    if args.smoke:
        from tfx_ext.models import TINY_KWARGS

        return run(models, model_kwargs=TINY_KWARGS, repeats=3, warmup=1, seed=args.seed, name="streaming_smoke")
    return run(models, model_dir=args.model_dir, repeats=args.repeats, seed=args.seed, name=args.name)


if __name__ == "__main__":
    main()
