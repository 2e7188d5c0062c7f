"""Offline keyword data: writes a small data set in exactly the Speech Commands layout.

Three engines:

* `"espeak"`: speaks each word with the `espeak-ng` binary (`apt-get install espeak-ng`).
* `"libespeak"`: the same synthesizer loaded through ctypes from the `espeakng-loader` wheel (`tfx_ext.apps.libespeak`),
  so pip alone gives speech; its wheel ships ~100 voice variants. espeak-ng is GPL-3: it is loaded at run time,
  never vendored.
* `"numpy"` (the last resort when neither loads; `"auto"` then warns loudly): each word is a fixed sequence (derived
  from the word's text) of formant-like segments: gliding tone chirps amplitude-modulated at a speaker's f0, or
  band-passed noise bursts. Not speech, but the classes are distinct and learnable, so pipelines can be tested.

With espeak, a *speaker* is a fixed (accent, variant, pitch, pitch range, speed, amplitude, word gap), e.g.
(`en-gb-scotland`, `f3`, pitch 62, 171 words/min); each clip jitters speed and pitch a little. The 22.05 kHz audio
is resampled to 16 kHz (`scipy.signal.resample_poly`), trimmed of leading/trailing silence, scaled to a random peak
level, placed at a random offset within the 1 s clip and mixed with a little white/pink noise. With numpy, a speaker
shifts all frequencies by a factor, has an f0 and speaks faster or slower.

Splits follow the real data set's rule that a speaker appears in exactly one split: speakers are ordered by the
SHA-1 hash of their id, and the first `round(validation_fraction * speakers)` go to validation, the next
`round(test_fraction * speakers)` to test (at least one each when there are 3 or more speakers and the fraction is
positive), the rest to train. The split is by *voice* too: a quarter of the variants and of the accents (ordered by
SHA-1, at least one each) are held out of train and validation, and every other test speaker (in hash order, the
first included) is an *unseen-voice* speaker with a held-out variant (numpy: a frequency shift outside the training
range). `speakers.json` records each speaker's split, voice and whether it is unseen, so evaluation can report
seen-voice and unseen-voice accuracy apart (`voice_groups`).

`_background_noise_/` gets 10 s of white noise, pink noise, brown noise and a 50 Hz mains hum with harmonics.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from tfx_ext._validate import check_choice, check_int, check_number
from tfx_ext.apps import libespeak
from tfx_ext.data.speech_commands import (
    BACKGROUND_NOISE_DIR,
    COMMAND_WORDS,
    SAMPLE_RATE,
    SPLITS,
    TESTING_LIST,
    VALIDATION_LIST,
    WORDS_35,
    speaker_id,
)
from tfx_ext.errors import DataError

UNKNOWN_WORDS = tuple(w for w in WORDS_35 if w not in COMMAND_WORDS)  # The 25 non-command Speech Commands words.
DEFAULT_WORDS = COMMAND_WORDS + UNKNOWN_WORDS
MARKER_FILE = ".tfx_ext_synthesis.json"
SPEAKERS_FILE = "speakers.json"
ENGINES = ("auto", "espeak", "libespeak", "numpy")
HELD_OUT_FRACTION = 0.25  # Of the variants and accents, kept for unseen-voice test speakers.
_FORMAT_VERSION = 2
_ESPEAK_RATE = 22050
_NOISE_SECONDS = 10
# Candidate espeak-ng voices and variants; the ones this installation lacks are dropped at run time.
_ESPEAK_VOICES = ("en", "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                  "en-029", "en-us-nyc")  # fmt: skip
_ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                    "klatt3", "croak")  # fmt: skip
_WORD_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9'-]*$")


def espeak_available() -> bool:
    """Whether the `espeak-ng` binary is on PATH."""
    return shutil.which("espeak-ng") is not None


def resolve_engine(engine: str = "auto") -> str:
    """The engine `"auto"` stands for: the espeak-ng binary, else the `espeakng-loader` library, else numpy patterns
    (with a loud warning: they are not speech). Other names are returned as given."""
    check_choice("engine", engine, ENGINES)
    if engine != "auto":
        return engine
    if espeak_available():
        return "espeak"
    if libespeak.available():
        return "libespeak"
    warnings.warn(NUMPY_FALLBACK_WARNING, RuntimeWarning, stacklevel=2)
    return "numpy"


NUMPY_FALLBACK_WARNING = (
    "NO SPEECH SYNTHESIZER: neither the espeak-ng binary nor the espeakng-loader wheel loads, so the keyword data "
    "are numpy tone patterns, NOT SPEECH; accuracies on them say nothing about real speech. Fix: "
    "`pip install espeakng-loader` (or `apt-get install espeak-ng`)."
)


def _run_espeak(text: str, voice: str, speed: int = 160, pitch: int = 50, amplitude: int = 100,
                word_gap: int = 0) -> np.ndarray:
    """Speaks `text` with the binary; returns float32 audio at 22.05 kHz (espeak-ng's rate)."""
    command = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude), "-g",
               str(word_gap), "--stdout", text]
    result = subprocess.run(command, capture_output=True, timeout=60, check=False)
    if result.returncode != 0 or len(result.stdout) < 44:
        message = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"espeak-ng failed (exit {result.returncode}) for {command}: {message}")
    return _parse_stream_wav(result.stdout)


def _parse_stream_wav(data: bytes) -> np.ndarray:
    # espeak-ng --stdout writes a streaming header whose chunk sizes are placeholders, so read it by hand.
    position = data.find(b"data")
    if data[:4] != b"RIFF" or position < 0:
        raise RuntimeError("espeak-ng did not write a wav stream.")
    rate = int.from_bytes(data[24:28], "little")
    if rate != _ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz audio; expected {_ESPEAK_RATE} Hz.")
    payload = data[position + 8 :]
    payload = payload[: len(payload) // 2 * 2]
    return np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0


def _speak(engine: str, text: str, voice: str, speed: int, pitch: int, amplitude: int = 100,
           pitch_range: int = 50, word_gap: int = 0) -> np.ndarray:
    """Float32 audio at 22.05 kHz from the espeak-ng binary or library (the binary has no pitch-range flag)."""
    if engine == "libespeak":
        return libespeak.speak(text, voice, speed, pitch, amplitude, pitch_range, word_gap)
    return _run_espeak(text, voice, speed, pitch, amplitude, word_gap)


@functools.lru_cache(maxsize=None)
def espeak_voices(engine: str = "espeak") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (accents, variants) this espeak-ng installation can speak with: the candidate accents and, for the
    binary, the candidate variants; for `"libespeak"`, every variant its wheel ships.

    Probes each candidate once (a few hundred milliseconds in all) and caches the answer for the process.

    Raises:
        RuntimeError: the engine is missing or none of the voices works.
    """
    check_choice("engine", engine, ("espeak", "libespeak"))
    if engine == "espeak" and not espeak_available():
        raise RuntimeError("espeak-ng is not on PATH (install it with `apt-get install espeak-ng`).")
    if engine == "libespeak" and not libespeak.available():
        raise RuntimeError("libespeak-ng does not load: `pip install espeakng-loader` (a wheel for this platform).")

    def works(voice):
        try:
            return _speak(engine, "yes", voice, 160, 50).size > 0
        except (RuntimeError, subprocess.SubprocessError, OSError):
            return False

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        voices = tuple(v for v, ok in zip(_ESPEAK_VOICES, pool.map(works, _ESPEAK_VOICES)) if ok)
        if not voices:
            raise RuntimeError(f"espeak-ng ({engine}) cannot speak with any of the voices {_ESPEAK_VOICES}.")
        names = libespeak.variants() if engine == "libespeak" else _ESPEAK_VARIANTS
        candidates = [f"{voices[0]}+{variant}" for variant in names]
        variants = tuple(v for v, ok in zip(names, pool.map(works, candidates)) if ok)
    return voices, variants or ("",)


def held_out(names, fraction: float = HELD_OUT_FRACTION) -> tuple[str, ...]:
    """The names kept out of training: the first `round(fraction * n)` by SHA-1 (at least one of two or more)."""
    order = sorted(names, key=lambda name: hashlib.sha1(name.encode()).hexdigest())
    k = max(int(round(fraction * len(order))), 1) if len(order) >= 2 else 0
    return tuple(sorted(order[:k]))


def _speaker_ids(speakers: int, seed: int) -> list[str]:
    ids, seen = [], set()
    for i in range(speakers):
        salt = 0
        while True:
            sid = hashlib.sha1(f"tfx-ext/{seed}/{i}/{salt}".encode()).hexdigest()[:8]
            if sid not in seen:
                break
            salt += 1
        seen.add(sid)
        ids.append(sid)
    return ids


def assign_speaker_splits(speaker_ids, validation_fraction: float, test_fraction: float) -> dict[str, str]:
    """Speaker id -> split, ordered by the SHA-1 of the id (see the module docstring).

    Returns:
        A dict mapping every speaker id to `"train"`, `"validation"` or `"test"`.
    """
    order = sorted(speaker_ids, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    n = len(order)

    def count(fraction):
        k = int(round(fraction * n))
        return max(k, 1) if fraction > 0 and n >= 3 else k

    n_val = count(validation_fraction)
    n_test = min(count(test_fraction), max(n - n_val - 1, 0))
    splits = {}
    for i, sid in enumerate(order):
        splits[sid] = "validation" if i < n_val else "test" if i < n_val + n_test else "train"
    return splits


def _place(speech: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Trims silence, scales, puts the sound at a random offset in 1 s and adds noise; float32 in [-1, 1]."""
    peak = float(np.max(np.abs(speech))) if speech.size else 0.0
    if peak > 0:
        active = np.flatnonzero(np.abs(speech) > 0.02 * peak)
        margin = int(0.01 * SAMPLE_RATE)
        speech = speech[max(active[0] - margin, 0) : active[-1] + margin]
        speech = speech / peak * rng.uniform(0.3, 0.9)
    speech = speech[:SAMPLE_RATE]
    clip = np.zeros(SAMPLE_RATE, np.float32)
    offset = int(rng.integers(0, SAMPLE_RATE - speech.size + 1))
    clip[offset : offset + speech.size] = speech
    if noise > 0:
        level = rng.uniform(0.0, noise)
        color = rng.uniform()
        clip += level * ((1 - color) * rng.standard_normal(SAMPLE_RATE) + color * _pink(SAMPLE_RATE, rng))
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def _pink(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance pink (1/f power) noise."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n=num_samples)
    return noise / (noise.std() + 1e-12)


def _background_noises(rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = _NOISE_SECONDS * SAMPLE_RATE
    t = np.arange(n) / SAMPLE_RATE
    brown = np.cumsum(rng.standard_normal(n))
    brown -= np.convolve(brown, np.ones(1601) / 1601, mode="same")  # Remove the slow drift of the random walk.
    hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3, 5))
    hum = hum + 0.1 * rng.standard_normal(n)
    return {
        "white_noise.wav": 0.1 * rng.standard_normal(n),
        "pink_noise.wav": 0.1 * _pink(n, rng),
        "brown_noise.wav": 0.1 * brown / brown.std(),
        "hum.wav": 0.1 * hum / hum.std(),
    }


def _write_wav(path, audio: np.ndarray) -> None:
    from scipy.io import wavfile

    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    wavfile.write(os.fspath(path), SAMPLE_RATE, pcm)


# ----------------------------------------------------------------------------------------------------- numpy engine
def _word_pattern(word: str) -> tuple[float, list[dict]]:
    """(duration in s, segments) for `word`, derived from its text (independent of the word list and seed)."""
    rng = np.random.default_rng(zlib.crc32(word.encode("utf-8")))
    duration = rng.uniform(0.35, 0.6)
    segments = []
    for i in range(int(rng.integers(2, 5))):
        if i > 0 and rng.uniform() < 0.3:
            segments.append({"kind": "noise", "weight": rng.uniform(0.4, 0.9), "center": rng.uniform(2500, 6000)})
        else:
            segments.append(
                {
                    "kind": "tone",
                    "weight": rng.uniform(0.6, 1.4),
                    "start": np.array([rng.uniform(250, 1000), rng.uniform(900, 2600), rng.uniform(2200, 3800)]),
                    "end": np.array([rng.uniform(250, 1000), rng.uniform(900, 2600), rng.uniform(2200, 3800)]),
                    "gains": rng.uniform(0.3, 1.0, size=3),
                }
            )
    return duration, segments


def _numpy_word(word: str, voice: dict, rng: np.random.Generator) -> np.ndarray:
    duration, segments = _word_pattern(word)
    total = duration * voice["speed"] * rng.uniform(0.92, 1.08)
    weights = np.array([s["weight"] for s in segments])
    shift = voice["shift"] * rng.uniform(0.98, 1.02)
    f0 = voice["f0"] * rng.uniform(0.95, 1.05)
    pieces = []
    for segment, weight in zip(segments, weights / weights.sum()):
        n = max(int(total * weight * SAMPLE_RATE), 32)
        t = np.arange(n) / SAMPLE_RATE
        envelope = np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 0.5
        if segment["kind"] == "tone":
            ramp = np.linspace(0.0, 1.0, n)[:, None]
            freqs = shift * (segment["start"] + (segment["end"] - segment["start"]) * ramp)  # (n, 3)
            phases = 2 * np.pi * np.cumsum(freqs, axis=0) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi, size=3)
            tones = (np.sin(phases) * segment["gains"]).sum(axis=1)
            piece = tones * (0.6 + 0.4 * np.sin(2 * np.pi * f0 * t))
        else:
            spectrum = np.fft.rfft(rng.standard_normal(n))
            freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
            center = min(segment["center"] * shift, 7000.0)
            spectrum[np.abs(freqs - center) > 0.2 * center] = 0
            piece = np.fft.irfft(spectrum, n=n)
            piece = 0.5 * piece / (np.abs(piece).max() + 1e-12)
        pieces.append(piece * envelope)
    return np.concatenate(pieces).astype(np.float32)


# ------------------------------------------------------------------------------------------------------ the writer
def _check_args(words, speakers, clips_per_speaker, engine, noise, validation_fraction, test_fraction):
    if isinstance(words, str) or not words:
        raise ValueError(f"`words` must be a non-empty sequence of words. Received: words={words!r}")
    words = tuple(words)
    for word in words:
        if not isinstance(word, str) or not _WORD_PATTERN.match(word):
            raise ValueError(
                "Each word must be letters/digits (also ' and -) and not start with '_' (it becomes a folder "
                f"name). Received: word={word!r}"
            )
    if len(set(words)) != len(words):
        raise ValueError(f"`words` must not repeat. Received: words={words!r}")
    check_int("speakers", speakers, minimum=1)
    check_int("clips_per_speaker", clips_per_speaker, minimum=1)
    check_choice("engine", engine, ENGINES)
    check_number("noise", noise, low=0)
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        check_number(name, value, low=0, high=1, high_open=True)
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            "`validation_fraction + test_fraction` must be below 1 so train keeps speakers. Received: "
            f"validation_fraction={validation_fraction!r}, test_fraction={test_fraction!r}"
        )
    return words


def _prepare_root(root: Path, settings: dict):
    """Returns the summary of a complete matching data set, or clears what an earlier run wrote and returns None."""
    marker = root / MARKER_FILE
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError):
            previous = {}
        if (
            previous.get("complete")
            and previous.get("settings") == settings
            and all((root / name).is_file() for name in (VALIDATION_LIST, TESTING_LIST, SPEAKERS_FILE))
            and all((root / word).is_dir() for word in settings["words"])
        ):
            return previous["summary"]
        for name in previous.get("written", []):
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        marker.unlink()
    elif root.is_dir() and any(not name.startswith(".") for name in os.listdir(root)):
        raise DataError(
            f"{str(root)!r} is not empty and was not written by synthesize_keywords (no {MARKER_FILE}); choose an "
            "empty or new directory so no existing data is overwritten."
        )
    return None


def synthesize_keywords(
    root,
    *,
    words=DEFAULT_WORDS,
    speakers: int = 36,
    clips_per_speaker: int = 3,
    seed: int = 0,
    engine: str = "auto",
    noise: float = 0.02,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """Writes a keyword data set in the Speech Commands layout (see `tfx_ext.data.speech_commands`).

    Every word gets `speakers * clips_per_speaker` clips named `<speaker>_nohash_<k>.wav` (16 kHz mono 16-bit,
    exactly 1 s); `validation_list.txt` and `testing_list.txt` split by speaker (and by voice: see the module
    docstring); `speakers.json` records each speaker's split and voice; `_background_noise_/` holds four 10 s noise
    recordings. The defaults (10 command words + the 25 other Speech Commands words, 36 speakers x 3 clips) give
    108 clips per word, 3780 clips in all.

    Idempotent: `root/.tfx_ext_synthesis.json` records the settings; when it says a complete data set with the
    same settings is there, the call returns at once (with `cached=True`). A data set from other settings (or an
    interrupted run) is removed and rewritten; a non-empty directory without the marker is never touched.

    Args:
        root: output directory (created if needed).
        words: the words to speak; default the ten command words plus `UNKNOWN_WORDS` (which become `_unknown_`
            in the 12-label view). Use `WORDS_35` for the 35-label view.
        speakers: number of synthetic speakers.
        clips_per_speaker: clips per speaker and word (each with its own offset, jitter and noise).
        seed: seeds speakers, offsets and noise; the same seed writes the same data set.
        engine: `"espeak"` (binary), `"libespeak"` (the espeakng-loader wheel), `"numpy"`, or `"auto"` (the first
            of those three that works; numpy with a loud warning, see `resolve_engine`).
        noise: maximum standard deviation of the white/pink noise added to each clip.
        validation_fraction: fraction of speakers in the validation split.
        test_fraction: fraction of speakers in the test split.
        progress: show a tqdm progress bar.
        workers: threads writing clips (default: 2 per CPU, at most 8; espeak-ng runs as subprocesses).

    Returns:
        A summary dict: `root`, `engine` (the one used), `words`, `num_speakers`, `num_clips`, `counts`
        (word -> clips), `split_counts` (split -> clips), `speakers_per_split`, `unseen_voice_speakers`,
        `held_out` (the variants and accents no train/validation speaker has), `seconds` (time spent writing) and
        `cached` (True when an existing data set was reused).

    Raises:
        ValueError: an argument is out of range.
        DataError: `root` is a non-empty directory not written by this function.
        RuntimeError: an espeak engine was asked for but is missing or fails.
    """
    words = _check_args(words, speakers, clips_per_speaker, engine, noise, validation_fraction, test_fraction)
    engine = resolve_engine(engine)
    root = Path(root).expanduser()
    settings = {
        "format": _FORMAT_VERSION,
        "words": list(words),
        "speakers": speakers,
        "clips_per_speaker": clips_per_speaker,
        "seed": seed,
        "engine": engine,
        "noise": float(noise),
        "validation_fraction": float(validation_fraction),
        "test_fraction": float(test_fraction),
        "sample_rate": SAMPLE_RATE,
    }
    ids = _speaker_ids(speakers, seed)
    split_of = assign_speaker_splits(ids, validation_fraction, test_fraction)
    profiles, held = _speaker_profiles(engine, ids, split_of, seed)  # Probes espeak first: a missing one fails early.
    cached = _prepare_root(root, settings)
    if cached is not None:
        return dict(cached, cached=True)

    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    written = [*words, BACKGROUND_NOISE_DIR, VALIDATION_LIST, TESTING_LIST, SPEAKERS_FILE]
    (root / MARKER_FILE).write_text(json.dumps({"settings": settings, "complete": False, "written": written}))
    _write_background_noise(root / BACKGROUND_NOISE_DIR, seed)
    (root / SPEAKERS_FILE).write_text(json.dumps({sid: p for sid, p in zip(ids, profiles)}, indent=1))
    jobs = [(word, s, k) for word in words for s in range(speakers) for k in range(clips_per_speaker)]
    write_clip = _clip_writer(root, engine, ids, profiles, seed, noise)
    lists = _write_clips(root, words, jobs, write_clip, split_of, workers, progress, engine)
    (root / VALIDATION_LIST).write_text("".join(f"{p}\n" for p in sorted(lists["validation"])))
    (root / TESTING_LIST).write_text("".join(f"{p}\n" for p in sorted(lists["test"])))

    per_clip = clips_per_speaker * len(words)
    speakers_per_split = {split: sum(1 for v in split_of.values() if v == split) for split in SPLITS}
    summary = {
        "root": str(root),
        "engine": engine,
        "words": list(words),
        "num_speakers": speakers,
        "num_clips": len(jobs),
        "counts": {word: speakers * clips_per_speaker for word in words},
        "split_counts": {split: n * per_clip for split, n in speakers_per_split.items()},
        "speakers_per_split": speakers_per_split,
        "unseen_voice_speakers": sum(p["unseen"] for p in profiles),
        "held_out": held,
        "seconds": round(time.perf_counter() - start, 3),
    }
    (root / MARKER_FILE).write_text(
        json.dumps({"settings": settings, "complete": True, "written": written, "summary": summary}, indent=1)
    )
    return dict(summary, cached=False)


def _speaker_profiles(engine: str, ids: list[str], split_of: dict[str, str], seed: int
                      ) -> tuple[list[dict], dict[str, list[str]]]:
    """One voice per speaker, drawn from `seed` alone (so a speaker sounds the same in every word), and the held-out
    variants and accents.

    Train and validation speakers get voices from the seen variants and accents; the unseen-voice test speakers
    (every other test speaker in hash order) a held-out variant with any accent. Each profile has `split`,
    `unseen` and the engine's knobs: espeak (accent, variant, pitch, pitch range, speed, amplitude, word gap), numpy
    (frequency shift, speed, f0).
    """
    rng = np.random.default_rng(seed)
    test = sorted((s for s in ids if split_of[s] == "test"), key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    unseen = set(test[::2])
    if engine == "numpy":
        held = {"variants": [], "accents": []}
    else:
        voices, variants = espeak_voices(engine)
        held = {"variants": list(held_out(variants)), "accents": list(held_out(voices))}
        seen_variants = [v for v in variants if v not in held["variants"]] or list(variants)
        seen_voices = [v for v in voices if v not in held["accents"]] or list(voices)
    profiles = []
    for sid in ids:
        new = sid in unseen and (engine == "numpy" or bool(held["variants"]))
        if engine == "numpy":
            shift = rng.uniform(0.9, 1.12) if not new else rng.choice([rng.uniform(0.85, 0.9), rng.uniform(1.12, 1.18)])
            profile = {"shift": float(shift), "speed": rng.uniform(0.8, 1.25), "f0": rng.uniform(90, 250)}
        else:
            profile = {
                "voice": str(rng.choice(voices if new else seen_voices)),
                "variant": str(rng.choice(held["variants"] if new else seen_variants)),
                "pitch": int(rng.integers(20, 81)),
                "pitch_range": int(rng.integers(20, 91)),
                "speed": int(rng.integers(130, 201)),
                "amplitude": int(rng.integers(60, 161)),
                "word_gap": int(rng.integers(0, 6)),
            }
        profiles.append({"split": split_of[sid], "unseen": new, **profile})
    return profiles, held


def _write_background_noise(folder: Path, seed: int) -> None:
    folder.mkdir(exist_ok=True)
    for name, audio in _background_noises(np.random.default_rng([seed, 1])).items():
        _write_wav(folder / name, audio)


def _clip_writer(root: Path, engine: str, ids: list[str], profiles: list[dict], seed: int, noise: float):
    """The function that writes clip k of speaker s saying a word, `(word, s, k) -> relative path`.

    Each clip draws its jitter, offset and noise from (seed, s, word, k), so clips do not depend on the order the
    worker threads write them in.
    """
    from scipy.signal import resample_poly  # Imported here, not first inside the worker threads.

    def write_clip(job):
        word, s, k = job
        clip_rng = np.random.default_rng([seed, s, zlib.crc32(word.encode("utf-8")), k])
        speech = speak_as(engine, word, profiles[s], clip_rng, resample_poly)
        relative = f"{word}/{ids[s]}_nohash_{k}.wav"
        _write_wav(root / relative, _place(speech, clip_rng, noise))
        return relative

    return write_clip


def speak_as(engine: str, text: str, profile: dict, clip_rng: np.random.Generator, resample=None) -> np.ndarray:
    """`text` spoken by the speaker `profile` (from `_speaker_profiles`) with this clip's speed and pitch jitter:
    float32 speech at 16 kHz, untrimmed (the numpy engine draws a pattern for `text` instead)."""
    if engine == "numpy":
        return _numpy_word(text, profile, clip_rng)
    if resample is None:
        from scipy.signal import resample_poly as resample
    voice = f"{profile['voice']}+{profile['variant']}" if profile["variant"] else profile["voice"]
    speed = int(round(profile["speed"] * clip_rng.uniform(0.92, 1.08)))
    pitch = int(np.clip(profile["pitch"] + clip_rng.integers(-4, 5), 0, 99))
    audio = _speak(engine, text, voice, speed, pitch, profile["amplitude"], profile["pitch_range"], profile["word_gap"])
    return resample(audio, 320, 441).astype(np.float32)


def _write_clips(root: Path, words, jobs, write_clip, split_of: dict[str, str], workers: int | None,
                 progress: bool, engine: str) -> dict[str, list[str]]:
    """Writes every clip in a thread pool; returns the relative paths of the validation and test clips."""
    from tqdm.auto import tqdm

    for word in words:
        (root / word).mkdir(exist_ok=True)
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    lists = {"validation": [], "test": []}
    with concurrent.futures.ThreadPoolExecutor(workers) as pool, tqdm(
        total=len(jobs), disable=not progress, desc=f"synthesizing keywords ({engine})", unit="clip"
    ) as bar:
        for relative in pool.map(write_clip, jobs):
            split = split_of[speaker_id(relative)]
            if split in lists:
                lists[split].append(relative)
            bar.update(1)
    return lists


def voice_groups(root) -> dict[str, bool]:
    """Speaker id -> whether its voice is unseen in training, from `speakers.json`; `{}` for data sets without one
    (real Speech Commands, or synthesized before voice splits)."""
    path = Path(root) / SPEAKERS_FILE
    if not path.is_file():
        return {}
    try:
        return {sid: bool(profile["unseen"]) for sid, profile in json.loads(path.read_text()).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{str(path)!r} is not a speakers file written by synthesize_keywords ({error}); "
                        "delete the data set and synthesize it again.") from error


def speech_commands_or_synthesized(directory, *, download: bool = True, **synthesize_kwargs) -> tuple[str, str]:
    """Real Speech Commands when it can be downloaded, else a synthesized set in the same layout (notebooks).

    Args:
        directory: where `speech_commands/` (downloaded) or `keywords/` (synthesized) goes.
        download: try the download first (2.3 GB); False synthesizes at once.
        **synthesize_kwargs: for `synthesize_keywords` (speakers, clips_per_speaker, engine, seed, progress, ...).

    Returns:
        `(root, source)`: the data set directory and `"speech_commands"` or the synthesis engine used. When the
        download fails (no network), a message says so and that the figures are then on synthesized speech.
    """
    from tfx_ext.data.speech_commands import download_speech_commands

    directory = Path(directory).expanduser()
    if download:
        try:
            return download_speech_commands(directory / "speech_commands"), "speech_commands"
        except DataError as error:
            print(f"Speech Commands is not available ({error})\nFalling back to synthesized speech: the "
                  "keywords are spoken by espeak-ng voices, and the accuracies below are on that synthetic set.")
    summary = synthesize_keywords(directory / "keywords", **synthesize_kwargs)
    return summary["root"], summary["engine"]


__all__ = [
    "DEFAULT_WORDS",
    "ENGINES",
    "HELD_OUT_FRACTION",
    "MARKER_FILE",
    "NUMPY_FALLBACK_WARNING",
    "SPEAKERS_FILE",
    "UNKNOWN_WORDS",
    "assign_speaker_splits",
    "espeak_available",
    "espeak_voices",
    "held_out",
    "resolve_engine",
    "speak_as",
    "speech_commands_or_synthesized",
    "synthesize_keywords",
    "voice_groups",
]
