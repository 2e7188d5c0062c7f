"""Speech Commands loader on generated directories: labels, splits, speakers, silence/unknown, errors, tf.data."""

import os

import numpy as np
import pytest

from tests.data.layout import HAND_SPEAKERS, HAND_WORDS, clip_value, make_layout, write_wav
from tfx_ext.data import (
    LABELS_12,
    WORDS_35,
    FeatureConfig,
    label_names,
    list_examples,
    load_speech_commands,
    load_speech_commands_arrays,
    speaker_id,
    speech_commands_info,
)
from tfx_ext.apps.synthesis import synthesize_keywords
from tfx_ext.data import speech_commands as sc_module
from tfx_ext.errors import DataError

SPLIT_SPEAKER = {"train": "aaaa1111", "validation": "bbbb2222", "test": "cccc3333"}


def test_label_constants():
    assert LABELS_12[:2] == ("_silence_", "_unknown_") and len(LABELS_12) == 12
    assert len(WORDS_35) == 35 and list(WORDS_35) == sorted(WORDS_35)
    assert set(LABELS_12[2:]) <= set(WORDS_35)
    assert label_names("12") == LABELS_12 and label_names(35) == WORDS_35
    with pytest.raises(ValueError, match="`labels` must be one of '12', '35'. Received: labels='10'"):
        label_names("10")


@pytest.mark.parametrize(
    "path, speaker",
    [("yes/0a7c2a8d_nohash_0.wav", "0a7c2a8d"), ("/x/y/no/ffd2ba2f_nohash_12.wav", "ffd2ba2f"),
     ("a_b_nohash_1.WAV", "a_b")],  # fmt: skip
)
def test_speaker_id(path, speaker):
    assert speaker_id(path) == speaker


@pytest.mark.parametrize("path", ["yes/0a7c2a8d.wav", "yes/_nohash_0.wav", "yes/ab_nohash_x.wav", "ab_nohash_0.mp3"])
def test_speaker_id_rejects_other_names(path):
    with pytest.raises(DataError, match="must look like '<speaker>_nohash_<n>.wav'. Received: path="):
        speaker_id(path)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_list_examples_12_labels(hand_root, split):
    examples = list_examples(hand_root, split)
    words = [e for e in examples if e.label != 0]
    # 12 words x 2 clips of the split's one speaker; cat and marvin map to _unknown_.
    assert len(words) == 24
    assert {e.speaker for e in words} == {SPLIT_SPEAKER[split]}
    for e in words:
        word = os.path.basename(os.path.dirname(e.path))
        expected = LABELS_12.index(word) if word in LABELS_12 else LABELS_12.index("_unknown_")
        assert e.label == expected
        assert os.path.isfile(e.path)
    assert sum(e.label == 1 for e in examples) == 4
    # _silence_: round(0.1 * 20 command-word examples) = 2, cut from background noise, no speaker.
    silence = [e for e in examples if e.label == 0]
    assert len(silence) == 2
    assert all(e.speaker == "" and "_background_noise_" in e.path for e in silence)
    assert examples == list_examples(hand_root, split)  # Deterministic.


def test_list_examples_split_aliases_and_fractions(hand_root):
    assert list_examples(hand_root, "testing") == list_examples(hand_root, "test")
    assert not any(e.label == 0 for e in list_examples(hand_root, "train", silence_fraction=0.0))
    assert sum(e.label == 0 for e in list_examples(hand_root, "train", silence_fraction=0.5)) == 10
    # unknown_fraction caps _unknown_ at ceil(fraction * (command words + silence)) = ceil(0.1 * 22) = 3.
    capped = list_examples(hand_root, "train", unknown_fraction=0.1)
    assert sum(e.label == 1 for e in capped) == 3
    assert sum(e.label >= 2 for e in capped) == 20


def test_list_examples_35_labels(tmp_path):
    root = make_layout(tmp_path / "sc35", words=WORDS_35 + ("extra",), clips=1)
    examples = list_examples(root, "validation", labels="35")
    assert len(examples) == 35  # The folder outside WORDS_35 is not part of the view; no silence.
    for e in examples:
        assert WORDS_35[e.label] == os.path.basename(os.path.dirname(e.path))
        assert e.speaker == "bbbb2222"


def test_35_labels_need_all_folders(hand_root):
    with pytest.raises(DataError, match=r"The 35-label view needs a folder .* missing under .*'backward'"):
        list_examples(hand_root, "train", labels="35")


def test_list_examples_argument_errors(hand_root):
    with pytest.raises(ValueError, match="`split` must be one of .*Received: split='dev'"):
        list_examples(hand_root, "dev")
    with pytest.raises(ValueError, match="`silence_fraction` must be a finite number >= 0 and <= 1. Received: "
                                         "silence_fraction=2"):
        list_examples(hand_root, "train", silence_fraction=2)
    with pytest.raises(ValueError, match="`silence_fraction` must be .*Received: silence_fraction=True"):
        list_examples(hand_root, "train", silence_fraction=True)  # Once accepted as 1.0.
    with pytest.raises(ValueError, match="`unknown_fraction` must be a finite number >= 0 or None. Received: "
                                         "unknown_fraction=-1"):
        list_examples(hand_root, "train", unknown_fraction=-1)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="Speech Commands directory not found: .*nowhere.*validation_list.txt"):
        list_examples(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="`root` must be the Speech Commands directory. Received: root=None"):
        list_examples(None, "train")


def test_missing_list_file(tmp_path):
    root = make_layout(tmp_path / "sc")
    os.remove(os.path.join(root, "testing_list.txt"))
    with pytest.raises(DataError, match="Missing split list .*testing_list.txt"):
        list_examples(root, "train")


def test_unreadable_and_malformed_list_files(tmp_path):
    root = make_layout(tmp_path / "sc")
    with open(os.path.join(root, "validation_list.txt"), "wb") as f:
        f.write(b"\xff\xfe\xfa not utf-8")
    with pytest.raises(DataError, match="Cannot read split list .*validation_list.txt"):
        list_examples(root, "train")
    with open(os.path.join(root, "validation_list.txt"), "w") as f:
        f.write("yes/aaaa1111_nohash_0.wav\njust_a_name\n")
    with pytest.raises(DataError, match="Malformed line 2 in .*expected '<word>/<file>.wav'. Received: 'just_a_name'"):
        list_examples(root, "train")


def test_no_wavs(tmp_path):
    root = make_layout(tmp_path / "sc", words=(), noise=False)
    os.makedirs(os.path.join(root, "yes"))
    with pytest.raises(DataError, match="No wav files found in the word folders"):
        list_examples(root, "train")


def test_missing_command_word_folders(tmp_path):
    root = make_layout(tmp_path / "sc", words=("yes", "no", "cat"))
    with pytest.raises(DataError, match=r"12-label view needs .* missing under .*\['up', 'down'"):
        list_examples(root, "train")


def test_silence_needs_background_noise(tmp_path):
    root = make_layout(tmp_path / "sc", noise=False)
    with pytest.raises(DataError, match="`_silence_` examples are cut from _background_noise_"):
        list_examples(root, "train")
    assert len(list_examples(root, "train", silence_fraction=0)) == 24
    with pytest.raises(DataError, match="`background_noise=0.1` mixes in _background_noise_"):
        load_speech_commands(root, "train", silence_fraction=0, background_noise=0.1)


def test_speech_commands_info(hand_root):
    info = speech_commands_info(hand_root)
    assert set(info["counts"]) == set(HAND_WORDS)
    assert info["counts"]["yes"] == {"train": 2, "validation": 2, "test": 2}
    assert info["split_totals"] == {"train": 24, "validation": 24, "test": 24}
    assert info["num_examples"] == 72
    assert info["num_speakers"] == 3 and info["speakers_per_split"] == {"train": 1, "validation": 1, "test": 1}
    assert info["background_noise"] == ["noise_a.wav", "noise_b.wav"]


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_load_raw_waveforms_match_files(hand_root):
    examples = list_examples(hand_root, "validation")
    x, y = _collect(load_speech_commands(hand_root, "validation", features=None, batch_size=5))
    assert x.shape == (26, 16000) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(y, [e.label for e in examples])  # Validation is not shuffled.
    for row, e in zip(x, examples):
        if e.label == 0:  # Silence: a segment of the noise (|int16| < 1000) at a volume in [0, 1].
            assert np.abs(row).max() <= 1000 / 32768
            continue
        word = os.path.basename(os.path.dirname(e.path))
        k = int(e.path[-5])
        value = clip_value(HAND_WORDS.index(word), HAND_SPEAKERS.index(e.speaker), k)
        np.testing.assert_array_equal(row * 32768, np.full(16000, value))
    x2, _ = _collect(load_speech_commands(hand_root, "validation", features=None, batch_size=5))
    np.testing.assert_array_equal(x, x2)  # Silence segments are a fixed set.


def test_clips_are_padded_and_trimmed_to_one_second(tmp_path):
    root = make_layout(tmp_path / "short", length=8000)
    x, _ = _collect(load_speech_commands(root, "test", features=None, silence_fraction=0))
    assert x.shape[1] == 16000
    assert np.all(x[:, 8000:] == 0) and np.all(x[:, :8000] != 0)
    root = make_layout(tmp_path / "long", length=20000)
    x, _ = _collect(load_speech_commands(root, "test", features=None, silence_fraction=0))
    assert x.shape[1] == 16000


def test_load_features_and_unbatched(hand_root):
    x, y = _collect(load_speech_commands(hand_root, "test", batch_size=8))
    assert x.shape == (26, 49, 40) and x.dtype == np.float32
    ds = load_speech_commands(hand_root, "test", batch_size=None, features=FeatureConfig(hop_ms=10, kind="mfcc"))
    first, label = next(iter(ds))
    assert first.shape == (98, 13) and label.shape == ()


def test_shuffle_and_augmentation_are_seeded(hand_root):
    def epochs(seed, n=2, **kwargs):
        ds = load_speech_commands(hand_root, "train", features=None, batch_size=None, seed=seed, **kwargs)
        return [_collect(ds.batch(64)) for _ in range(n)]

    plain = list_examples(hand_root, "train")
    (x1, y1), (x2, y2) = epochs(0)
    assert sorted(y1) == sorted(e.label for e in plain)
    assert not np.array_equal(y1, y2) or not np.array_equal(x1, x2)  # Reshuffled each epoch.
    (z1, w1), (z2, w2) = epochs(0)
    np.testing.assert_array_equal(x1, z1)  # Same seed, same epochs.
    np.testing.assert_array_equal(y2, w2)

    (a1, b1), (a2, b2) = epochs(3, shuffle=False, time_shift_ms=100, background_noise=0.5, background_frequency=1.0)
    np.testing.assert_array_equal(b1, [e.label for e in plain])
    words = b1 != 0
    # Constant clips: a shift shows up as zeros at one end; noise makes the clip non-constant.
    assert np.mean(a1[words, 0] == a1[words, 1]) < 0.5
    assert not np.array_equal(a1, a2)  # New augmentation each epoch.
    (c1, _), _ = epochs(3, shuffle=False, time_shift_ms=100, background_noise=0.5, background_frequency=1.0)
    np.testing.assert_array_equal(a1, c1)
    # Augmentation is for the train split only.
    x_val, _ = _collect(load_speech_commands(hand_root, "validation", features=None, background_noise=0.5))
    x_ref, _ = _collect(load_speech_commands(hand_root, "validation", features=None))
    np.testing.assert_array_equal(x_val, x_ref)


def test_time_shift_moves_the_clip(tmp_path):
    root = make_layout(tmp_path / "sc", words=(*HAND_WORDS[:10],), clips=1, length=16000)
    ds = load_speech_commands(root, "train", features=None, shuffle=False, silence_fraction=0, time_shift_ms=100)
    x, _ = _collect(ds)
    zeros = (x == 0).sum(axis=1)
    assert zeros.max() <= 1600 and zeros.max() > 0  # At most 100 ms of zero fill.
    for row in x:  # Zeros only at one end.
        nonzero = np.flatnonzero(row)
        assert nonzero[-1] - nonzero[0] + 1 == nonzero.size


def test_load_argument_errors(hand_root):
    with pytest.raises(TypeError, match="`features` must be a FeatureConfig or None. Received: features='mfcc'"):
        load_speech_commands(hand_root, "train", features="mfcc")
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1 or None. Received: batch_size=0"):
        load_speech_commands(hand_root, "train", batch_size=0)
    with pytest.raises(ValueError, match="`background_noise` must be a finite number >= 0. Received: background_noise=-0.1"):
        load_speech_commands(hand_root, "train", background_noise=-0.1)
    with pytest.raises(ValueError, match="`background_frequency` must be a finite number >= 0 and <= 1"):
        load_speech_commands(hand_root, "train", background_frequency=1.5)
    with pytest.raises(ValueError, match="`time_shift_ms` must be a finite number >= 0. Received: time_shift_ms=-5"):
        load_speech_commands(hand_root, "train", time_shift_ms=-5)


def test_empty_split(tmp_path):
    root = make_layout(tmp_path / "sc", speakers=("aaaa1111",))
    with pytest.raises(DataError, match="The 'test' split of .* has no examples"):
        load_speech_commands(root, "test")


def test_wrong_sample_rate_fails_when_read(tmp_path):
    import tensorflow as tf

    root = make_layout(tmp_path / "sc", clips=1)
    write_wav(os.path.join(root, "yes", "aaaa1111_nohash_0.wav"), np.ones(8000), rate=8000)
    ds = load_speech_commands(root, "train", features=None, shuffle=False, silence_fraction=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="wav sample rate must be 16000 Hz"):
        _collect(ds)


def test_loader_reads_synthesized_data(numpy_root):
    root, summary = numpy_root
    info = speech_commands_info(root)
    assert info["num_examples"] == summary["num_clips"] == 35 * 5 * 2
    assert info["split_totals"] == summary["split_counts"]
    x, y = _collect(load_speech_commands(root, "train", background_noise=0.1, time_shift_ms=50))
    assert x.shape[1:] == (49, 40) and np.isfinite(x).all()
    counts = np.bincount(y, minlength=12)
    assert counts[2:].tolist() == [summary["split_counts"]["train"] // 35] * 10
    assert counts[1] == 25 * summary["split_counts"]["train"] // 35  # the 25 non-command words -> _unknown_


def test_download_uses_keras_get_file(tmp_path, monkeypatch):
    import keras

    calls = []

    def fake_get_file(**kwargs):
        calls.append(kwargs)
        extracted = os.path.join(kwargs["cache_dir"], kwargs["fname"])
        make_layout(extracted, words=("yes",), speakers=("aaaa1111",), clips=1, noise=False)
        return extracted

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    root = sc_module.download_speech_commands(tmp_path / "dl")
    assert calls[0]["origin"] == "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
    assert calls[0]["extract"] is True
    assert os.path.isfile(os.path.join(root, "validation_list.txt"))

    monkeypatch.setattr(keras.utils, "get_file", lambda **kwargs: str(tmp_path))
    with pytest.raises(DataError, match="found no validation_list.txt"):
        sc_module.download_speech_commands(tmp_path / "dl2")


def test_synthesized_35_word_set_loads_in_35_label_mode(tmp_path):
    root = tmp_path / "kws35"
    synthesize_keywords(root, words=WORDS_35, speakers=3, clips_per_speaker=1, engine="numpy", progress=False)
    examples = list_examples(root, "train", labels="35")
    assert sorted(e.label for e in examples) == list(range(35))
    x, y = _collect(load_speech_commands(root, "test", labels="35"))
    assert x.shape == (35, 49, 40) and sorted(y) == list(range(35))


def test_cache_in_memory_and_on_disk(hand_root, tmp_path):
    reference = _collect(load_speech_commands(hand_root, "validation", features=None))
    for cache in (True, str(tmp_path / "clips.cache")):
        ds = load_speech_commands(hand_root, "validation", features=None, cache=cache)
        for _ in range(2):
            x, y = _collect(ds)
            np.testing.assert_array_equal(x, reference[0])
            np.testing.assert_array_equal(y, reference[1])
    assert any(name.startswith("clips.cache") for name in os.listdir(tmp_path))
    # Shuffled train with a cache: every epoch holds the same examples in a new order.
    ds = load_speech_commands(hand_root, "train", features=None, batch_size=64, cache=True)
    (x1, y1), (x2, y2) = _collect(ds), _collect(ds)
    assert sorted(y1) == sorted(y2)
    assert not np.array_equal(x1, x2)


def test_arrays_with_speakers(hand_root):
    examples = list_examples(hand_root, "validation")
    x, y, speakers = load_speech_commands_arrays(hand_root, "validation", features=None, batch_size=7)
    reference, labels = _collect(load_speech_commands(hand_root, "validation", features=None))
    np.testing.assert_array_equal(x, reference)
    np.testing.assert_array_equal(y, labels)
    assert speakers.tolist() == [e.speaker for e in examples]
    assert set(speakers[y != 0]) == {"bbbb2222"} and set(speakers[y == 0]) == {""}
    x, _, _ = load_speech_commands_arrays(hand_root, "test")
    assert x.shape == (26, 49, 40)


def test_download_without_network_is_a_named_data_error(tmp_path, monkeypatch):
    """Nothing listens on the discard port: keras's get_file fails as it does offline ("URL fetch failure")."""
    monkeypatch.setattr(sc_module, "SPEECH_COMMANDS_URL", "http://127.0.0.1:9/speech_commands_v0.02.tar.gz")
    with pytest.raises(DataError, match="could not download Speech Commands from http://127.0.0.1:9/") as caught:
        sc_module.download_speech_commands(tmp_path / "dl")
    assert "synthesize_keywords" in str(caught.value) and "tfx-ext data synthesize" in str(caught.value)


def test_offline_notebook_data_falls_back_to_synthesized_speech(tmp_path, monkeypatch, capsys):
    from tfx_ext.apps.synthesis import speech_commands_or_synthesized

    monkeypatch.setattr(sc_module, "SPEECH_COMMANDS_URL", "http://127.0.0.1:9/speech_commands_v0.02.tar.gz")
    root, source = speech_commands_or_synthesized(tmp_path, words=("yes", "no"), speakers=3, clips_per_speaker=1,
                                                  engine="numpy", progress=False)
    assert source == "numpy" and root == str(tmp_path / "keywords")
    assert sorted(p.name for p in (tmp_path / "keywords").iterdir() if p.is_dir())[-2:] == ["no", "yes"]
    printed = capsys.readouterr().out
    assert "Speech Commands is not available (could not download" in printed
    assert "Falling back to synthesized speech" in printed
    assert not (tmp_path / "speech_commands" / "validation_list.txt").exists()
