"""The benchmark harness: timing, interleaved comparison, table and JSON output."""

import json

import pytest

from bench.harness import Benchmark, compare, format_table, time_callable


def test_time_callable_counts_calls_and_orders_percentiles():
    calls = []
    stats = time_callable(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7
    assert stats["p10_s"] <= stats["median_s"] <= stats["p90_s"]


def test_time_callable_rejects_zero_repeats():
    with pytest.raises(ValueError, match="`repeats` must be >= 1"):
        time_callable(lambda: None, repeats=0)


def test_compare_reports_speedup_against_baseline():
    import time

    results = compare({"slow": lambda: time.sleep(0.004), "fast": lambda: None}, warmup=1, repeats=3)
    assert results["slow"]["speedup_vs_slow"] == pytest.approx(1.0)
    assert results["fast"]["speedup_vs_slow"] > 5


def test_benchmark_writes_json_and_table(tmp_path, capsys):
    bench = Benchmark("unit", config={"seed": 3}, results_dir=tmp_path)
    bench.add_row({"model": "a", "ms": 1.25})
    bench.add_row({"model": "bb", "ms": 10.0})
    bench.note("a note")
    document = bench.finish()
    saved = json.loads((tmp_path / "unit.json").read_text())
    assert saved["config"] == {"seed": 3} and saved["rows"] == document["rows"]
    assert "tensorflow" in saved["environment"]
    out = capsys.readouterr().out
    assert "model  ms" in out and "note: a note" in out


def test_format_table_aligns_columns():
    table = format_table([{"a": 1.0, "b": "x"}, {"a": 22.5, "b": "yy"}])
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[2].startswith("   1  x") and lines[3].startswith("22.5  yy")
