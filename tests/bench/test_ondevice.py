"""Smoke test of bench/ondevice.py: every row measured, LiteRT clients equal Keras clients, sizes consistent."""

import json

import pytest

from bench import ondevice


@pytest.mark.slow  # three trainable exports, two small simulations: ~20 s on a loaded 2-core machine
def test_ondevice_bench_smoke(tmp_path):
    document = ondevice.run(smoke=True, name="ondevice_smoke", results_dir=tmp_path)
    saved = json.loads((tmp_path / "ondevice_smoke.json").read_text())
    assert saved["rows"] == document["rows"] and saved["config"]["seed"] == 0
    rows = {(row["model"], row["metric"]): row for row in saved["rows"]}
    for model in ("mlp", "digits_cnn", "ds_cnn head"):
        step = rows[(model, "train step ms")]
        assert step["baseline"] > 0 and step["litert"] > 0
        assert step["ratio"] == pytest.approx(step["litert"] / step["baseline"])
        size = rows[(model, "tflite KB (baseline: inference only)")]
        assert size["litert"] > size["baseline"] > 0  # training signatures, optimizer state and four subgraphs
    assert rows[("digits_cnn", "client updates/s (FedAvg, median of 1)")]["litert"] > 0
    accuracy = rows[("digits_cnn", "eval accuracy after 2 rounds")]
    assert abs(accuracy["litert"] - accuracy["baseline"]) <= 0.01  # the same clients, batches and updates
    assert rows[("digits_cnn", "max |global weight gap|")]["litert"] <= 1e-4
    assert any("equal within noise" in note for note in saved["notes"])
