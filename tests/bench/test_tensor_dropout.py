"""Smoke test of bench/tensor_dropout.py: one seed, one epoch, 128 examples; the table and JSON come out complete."""

import json

import pytest

from bench import tensor_dropout


@pytest.mark.slow  # ~15 s quiet, ~35 s on a loaded 2-core machine: trains three tiny CNNs
def test_tensor_dropout_bench_smoke(tmp_path):
    document = tensor_dropout.run(seeds=(0,), epochs=1, max_train=128, noise_draws=1, name="tensor_dropout_smoke",
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
    for head in ("dense", "tensor"):
        for key in ("clean_acc", "noise_0.1", "noise_0.2", "noise_0.4", "fgsm_0.05", "fgsm_0.1"):
            assert 0.0 <= rows[head][key] <= 100.0
    assert saved["config"]["task"] == "digits"
