"""Streaming vs non-streaming inference cost of the reference KWS models (issue 3).

    python -m bench.streaming                     # DS-CNN, CRNN, GRU at full size; writes bench/results/streaming.json
    python -m bench.streaming --smoke             # seconds: tiny models, few repeats (what tests/bench runs)
    python -m bench.streaming --model_dir=DIR     # use trained DIR/<model>.keras instead of seeded random weights
    python -m bench.streaming --raw_audio         # DS-CNN with LogMelFrontend inside vs features outside, float + int8

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


# ----- raw audio in the model vs features outside (issue 22) ---------------------------------------------------------
def _clips(count: int, samples: int, seed: int) -> np.ndarray:
    """Synthesized words over a -50 dBFS noise floor (the calibration and error data of the raw-audio rows)."""
    from tfx_ext.apps.synthesis import _numpy_word, _place
    from tfx_ext.data import COMMAND_WORDS

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        word = _numpy_word(COMMAND_WORDS[i % len(COMMAND_WORDS)], {"speed": 1.0, "shift": 1.0, "f0": 120.0}, rng)
        clip = _place(word, rng, 0.0)[:samples] + 0.003 * rng.standard_normal(samples)
        out.append(clip.astype("float32"))
    return np.stack(out)


def _raw_audio_row(label: str, runner, data: np.ndarray, quantize: str | None, calibration, reference,
                   repeats: int, warmup: int) -> dict:
    """One streaming export of `runner` (external state): bare LiteRT step time, file size, error vs `reference`."""
    from tfx_ext.lite import TFLiteModel, to_tflite
    from tfx_ext.lite.int8 import non_integer_ops
    from tfx_ext.lite.runtime import quantize_input

    flatbuffer = to_tflite(runner, quantize=quantize, representative_data=calibration, allow_float_ops=True)
    lite = TFLiteModel(flatbuffer, num_threads=1)
    name = runner.input_names[0]
    feed = {n: quantize_input(np.zeros(lite.input_details[n]["shape"], "float32"), lite.input_details[n])
            for n in lite.input_names}
    feed[name] = quantize_input(data[:1, :runner.frames_per_step], lite.input_details[name])
    run = lite.runner

    def step():
        out = run(**feed)
        for n in runner.state_names:
            feed[n] = out[n]

    timing = time_callable(step, warmup=warmup, repeats=repeats)
    streamed = [lite.run_stream(x[None])[runner.output_names[0]][0] for x in data]
    if reference.ndim == 3:  # features (the front end alone): streamed frame j + lag is whole-clip frame j
        lag = runner.output_delays[runner.output_names[0]] // runner.frames_per_step
        streamed = np.stack([s.reshape(-1, reference.shape[-1])[lag:lag + reference.shape[1]] for s in streamed])
    else:  # posteriors: the last step, after the whole clip
        streamed = np.stack([s[-1].reshape(-1) for s in streamed])
    error = np.abs(streamed - reference)
    return {"model": label, "quantize": quantize or "float", "stream_ext_ms": timing["median_s"] * 1e3,
            "tflite_kb": len(flatbuffer) / 1024, "max_abs_err": float(error.max()), "mean_abs_err": float(error.mean()),
            "agreement": float(np.mean(streamed.argmax(-1) == reference.argmax(-1))) if reference.ndim == 2 else None,
            "float_ops": ",".join(sorted(set(non_integer_ops(flatbuffer)))) if quantize == "int8" else ""}


def run_raw_audio(*, model_kwargs=None, model_dir=None, clips: int = 8, repeats: int = 50, warmup: int = 5,
                  seed: int = 0, name: str = "streaming_raw_audio", results_dir=RESULTS_DIR) -> dict:
    """DS-CNN on raw audio (`with_frontend`: LogMelFrontend inside, the same weights) vs the same DS-CNN on
    features computed outside: per-step LiteRT latency (one 20 ms hop: 320 samples vs one 40-bin frame), file
    size, float, dynamic and int8, and the error of each export against the float Keras model on whole clips
    (a trained `model_dir/ds_cnn.keras` makes the top-1 agreement meaningful; seeded random weights give
    near-uniform posteriors)."""
    import keras
    import tensorflow as tf

    from tfx_ext.data import FeatureConfig, compute_features
    from tfx_ext.layers import LogMelFrontend
    from tfx_ext.lite.int8 import streaming_calibration_data
    from tfx_ext.models import get_model, with_frontend
    from tfx_ext.streaming.contract import Mode
    from tfx_ext.streaming.convert import to_streaming

    keras.utils.set_random_seed(seed)
    config = FeatureConfig()
    if model_dir is not None:
        features_model = keras.saving.load_model(pathlib.Path(model_dir) / "ds_cnn.keras")
    else:
        features_model = get_model("ds_cnn", (49, 40), 12, **(model_kwargs or {}))
    raw_model = with_frontend(features_model, config, 16000)  # the same weights behind the front end
    audio = _clips(clips, 16000, seed)
    features = compute_features(audio, config).numpy()
    reference = features_model.predict(features, verbose=0)  # the trained-model oracle, on whole clips
    bench = Benchmark(name, config={"model": "ds_cnn", "model_kwargs": model_kwargs, "model_dir": model_dir,
                                    "clips": clips,
                                    "repeats": repeats, "warmup": warmup, "seed": seed, "hop_samples": 320,
                                    "tflite_threads": 1})
    samples = keras.Input((16000,), name="audio")
    front_only = keras.Model(samples, LogMelFrontend(config, name="frontend")(samples))
    front_rfft = keras.Model(samples, LogMelFrontend(config, dft="rfft", name="frontend")(samples))
    for label, model, data, step, want, modes in (
            ("ds_cnn features outside", features_model, features, 1, reference, (None, "int8")),
            ("ds_cnn raw audio", raw_model, audio, config.hop_samples, reference, (None, "dynamic", "int8")),
            ("LogMelFrontend alone", front_only, audio, config.hop_samples, features, (None, "dynamic", "int8")),
            ("LogMelFrontend alone, rfft", front_rfft, audio, config.hop_samples, features, (None,))):
        runner = to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=1, frames_per_step=step)
        calibration = streaming_calibration_data(runner, data) if "int8" in modes else None
        for quantize in modes:
            bench.add_row(_raw_audio_row(label, runner, data, quantize, calibration if quantize == "int8" else None,
                                         want, repeats, warmup))
    one_frame = tf.function(lambda x: compute_features(x, config))
    frame_audio = tf.constant(audio[:1, :config.window_samples])
    outside = time_callable(lambda: one_frame(frame_audio), warmup=warmup, repeats=repeats)["median_s"] * 1e3
    bench.note(f"features outside: compute_features of one frame (tf.function, tf.signal) takes {outside:.3f} ms "
               "per step on top of the model step; the raw-audio step includes its front end")
    bench.note("max_abs_err / mean_abs_err: posteriors after the whole clip vs the float Keras features model on "
               "compute_features (agreement: top-1); for the front end alone, log-mel frames vs compute_features")
    return bench.finish(columns=["model", "quantize", "stream_ext_ms", "tflite_kb", "max_abs_err", "mean_abs_err",
                                 "agreement", "float_ops"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models, few repeats (seconds)")
    parser.add_argument("--models", default=",".join(FULL_MODELS), help="comma-separated reference models")
    parser.add_argument("--model_dir", default=None, help="directory of trained <model>.keras files")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="streaming", help="results file name (bench/results/<name>.json)")
    parser.add_argument("--raw_audio", action="store_true",
                        help="DS-CNN on raw audio vs features outside (bench/results/streaming_raw_audio.json)")
    args = parser.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    if args.smoke:
        from tfx_ext.models import TINY_KWARGS

        if args.raw_audio:
            return run_raw_audio(model_kwargs=TINY_KWARGS["ds_cnn"], clips=2, repeats=3, warmup=1, seed=args.seed,
                                 name="streaming_raw_audio_smoke")
        return run(models, model_kwargs=TINY_KWARGS, repeats=3, warmup=1, seed=args.seed, name="streaming_smoke")
    if args.raw_audio:
        return run_raw_audio(model_dir=args.model_dir, repeats=args.repeats, seed=args.seed)
    return run(models, model_dir=args.model_dir, repeats=args.repeats, seed=args.seed, name=args.name)


if __name__ == "__main__":
    main()
