"""Smoke run of bench/secagg.py: plain, SecAgg, SecAgg+, SecAgg+ with the consistency check and in the active
threat model; exact aggregates,
table, JSON and PNG; the growth and Flower ratios."""

import json
import math

import pytest

from bench import secagg


def test_secagg_bench_smoke(tmp_path):
    doc = secagg.main(["--smoke", f"--results_dir={tmp_path}"])
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"plain", "secagg", "secagg+", "secagg+cc", "secagg+active"}
    assert 0 < rows["plain"]["rel_error"] < 1e-6  # float32 on the wire, against the exact float64 sum
    for method in ("secagg", "secagg+", "secagg+cc", "secagg+active"):
        assert rows[method]["rel_error"] < 1e-12  # 64-bit default modulus
        assert rows[method]["up_B"] > 2 * rows["plain"]["up_B"] * 0.99  # 8-byte words vs float32
        assert rows[method]["server_in_B"] >= 5 * rows[method]["up_B"] * 0.99
        assert rows[method]["critical_path_s"] < rows[method]["round_s"]
    assert rows["secagg+cc"]["up_B"] > rows["secagg+"]["up_B"]  # the signatures travel too
    assert rows["secagg+active"]["threshold"] >= 2 * 5 // 3 + 1  # sized against forked views
    assert (tmp_path / "secagg_smoke.png").stat().st_size > 0
    saved = json.loads((tmp_path / "secagg_smoke.json").read_text())
    assert saved["config"]["smoke"] is True and saved["config"]["bits"] == 64


def test_smoke_at_32_bits_records_its_coarser_error(tmp_path):
    doc = secagg.main(["--smoke", "--bits=32", "--variants=secagg+", f"--results_dir={tmp_path}"])
    row = next(r for r in doc["rows"] if r["method"] == "secagg+")
    assert 1e-12 < row["rel_error"] < 1e-3 and doc["config"]["bits"] == 32


def test_ratios_against_n_log_n_and_flower():
    rows = [{"n": 100, "method": "secagg+", "server_s": 1.0, "round_s": 2.0, "critical_path_s": 0.5},
            {"n": 1000, "method": "secagg+", "server_s": 12.0, "round_s": 30.0, "critical_path_s": 3.0},
            {"n": 100, "method": "flower-secagg+", "round_s": 80.0, "critical_path_s": None}]
    secagg.add_ratios(rows)
    assert rows[1]["server_vs_nlogn"] == pytest.approx(12.0 / (1000 * math.log(1000) / (100 * math.log(100))))
    assert rows[0]["flower_x"] == 40.0 and rows[0]["flower_x_crit"] == 160.0 and "flower_x" not in rows[1]
    assert "server_vs_nlogn" not in rows[2]


def test_unknown_variant_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"`--variants` entries must be among .*Received: 'secagg\+\+'"):
        secagg.main(["--smoke", "--variants=secagg++", f"--results_dir={tmp_path}"])
