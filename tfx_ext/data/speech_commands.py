"""Speech Commands v2: the directory layout, the 12- and 35-label views, and tf.data pipelines.

The layout (the extracted `speech_commands_v0.02.tar.gz`, or what `synthesize_keywords` writes):

    root/
      yes/0a7c2a8d_nohash_0.wav       one folder per word; 16 kHz mono 16-bit wav, at most 1 s
      ...                             file name: <speaker>_nohash_<n>.wav
      _background_noise_/*.wav        long noise recordings (used for `_silence_` and noise mixing)
      validation_list.txt             relative paths (`yes/0a7c2a8d_nohash_0.wav`), one per line
      testing_list.txt                same, for the test split; train = every wav in neither list

Label views:

* `labels="12"`: `LABELS_12` = `_silence_`, `_unknown_` and the ten command words. Every other word folder maps to
  `_unknown_`. `_silence_` examples are 1 s segments of the background-noise recordings: their number is
  `round(silence_fraction * number of command-word examples in the split)` (default 10%), each drawn from a
  seeded choice of noise file, offset and volume (so validation and test are fixed sets).
* `labels="35"`: `WORDS_35`, the 35 words of v2 in alphabetical order; no silence, no unknown.

Speaker ids come from the file names and give the natural federated partition (`Example.speaker`; `_silence_`
examples have speaker `""`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfx_ext._validate import check_choice, check_int, check_number
from tfx_ext.data.features import FeatureConfig, compute_features
from tfx_ext.errors import DataError

SAMPLE_RATE = 16000
SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
BACKGROUND_NOISE_DIR = "_background_noise_"
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
SPEECH_COMMANDS_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"

LABEL_VIEWS = ("12", "35")  # The values of `labels`.
LABELS_12 = ("_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
COMMAND_WORDS = LABELS_12[2:]
WORDS_35 = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go", "happy",
    "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven", "sheila", "six", "stop",
    "three", "tree", "two", "up", "visual", "wow", "yes", "zero",
)  # fmt: skip
SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                  "test": "test", "testing": "test"}  # fmt: skip
_NOHASH = "_nohash_"


class Example(NamedTuple):
    """One example: `path` to its wav (for `_silence_`, the background-noise file it is cut from), `label` index
    into `label_names(labels)`, and `speaker` id (`""` for `_silence_`)."""

    path: str
    label: int
    speaker: str


def label_names(labels: str = "12") -> tuple[str, ...]:
    """The class names of a label view: `LABELS_12` for `"12"`, `WORDS_35` for `"35"`.

    Raises:
        ValueError: `labels` is neither `"12"` nor `"35"`.
    """
    labels = _check_labels(labels)
    return LABELS_12 if labels == "12" else WORDS_35


def speaker_id(path) -> str:
    """The speaker id in a Speech Commands file name `<speaker>_nohash_<n>.wav`.

    Args:
        path: a file path or name, e.g. `"yes/0a7c2a8d_nohash_1.wav"`.

    Returns:
        The speaker id, e.g. `"0a7c2a8d"`.

    Raises:
        DataError: the name does not follow `<speaker>_nohash_<n>.wav`.
    """
    name = os.path.basename(os.fspath(path))
    stem, ext = os.path.splitext(name)
    speaker, sep, number = stem.partition(_NOHASH)
    if ext.lower() != ".wav" or not sep or not speaker or not number.isdigit():
        raise DataError(
            f"Speech Commands file names must look like '<speaker>_nohash_<n>.wav'. Received: path={str(path)!r}"
        )
    return speaker


def _check_labels(labels) -> str:
    return check_choice("labels", str(labels), LABEL_VIEWS)


def _canonical_split(split) -> str:
    return _SPLIT_ALIASES[check_choice("split", split, tuple(_SPLIT_ALIASES))]


def _check_root(root) -> Path:
    if root is None:
        raise DataError("`root` must be the Speech Commands directory. Received: root=None")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(
            f"Speech Commands directory not found: {str(path)!r}. Expected a directory with one folder of 16 kHz "
            f"wav files per word, {VALIDATION_LIST}, {TESTING_LIST} and {BACKGROUND_NOISE_DIR}/ (extract "
            "speech_commands_v0.02.tar.gz there, or call tfx_ext.apps.synthesis.synthesize_keywords(root))."
        )
    return path


def _read_list(root: Path, name: str) -> set[str]:
    path = root / name
    if not path.is_file():
        raise DataError(
            f"Missing split list {str(path)!r}. A Speech Commands directory needs {VALIDATION_LIST} and "
            f"{TESTING_LIST} with one relative path (e.g. 'yes/0a7c2a8d_nohash_0.wav') per line."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"Cannot read split list {str(path)!r} as UTF-8 text: {error}") from error
    entries = set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip().replace("\\", "/")
        if not line:
            continue
        if line.count("/") != 1 or not line.lower().endswith(".wav"):
            raise DataError(
                f"Malformed line {number} in {str(path)!r}: expected '<word>/<file>.wav'. Received: {line!r}"
            )
        entries.add(line)
    return entries


def _word_files(root: Path) -> dict[str, list[str]]:
    """Word folder -> sorted relative wav paths ('word/file.wav'); folders starting with '_' or '.' are skipped."""
    words = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith(("_", ".")):
            continue
        files = sorted(f"{entry.name}/{name}" for name in os.listdir(entry.path) if name.lower().endswith(".wav"))
        if files:
            words[entry.name] = files
    if not words:
        raise DataError(
            f"No wav files found in the word folders of {str(root)!r}. Expected folders such as 'yes/' holding "
            "'<speaker>_nohash_<n>.wav' files."
        )
    return words


def _split_of(relative: str, validation: set[str], testing: set[str]) -> str:
    if relative in validation:
        return "validation"
    if relative in testing:
        return "test"
    return "train"


def background_noise_files(root) -> list[str]:
    """Sorted paths of the wav files in `root/_background_noise_/` (empty list when the folder is absent)."""
    folder = _check_root(root) / BACKGROUND_NOISE_DIR
    if not folder.is_dir():
        return []
    return sorted(str(folder / name) for name in os.listdir(folder) if name.lower().endswith(".wav"))


def list_examples(
    root,
    split: str,
    labels: str = "12",
    *,
    silence_fraction: float = 0.1,
    unknown_fraction: float | None = None,
    seed: int = 0,
) -> list[Example]:
    """Lists the examples of one split of a Speech Commands directory.

    Word examples come first, sorted by relative path, then (12 labels) the `_silence_` examples.

    Args:
        root: the Speech Commands directory.
        split: `"train"`, `"validation"` or `"test"` (`"testing"` and `"val"` are accepted too). Membership comes
            from `validation_list.txt` / `testing_list.txt`; train is every wav in neither list.
        labels: `"12"` (`LABELS_12`: other words become `_unknown_`, plus `_silence_`) or `"35"` (`WORDS_35`).
        silence_fraction: 12 labels only: number of `_silence_` examples as a fraction of the split's command-word
            examples (rounded). Each is cut from a background-noise file chosen with `seed`.
        unknown_fraction: 12 labels only: `None` keeps every `_unknown_` example; a float keeps a seeded random
            `ceil(unknown_fraction * (command-word + silence examples))` of them (the TF recipe uses 0.1).
        seed: seeds the choice of noise files for silence and the unknown subsample.

    Returns:
        A list of `Example(path, label, speaker)` tuples; `label` indexes `label_names(labels)`.

    Raises:
        DataError: the directory is missing, a split list is missing or unreadable, the label folders the view
            needs are missing, there are no wav files, a file name is malformed, or silence is asked for without
            background-noise files.
        ValueError: an argument is out of range.
    """
    split = _canonical_split(split)
    labels = _check_labels(labels)
    silence_fraction = check_number("silence_fraction", silence_fraction, low=0, high=1)
    unknown_fraction = check_number("unknown_fraction", unknown_fraction, low=0, allow_none=True)
    root = _check_root(root)
    validation, testing = _read_list(root, VALIDATION_LIST), _read_list(root, TESTING_LIST)
    words = _word_files(root)
    _check_view_folders(root, labels, words)
    known, unknown = _word_examples(root, split, labels, words, validation, testing)
    if labels == "35":
        return known
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    num_silence = int(round(silence_fraction * len(known)))
    if unknown_fraction is not None:
        keep = min(len(unknown), int(math.ceil(unknown_fraction * (len(known) + num_silence))))
        chosen = np.sort(rng.choice(len(unknown), size=keep, replace=False)) if keep else []
        unknown = [unknown[i] for i in chosen]
    examples = sorted(known + unknown, key=lambda e: e.path)
    return examples + _silence_examples(root, num_silence, rng)


def _check_view_folders(root: Path, labels: str, words: dict[str, list[str]]) -> None:
    """Refuses a directory that lacks a word folder the label view names (12: the command words; 35: all)."""
    needed = COMMAND_WORDS if labels == "12" else WORDS_35
    missing = [word for word in needed if word not in words]
    if missing:
        raise DataError(
            f"The {labels}-label view needs a folder of wav files for each of {list(needed)}; missing under "
            f"{str(root)!r}: {missing}."
            + (" Use labels='12', or synthesize with words=WORDS_35." if labels == "35" else "")
        )


def _word_examples(root: Path, split: str, labels: str, words: dict[str, list[str]], validation: set[str],
                   testing: set[str]) -> tuple[list[Example], list[Example]]:
    """(examples of the view's words, examples of other words as `_unknown_`) in `split`, by word then path.

    The 35-label view has no `_unknown_`: folders outside its words are left out.
    """
    index = {name: i for i, name in enumerate(label_names(labels))}
    known, unknown = [], []
    for word, files in words.items():
        if labels == "35" and word not in index:
            continue
        for relative in files:
            if _split_of(relative, validation, testing) != split:
                continue
            path, speaker = str(root / relative), speaker_id(relative)
            if word in index:
                known.append(Example(path, index[word], speaker))
            else:
                unknown.append(Example(path, index[UNKNOWN_LABEL], speaker))
    return known, unknown


def _silence_examples(root: Path, count: int, rng: np.random.Generator) -> list[Example]:
    """`count` `_silence_` examples, each naming a background-noise file drawn with `rng` (cut at load time)."""
    if not count:
        return []
    noise = background_noise_files(root)
    if not noise:
        raise DataError(
            f"`_silence_` examples are cut from {BACKGROUND_NOISE_DIR}/*.wav, but {str(root)!r} has none. Add "
            "background-noise wav files or pass silence_fraction=0."
        )
    silence = LABELS_12.index(SILENCE_LABEL)
    return [Example(noise[i], silence, "") for i in rng.integers(0, len(noise), size=count)]


def read_wav(path) -> tuple[np.ndarray, int]:
    """Reads a wav file as float32 in [-1, 1] (mono: channels are averaged) and its sample rate.

    Raises:
        DataError: the file cannot be read as wav.
    """
    from scipy.io import wavfile

    try:
        rate, data = wavfile.read(os.fspath(path))
    except (OSError, ValueError) as error:
        raise DataError(f"Cannot read wav file {str(path)!r}: {error}") from error
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        data = (data.astype(np.float32) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    data = data.astype(np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return data, int(rate)


def _noise_bank(files, num_samples: int, sample_rate: int):
    """Concatenated noise recordings (each tiled to at least one clip) with start offsets and lengths."""
    clips = []
    for path in files:
        data, rate = read_wav(path)
        if rate != sample_rate:
            raise DataError(
                f"Background noise {path!r} has sample rate {rate} Hz; expected {sample_rate} Hz like the clips."
            )
        if data.size == 0:
            raise DataError(f"Background noise {path!r} is empty.")
        if data.size < num_samples:
            data = np.tile(data, int(math.ceil(num_samples / data.size)))
        clips.append(data)
    lengths = np.array([c.size for c in clips], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return np.concatenate(clips).astype(np.float32), starts, lengths


def load_speech_commands(
    root,
    split: str,
    *,
    labels: str = "12",
    batch_size: int | None = 32,
    features: FeatureConfig | None = FeatureConfig(),
    background_noise: float = 0.0,
    background_frequency: float = 0.8,
    time_shift_ms: float = 0.0,
    shuffle: bool | None = None,
    seed: int = 0,
    cache: bool | str = False,
    silence_fraction: float = 0.1,
    unknown_fraction: float | None = None,
):
    """A `tf.data.Dataset` of `(features or waveform, label)` for one split of a Speech Commands directory.

    Clips are decoded, padded with zeros or trimmed to 1 s, optionally augmented (train split only: random time
    shift, then background noise mixed in), batched, and passed through the feature front end.

    Args:
        root: the Speech Commands directory (see the module docstring for the layout).
        split: `"train"`, `"validation"` or `"test"`.
        labels: `"12"` or `"35"` (see `list_examples`).
        batch_size: examples per batch; `None` yields single examples.
        features: a `FeatureConfig` (default: the 40-bin log-mel front end, 30 ms window, 20 ms hop, giving
            float32 `(batch, 49, 40)`); `None` yields raw float32 waveforms `(batch, 16000)`. Its `sample_rate`
            must match the files.
        background_noise: train split only: maximum volume of the background noise mixed into a clip (0 turns
            mixing off; the TF recipe uses 0.1). Each clip gets noise with probability `background_frequency`, at a
            volume drawn uniformly from [0, background_noise], from a random file and offset.
        background_frequency: fraction of training clips that get background noise.
        time_shift_ms: train split only: clips are shifted by a uniform random amount in
            [-time_shift_ms, time_shift_ms] (zero fill).
        shuffle: shuffle the examples each epoch; `None` means True for train and False otherwise.
        seed: seeds the shuffle, the augmentation and the `_silence_` segments; the same seed gives the same
            sequence of epochs.
        cache: cache the decoded clips: `True` in memory, a path string for a file cache, `False` to decode each
            epoch.
        silence_fraction: see `list_examples`.
        unknown_fraction: see `list_examples`.

    Returns:
        A `tf.data.Dataset` yielding `(x, label)` with int32 labels.

    Raises:
        DataError: see `list_examples`; also when noise mixing is asked for without background-noise files.
        ValueError: an argument is out of range.
    """
    if features is not None and not isinstance(features, FeatureConfig):
        raise TypeError(f"`features` must be a FeatureConfig or None. Received: features={features!r}")
    batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True)
    background_noise = check_number("background_noise", background_noise, low=0)
    background_frequency = check_number("background_frequency", background_frequency, low=0, high=1)
    time_shift_ms = check_number("time_shift_ms", time_shift_ms, low=0)
    split = _canonical_split(split)
    sample_rate = features.sample_rate if features is not None else SAMPLE_RATE
    examples = list_examples(
        root, split, labels, silence_fraction=silence_fraction, unknown_fraction=unknown_fraction, seed=seed
    )
    if not examples:
        raise DataError(
            f"The {split!r} split of {str(root)!r} has no examples (check {VALIDATION_LIST}/{TESTING_LIST})."
        )
    train = split == "train"
    mix = train and background_noise > 0 and background_frequency > 0
    shift = int(round(sample_rate * time_shift_ms / 1000.0)) if train else 0
    is_silence = [labels == "12" and e.label == LABELS_12.index(SILENCE_LABEL) and e.speaker == "" for e in examples]
    noise_files = background_noise_files(root)
    if mix and not noise_files:
        raise DataError(
            f"`background_noise={background_noise}` mixes in {BACKGROUND_NOISE_DIR}/*.wav, but {str(root)!r} has "
            "none. Add noise files or pass background_noise=0."
        )
    noise = _NoiseBank.load(noise_files if mix or any(is_silence) else [], sample_rate)

    ds = _example_dataset(examples, is_silence, noise_files)
    shuffle = train if shuffle is None else bool(shuffle)
    if shuffle and not cache:
        ds = ds.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(_clip_reader(noise, sample_rate, seed), num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache("" if cache is True else str(cache))
        if shuffle:
            ds = ds.shuffle(min(len(examples), 10_000), seed=seed, reshuffle_each_iteration=True)
    if shift or mix:
        augment = _augmenter(noise, seed, shift=shift, noise_files=len(noise_files) if mix else 0,
                             background_noise=background_noise, background_frequency=background_frequency)
        randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, randoms)).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size is not None:
        ds = ds.batch(batch_size)
    if features is not None:
        ds = ds.map(lambda w, y: (compute_features(w, features), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class _NoiseBank(NamedTuple):
    """Background-noise recordings laid end to end in one tensor, so a graph can cut 1 s segments from any of them."""

    bank: tf.Tensor  # float32 samples of every recording (each tiled to at least one clip).
    starts: tf.Tensor  # int64 offset of each recording in `bank`.
    lengths: tf.Tensor  # int64 length of each recording.
    num_samples: int  # Samples per clip (1 s).

    @classmethod
    def load(cls, files, sample_rate: int) -> "_NoiseBank":
        """The bank of `files`; with no files, a bank of one silent clip (nothing then cuts from it)."""
        num_samples = sample_rate  # Every clip is padded or trimmed to 1 s.
        if not files:
            return cls(tf.zeros([num_samples]), tf.zeros([1], tf.int64), tf.constant([num_samples], tf.int64),
                       num_samples)
        bank, starts, lengths = (tf.constant(a) for a in _noise_bank(files, num_samples, sample_rate))
        return cls(bank, starts, lengths, num_samples)

    def segment(self, file_index, rng_seed):
        """One clip of recording `file_index` at an offset drawn from the stateless seed `rng_seed`."""
        offset = tf.random.stateless_uniform(
            [], rng_seed, minval=0, maxval=self.lengths[file_index] - self.num_samples + 1, dtype=tf.int64
        )
        start = self.starts[file_index] + offset
        return self.bank[start : start + self.num_samples]


def _example_dataset(examples: list[Example], is_silence: list[bool], noise_files: list[str]):
    """(path, label, is silence, noise-file index, position) per example: what `_clip_reader` turns into a clip."""
    noise_index = {path: i for i, path in enumerate(noise_files)}
    return tf.data.Dataset.from_tensor_slices(
        (
            tf.constant([e.path for e in examples]),
            tf.constant([e.label for e in examples], tf.int32),
            tf.constant(is_silence),
            tf.constant([noise_index.get(e.path, 0) for e in examples], tf.int64),
            tf.range(len(examples), dtype=tf.int64),
        )
    )


def _clip_reader(noise: _NoiseBank, sample_rate: int, seed: int):
    """The map function from an `_example_dataset` element to `(1 s waveform, label)`.

    A word clip is decoded (zero-padded or trimmed); a `_silence_` clip is a noise segment at a volume, both drawn
    from (seed, position) so validation and test silences are the same every epoch.
    """
    num_samples = noise.num_samples

    def load(path, label, silence, file_index, position):
        def read():
            audio, rate = tf.audio.decode_wav(tf.io.read_file(path), desired_channels=1, desired_samples=num_samples)
            with tf.control_dependencies(
                [tf.debugging.assert_equal(rate, sample_rate, message=f"wav sample rate must be {sample_rate} Hz")]
            ):
                return tf.identity(audio[:, 0])

        def make_silence():
            rng_seed = tf.stack([tf.cast(seed, tf.int64), position])
            volume = tf.random.stateless_uniform([], rng_seed + 7919)
            return noise.segment(file_index, rng_seed) * volume

        waveform = tf.cond(silence, make_silence, read)
        waveform.set_shape([num_samples])
        return waveform, label

    return load


def _augmenter(noise: _NoiseBank, seed: int, *, shift: int, noise_files: int, background_noise: float,
               background_frequency: float):
    """The training augmentation, a map over `((waveform, label), random int64)`.

    A random time shift in [-shift, shift] samples (zero fill), then (when `noise_files` > 0) with probability
    `background_frequency` a noise segment at a volume in [0, background_noise]. Every draw is stateless, seeded by
    the element's random number and `seed`.
    """
    num_samples = noise.num_samples

    def augment(element, random):
        waveform, label = element
        base = tf.stack([random, tf.cast(seed, tf.int64)])
        if shift:
            start = tf.random.stateless_uniform([], base, minval=0, maxval=2 * shift + 1, dtype=tf.int64)
            padded = tf.pad(waveform, [[shift, shift]])
            waveform = padded[start : start + num_samples]
        if noise_files:
            file_index = tf.random.stateless_uniform([], base + 1, minval=0, maxval=noise_files, dtype=tf.int64)
            volume = tf.random.stateless_uniform([], base + 2, maxval=background_noise)
            apply = tf.random.stateless_uniform([], base + 3) < background_frequency
            volume = tf.where(apply, volume, 0.0)
            waveform = tf.clip_by_value(waveform + volume * noise.segment(file_index, base + 4), -1.0, 1.0)
        waveform.set_shape([num_samples])
        return waveform, label

    return augment


def load_speech_commands_arrays(
    root,
    split: str,
    *,
    labels: str = "12",
    features: FeatureConfig | None = FeatureConfig(),
    seed: int = 0,
    silence_fraction: float = 0.1,
    unknown_fraction: float | None = None,
    batch_size: int = 256,
):
    """One split as numpy arrays plus the speaker of every example (e.g. for a per-speaker federated partition).

    The rows follow `list_examples(root, split, labels, ...)` (no shuffle, no augmentation).

    Args:
        root, split, labels, features, seed, silence_fraction, unknown_fraction: as in `load_speech_commands`.
        batch_size: batch size used while reading (does not change the result).

    Returns:
        `(x, y, speakers)`: float32 features `(n, frames, bins)` (or waveforms `(n, 16000)` when `features=None`),
        int32 labels `(n,)` and a numpy array of `n` speaker-id strings (`""` for `_silence_`).

    Raises:
        DataError: see `list_examples`.
    """
    examples = list_examples(
        root, split, labels, silence_fraction=silence_fraction, unknown_fraction=unknown_fraction, seed=seed
    )
    ds = load_speech_commands(
        root, split, labels=labels, batch_size=batch_size, features=features, shuffle=False, seed=seed,
        silence_fraction=silence_fraction, unknown_fraction=unknown_fraction,
    )  # fmt: skip
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys), np.array([e.speaker for e in examples])


def speech_commands_info(root) -> dict:
    """Counts of a Speech Commands directory: examples per word and split, speakers, background noise.

    Args:
        root: the Speech Commands directory.

    Returns:
        A dict with `root`, `counts` (word -> {"train": n, "validation": n, "test": n}), `split_totals`
        (split -> n), `num_examples`, `num_speakers`, `speakers_per_split` (split -> n) and `background_noise`
        (file names).

    Raises:
        DataError: as `list_examples` (missing directory or list files, no wavs, malformed file names).
    """
    root = _check_root(root)
    validation, testing = _read_list(root, VALIDATION_LIST), _read_list(root, TESTING_LIST)
    words = _word_files(root)
    counts = {}
    speakers = {split: set() for split in SPLITS}
    for word, files in words.items():
        counts[word] = dict.fromkeys(SPLITS, 0)
        for relative in files:
            split = _split_of(relative, validation, testing)
            counts[word][split] += 1
            speakers[split].add(speaker_id(relative))
    totals = {split: sum(c[split] for c in counts.values()) for split in SPLITS}
    return {
        "root": str(root),
        "counts": counts,
        "split_totals": totals,
        "num_examples": sum(totals.values()),
        "num_speakers": len(set().union(*speakers.values())),
        "speakers_per_split": {split: len(s) for split, s in speakers.items()},
        "background_noise": [os.path.basename(p) for p in background_noise_files(root)],
    }


def download_speech_commands(dest) -> str:
    """Downloads and extracts Speech Commands v0.02 (2.3 GB) into `dest` with `keras.utils.get_file`.

    For Colab and machines with internet access; the tests never call it. The archive is kept as
    `dest/speech_commands_v2_archive` and a second call finds it instead of downloading again.

    Args:
        dest: directory to download into.

    Returns:
        The extracted Speech Commands root (holds the word folders and the list files); pass it as `root`.

    Raises:
        DataError: the download fails (no network: the message says how to proceed offline), or the extracted
            archive does not contain `validation_list.txt`.
    """
    import keras

    dest = os.path.abspath(os.path.expanduser(os.fspath(dest)))
    os.makedirs(dest, exist_ok=True)
    try:
        path = keras.utils.get_file(
            fname="speech_commands_v2", origin=SPEECH_COMMANDS_URL, extract=True, cache_dir=dest, cache_subdir=""
        )
    except Exception as error:  # noqa: BLE001 - get_file raises a bare Exception ("URL fetch failure on ...")
        raise DataError(
            f"could not download Speech Commands from {SPEECH_COMMANDS_URL} into {dest!r} ({error}). Without a "
            "network, synthesize a data set in the same layout (`tfx_ext.apps.synthesis.synthesize_keywords(root)` "
            "or `tfx-ext data synthesize --root=DIR`), or download and extract the archive elsewhere and pass its "
            "directory as `root`."
        ) from error
    for candidate in (path, os.path.dirname(path), os.path.join(dest, "speech_commands_v2")):
        if os.path.isfile(os.path.join(candidate, VALIDATION_LIST)):
            return candidate
    raise DataError(f"Downloaded {SPEECH_COMMANDS_URL} but found no {VALIDATION_LIST} under {dest!r}.")


__all__ = [
    "BACKGROUND_NOISE_DIR",
    "COMMAND_WORDS",
    "Example",
    "LABEL_VIEWS",
    "LABELS_12",
    "SAMPLE_RATE",
    "SILENCE_LABEL",
    "SPEECH_COMMANDS_URL",
    "SPLITS",
    "TESTING_LIST",
    "UNKNOWN_LABEL",
    "VALIDATION_LIST",
    "WORDS_35",
    "background_noise_files",
    "download_speech_commands",
    "label_names",
    "list_examples",
    "load_speech_commands",
    "load_speech_commands_arrays",
    "read_wav",
    "speaker_id",
    "speech_commands_info",
]
