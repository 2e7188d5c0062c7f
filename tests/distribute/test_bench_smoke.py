"""bench/distribute.py --smoke runs and writes its table (the multi-worker rows are covered by
test_multi_worker.py; the full run is `python -m bench.distribute`)."""

import json

from bench import distribute


def test_distribute_bench_smoke(tmp_path, capsys):
    document = distribute.main(["--smoke", "--results_dir", str(tmp_path)])
    saved = json.loads((tmp_path / "distribute.json").read_text())
    assert saved["rows"] == document["rows"]
    rows = {(r["setup"], r["loop"]): r for r in saved["rows"]}
    assert set(rows) == {(s, l) for s in ("default", "mirrored-2cpu") for l in ("model.fit", "tfx fit")}
    assert rows[("mirrored-2cpu", "tfx fit")]["replicas"] == 2
    for row in rows.values():
        assert row["steps_per_s"] > 0
        assert abs(row["examples_per_s"] - row["steps_per_s"] * saved["config"]["batch_size"]) < 1e-6 * row[
            "examples_per_s"]
    assert rows[("default", "tfx fit")]["speedup"] == 1.0
    assert "== distribute ==" in capsys.readouterr().out
