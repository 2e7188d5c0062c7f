"""Smoke run of bench/fedma.py: every method runs, the table, JSON and learning-curve PNG are written."""

import json

import pytest

from bench import fedma


@pytest.mark.slow
def test_fedma_bench_smoke(tmp_path):
    doc = fedma.main(["--smoke", "--rounds=5", "--methods=fedma,client_matching,fedavg",
                      f"--results_dir={tmp_path}"])
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"fedma", "client_matching", "fedavg"}
    for row in rows.values():
        # Digits, 10 classes (chance 0.1): measured 0.81 (FedMA), 0.88 (client matching), 0.89 (FedAvg) in 5 rounds.
        assert row["test_acc_mean"] >= 0.6 and row["MiB_total"] > 0, row
    # FedMA's layer-wise rounds send one layer at a time: fewer bytes than FedAvg over the same rounds.
    assert rows["fedma"]["MiB_total"] < rows["fedavg"]["MiB_total"]
    assert (tmp_path / "fedma_smoke_curves.png").stat().st_size > 0
    saved = json.loads((tmp_path / "fedma_smoke.json").read_text())
    assert saved["config"]["smoke"] is True
