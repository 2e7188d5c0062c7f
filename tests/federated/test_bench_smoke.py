"""Smoke test: bench/federated.py runs end to end with tiny settings and writes its JSON."""

import json

import pytest


@pytest.mark.slow  # trains the fit-loop baseline and three populations (~20-30 s on a loaded 2-core machine)
def test_federated_benchmark_smoke(tmp_path, capsys):
    from bench.federated import main

    document = main(["--rounds=2", "--fit_rounds=1", "--populations=100,1000", "--population_rounds=2",
                     f"--results_dir={tmp_path}"])
    saved = json.loads((tmp_path / "federated.json").read_text())
    assert [r["candidate"] for r in saved["rows"]] == [
        "tfx-ext simulate", "model.fit per client", "tfx-ext, population 100, 10/round", "tfx-ext, population 1000, 10/round"]
    assert document["rows"][0]["updates_per_s"] > 0 and saved["config"]["seed"] == 0
    assert "== federated ==" in capsys.readouterr().out
