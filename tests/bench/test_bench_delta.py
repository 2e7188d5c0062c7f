"""The DeltaActivation benchmark runs end to end on tiny settings and writes its table, JSON and plot."""

import json
import pathlib
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_delta_benchmark_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.delta", "--smoke", f"--results_dir={tmp_path}", f"--data_dir={tmp_path / 'data'}"],
        capture_output=True, text=True, timeout=900, cwd=pathlib.Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((tmp_path / "delta_smoke.json").read_text())
    rows = document["rows"]
    assert rows[0]["model"] == "plain (fine-tuned)" and rows[1]["model"] == "delta (fine-tuned)"
    plain, delta = rows[0], rows[1]
    # Behaviour: the sparsity penalty makes more deltas zero than the plain ReLU model (measured 0.86 vs 0.71 zero
    # deltas, 1.98x fewer nonzero deltas, MAC savings 0.81 vs 0.65), and the ratio columns follow from the rows.
    # The smoke model is too small to learn its 12 keywords (measured accuracy 0.07), so accuracy is not floored.
    assert delta["zero_deltas"] >= plain["zero_deltas"] + 0.05 and delta["nonzero_reduction"] >= 1.3
    assert delta["mac_savings"] > plain["mac_savings"] > 0
    assert delta["nonzero_reduction"] == pytest.approx((1 - plain["zero_deltas"]) / (1 - delta["zero_deltas"]))
    assert delta["accuracy_loss_pt"] == pytest.approx(100 * (plain["accuracy"] - delta["accuracy"]))
    assert (tmp_path / "delta_smoke_tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert "nonzero_reduction" in result.stdout
