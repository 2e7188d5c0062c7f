"""Custom wake words (`tfx_ext.apps.wakeword`, `tfx-ext kws wakeword`): phrase checks, confusable negatives, the
streams' arithmetic, and the tiny run end to end through the CLI (files, report, exit codes)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfx_ext.apps import wakeword
from tfx_ext.data.features import FeatureConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_phrase_is_normalized_or_refused_by_name():
    assert wakeword.check_phrase("  Hey   Tiffany ") == "hey tiffany"
    for bad in ("", "x", "hey_tiffany", "hey 2", 3, "a" * 41):
        with pytest.raises(ValueError, match="`phrase` must be 2-40 letters"):
            wakeword.check_phrase(bad)


def test_confusable_phrases():
    phrases = wakeword.confusable_phrases("hey tiffany")
    assert "hey tiffany" not in phrases and len(phrases) == len(set(phrases))
    for expected in ("hey", "tiffany", "hey marvin", "marvin tiffany", "bey tiffany", "hey diffany", "hey tiff"):
        assert expected in phrases
    single = wakeword.confusable_phrases("computer")
    assert "computer" not in single
    assert {"bomputer", "stomputer", "comp", "computes"} <= set(single) and "komputer" not in single  # new first sound, cut short, new ending

def test_streams_place_every_positive_once_and_windows_cover_it():
    features = FeatureConfig()
    rng = np.random.default_rng(0)
    utterances = [np.full(int(0.5 * 16000), 0.5, np.float32) * (k + 1) / 10 for k in range(7)]
    noise = rng.standard_normal(16000).astype(np.float32)
    frames, windows, indices = wakeword.streams(utterances, None, 3, noise, 0, features)
    assert frames.shape[0] == 3 and frames.shape[2] == features.num_features
    assert sorted(i for stream in indices for i in stream) == list(range(7))  # each once
    assert [len(w) for w in windows] == [len(i) for i in indices]
    for stream in windows:
        for first, last in stream:  # 0.5 s of speech plus the 0.5 s tolerance: about 50 steps of 20 ms
            assert 45 <= last - first <= 52 and 0 <= first and last < frames.shape[1]
    negative, _, _ = wakeword.streams(utterances, 60.0, 4, noise, 1, features)
    assert negative.shape[:2] == (4, 1 + (15 * 16000 - features.window_samples) // features.hop_samples)


def _cli(*args, timeout=300):
    script = ("import sys; from tfx_ext.apps.cli import run; run(['tfx-ext', *sys.argv[1:]])")
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=ENV, cwd=REPO,
                          timeout=timeout)


def test_wakeword_usage_errors_exit_2_with_named_messages(tmp_path):
    missing = _cli("kws", "wakeword", f"--output_dir={tmp_path}")
    assert missing.returncode == 2 and "tfx-ext kws wakeword: --phrase required." in missing.stderr
    bad = _cli("kws", "wakeword", "--phrase=hey_tiffany", f"--output_dir={tmp_path}")
    assert bad.returncode == 2 and "--phrase: `phrase` must be 2-40 letters" in bad.stderr
    assert "Traceback" not in missing.stderr + bad.stderr and not any(tmp_path.iterdir())


@pytest.mark.slow  # synthesis, a 2-epoch training, int8 export and streaming both models (~40 s on 2 cores)
def test_wakeword_tiny_run_end_to_end(tmp_path):
    result = _cli("kws", "wakeword", "--phrase=Hey Tiffany", f"--output_dir={tmp_path}", "--size=tiny",
                  "--noprogress", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["phrase"] == "hey tiffany" and summary["report"] == str(tmp_path / "report.md")
    for name in ("wakeword.keras", "wakeword_stream_int8.tflite", "report.md", "report.json", "det.png"):
        assert (tmp_path / name).is_file(), name
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["tflite_bytes"] == (tmp_path / "wakeword_stream_int8.tflite").stat().st_size
    for name in ("keras", "int8"):
        r = report[name]
        curve = r["det_test"]
        assert len(curve["thresholds"]) == len(curve["false_accepts_per_hour"]) == len(curve["false_rejection_rate"])
        index = curve["thresholds"].index(r["threshold"])
        hours = curve["negative_hours"]
        assert r["test_false_accepts_per_hour"] == pytest.approx(curve["false_accepts"][index] / hours)
        assert r["test_false_rejection_rate"] == pytest.approx(1 - np.mean(r["accepted"]))
        assert r["validation_false_accepts_per_hour"] <= 0.5 or not r["validation_met_target"]
        assert summary[name]["threshold"] == r["threshold"]
    assert report["data"]["test_positives"] == len(report["int8"]["accepted"])
    assert report["data"]["test_negative_hours"] >= 0.015
    markdown = (tmp_path / "report.md").read_text()
    assert "| LiteRT int8 streaming |" in markdown and "![DET curve](det.png)" in markdown
    from tfx_ext.lite import TFLiteModel

    lite = TFLiteModel(str(tmp_path / "wakeword_stream_int8.tflite"))
    assert {np.dtype(d["dtype"]).name for d in lite.input_details.values()} == {"int8"}
