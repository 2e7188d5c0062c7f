"""Smoke run of bench/secagg.py: plain, SecAgg and SecAgg+ rows, exact-enough aggregates, table, JSON and PNG."""

import json

from bench import secagg


def test_secagg_bench_smoke(tmp_path):
    doc = secagg.main(["--smoke", f"--results_dir={tmp_path}"])
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"plain", "secagg", "secagg+"}
    for method in ("secagg", "secagg+"):
        assert rows[method]["rel_error"] < 1e-6 and rows[method]["up_B"] > rows["plain"]["up_B"]
    assert (tmp_path / "secagg_smoke.png").stat().st_size > 0
    assert json.loads((tmp_path / "secagg_smoke.json").read_text())["config"]["smoke"] is True
