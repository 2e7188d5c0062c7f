"""Smoke test of bench/export.py: tiny DS-CNN, every variant exported, columns consistent."""

import json

import pytest

from bench import export


@pytest.mark.slow  # trains a tiny model and makes eight TFLite conversions: ~20 s on a loaded 2-core machine
def test_export_bench_smoke(tmp_path):
    document = export.run(("ds_cnn",), smoke=True, name="export_smoke", results_dir=tmp_path)
    saved = json.loads((tmp_path / "export_smoke.json").read_text())
    assert saved["rows"] == document["rows"]
    rows = {(row["form"], row["variant"]): row for row in saved["rows"]}
    assert set(rows) == {(form, variant) for form in ("non_stream", "stream_internal_state")
                         for variant in export.VARIANTS}
    for (form, variant), row in rows.items():
        assert "error" not in row, row
        assert row["size_kb"] > 0 and row["latency_ms"] > 0 and 0 <= row["accuracy"] <= 1
        float_row = rows[(form, "float")]
        assert row["size_ratio"] == pytest.approx(row["size_kb"] / float_row["size_kb"])
        assert row["latency_ratio"] == pytest.approx(row["latency_ms"] / float_row["latency_ms"])
        # Behaviour floors (measured: float accuracy 0.66 on 4 separable classes, chance 0.25; every variant
        # agrees with Keras on 100% of the 64 test clips and keeps its accuracy).
        assert row["float_accuracy"] >= 0.45, "the smoke model did not learn the separable classes"
        assert row["agreement"] >= 0.9, f"{form}/{variant} disagrees with the Keras model"
        assert row["accuracy"] >= row["float_accuracy"] - 0.1
        # The streaming export scores exactly what the whole-window export scores.
        assert row["accuracy"] == rows[("non_stream", variant)]["accuracy"]
