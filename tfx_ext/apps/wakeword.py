"""Custom wake words with no downloads (the openWakeWord / microWakeWord workflow in Keras 3).

    train_wakeword(phrase, output_dir, size="default") -> report      `tfx-ext kws wakeword --phrase=...`

1. **Speakers and voices.** Synthetic speakers (`tfx_ext.apps.synthesis`: espeak-ng accent x variant x pitch x
   speed ...) split by speaker into train / validation / test, and by voice: half the test speakers speak with
   variants no train or validation speaker has.
2. **Clips.** Every speaker says the phrase (positives) and negatives: confusable phrases (each word alone, the
   phrase with one word swapped, its words with another first sound, a truncated last word), other speech (the
   Speech Commands words, everyday phrases), the end of one utterance running into the next, and positives cut off
   before their end (a stream sees those just before every real detection). Clips are `clip_seconds` long, speech
   at a random offset.
3. **Training.** A two-class streaming SVDF model (kws_streaming's) on log-mel features with the recipe's augmentation inside tf.data
   (background noise and babble, speed, reverberation, gain, SpecAugment; `tfx_ext.data.augment`), Adam with a
   warm-up and cosine decay, classes balanced in the loss. Then hard-negative mining: the model streams the
   training speakers' negatives, and the windows it fires on join the training set for a few more epochs.
4. **Streaming evaluation.** Long streams of negatives (>= 1 h simulated at the default size: the validation and
   test speakers' negatives at random gaps over continuous background noise) and of the test speakers' positives in
   noise are streamed through the Keras streaming model (many streams in one batch) and the int8 LiteRT streaming
   export (frame by frame, batch 1, as on a device). `tfx_ext.streaming.detection` smooths the posteriors, applies
   a threshold and a refractory period and counts false accepts per hour and false rejections.
5. **Operating point.** The threshold is the lowest whose FA/h on the *validation* negatives is within the target
   (<= 0.5 per hour by default); FA/h on the test negatives and FRR on the held-out test voices are reported at
   that threshold, with the DET curves (PNG), in `report.md` and `report.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import re
import time

import numpy as np

from tfx_ext._validate import check_choice, check_int, check_number
from tfx_ext.data.features import FeatureConfig, num_frames
from tfx_ext.models import MODELS, TINY_KWARGS

SAMPLE_RATE = 16000
OTHER_SPEECH = (
    "hello there", "good morning", "thank you", "what time is it", "turn on the lights", "play some music",
    "how are you", "see you later", "is it going to rain", "set a timer", "call my mother", "open the door",
    "happy birthday", "nice to meet you", "where are my keys", "let's go home", "that is funny", "not today",
    "coffee please", "seven eleven", "the weather is nice", "what is that", "stop the music", "a cup of tea",
)  # fmt: skip
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "w", "sh", "st", "br")
_SAME_SOUND = {"c": ("k", "s"), "k": ("c",), "ck": ("k",), "ph": ("f",), "f": ("ph",), "kn": ("n",), "wr": ("r",),
               "s": ("c",)}
_PHRASE = re.compile(r"^[a-z][a-z' -]*[a-z]$")
LABELS = ("other", "wakeword")


@dataclasses.dataclass(frozen=True)
class WakeWordSize:
    """How much data, model and evaluation `train_wakeword` uses.

    Args:
        speakers: synthetic speakers (10% validation, 20% test, the rest train).
        positives_per_speaker: times each speaker says the phrase.
        negatives_per_speaker: negative clips per speaker (confusable phrases, other speech, cut-off positives).
        epochs: training epochs.
        model: a reference model of `tfx_ext.models` ("svdf": its flattened window keeps the order of the
            sounds, which a DS-CNN's average pool over the window loses: measured, the DS-CNN could not tell
            "hey tiffany" from its confusables well enough).
        model_kwargs: the model's size knobs.
        negative_hours: simulated hours of each negative stream (validation and test).
        batch_size: training batch size.
        mining_hours: hours of a stream of the *training* negatives that the trained model is run over; the windows
            it fires on (hard negatives) join the training set for `mining_epochs` more epochs (0: no mining).
    """

    speakers: int
    positives_per_speaker: int
    negatives_per_speaker: int
    epochs: int
    model: str
    model_kwargs: dict
    negative_hours: float
    batch_size: int = 64
    mining_hours: float = 0.0
    mining_epochs: int = 0


SIZES = {
    "tiny": WakeWordSize(speakers=10, positives_per_speaker=4, negatives_per_speaker=6, epochs=2, model="svdf",
                         model_kwargs=TINY_KWARGS["svdf"], negative_hours=0.02, batch_size=32, mining_hours=0.02, mining_epochs=1),
    "default": WakeWordSize(speakers=120, positives_per_speaker=6, negatives_per_speaker=18, epochs=20,
                            model="svdf", model_kwargs={"units1": (48, 48, 48), "memory_size": (4, 10, 10),
                                                        "units2": (24, 24, 24), "dense": 48},
                            negative_hours=1.0, mining_hours=0.5, mining_epochs=6),
}


def check_phrase(phrase) -> str:
    """The phrase in lower case with single spaces; a ValueError names what is allowed."""
    text = " ".join(str(phrase).lower().split()) if isinstance(phrase, str) else None
    if not text or not _PHRASE.match(text) or len(text) > 40:
        raise ValueError("`phrase` must be 2-40 letters (words separated by spaces; ' and - allowed), e.g. "
                         f"'hey tiffany'. Received: phrase={phrase!r}")
    return text


def confusable_phrases(phrase: str) -> list[str]:
    """Phrases a wake-word model must not fire on: each word alone, the phrase with one word replaced by another
    word, each word with another first sound ("hey tiffany" -> "hey biffany"), the last word cut short, and
    (one-word phrases) the word with another ending. Deterministic for a phrase; the phrase itself is excluded."""
    phrase = check_phrase(phrase)
    words = phrase.split()
    others = ("marvin", "sheila", "there", "you", "happy", "stephen", "anna", "ok")
    out = []
    if len(words) > 1:
        out += words
        out += [" ".join(words[:i] + [o] + words[i + 1:]) for i in range(len(words)) for o in others[:4]]
    for i, word in enumerate(words):
        rest = re.sub(r"^[^aeiouy]*", "", word) or word
        same = _SAME_SOUND.get(word[: len(word) - len(rest)], ())  # "komputer" is no negative for "computer"
        out += [" ".join(words[:i] + [onset + rest] + words[i + 1:]) for onset in _ONSETS[i % 2::2]
                if onset + rest != word and onset not in same]
    last = words[-1]
    if len(last) >= 4:
        out.append(" ".join(words[:-1] + [last[: (len(last) + 1) // 2]]))
    if len(words) == 1:
        out += [word[:-1] + ending for ending in ("y", "er", "o", "s") if word[:-1] + ending != word]
    seen, unique = {phrase}, []
    for text in out:
        if text not in seen:
            seen.add(text)
            unique.append(text)
    return unique


def _other_speech(phrase: str) -> list[str]:
    """Speech unrelated to the phrase: the Speech Commands words, everyday phrases and pairs of those words."""
    from tfx_ext.data.speech_commands import WORDS_35

    pairs = [f"{a} {b}" for a, b in zip(WORDS_35, WORDS_35[7:] + WORDS_35[:7])]
    return [t for t in (*WORDS_35, *OTHER_SPEECH, *pairs) if t != phrase]


def _trim(speech: np.ndarray) -> np.ndarray:
    """Speech without leading/trailing silence (2% of the peak), scaled to peak 1."""
    peak = float(np.max(np.abs(speech))) if speech.size else 0.0
    if peak <= 0:
        return speech.astype(np.float32)
    active = np.flatnonzero(np.abs(speech) > 0.02 * peak)
    return (speech[max(active[0] - 160, 0): active[-1] + 160] / peak).astype(np.float32)


def _place(speech: np.ndarray, samples: int, rng: np.random.Generator, cut: bool = False) -> np.ndarray:
    """A `samples`-long clip with `speech` at a random offset and peak level; `cut`: only the first 30-60% of
    the speech, at the clip's end (what a stream holds before the phrase is said; more would be the phrase)."""
    if cut:
        speech = speech[: int(speech.size * rng.uniform(0.3, 0.6))]
    speech = speech[:samples] * rng.uniform(0.3, 0.9)
    clip = np.zeros(samples, np.float32)
    offset = samples - speech.size if cut else int(rng.integers(0, samples - speech.size + 1))
    clip[offset: offset + speech.size] = speech
    return clip


def _join(first: np.ndarray, second: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """The end of one utterance, a short pause, the start of the next: the windows a stream of speech shows."""
    tail = first[-int(rng.uniform(0.2, 0.6) * samples):] * rng.uniform(0.3, 0.9)
    start = tail.size + int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
    clip = np.zeros(samples, np.float32)
    clip[: min(tail.size, samples)] = tail[:samples]
    head = second[: max(samples - start, 0)] * rng.uniform(0.3, 0.9)
    clip[start: start + head.size] = head
    return clip


def synthesize_wakeword_data(phrase: str, size: WakeWordSize, *, seed: int = 0, engine: str = "auto",
                             clip_seconds: float = 1.2) -> dict:
    """Speaks the phrase and its negatives with every synthetic speaker.

    Returns:
        `{"engine", "held_out", "utterances": {split: {"positive": [...], "negative": [...]}}, "unseen": {split:
        [bool per positive]}, "negative_texts": {split: [text per negative]}, "clips": {split: (waveforms,
        labels)}}`: trimmed utterances (16 kHz float32) for the streams, and `clip_seconds` clips with 0/1 labels
        for training and validation.
    """
    from tfx_ext.apps.synthesis import _speaker_ids, _speaker_profiles, assign_speaker_splits, resolve_engine, speak_as

    engine = resolve_engine(engine)
    ids = _speaker_ids(size.speakers, seed)
    split_of = assign_speaker_splits(ids, 0.1, 0.2)
    profiles, held = _speaker_profiles(engine, ids, split_of, seed)
    confusables, others = confusable_phrases(phrase), _other_speech(phrase)
    samples = int(round(clip_seconds * SAMPLE_RATE))
    data = {split: {"positive": [], "negative": [], "texts": [], "unseen": [], "clips": [], "labels": []}
            for split in ("train", "validation", "test")}
    for s, (sid, profile) in enumerate(zip(ids, profiles)):
        rng = np.random.default_rng([seed, s, 7])
        part = data[profile["split"]]
        for k in range(size.positives_per_speaker):
            speech = _trim(speak_as(engine, phrase, profile, rng))
            part["positive"].append(speech)
            part["unseen"].append(bool(profile["unseen"]))
            part["clips"].append(_place(speech, samples, rng))
            part["labels"].append(1)
            part["clips"].append(_place(speech, samples, rng, cut=True))  # a cut-off positive is a negative
            part["labels"].append(0)
        for k in range(size.negatives_per_speaker):  # a third confusable phrases, the rest other speech
            pool = confusables if k % 3 == 0 else others
            text = pool[int(rng.integers(len(pool)))]
            speech = _trim(speak_as(engine, text, profile, rng))
            previous = part["negative"][-1] if k % 3 == 2 else None
            part["negative"].append(speech)
            part["texts"].append(text)
            part["clips"].append(_place(speech, samples, rng) if previous is None else
                                 _join(previous, speech, samples, rng))
            part["labels"].append(0)
    clips = {split: (np.stack(p["clips"]).astype(np.float32), np.asarray(p["labels"], np.int32))
             for split, p in data.items() if p["clips"]}
    return {"engine": engine, "held_out": held, "clips": clips,
            "utterances": {split: {"positive": p["positive"], "negative": p["negative"]} for split, p in data.items()},
            "unseen": {split: p["unseen"] for split, p in data.items()},
            "negative_texts": {split: p["texts"] for split, p in data.items()}}


def _noise_bank(seed: int, babble: list[np.ndarray], seconds: int = 20) -> np.ndarray:
    """White, pink and brown noise, mains hum and babble (several utterances summed), 10 s each, at RMS 0.1 (the
    level of the synthesized `_background_noise_` files, so `AugmentConfig.background_noise` means the same)."""
    from tfx_ext.apps.synthesis import _background_noises

    rng = np.random.default_rng([seed, 11])
    parts = [0.1 * a / (a.std() + 1e-9) for a in _background_noises(rng).values()]
    if babble:
        length = 10 * SAMPLE_RATE
        mix = np.zeros(length, np.float32)
        for _ in range(4):
            stream = np.concatenate([babble[int(i)] for i in rng.integers(len(babble), size=40)])
            stream = np.resize(stream, length)
            mix += np.roll(stream, int(rng.integers(length)))
        parts.append(0.1 * mix / (mix.std() + 1e-9))
    return np.concatenate(parts).astype(np.float32)


def _training_dataset(waveforms, labels, noise, size: WakeWordSize, seed: int, features: FeatureConfig, augment):
    """Shuffled batches of augmented features: background noise from `noise` at a random level, then the recipe's
    waveform augmentations (speed, reverberation, gain), the front end and SpecAugment."""
    import tensorflow as tf

    from tfx_ext.data.augment import augment_features, augment_waveforms
    from tfx_ext.data.features import compute_features

    bank = tf.constant(noise)
    length = waveforms.shape[1]

    def add_noise(waveform, label, random):
        base = tf.stack([random, tf.constant(seed, tf.int64)])
        start = tf.random.stateless_uniform([], base, 0, noise.size - length, tf.int32)
        level = tf.random.stateless_uniform([], base + 1, 0.0, augment.background_noise)
        level = tf.where(tf.random.stateless_uniform([], base + 2) < augment.background_frequency, level, 0.0)
        return tf.clip_by_value(waveform + level * bank[start:start + length], -1.0, 1.0), label

    ds = tf.data.Dataset.from_tensor_slices((waveforms, labels)).shuffle(len(labels), seed=seed,
                                                                         reshuffle_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)))
    ds = ds.map(lambda element, random: add_noise(*element, random), num_parallel_calls=tf.data.AUTOTUNE)
    ds = augment_waveforms(ds.batch(size.batch_size), augment, seed, SAMPLE_RATE)
    ds = ds.map(lambda w, y: (compute_features(w, features), y), num_parallel_calls=tf.data.AUTOTUNE)
    return augment_features(ds, augment, seed).prefetch(tf.data.AUTOTUNE)


def train_model(clips: dict, noise: np.ndarray, size: WakeWordSize, *, seed: int = 0,
                features: FeatureConfig = FeatureConfig(), learning_rate: float = 3e-3, verbose: int = 0,
                model=None, epochs: int | None = None):
    """Trains the two-class streaming model on the train clips (validation clips for Keras's val_accuracy), or
    goes on training `model` (a fresh optimizer and schedule) for `epochs`."""
    import keras
    import tensorflow as tf

    from tfx_ext.data.augment import AugmentConfig
    from tfx_ext.data.features import compute_features

    keras.utils.set_random_seed(seed)
    x, y = clips["train"]
    augment = AugmentConfig(background_noise=1.0, time_shift_ms=0.0)  # noise RMS up to 0.1: streams are noisy
    train_ds = _training_dataset(x, y, noise, size, seed, features, augment)
    val = None
    if "validation" in clips:
        vx, vy = clips["validation"]
        val = (np.asarray(compute_features(tf.constant(vx), features)), vy)
    if model is None:
        model = MODELS[size.model]((num_frames(x.shape[1], features), features.num_features), len(LABELS),
                                   name="wakeword", **size.model_kwargs)
    epochs = epochs or size.epochs
    steps = max(int(train_ds.cardinality()), 1) * epochs
    warmup = steps // 20
    schedule = keras.optimizers.schedules.CosineDecay(
        0.1 * learning_rate if warmup else learning_rate, decay_steps=max(steps - warmup, 1), alpha=0.05,
        warmup_target=learning_rate if warmup else None, warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    counts = np.bincount(y, minlength=2)
    weights = {k: float(len(y) / (2 * max(c, 1))) for k, c in enumerate(counts)}
    history = model.fit(train_ds, validation_data=val, epochs=epochs, verbose=verbose, class_weight=weights,
                        shuffle=False)  # the data set shuffles itself (seeded)
    return model, {key: float(values[-1]) for key, values in history.history.items()}


def _stream(utterances, seconds: float | None, noise: np.ndarray, rng: np.random.Generator, *, gaps=(0.3, 2.0),
            snr_db=(5.0, 25.0)) -> tuple[np.ndarray, list[tuple[int, int]], list[int]]:
    """One recording over continuous background noise whose level sets a random SNR per utterance, utterances at
    random gaps and levels: drawn at random (with replacement) until `seconds` are filled, or (`seconds=None`) each
    utterance once, in order. Returns the waveform, each utterance's (first, last) sample and its index."""
    if seconds is None:
        order = list(range(len(utterances)))
        total = sum(u.size for u in utterances) + int((len(utterances) + 1) * gaps[1] * SAMPLE_RATE)
    else:
        total = int(seconds * SAMPLE_RATE)
        order = rng.integers(len(utterances), size=total // int(gaps[0] * SAMPLE_RATE) + 1).tolist()
    speech, level = np.zeros(total, np.float32), np.zeros(total, np.float32)
    spans, picked, position, margin = [], [], 0, int(gaps[0] * SAMPLE_RATE)
    for index in order:
        position += int(rng.uniform(*gaps) * SAMPLE_RATE)
        utterance = utterances[index] * rng.uniform(0.2, 0.9)
        if position + utterance.size > total:
            break
        speech[position: position + utterance.size] = utterance
        rms = float(np.sqrt(np.mean(utterance ** 2)))
        level[max(position - margin, 0): position + utterance.size + margin] = rms * 10 ** (-rng.uniform(*snr_db) / 20)
        spans.append((position, position + utterance.size - 1))
        picked.append(index)
        position += utterance.size
    level[level == 0] = 0.01 * rng.uniform(0.2, 1.0)  # the noise floor between utterances
    background = np.resize(np.roll(noise, -int(rng.integers(noise.size))), total) / (noise.std() + 1e-9)  # unit RMS
    return np.clip(speech + level * background, -1, 1).astype(np.float32), spans, picked


def _step_windows(spans, features: FeatureConfig, tolerance_s: float = 0.5) -> list[tuple[int, int]]:
    """Streaming steps (one per frame, step i = frame i) from an utterance's start to `tolerance_s` after its end."""
    hop, window = features.hop_samples, features.window_samples
    late = int(tolerance_s * SAMPLE_RATE)
    return [(max((a - window) // hop + 1, 0), (b + late - window) // hop) for a, b in spans]


def streams(utterances, seconds: float | None, count: int, noise, seed: int, features: FeatureConfig, *,
            waveforms: bool = False):
    """`count` streams in one batch: `seconds / count` each of utterances drawn at random (negatives), or
    (`seconds=None`) every utterance once, dealt round robin (positives).

    Returns:
        `(features (count, frames, bins), windows, indices)`: per stream the step windows of its utterances (see
        `_step_windows`) and their indices into `utterances`; with `waveforms`, the `(count, samples)` audio too.
    """
    import tensorflow as tf

    from tfx_ext.data.features import compute_features

    rng = np.random.default_rng(seed)
    made = []
    for k in range(count):
        if seconds is None:
            subset = list(range(k, len(utterances), count))
            wave, spans, picked = _stream([utterances[i] for i in subset], None, noise, rng)
            made.append((wave, spans, [subset[i] for i in picked]))
        else:
            made.append(_stream(utterances, seconds / count, noise, rng))
    length = max(w.size for w, _, _ in made)  # one batch: pad every stream to the longest (with silence)
    audio = np.stack([np.pad(w, (0, length - w.size)) for w, _, _ in made])
    frames = np.stack([np.asarray(compute_features(tf.constant(w), features)) for w in audio])
    steps = frames.shape[1]
    windows, indices = [], []
    for _, spans, picked in made:
        kept = [(w, i) for w, i in zip(_step_windows(spans, features), picked) if w[1] < steps]
        windows.append([w for w, _ in kept])
        indices.append([i for _, i in kept])
    return (frames, windows, indices, audio) if waveforms else (frames, windows, indices)


def mine_false_accepts(model, utterances, noise, seconds: float, seed: int, features: FeatureConfig, samples: int,
                       *, smoothing: int, refractory: int, threshold: float = 0.3, limit: int = 1000) -> np.ndarray:
    """Hard negatives: the `samples`-long audio windows that end where the trained model fires (score >=
    `threshold`) on a `seconds` stream of negative `utterances` (training speakers only), at most `limit`."""
    from tfx_ext.streaming.detection import detect

    frames, _, _, audio = streams(utterances, seconds, 32, noise, seed, features, waveforms=True)
    scores = _keyword_scores(keras_posteriors(model, frames), smoothing)
    clips = []
    for stream, wave in zip(scores, audio):
        for step in detect(stream, threshold, refractory):
            end = int(step) * features.hop_samples + features.window_samples
            if end >= samples:
                clips.append(wave[end - samples: end])
    clips = np.asarray(clips, np.float32).reshape(-1, samples)
    return clips[np.random.default_rng(seed).permutation(len(clips))[:limit]]


def _keyword_scores(posteriors: np.ndarray, window: int) -> np.ndarray:
    from tfx_ext.streaming.detection import smooth

    return smooth(posteriors[..., 1], window, axis=-1)


def keras_posteriors(model, frames: np.ndarray) -> np.ndarray:
    """`(streams, steps, classes)`: the Keras streaming model (internal state, one frame per step) run over all
    streams at once, in one batch."""
    from tfx_ext.streaming.contract import Mode
    from tfx_ext.streaming.convert import to_streaming

    runner = to_streaming(model, Mode.STREAM_INTERNAL_STATE, batch_size=frames.shape[0], frames_per_step=1)
    return np.asarray(runner.run(frames))


def export_int8(model, path, calibration: np.ndarray) -> bytes:
    """The int8 streaming export (internal state, batch 1, one frame per step), calibrated by streaming the float
    model over `calibration` clip features."""
    from tfx_ext.lite.convert import to_tflite
    from tfx_ext.lite.int8 import streaming_calibration_data
    from tfx_ext.streaming.contract import Mode
    from tfx_ext.streaming.convert import to_streaming

    streaming = to_streaming(model, Mode.STREAM_INTERNAL_STATE, batch_size=1, frames_per_step=1).model
    return to_tflite(streaming, path, quantize="int8",
                     representative_data=streaming_calibration_data(streaming, calibration))


def lite_posteriors(tflite, frames: np.ndarray) -> np.ndarray:
    """`(streams, steps, classes)` from a batch-1 streaming `.tflite` (path, bytes or `TFLiteModel`), each stream
    streamed frame by frame from a reset state, outputs bound by signature name."""
    from tfx_ext.lite.runtime import TFLiteModel

    runner = tflite if isinstance(tflite, TFLiteModel) else TFLiteModel(tflite)
    name = [n for n in runner.output_names if n not in runner.state_names][0]
    return np.concatenate([runner.run_stream(stream[None])[name] for stream in frames]).reshape(
        frames.shape[0], frames.shape[1], -1)


def _thresholds() -> np.ndarray:
    """Thresholds dense near 1, where low false-accept operating points lie."""
    return np.unique(np.round(np.concatenate([np.linspace(0.0, 0.95, 96), 1 - np.geomspace(0.05, 1e-4, 41)]), 6))


def _score_model(posteriors: dict, sets: dict, unseen: list[bool], *, smoothing: int, refractory: int,
                 step_seconds: float, target: float) -> dict:
    """DET curves on validation and test, the operating point chosen on the validation negatives, and the test
    figures at that point (FA/h, FRR overall / unseen voices / seen voices, which test positives were accepted)."""
    from tfx_ext.streaming.detection import accepted, det_curve, detect, threshold_for

    scores = {name: _keyword_scores(p, smoothing) for name, p in posteriors.items()}
    curve = lambda neg, pos: det_curve(list(scores[neg]), list(scores[pos]), sets[pos]["windows"],  # noqa: E731
                                       step_seconds=step_seconds, thresholds=_thresholds(), refractory=refractory)
    validation, test = curve("validation_negative", "validation_positive"), curve("test_negative", "test_positive")
    point = threshold_for(validation, target)
    index = test["thresholds"].index(point["threshold"])
    hits = np.zeros(len(unseen), bool)
    for stream, windows, indices in zip(scores["test_positive"], sets["test_positive"]["windows"],
                                        sets["test_positive"]["indices"]):
        hits[indices] = accepted(detect(stream, point["threshold"], refractory), windows)
    unseen = np.asarray(unseen, bool)
    frr = lambda mask: float(1 - hits[mask].mean()) if mask.any() else None  # noqa: E731
    return {"threshold": point["threshold"], "validation_met_target": point["met"],
            "validation_false_accepts_per_hour": point["false_accepts_per_hour"],
            "test_false_accepts_per_hour": test["false_accepts_per_hour"][index],
            "test_false_accepts": test["false_accepts"][index],
            "test_false_rejection_rate": frr(np.ones_like(unseen)), "test_frr_unseen_voices": frr(unseen),
            "test_frr_seen_voices": frr(~unseen), "accepted": hits.tolist(), "det_validation": validation,
            "det_test": test}


def _write_report(output_dir: pathlib.Path, report: dict) -> None:
    """report.json (everything) and report.md (the figures a reader needs)."""
    from tfx_ext.apps.plots import plot_det

    shipped = report["int8"]
    plot_det({"Keras streaming (float)": report["keras"]["det_test"], "LiteRT int8 streaming": shipped["det_test"]},
             output_dir / "det.png", title=f"\"{report['phrase']}\": test streams (held-out speakers)",
             operating_point=(shipped["test_false_accepts_per_hour"], shipped["test_false_rejection_rate"]),
             target_fa_per_hour=report["target_false_accepts_per_hour"])
    (output_dir / "report.json").write_text(json.dumps(report, indent=1))
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    rows = [f"| {name} | {r['threshold']:.4f} | {r['validation_false_accepts_per_hour']:.2f} | "
            f"{r['test_false_accepts_per_hour']:.2f} ({r['test_false_accepts']}) | {pct(r['test_false_rejection_rate'])}"
            f" | {pct(r['test_frr_unseen_voices'])} | {pct(r['test_frr_seen_voices'])} |"
            for name, r in (("Keras streaming (float)", report["keras"]), ("LiteRT int8 streaming", shipped))]
    data = report["data"]
    met = shipped["test_false_accepts_per_hour"] <= report["target_false_accepts_per_hour"] and (
        shipped["test_false_rejection_rate"] <= 0.05)
    text = [
        f"# Wake word \"{report['phrase']}\"", "",
        f"Engine `{data['engine']}`, {data['speakers']} synthetic speakers; size `{report['size_name']}`; "
        f"{report['seconds']:.0f} s in all (training {report['train_seconds']:.0f} s).", "",
        f"Shipped: `{pathlib.Path(report['tflite']).name}` (int8 streaming, {report['tflite_bytes']} bytes, one "
        f"{report['detector']['step_ms']:.0f} ms frame per step), threshold **{shipped['threshold']:.4f}** on the "
        f"keyword posterior averaged over {report['detector']['smoothing']} steps, refractory "
        f"{report['detector']['refractory_s']:g} s.", "",
        "| model | threshold | FA/h validation | FA/h test (count) | FRR test | FRR unseen voices | FRR seen voices |",
        "|---|---|---|---|---|---|---|", *rows, "",
        f"Target <= {report['target_false_accepts_per_hour']:g} FA/h at <= 5% FRR: "
        f"**{'met' if met else 'not met'}** (int8, test).", "",
        f"Negative streams: {data['validation_negative_hours']:.2f} h validation, {data['test_negative_hours']:.2f} h "
        f"test, of {data['distinct_validation_negatives']} / {data['distinct_test_negatives']} distinct utterances "
        "(confusable phrases, other speech) by speakers never in training, drawn with replacement at random gaps over "
        f"noise. Positives: {data['test_positives']} test utterances ({data['test_positives_unseen']} with held-out "
        "voices) in noise at 5-25 dB SNR; a positive counts when a detection falls between its start and 0.5 s "
        "after its end.", "",
        f"Keras vs int8: same accept/reject on {pct(report['agreement']['positives'])} of the test positives.", "",
        "![DET curve](det.png)", "",
    ]
    (output_dir / "report.md").write_text("\n".join(text))


def _resolve_engine(engine: str) -> str:
    """`"auto"` prefers the espeakng-loader library (a hundred variants, no subprocess per clip)."""
    from tfx_ext.apps import libespeak
    from tfx_ext.apps.synthesis import ENGINES, resolve_engine

    check_choice("engine", engine, ENGINES)
    if engine == "auto" and libespeak.available():
        return "libespeak"
    return resolve_engine(engine)


def train_wakeword(phrase: str, output_dir, *, size: str | WakeWordSize = "default", seed: int = 0,
                   engine: str = "auto", max_false_accepts_per_hour: float = 0.5, smoothing: int = 5,
                   refractory_s: float = 1.0, clip_seconds: float = 1.2, verbose: int = 0) -> dict:
    """Trains a wake-word detector for `phrase` from synthesized speech and exports it as int8 streaming TFLite.

    Args:
        phrase: the wake word, e.g. "hey tiffany" (letters, spaces, ' and -).
        output_dir: where `wakeword.keras`, `wakeword_stream_int8.tflite`, `report.md`, `report.json` and
            `det.png` go (created if needed).
        size: "tiny" (tests, < 1 min), "default" (a few minutes on 2 cores) or a `WakeWordSize`.
        seed: seeds speakers, clips, streams and training.
        engine: synthesis engine ("auto": the espeakng-loader library, else the espeak-ng binary, else numpy
            patterns with a loud warning).
        max_false_accepts_per_hour: the target the threshold is chosen for, on the validation negatives.
        smoothing: steps (20 ms frames) of the moving average over the keyword posterior.
        refractory_s: seconds the detector stays silent after firing.
        clip_seconds: the model's window (the phrase must fit in it).
        verbose: Keras fit verbosity (2: one line per epoch).

    Returns:
        The report (also in `report.json`): per model ("keras", "int8") the threshold, FA/h on validation and test,
        FRR on the test positives (overall, unseen voices, seen voices) and both DET curves; paths, sizes, timings.
    """
    phrase = check_phrase(phrase)
    size_name = size if isinstance(size, str) else "custom"
    size = SIZES[check_choice("size", size, tuple(SIZES))] if isinstance(size, str) else size
    check_number("max_false_accepts_per_hour", max_false_accepts_per_hour, low=0)
    check_int("smoothing", smoothing, minimum=1)
    check_number("clip_seconds", clip_seconds, low=0.5, high=3.0)
    features = FeatureConfig()
    step_seconds = features.hop_samples / SAMPLE_RATE
    refractory = int(round(check_number("refractory_s", refractory_s, low=0) / step_seconds))
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = synthesize_wakeword_data(phrase, size, seed=seed, engine=_resolve_engine(engine),
                                    clip_seconds=clip_seconds)
    utterances = data["utterances"]
    if not all(utterances[s]["positive"] and utterances[s]["negative"] for s in utterances):
        raise ValueError(f"`size` must give every split speakers (10% validation, 20% test). Received: "
                         f"speakers={size.speakers}")
    noise = _noise_bank(seed, utterances["train"]["negative"])
    trained = time.perf_counter()
    model, history = train_model(data["clips"], noise, size, seed=seed, features=features, verbose=verbose)
    mined = np.zeros((0, data["clips"]["train"][0].shape[1]), np.float32)
    if size.mining_hours and size.mining_epochs:
        x, y = data["clips"]["train"]
        mined = mine_false_accepts(model, utterances["train"]["negative"], noise, size.mining_hours * 3600, seed + 99,
                                   features, x.shape[1], smoothing=smoothing, refractory=refractory,
                                   limit=int(2 * y.sum()))
        data["clips"]["train"] = (np.concatenate([x, mined]), np.concatenate([y, np.zeros(len(mined), np.int32)]))
        model, history = train_model(data["clips"], noise, size, seed=seed + 1, features=features, verbose=verbose,
                                     model=model, epochs=size.mining_epochs, learning_rate=1e-3)
    train_seconds = time.perf_counter() - trained
    model.save(output_dir / "wakeword.keras")

    eval_noise = _noise_bank(seed + 1000, utterances["test"]["negative"])  # noise and babble never trained on
    count = 64 if size.negative_hours >= 0.25 else 8
    sets = {}
    for k, (name, split, kind, seconds) in enumerate((
            ("validation_negative", "validation", "negative", size.negative_hours * 3600),
            ("validation_positive", "validation", "positive", None),
            ("test_negative", "test", "negative", size.negative_hours * 3600),
            ("test_positive", "test", "positive", None))):
        frames, windows, indices = streams(utterances[split][kind], seconds, count if seconds else 8, eval_noise,
                                           seed + 1 + k, features)
        sets[name] = {"frames": frames, "windows": windows, "indices": indices}
    tflite = output_dir / "wakeword_stream_int8.tflite"
    from tfx_ext.data.features import compute_features

    calibration = np.asarray(compute_features(data["clips"]["train"][0][:64], features))
    flatbuffer = export_int8(model, tflite, calibration)
    report = {"phrase": phrase, "size_name": size_name, "size": dataclasses.asdict(size), "seed": seed,
              "target_false_accepts_per_hour": max_false_accepts_per_hour, "tflite": str(tflite),
              "tflite_bytes": len(flatbuffer), "keras_model": str(output_dir / "wakeword.keras"),
              "params": int(model.count_params()), "history": history,
              "detector": {"smoothing": smoothing, "refractory_s": refractory_s, "step_ms": 1000 * step_seconds}}
    score = dict(sets=sets, unseen=data["unseen"]["test"], smoothing=smoothing, refractory=refractory,
                 step_seconds=step_seconds, target=max_false_accepts_per_hour)
    timings = {}
    for name, run in (("keras", lambda f: keras_posteriors(model, f)), ("int8", lambda f: lite_posteriors(flatbuffer, f))):
        began = time.perf_counter()
        report[name] = _score_model({key: run(s["frames"]) for key, s in sets.items()}, **score)
        timings[name] = round(time.perf_counter() - began, 1)
    same = np.asarray(report["keras"]["accepted"]) == np.asarray(report["int8"]["accepted"])
    report["agreement"] = {"positives": float(same.mean())}
    report["streaming_seconds"] = timings
    report["data"] = {
        "engine": data["engine"], "speakers": size.speakers, "held_out": data["held_out"],
        "train_clips": int(len(data["clips"]["train"][1])), "mined_hard_negatives": int(len(mined)),
        "confusable_phrases": confusable_phrases(phrase),
        "validation_negative_hours": report["keras"]["det_validation"]["negative_hours"],
        "test_negative_hours": report["keras"]["det_test"]["negative_hours"],
        "distinct_validation_negatives": len(utterances["validation"]["negative"]),
        "distinct_test_negatives": len(utterances["test"]["negative"]),
        "test_positives": len(utterances["test"]["positive"]),
        "test_positives_unseen": int(sum(data["unseen"]["test"])),
    }
    report["train_seconds"] = train_seconds
    report["seconds"] = time.perf_counter() - start
    _write_report(output_dir, report)
    return report


__all__ = ["LABELS", "SIZES", "WakeWordSize", "check_phrase", "confusable_phrases", "export_int8",
           "keras_posteriors", "lite_posteriors", "streams", "synthesize_wakeword_data", "train_model",
           "train_wakeword"]
