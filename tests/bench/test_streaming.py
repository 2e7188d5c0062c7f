"""Smoke test of bench/streaming.py: tiny models, a few repeats; every column comes out and ratios are consistent."""

import json

import pytest

from bench import streaming
from tfx_ext.models import TINY_KWARGS


@pytest.mark.slow  # three TFLite conversions: ~30 s on a loaded 2-core machine
def test_streaming_bench_smoke(tmp_path):
    document = streaming.run(("tc_resnet",), model_kwargs=TINY_KWARGS, repeats=3, warmup=1,
                             name="streaming_smoke", results_dir=tmp_path)
    saved = json.loads((tmp_path / "streaming_smoke.json").read_text())
    rows = {row["model"]: row for row in saved["rows"]}
    assert set(rows) == {"tc_resnet"} and document["rows"] == saved["rows"]
    assert rows["tc_resnet"]["frames_per_step"] == 4  # two stride-2 blocks
    for row in rows.values():
        assert row["non_stream_ms"] > 0 and row["stream_int_ms"] > 0 and row["state_kb"] > 0
        assert abs(row["speedup_int"] - row["non_stream_ms"] / row["stream_int_ms"]) < 1e-6 * row["speedup_int"]
