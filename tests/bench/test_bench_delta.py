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
    for row in rows:
        assert 0.0 <= row["zero_deltas"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
    assert (tmp_path / "delta_smoke_tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert "nonzero_reduction" in result.stdout
