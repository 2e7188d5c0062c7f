"""Smoke test of bench/streaming.py: tiny models, a few repeats; every column comes out and ratios are consistent."""

import json

import pytest

from bench import streaming
from tfx_ext.models import TINY_KWARGS


@pytest.mark.slow  # three TFLite conversions: ~30 s on a loaded 2-core machine
def test_streaming_bench_smoke(tmp_path):
    document = streaming.run(("tc_resnet",), model_kwargs=TINY_KWARGS, repeats=3, warmup=1,
                             name="streaming_smoke", results_dir=tmp_path)
    saved = json.loads((tmp_path / "streaming_smoke.json").read_text())
    rows = {row["model"]: row for row in saved["rows"]}
    assert set(rows) == {"tc_resnet"} and document["rows"] == saved["rows"]
    assert rows["tc_resnet"]["frames_per_step"] == 4  # two stride-2 blocks
    for row in rows.values():
        assert row["non_stream_ms"] > 0 and row["stream_int_ms"] > 0 and row["state_kb"] > 0
        assert abs(row["speedup_int"] - row["non_stream_ms"] / row["stream_int_ms"]) < 1e-6 * row["speedup_int"]


@pytest.mark.slow  # five TFLite conversions, two int8 calibrations
def test_raw_audio_bench_smoke(tmp_path):
    document = streaming.run_raw_audio(model_kwargs=TINY_KWARGS["ds_cnn"], clips=2, repeats=3, warmup=1,
                                       name="raw_smoke", results_dir=tmp_path)
    rows = {(row["model"], row["quantize"]): row for row in document["rows"]}
    assert set(rows) == {("ds_cnn features outside", "float"), ("ds_cnn features outside", "int8"),
                         ("ds_cnn raw audio", "float"), ("ds_cnn raw audio", "dynamic"), ("ds_cnn raw audio", "int8"),
                         ("LogMelFrontend alone", "float"), ("LogMelFrontend alone", "dynamic"),
                         ("LogMelFrontend alone", "int8"), ("LogMelFrontend alone, rfft", "float")}
    assert all(row["stream_ext_ms"] > 0 and row["tflite_kb"] > 0 for row in rows.values())
    # Float: the raw-audio stream equals the features model on compute_features; the front end alone too.
    assert rows[("ds_cnn raw audio", "float")]["max_abs_err"] <= 1e-4
    assert rows[("ds_cnn raw audio", "float")]["agreement"] == 1.0
    assert rows[("LogMelFrontend alone", "float")]["max_abs_err"] <= 1e-4
    assert rows[("LogMelFrontend alone, rfft", "float")]["max_abs_err"] <= 1e-4
    # The documented int8 limit: log-mel through an int8 DFT and LOG loses the quiet bands (mean error >> 0.1).
    assert rows[("LogMelFrontend alone", "int8")]["mean_abs_err"] > 0.1
    # The DFT matrix is most of the float file; rfft has none.
    assert rows[("LogMelFrontend alone, rfft", "float")]["tflite_kb"] < rows[("LogMelFrontend alone", "float")][
        "tflite_kb"] / 5
