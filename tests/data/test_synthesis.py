"""synthesize_keywords: the Speech Commands layout with espeak-ng and with the numpy fallback."""

import json
import os
import re
import time
import wave

import numpy as np
import pytest

from tfx_ext.data import LABELS_12, list_examples, load_speech_commands, speaker_id
from tfx_ext.apps.synthesis import (
    DEFAULT_WORDS,
    MARKER_FILE,
    assign_speaker_splits,
    espeak_available,
    synthesize_keywords,
)
from tfx_ext.errors import DataError

needs_espeak = pytest.mark.skipif(
    not espeak_available(), reason="espeak-ng is not installed (apt-get install espeak-ng); the numpy engine is tested"
)


def check_layout(root, summary, words=DEFAULT_WORDS, speakers=3, clips=2):
    """Asserts the exact Speech Commands layout and returns speaker -> split."""
    assert summary["words"] == list(words) and summary["num_clips"] == len(words) * speakers * clips
    entries = set(os.listdir(root))
    assert {*words, "_background_noise_", "validation_list.txt", "testing_list.txt", MARKER_FILE} == entries
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


@needs_espeak
def test_espeak_engine_writes_the_layout_and_loads(tmp_path):
    root = str(tmp_path / "espeak")
    summary = synthesize_keywords(root, speakers=3, clips_per_speaker=2, engine="espeak", progress=False)
    assert summary["engine"] == "espeak" and not summary["cached"]
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
    assert len(list_examples(root, "test")) == 14 * 2 + 2


@needs_espeak
def test_espeak_speakers_differ(tmp_path):
    """Different speakers (voice, variant, pitch, speed) give different audio for the same word."""
    root = str(tmp_path / "espeak")
    synthesize_keywords(root, words=("yes", "no"), speakers=4, clips_per_speaker=1, engine="espeak",
                        noise=0.0, progress=False)  # fmt: skip
    settings = json.load(open(os.path.join(root, MARKER_FILE)))["settings"]
    assert settings["engine"] == "espeak"
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
    assert first["engine"] == ("espeak" if espeak_available() else "numpy") and first["cached"] is False
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
        assert summary["engine"] == "numpy"  # auto falls back.
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
    speakers far above chance (1/12), so the fallback data is a real learning task."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path / "learn"
    synthesize_keywords(root, speakers=10, clips_per_speaker=3, engine="numpy", progress=False)
    x_train, y_train = _mean_std_log_mel(root, "train")
    x_test, y_test = _mean_std_log_mel(root, "test")
    assert set(y_test) == set(range(12))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    accuracy = model.score(x_test, y_test)
    assert accuracy > 0.8, accuracy
    assert LABELS_12[int(model.predict(x_test[y_test == 2][:1])[0])] in LABELS_12
