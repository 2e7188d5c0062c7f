"""Keyword spotting end to end: train a reference model, evaluate it (whole clips or streamed), stream posteriors
over a long recording, plot them. Used by `tfx-ext kws ...` and the demo.

    train(model_name, data_root, output_dir, ...)  -> (model, metrics)   saves <output_dir>/<model_name>.keras
    evaluate(model, data_root, ..., mode=None)     -> metrics            whole clips, or streamed clip by clip;
                                                   seen/unseen-voice, per-word accuracy, confusion matrix
    score(data_root, labels, predictions, ...)     -> metrics            the same breakdown for any predictions
    long_stream(data_root, ...)                    -> (waveform, segments)   clips concatenated into one recording
    stream_posteriors(model_or_runner, waveform_or_features, ...) -> (steps, classes) posteriors, frame by frame
                                                   (re-exported from the library: `tfx_ext.streaming.posteriors`)
    plot_posteriors(posteriors, label_names, path, ...)               PNG of posteriors over time
    convert(model_path, output, mode=..., ...)     -> paths            streaming .keras (+ float .tflite)
    export(model_path, output, quantize=..., ...)  -> report           .tflite (float/dynamic/float16/int8), verified
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfx_ext import _plotting
from tfx_ext._validate import check_number
from tfx_ext.data.augment import AugmentConfig
from tfx_ext.data.features import FeatureConfig, num_frames
from tfx_ext.models import get_model
from tfx_ext.streaming.contract import Mode
from tfx_ext.streaming.convert import min_frames_per_step, to_non_streaming, to_streaming
from tfx_ext.streaming.posteriors import stream_clips, stream_posteriors


def input_shape(features: FeatureConfig = FeatureConfig()) -> tuple[int, int]:
    """(frames, bins) of a 1 s clip under `features` (49 x 40 by default)."""
    return num_frames(features.sample_rate, features), features.num_features


def _datasets(data_root, batch_size, features, labels, seed, splits, shuffle=None):
    from tfx_ext.data.speech_commands import load_speech_commands

    return [
        load_speech_commands(data_root, split, labels=labels, batch_size=batch_size, features=features, seed=seed,
                             cache=True, shuffle=shuffle)
        for split in splits
    ]


def _train_dataset(data_root, batch_size, features, labels, seed, augment, unknown_keep: float = 1.0):
    """The training split with the recipe's augmentation: time shift and noise in the loader, then speed, reverb
    and gain on waveform batches, the front end, and SpecAugment on feature batches, all inside tf.data.

    `unknown_keep` < 1 keeps each `_unknown_` clip with that probability, drawn afresh every epoch (the TF recipe's
    unknown subsampling): the class-balanced loss weighs those clips little anyway, so this cuts the epoch's cost
    without losing any unknown word or speaker over the run."""
    from tfx_ext.data.augment import augment_features, augment_waveforms
    from tfx_ext.data.features import compute_features
    from tfx_ext.data.speech_commands import UNKNOWN_LABEL, label_names, load_speech_commands

    if augment is None and unknown_keep >= 1:
        (dataset,) = _datasets(data_root, batch_size, features, labels, seed, ("train",))
        return dataset
    ds = load_speech_commands(data_root, "train", labels=labels, batch_size=None, features=None, seed=seed,
                              cache=True, **(augment.loader_kwargs if augment is not None else {}))
    names = label_names(labels)
    if unknown_keep < 1 and UNKNOWN_LABEL in names:
        unknown = names.index(UNKNOWN_LABEL)
        randoms = tf.data.Dataset.random(seed=seed + 2, rerandomize_each_iteration=True)
        keep = tf.constant(int(unknown_keep * 2**31), tf.int64)
        ds = tf.data.Dataset.zip((ds, randoms)).filter(
            lambda element, random: (element[1] != unknown) | (random % 2**31 < keep)).map(lambda element, _: element)
        # A fixed number of batches per epoch (the expected one), so Keras knows the epoch's length.
        batches = int(np.ceil(_train_counts(data_root, labels, seed, unknown_keep).sum() / batch_size))
        ds = ds.repeat().batch(batch_size).take(batches)
    else:
        ds = ds.batch(batch_size)
    if augment is not None:
        ds = augment_waveforms(ds, augment, seed, features.sample_rate)
    ds = ds.map(lambda w, y: (compute_features(w, features), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        ds = augment_features(ds, augment, seed)
    return ds.prefetch(tf.data.AUTOTUNE)


def _train_counts(data_root, labels: str, seed: int, unknown_keep: float) -> np.ndarray:
    """Clips per class in one training epoch (on average: `_unknown_` counts `unknown_keep` of its clips)."""
    from tfx_ext.data.speech_commands import UNKNOWN_LABEL, label_names, list_examples

    names = label_names(labels)
    counts = np.bincount([e.label for e in list_examples(data_root, "train", labels, seed=seed)],
                         minlength=len(names)).astype(np.float64)
    if UNKNOWN_LABEL in names:
        counts[names.index(UNKNOWN_LABEL)] *= unknown_keep
    return counts


def class_weights(data_root, labels: str = "12", seed: int = 0, unknown_keep: float = 1.0) -> dict[int, float]:
    """`total / (classes * count)` per class of the training split, so each class weighs the same in the loss
    (with 25 unknown words, `_unknown_` would otherwise outnumber each keyword many times); `_unknown_` counts
    the `unknown_keep` of its clips one epoch keeps on average (see `_train_dataset`)."""
    counts = _train_counts(data_root, labels, seed, unknown_keep)
    present = counts > 0
    return {k: float(counts.sum() / (present.sum() * c)) if c else 0.0 for k, c in enumerate(counts)}


def train(
    model_name: str,
    data_root,
    output_dir,
    *,
    epochs: int = 30,
    batch_size: int = 64,
    features: FeatureConfig = FeatureConfig(),
    seed: int = 0,
    strategy=None,
    model_kwargs: dict | None = None,
    labels: str = "12",
    learning_rate: float = 6e-3,
    verbose: int = 0,
    augment: AugmentConfig | None = None,
    balance_classes: bool = True,
    unknown_keep: float = 1.0,
) -> tuple[keras.Model, dict]:
    """Trains a reference KWS model on a Speech Commands directory and saves it as `.keras`.

    Args:
        model_name: "ds_cnn", "crnn", "gru", "tc_resnet", "svdf", "attention" or "bc_resnet"
            (`tfx_ext.models.MODELS`).
        data_root: a directory in the Speech Commands layout (real or from `tfx_ext.apps.synthesis.synthesize_keywords`).
        output_dir: where `<model_name>.keras` and `<model_name>_metrics.json` go (created if needed).
        epochs: training epochs (Adam; the learning rate warms up linearly over the first 5% of the steps, then
            decays along a cosine). The recipe's 30 epochs at batch 64 and peak rate 6e-3: at the old 12 epochs,
            batch 32 and 3e-3 the DS-CNN under-fit (train accuracy 0.59-0.63, unseen voices 0.58; 30 epochs:
            0.89 and 0.89, 108 speakers, `bench/README.md`).
        batch_size: global batch size.
        features: the front end (`FeatureConfig`); fixes the input shape (frames, bins).
        seed: seeds Keras (weights, dropout) and the data pipeline.
        strategy: an optional `tf.distribute.Strategy`; the model is built and compiled in its scope.
        model_kwargs: size knobs of the model (e.g. `{"width": 32}`).
        labels: "12" or "35".
        learning_rate: peak learning rate (reached after the warm-up).
        verbose: Keras fit verbosity (2: one progress line per epoch).
        augment: the training augmentation (`tfx_ext.data.augment.AugmentConfig()` for the recipe); None (the
            default) for none: at the 12 epochs measured in `bench/kws.py` every augmentation lowered unseen-voice
            accuracy, so it stays off until a recipe that helps is measured.
        balance_classes: weight the loss by `class_weights` so every class counts the same.
        unknown_keep: fraction of the `_unknown_` training clips each epoch keeps, drawn afresh every epoch (1
            keeps all): with 25 unknown words, `_unknown_` is 70% of the clips but, class-balanced, weighs like one
            keyword, so 0.3 halves an epoch's cost; but it lowered unseen-voice accuracy (0.80-0.86 against 0.89,
            unknown words suffer most), so the default keeps all.

    Returns:
        `(model, metrics)`: the trained non-streaming model and a dict with `model_path`, `params`, `epochs`,
        `seconds`, `train_accuracy`, `val_accuracy`, `test_accuracy`, `test_seen_voice_accuracy`,
        `test_unseen_voice_accuracy` (None without such voices), `test_per_word`, `num_classes`, `input_shape`.
    """
    from tfx_ext.data.speech_commands import label_names

    keras.utils.set_random_seed(seed)
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    shape = input_shape(features)
    num_classes = len(label_names(labels))
    val_ds, test_ds = _datasets(data_root, batch_size, features, labels, seed, ("validation", "test"))
    check_number("unknown_keep", unknown_keep, low=0, high=1, low_open=True)
    train_ds = _train_dataset(data_root, batch_size, features, labels, seed, augment, unknown_keep)
    steps = max(int(train_ds.cardinality()), 1) * epochs
    weights = class_weights(data_root, labels, seed, unknown_keep) if balance_classes else None

    def build():
        model = get_model(model_name, shape, num_classes, **(model_kwargs or {}))
        warmup = steps // 20
        start = 0.1 * learning_rate if warmup else learning_rate
        schedule = keras.optimizers.schedules.CosineDecay(start, decay_steps=max(steps - warmup, 1), alpha=0.05,
                                                          warmup_target=learning_rate if warmup else None,
                                                          warmup_steps=warmup)
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    if strategy is not None:
        with strategy.scope():
            model = build()
    else:
        model = build()
    start = time.perf_counter()
    from tfx_ext.distribute import is_chief, is_multi_worker, remove_temp_dirpath, write_filepath
    from tfx_ext.distribute import evaluate as distributed_evaluate
    from tfx_ext.distribute import fit as distributed_fit

    path = output_dir / f"{model_name}.keras"
    if strategy is not None and is_multi_worker(strategy):
        # Keras 3's model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585): use our loop.
        history = distributed_fit(model, train_ds, epochs=epochs, strategy=strategy, validation_data=val_ds,
                                  verbose=verbose)  # Its loop takes no class weights.
        seconds = time.perf_counter() - start
        test = distributed_evaluate(model, test_ds, strategy=strategy)
    else:
        # The data set shuffles itself (seeded); Keras would only warn that shuffle=True is ignored.
        history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose, shuffle=False,
                            class_weight=weights)
        seconds = time.perf_counter() - start
        test = model.evaluate(test_ds, verbose=0, return_dict=True)
    target = write_filepath(str(path), strategy) if strategy is not None else str(path)
    model.save(target)
    if strategy is not None and not is_chief(strategy):
        remove_temp_dirpath(str(pathlib.Path(target).parent), strategy)
    metrics = {
        "model": model_name,
        "model_path": str(path),
        "params": int(model.count_params()),
        "epochs": epochs,
        "augment": dataclasses.asdict(augment) if augment is not None else None,
        "balance_classes": balance_classes,
        "unknown_keep": unknown_keep,
        "seconds": round(seconds, 2),
        "train_accuracy": float(history.history["accuracy"][-1]),
        "val_accuracy": float(history.history["val_accuracy"][-1]),
        "test_accuracy": float(test["accuracy"]),
        "num_classes": num_classes,
        "input_shape": list(shape),
    }
    voices = evaluate(model, data_root, batch_size=batch_size, features=features, labels=labels, seed=seed)
    metrics.update({f"test_{key}": voices[key] for key in ("seen_voice_accuracy", "unseen_voice_accuracy",
                                                           "per_word")})
    (output_dir / f"{model_name}_metrics.json").write_text(json.dumps(metrics, indent=2))
    return model, metrics


def _load(model) -> keras.Model:
    if isinstance(model, (str, pathlib.Path)):
        return keras.saving.load_model(model)
    return model


def evaluate(
    model,
    data_root,
    *,
    split: str = "test",
    batch_size: int = 64,
    features: FeatureConfig = FeatureConfig(),
    labels: str = "12",
    mode: Mode | str | None = None,
    seed: int = 0,
) -> dict:
    """Accuracy of a (non-streaming) model on one split, on whole clips or streamed frame by frame, broken down by
    voice (seen vs unseen in training, from the synthesizer's `speakers.json`) and by word.

    Args:
        model: a trained non-streaming model or the path of its `.keras` file.
        data_root: the Speech Commands directory.
        split: "train", "validation" or "test".
        batch_size: clips per batch (the streaming model is built for this batch size).
        features: the front end used in training.
        labels: "12" or "35".
        mode: None (whole clips through `to_non_streaming(model)`) or a streaming mode: each batch of clips is
            streamed frame by frame from a reset state, and the posterior after the last frame is the prediction.
        seed: data pipeline seed.

    Returns:
        `{"mode", ...}` and the figures of `kws_metrics.breakdown`: `accuracy`, `seen_voice_accuracy`,
        `unseen_voice_accuracy`, `per_word`, `per_label`, `confusion`, counts.
    """
    model = _load(model)
    (dataset,) = _datasets(data_root, batch_size, features, labels, seed, (split,), shuffle=False)  # Example order.
    ys, predictions = [], []
    if mode is None:
        inference, name = to_non_streaming(model), "non_stream_inference"
        predict = lambda x: np.asarray(inference(x, training=False))  # noqa: E731
    else:
        mode = Mode.of(mode)
        runner = to_streaming(model, mode, batch_size=batch_size, frames_per_step=min_frames_per_step(model))
        predict, name = functools.partial(stream_clips, runner), mode.value
    for x, y in dataset:
        predictions.append(np.argmax(predict(x), -1))
        ys.append(y.numpy())
    return {"mode": name, **score(data_root, np.concatenate(ys), np.concatenate(predictions), split=split,
                                  labels=labels, seed=seed)}


def score(data_root, labels_true, predictions, *, split: str = "test", labels: str = "12", seed: int = 0) -> dict:
    """`kws_metrics.breakdown` of predictions for the examples of `split`, in `list_examples` order (that of an
    unshuffled `load_speech_commands`): each example's spoken word and whether its voice is unseen."""
    from tfx_ext.apps.kws_metrics import breakdown
    from tfx_ext.apps.synthesis import voice_groups
    from tfx_ext.data.speech_commands import SILENCE_LABEL, label_names, list_examples

    examples = list_examples(data_root, split, labels, seed=seed)
    unseen = voice_groups(data_root)
    words = [pathlib.Path(e.path).parent.name if e.speaker else SILENCE_LABEL for e in examples]
    return breakdown(labels_true, predictions, words, [unseen.get(e.speaker, False) if e.speaker else None for e in examples],
                     label_names(labels))


def long_stream(data_root, *, num_clips: int = 8, split: str = "test", labels: str = "12", seed: int = 0,
                include_silence: bool = False, include_unknown: bool = False
                ) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Concatenates `num_clips` 1 s clips of one split into one long recording.

    Args:
        data_root: the Speech Commands directory.
        num_clips: how many clips (drawn with `seed`, keyword classes first choice).
        split: which split to draw from.
        labels: "12" or "35".
        seed: selects the clips.
        include_silence: also draw `_silence_` examples.
        include_unknown: also draw `_unknown_` (non-keyword) examples; by default only keywords are spoken.

    Returns:
        `(waveform, segments)`: float32 samples at 16 kHz and a list of `(start_s, end_s, label_name)`.
    """
    from tfx_ext.data.speech_commands import label_names, list_examples, read_wav

    names = label_names(labels)
    examples = [e for e in list_examples(data_root, split, labels, seed=seed)
                if (include_silence or e.speaker != "") and (include_unknown or names[e.label] != "_unknown_")]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(examples), size=min(num_clips, len(examples)), replace=False)
    clips, segments, start = [], [], 0.0
    for index in picks:
        example = examples[int(index)]
        audio, rate = read_wav(example.path)
        audio = np.asarray(audio, np.float32)[:rate]
        audio = np.pad(audio, (0, rate - audio.size))
        clips.append(audio)
        segments.append((start, start + 1.0, names[example.label]))
        start += 1.0
    return np.concatenate(clips), segments


def plot_posteriors(posteriors: np.ndarray, label_names: Sequence[str], path, *, step_s: float = 0.02,
                    offset_s: float = 0.03, segments: Sequence[tuple[float, float, str]] | None = None,
                    waveform: np.ndarray | None = None, sample_rate: int = 16000, title: str | None = None,
                    hide: Sequence[str] = ("_silence_", "_unknown_")) -> pathlib.Path:
    """Plots posteriors over time (one line per class) above the waveform, with the true words marked; PNG.

    Args:
        posteriors: `(steps, classes)` from `stream_posteriors`.
        label_names: class names.
        path: output `.png`.
        step_s: seconds between steps (hop x frames_per_step).
        offset_s: time of the first step's end (the analysis window).
        segments: `(start_s, end_s, label)` of the clips, drawn as shaded spans with their label.
        waveform: optional waveform drawn in a panel below.
        sample_rate: of the waveform.
        title: figure title.
        hide: classes drawn thin and grey (not keywords).

    Returns:
        The path written.
    """
    plt = _plotting.pyplot()
    posteriors = np.asarray(posteriors)
    times = offset_s + step_s * np.arange(posteriors.shape[0])
    rows = 2 if waveform is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(12, 3.2 * rows), sharex=True, squeeze=False)
    ax = axes[0, 0]
    colors = plt.get_cmap("tab10")
    for k, name in enumerate(label_names):
        if name in hide:
            ax.plot(times, posteriors[:, k], color="0.7", lw=0.8, label=name)
        else:
            ax.plot(times, posteriors[:, k], color=colors(k % 10), lw=1.4, label=name)
    for i, (start, end, label) in enumerate(segments or ()):
        ax.axvspan(start, end, color="0.90" if i % 2 == 0 else "0.97", zorder=0)
        ax.text((start + end) / 2, 1.03, label, ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("posterior")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    if title:
        ax.set_title(title, pad=14)
    if waveform is not None:
        wave_ax = axes[1, 0]
        wave_ax.plot(np.arange(len(waveform)) / sample_rate, waveform, lw=0.4, color="0.3")
        wave_ax.set_ylabel("waveform")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _plotting.save_figure(fig, path, dpi=110)
    return path


def convert(model_path, output, *, mode: Mode | str = Mode.STREAM_INTERNAL_STATE, frames_per_step: int | None = None,
            batch_size: int = 1, tflite: str | None = None) -> dict:
    """Converts a saved non-streaming model to a streaming `.keras` file (and optionally a float `.tflite`).

    Args:
        model_path: `.keras` file of a trained model.
        output: path of the streaming `.keras` file.
        mode: "internal" / "external" (short forms accepted) or a `Mode`.
        frames_per_step: frames per step (default: the model's total time stride).
        batch_size: static batch size of the streaming model.
        tflite: also write a float `.tflite` of the streaming model here.

    Returns:
        `{"keras": path, "tflite": path or None, "mode", "frames_per_step", "state_names"}`.
    """
    mode = Mode.of({"internal": Mode.STREAM_INTERNAL_STATE, "external": Mode.STREAM_EXTERNAL_STATE}.get(mode, mode))
    model = _load(model_path)
    step = frames_per_step or min_frames_per_step(model)
    runner = to_streaming(model, mode, batch_size=batch_size, frames_per_step=step)
    streaming = runner.model
    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    streaming.save(output)
    lite = None
    if tflite:
        from tfx_ext.lite.convert import to_tflite

        to_tflite(streaming, tflite, batch_size=batch_size)
        lite = str(tflite)
    return {"keras": str(output), "tflite": lite, "mode": mode.value, "frames_per_step": step,
            "state_names": runner.state_names}


def raw_audio_model(model, features: FeatureConfig = FeatureConfig()) -> keras.Model:
    """`model` on raw audio: as it is when it already starts with a `LogMelFrontend`, else behind one configured
    by `features` (the front end it was trained with; `tfx_ext.models.with_frontend`, weights kept)."""
    from tfx_ext.layers import LogMelFrontend
    from tfx_ext.models import with_frontend

    model = _load(model)
    if any(isinstance(layer, LogMelFrontend) for layer in model.layers):
        return model
    return with_frontend(model, features, features.sample_rate)


def export(model_path, output, *, quantize: str | None = None, mode: Mode | str | None = None, data_root=None,
           features: FeatureConfig = FeatureConfig(), labels: str = "12", calibration_clips: int = 64,
           seed: int = 0, raw_audio: bool = False) -> dict:
    """Exports a trained model (optionally converted to streaming first) to TFLite and verifies it in LiteRT.

    Args:
        model_path: `.keras` file of a trained non-streaming model.
        output: `.tflite` path.
        quantize: None, "dynamic", "float16" or "int8" (full integer, states included).
        mode: None (whole clips) or "internal"/"external" (a streaming model, one step per call).
        data_root: the Speech Commands directory: int8 calibrates on `calibration_clips` training clips (streamed
            through the float streaming model for streaming exports) and every export is verified on the test
            split. Required for int8.
        features: the front end used in training.
        labels: "12" or "35".
        calibration_clips: training clips used for int8 calibration.
        seed: data pipeline seed.
        raw_audio: export the model behind a `LogMelFrontend(features)` (`raw_audio_model`): the TFLite takes 1 s
            clips, or one hop of samples per step when streamed, and is verified on raw clips. Float (or float16)
            only: an int8 or dynamic front end is refused (it loses the quiet mel bands).

    Returns:
        `{"tflite", "bytes", "quantize", "mode", "raw_audio"}` plus, with `data_root`, the `verify` figures (max abs
        error, top-1 agreement, accuracy of the Keras model and of the TFLite model, size ratio to 4 bytes/parameter).

    Raises:
        ValueError: int8 without `data_root`; int8 or dynamic with `raw_audio`.
    """
    from tfx_ext.data.speech_commands import load_speech_commands
    from tfx_ext.lite.convert import to_tflite
    from tfx_ext.lite.int8 import streaming_calibration_data
    from tfx_ext.lite.verification import verify

    if raw_audio and quantize in ("int8", "dynamic"):
        raise ValueError(
            f"`quantize={quantize!r}` with raw_audio=True would quantize the LogMelFrontend, which loses the quiet "
            "mel bands (log-mel 3.6 off on average with int8, 0.15 with int8 weights; bench/README.md). Export the "
            "raw-audio model as float, or export int8 without raw_audio and compute the features outside. "
            f"Received: quantize={quantize!r}, raw_audio=True")
    if quantize == "int8" and data_root is None:
        raise ValueError("int8 export calibrates on training clips: pass `data_root`. Received: data_root=None")
    model = raw_audio_model(model_path, features) if raw_audio else _load(model_path)
    inputs = None if raw_audio else features  # the loader's front end, or raw clips for the in-model one
    target = model
    if mode is not None:
        mode = Mode.of({"internal": Mode.STREAM_INTERNAL_STATE, "external": Mode.STREAM_EXTERNAL_STATE}.get(mode, mode))
        target = to_streaming(model, mode, batch_size=1, frames_per_step=min_frames_per_step(model)).model
    representative = None
    if quantize == "int8":
        clips = np.concatenate([np.asarray(x) for x, _ in load_speech_commands(
            data_root, "train", batch_size=64, features=inputs, labels=labels, seed=seed)])[:calibration_clips]
        if mode is None:
            name = model.inputs[0].name
            representative = [{name: clip[None]} for clip in clips]
        else:
            representative = streaming_calibration_data(target, clips)
    flatbuffer = to_tflite(target, output, quantize=quantize, representative_data=representative)
    report = {"tflite": str(output), "bytes": len(flatbuffer), "quantize": quantize or "none",
              "mode": mode.value if mode is not None else "non_stream_inference", "raw_audio": bool(raw_audio)}
    if data_root is not None:
        x, y = zip(*((np.asarray(a), np.asarray(b)) for a, b in load_speech_commands(
            data_root, "test", batch_size=64, features=inputs, labels=labels, shuffle=False, seed=seed)))
        report.update(verify(model, flatbuffer, (np.concatenate(x), np.concatenate(y))).as_dict())  # the trained model
    return report


__all__ = ["train", "evaluate", "score", "long_stream", "stream_posteriors", "plot_posteriors", "convert", "export",
           "input_shape", "raw_audio_model"]
