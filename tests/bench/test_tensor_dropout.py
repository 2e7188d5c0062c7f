"""Smoke test of bench/tensor_dropout.py: one seed, one epoch, 128 examples; the table and JSON come out complete."""

import json

import pytest

from bench import tensor_dropout


@pytest.mark.slow  # ~15 s quiet, ~35 s on a loaded 2-core machine: trains three tiny CNNs
def test_tensor_dropout_bench_smoke(tmp_path):
    document = tensor_dropout.run(seeds=(0,), epochs=3, max_train=256, noise_draws=1, name="tensor_dropout_smoke",
                                  results_dir=tmp_path)
    saved = json.loads((tmp_path / "tensor_dropout_smoke.json").read_text())
    rows = {row["head"]: row for row in saved["rows"]}
    assert {"dense", "tensor", "tensor_p0", "dense (mean)", "tensor (mean)", "tensor - dense",
            "tensor - tensor_p0"} <= set(rows)
    assert rows["tensor_p0"]["head_params"] == rows["tensor"]["head_params"]
    # Head parameters follow the formulas: Dense 512*64+64 + 64*10+10; TCL 4*4+4*4+32*16; TRL (Tucker) core
    # 4*4*12*10 + factors 4*4+4*4+16*12+10*10 + bias 10.
    assert rows["dense"]["head_params"] == 512 * 64 + 64 + 64 * 10 + 10
    assert rows["tensor"]["head_params"] == (16 + 16 + 512) + (1920 + 324 + 10)
    ratio = rows["dense"]["head_params"] / rows["tensor"]["head_params"]
    assert abs(document["summary"]["head_param_ratio"] - ratio) < 1e-9
    # Every head learns digits above chance (10%): measured clean accuracy 34.4 (dense), 24.0 (tensor), 26.2
    # (tensor_p0) after 3 epochs on 256 examples (after 1 epoch on 128 the dense head was still at chance).
    for head in ("dense", "tensor", "tensor_p0"):
        assert rows[head]["clean_acc"] >= 17.0, (head, rows[head]["clean_acc"])
        # FGSM at the larger step hurts at least as much as at the smaller one (measured 21.8 <= 27.3 dense).
        assert rows[head]["fgsm_0.1"] <= rows[head]["fgsm_0.05"] + 1.0
    assert rows["tensor - dense"]["clean_acc"] == pytest.approx(rows["tensor"]["clean_acc"] - rows["dense"]["clean_acc"])
    assert saved["config"]["task"] == "digits"
