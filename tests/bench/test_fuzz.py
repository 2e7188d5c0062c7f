"""Smoke run of bench/fuzz.py: a dozen models, the table and JSON with counts, config and shrunk failures."""

import json

import pytest

from bench import fuzz


@pytest.mark.slow  # ~12 models, 2 LiteRT conversions and a small shrink budget: ~20 s on a loaded 2-core machine
def test_fuzz_bench_smoke(tmp_path, capsys):
    document = fuzz.main(["--smoke", f"--results_dir={tmp_path}"])
    saved = json.loads((tmp_path / "fuzz_smoke.json").read_text())
    assert saved["config"]["seed"] == 0 and saved["config"]["drawn"] == 12
    assert saved["counts"] == document["counts"] and sum(saved["counts"].values()) == 12
    assert set(saved["counts"]) == {*fuzz.OUTCOMES, "invalid"} and saved["counts"]["invalid"] == 0
    assert saved["environment"]["keras"] and saved["seconds"]["total"] > 0
    for failure in saved["failures"]:
        assert failure["outcome"] in ("mismatch", "crash") and isinstance(failure["description"]["ops"], list)  # [] is x > x
        assert fuzz.check(failure["description"], tflite=failure["tflite"])["outcome"] == failure["outcome"]  # the shrunk model still fails
    out = capsys.readouterr().out
    assert "silent mismatches" in out and "crashes" in out and "time (s)" in out
