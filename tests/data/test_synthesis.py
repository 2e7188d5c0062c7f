"""synthesize_keywords: the Speech Commands layout with espeak-ng (binary and ctypes library), the numpy fallback,
and the split by voice."""

import json
import os
import re
import time
import wave

import numpy as np
import pytest

from tfx_ext.apps import libespeak
from tfx_ext.data import COMMAND_WORDS, LABELS_12, list_examples, load_speech_commands, speaker_id
from tfx_ext.apps.synthesis import (
    DEFAULT_WORDS,
    MARKER_FILE,
    SPEAKERS_FILE,
    assign_speaker_splits,
    espeak_available,
    resolve_engine,
    synthesize_keywords,
    voice_groups,
)
from tfx_ext.errors import DataError

needs_espeak = pytest.mark.skipif(
    not espeak_available(), reason="espeak-ng is not installed (apt-get install espeak-ng); the numpy engine is tested"
)
needs_libespeak = pytest.mark.skipif(not libespeak.available(), reason="the espeakng-loader wheel does not load here")
ESPEAK_ENGINES = [pytest.param("espeak", marks=needs_espeak), pytest.param("libespeak", marks=needs_libespeak)]
OLD_WORDS = COMMAND_WORDS + ("house", "tree", "bird", "dog")  # A small 12-label word list for fast tests.


def check_layout(root, summary, words=DEFAULT_WORDS, speakers=3, clips=2):
    """Asserts the exact Speech Commands layout and returns speaker -> split."""
    assert summary["words"] == list(words) and summary["num_clips"] == len(words) * speakers * clips
    entries = set(os.listdir(root))
    assert {*words, "_background_noise_", "validation_list.txt", "testing_list.txt", MARKER_FILE, SPEAKERS_FILE} == entries
    pattern = re.compile(r"^[0-9a-f]{8}_nohash_\d+\.wav$")
    all_speakers = set()
    for word in words:
        names = sorted(os.listdir(os.path.join(root, word)))
        assert len(names) == speakers * clips and all(pattern.match(n) for n in names)
        all_speakers |= {speaker_id(n) for n in names}
        with wave.open(os.path.join(root, word, names[0])) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (16000, 1, 2, 16000)
    assert len(all_speakers) == speakers
    noises = sorted(os.listdir(os.path.join(root, "_background_noise_")))
    assert noises == ["brown_noise.wav", "hum.wav", "pink_noise.wav", "white_noise.wav"]
    split_of = {}
    for split, name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        with open(os.path.join(root, name)) as f:
            for line in f.read().split():
                assert os.path.isfile(os.path.join(root, line))
                assert split_of.setdefault(speaker_id(line), split) == split  # A speaker is in one split.
    for s in all_speakers - set(split_of):
        split_of[s] = "train"
    for split in ("train", "validation", "test"):
        assert summary["speakers_per_split"][split] == sum(v == split for v in split_of.values())
    return split_of


def audio_of(root, relative):
    with wave.open(os.path.join(root, relative)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


@pytest.mark.parametrize("engine", ESPEAK_ENGINES)
def test_espeak_engine_writes_the_layout_and_loads(tmp_path, engine):
    root = str(tmp_path / "espeak")
    summary = synthesize_keywords(root, speakers=3, clips_per_speaker=2, engine=engine, progress=False)
    assert summary["engine"] == engine and not summary["cached"]
    split_of = check_layout(root, summary)
    assert sorted(split_of.values()) == ["test", "train", "validation"]
    # Speech is there: loud in the middle of the clip, quiet noise elsewhere.
    clip = audio_of(root, "yes/" + sorted(os.listdir(os.path.join(root, "yes")))[0])
    assert 0.25 < np.abs(clip).max() <= 0.95
    frames = np.abs(clip).reshape(50, 320).max(axis=1)
    assert (frames > 0.1).sum() >= 3 and (frames < 0.1).sum() >= 5
    ds = load_speech_commands(root, "train", batch_size=None)
    x, y = next(iter(ds))
    assert tuple(x.shape) == (49, 40) and 0 <= int(y) < 12
    assert len(list_examples(root, "test")) == len(DEFAULT_WORDS) * 2 + 2


@pytest.mark.parametrize("engine", ESPEAK_ENGINES)
def test_espeak_speakers_differ(tmp_path, engine):
    """Different speakers (voice, variant, pitch, speed) give different audio for the same word."""
    root = str(tmp_path / "espeak")
    synthesize_keywords(root, words=("yes", "no"), speakers=4, clips_per_speaker=1, engine=engine,
                        noise=0.0, progress=False)  # fmt: skip
    settings = json.load(open(os.path.join(root, MARKER_FILE)))["settings"]
    assert settings["engine"] == engine
    clips = [audio_of(root, f"yes/{n}") for n in sorted(os.listdir(os.path.join(root, "yes")))]
    trimmed = [c[np.flatnonzero(np.abs(c) > 0.02)[0] :][:4000] for c in clips]  # Speech from its onset on.
    for i in range(len(trimmed)):
        for j in range(i + 1, len(trimmed)):
            assert not np.allclose(trimmed[i], trimmed[j], atol=0.05)
    assert len({np.ptp(np.flatnonzero(np.abs(c) > 0.05)) for c in clips}) > 1  # Different durations.


def test_numpy_engine_writes_the_layout(numpy_root):
    root, summary = numpy_root
    assert summary["engine"] == "numpy"
    split_of = check_layout(root, summary, speakers=5, clips=2)
    assert sorted(split_of.values()).count("train") == 3


def test_numpy_engine_is_deterministic_and_seeded(tmp_path):
    kwargs = dict(words=("yes", "no"), speakers=3, clips_per_speaker=1, engine="numpy", progress=False)
    synthesize_keywords(tmp_path / "a", **kwargs)
    synthesize_keywords(tmp_path / "b", **kwargs)
    synthesize_keywords(tmp_path / "c", seed=1, **kwargs)
    a = sorted(os.listdir(tmp_path / "a" / "yes"))
    assert a == sorted(os.listdir(tmp_path / "b" / "yes")) != sorted(os.listdir(tmp_path / "c" / "yes"))
    for name in a:
        np.testing.assert_array_equal(audio_of(tmp_path / "a", f"yes/{name}"), audio_of(tmp_path / "b", f"yes/{name}"))


def test_auto_engine_and_idempotent_cache(tmp_path):
    root = tmp_path / "kws"
    kwargs = dict(words=("yes", "no"), speakers=3, clips_per_speaker=1, progress=False)
    first = synthesize_keywords(root, **kwargs)
    assert first["engine"] == resolve_engine("auto") and first["cached"] is False
    stamp = os.path.getmtime(root / "yes")
    start = time.perf_counter()
    again = synthesize_keywords(root, **kwargs)
    assert time.perf_counter() - start < 0.5
    assert again["cached"] is True and {**again, "cached": False} == first
    assert os.path.getmtime(root / "yes") == stamp
    # Other settings: the old data set is removed and a new one written.
    changed = synthesize_keywords(root, words=("yes", "up"), speakers=3, clips_per_speaker=1, engine="numpy",
                                  progress=False)  # fmt: skip
    assert changed["cached"] is False and changed["engine"] == "numpy"
    assert not (root / "no").exists() and (root / "up").is_dir()
    # An interrupted run (marker says incomplete) is redone.
    marker = json.loads((root / MARKER_FILE).read_text())
    (root / MARKER_FILE).write_text(json.dumps({**marker, "complete": False}))
    assert synthesize_keywords(root, words=("yes", "up"), speakers=3, clips_per_speaker=1, engine="numpy",
                               progress=False)["cached"] is False  # fmt: skip


def test_refuses_foreign_non_empty_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="is not empty and was not written by synthesize_keywords"):
        synthesize_keywords(tmp_path / "mine", speakers=1, clips_per_speaker=1, engine="numpy", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_speaker_splits_by_hash():
    ids = [f"{i:08x}" for i in range(20)]
    splits = assign_speaker_splits(ids, 0.1, 0.2)
    assert [sum(v == s for v in splits.values()) for s in ("train", "validation", "test")] == [14, 2, 4]
    assert assign_speaker_splits(ids[:10], 0.1, 0.2) != {}  # Stable, and the same speaker keeps its rank order.
    tiny = assign_speaker_splits(ids[:3], 0.1, 0.1)
    assert sorted(tiny.values()) == ["test", "train", "validation"]
    assert set(assign_speaker_splits(ids[:2], 0.1, 0.1).values()) == {"train"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"words": "yes"}, "`words` must be a non-empty sequence of words. Received: words='yes'"),
        ({"words": ("yes", "_x")}, "Each word must be letters/digits .*Received: word='_x'"),
        ({"words": ("yes", "yes")}, "`words` must not repeat"),
        ({"speakers": 0}, "`speakers` must be an integer >= 1. Received: speakers=0"),
        ({"clips_per_speaker": 1.5}, "`clips_per_speaker` must be an integer >= 1. Received: clips_per_speaker=1.5"),
        ({"engine": "festival"}, "`engine` must be one of .*Received: engine='festival'"),
        ({"noise": -1}, "`noise` must be a finite number >= 0. Received: noise=-1"),
        ({"test_fraction": 1.0}, "`test_fraction` must be a finite number >= 0 and < 1. Received: test_fraction=1.0"),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "`validation_fraction \\+ test_fraction` must be below 1"),
    ],
)
def test_argument_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthesize_keywords(tmp_path / "x", progress=False, **kwargs)


def test_espeak_engine_without_binary(tmp_path, monkeypatch):
    from tfx_ext.apps import synthesis

    monkeypatch.setattr(synthesis.shutil, "which", lambda name: None)
    synthesis.espeak_voices.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="espeak-ng is not on PATH \\(install it with `apt-get install"):
            synthesize_keywords(tmp_path / "x", engine="espeak", progress=False)
        summary = synthesize_keywords(tmp_path / "y", words=("yes",), speakers=1, clips_per_speaker=1, progress=False)
        assert summary["engine"] == ("libespeak" if libespeak.available() else "numpy")  # auto falls back.
        monkeypatch.setattr(synthesis.libespeak, "available", lambda: False)
        synthesis.espeak_voices.cache_clear()
        with pytest.raises(RuntimeError, match="libespeak-ng does not load: `pip install espeakng-loader`"):
            synthesize_keywords(tmp_path / "z", engine="libespeak", progress=False)
        with pytest.warns(RuntimeWarning, match="NO SPEECH SYNTHESIZER.*NOT SPEECH.*pip install espeakng-loader"):
            summary = synthesize_keywords(tmp_path / "w", words=("yes",), speakers=1, clips_per_speaker=1,
                                          progress=False)  # fmt: skip
        assert summary["engine"] == "numpy"  # The last resort, said loudly.
    finally:
        synthesis.espeak_voices.cache_clear()


def _mean_std_log_mel(root, split):
    xs, ys = [], []
    for x, y in load_speech_commands(root, split, batch_size=256):
        x = x.numpy()
        xs.append(np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1))
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_numpy_engine_classes_are_learnable(tmp_path):
    """Logistic regression on time-averaged log-mel features separates the numpy-engine classes on held-out
    speakers far above chance (1/12), so the fallback data is a real learning task; the unseen-voice speaker
    (a frequency shift outside the training range) is harder but still above chance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path / "learn"
    synthesize_keywords(root, words=OLD_WORDS, speakers=10, clips_per_speaker=3, engine="numpy", test_fraction=0.2,
                        progress=False)  # fmt: skip
    x_train, y_train = _mean_std_log_mel(root, "train")
    x_test, y_test = _mean_std_log_mel(root, "test")
    assert set(y_test) == set(range(12))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    unseen = np.array([voice_groups(root).get(e.speaker, False) for e in list_examples(root, "test")])
    assert 0 < unseen.sum() < unseen.size
    seen_accuracy, unseen_accuracy = model.score(x_test[~unseen], y_test[~unseen]), model.score(x_test[unseen], y_test[unseen])
    assert seen_accuracy > 0.8 and unseen_accuracy > 0.3, (seen_accuracy, unseen_accuracy)
    assert LABELS_12[int(model.predict(x_test[y_test == 2][:1])[0])] in LABELS_12


def _f0(audio, rate):
    """Median pitch (Hz) of the voiced 40 ms frames of `audio`, by autocorrelation: a numpy oracle apart from espeak."""
    n = int(0.04 * rate)
    lags = np.arange(int(rate / 400), int(rate / 60))
    estimates = []
    for start in range(0, audio.size - n, n // 2):
        frame = audio[start : start + n] - audio[start : start + n].mean()
        if np.abs(frame).max() < 0.3 * np.abs(audio).max():
            continue
        corr = np.array([np.dot(frame[:-lag], frame[lag:]) for lag in lags]) / (np.dot(frame, frame) + 1e-12)
        if corr.max() > 0.5:
            estimates.append(rate / lags[np.argmax(corr)])
    return float(np.median(estimates))


@needs_libespeak
def test_libespeak_speaks_with_the_asked_pitch_speed_and_voice():
    """The ctypes engine: a higher pitch setting gives a higher measured f0, a faster rate a shorter word,
    another variant other audio; an unknown voice is a named error."""
    low = libespeak.speak("yes", "en-us+m3", speed=160, pitch=10)
    high = libespeak.speak("yes", "en-us+m3", speed=160, pitch=90)
    assert libespeak.RATE == 22050 and low.dtype == np.float32 and 0.05 < np.abs(low).max() <= 1.0
    assert _f0(high, libespeak.RATE) > 1.3 * _f0(low, libespeak.RATE)
    slow = libespeak.speak("seven", "en-gb-scotland", speed=90)
    fast = libespeak.speak("seven", "en-gb-scotland", speed=300)
    assert 0.2 < fast.size / libespeak.RATE < slow.size / libespeak.RATE < 2.5
    other = libespeak.speak("yes", "en-us+f3", speed=160, pitch=10)
    assert other.size != low.size or not np.allclose(other, low, atol=0.05)
    again = libespeak.speak("yes", "en-us+m3", speed=160, pitch=10)  # espeak-ng jitters a few samples, no more.
    assert abs(again.size - low.size) < 0.01 * low.size
    assert {"m1", "f5", "klatt"} <= set(libespeak.variants()) and len(libespeak.variants()) > 50
    with pytest.raises(RuntimeError, match="libespeak-ng has no voice 'xx-nowhere'"):
        libespeak.speak("yes", "xx-nowhere")


@pytest.mark.parametrize("engine", [*ESPEAK_ENGINES, "numpy"])
def test_test_split_holds_voices_never_heard_in_training(tmp_path, engine):
    """Train/validation speakers never use a held-out variant or accent; half the test speakers (the first in hash
    order included) are unseen-voice speakers with a held-out variant; `voice_groups` reads that back."""
    root = tmp_path / "voices"
    summary = synthesize_keywords(root, words=("yes",), speakers=20, clips_per_speaker=1, engine=engine,
                                  test_fraction=0.3, progress=False)  # fmt: skip
    profiles = json.loads((root / SPEAKERS_FILE).read_text())
    split_of = check_layout(root, summary, words=("yes",), speakers=20, clips=1)
    assert {sid: p["split"] for sid, p in profiles.items()} == split_of
    test = [sid for sid, p in profiles.items() if p["split"] == "test"]
    unseen = {sid for sid, p in profiles.items() if p["unseen"]}
    assert len(test) == 6 and unseen <= set(test) and len(unseen) == 3
    assert voice_groups(root) == {sid: sid in unseen for sid in profiles}
    seen = [p for p in profiles.values() if not p["unseen"]]
    if engine == "numpy":
        assert all(0.9 <= p["shift"] <= 1.12 for p in seen)
        assert all(not 0.9 < profiles[s]["shift"] < 1.12 for s in unseen)
        return
    held = summary["held_out"]
    assert held["variants"] and held["accents"]
    assert not {p["variant"] for p in seen} & set(held["variants"])
    assert not {p["voice"] for p in seen} & set(held["accents"])
    assert {profiles[s]["variant"] for s in unseen} <= set(held["variants"])


def test_voice_groups_without_or_with_a_broken_speakers_file(tmp_path):
    assert voice_groups(tmp_path) == {}
    (tmp_path / SPEAKERS_FILE).write_text("[1, 2]")
    with pytest.raises(DataError, match="is not a speakers file written by synthesize_keywords"):
        voice_groups(tmp_path)
