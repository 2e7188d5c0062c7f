"""Smoke run of bench/privacy.py: a no-DP row and a central-DP row whose epsilon is dp-accounting's."""

import json

from bench import privacy
from tfx_ext.federated import DPAccountant


def test_privacy_bench_smoke(tmp_path):
    doc = privacy.main(["--smoke", f"--results_dir={tmp_path}"])
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"no DP", "central DP"}
    assert rows["no DP"]["epsilon"] is None and rows["no DP"]["acc_drop_pt"] == 0
    want = DPAccountant(population_size=10, cohort_size=5, noise_multiplier=1.0).epsilon(2, 1 / 10**1.1)
    assert rows["central DP"]["epsilon"] == want
    assert (tmp_path / "privacy_smoke.png").stat().st_size > 0
    assert json.loads((tmp_path / "privacy_smoke.json").read_text())["config"]["smoke"] is True
