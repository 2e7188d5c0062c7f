"""Smoke run of bench/privacy.py: every section's rows come from the runs (dp-accounting's epsilon, the attackers
`choose_malicious` picks, the bytes the digits CNN's 9,930 parameters take on the wire)."""

import json

import pytest

from bench import privacy
from tfx_ext.federated import DPAccountant


def test_privacy_bench_smoke(tmp_path):
    doc = privacy.main(["--smoke", f"--results_dir={tmp_path}"])
    dp = {r["method"]: r for r in doc["rows"] if r["section"] == "dp"}
    assert set(dp) == {"no DP", "central DP", "distributed DP"}
    assert dp["no DP"]["epsilon"] is None and dp["no DP"]["acc_drop_pt"] == 0
    want = DPAccountant(population_size=10, cohort_size=5, noise_multiplier=1.0).epsilon(2, 1 / 10**1.1)
    assert dp["central DP"]["epsilon"] == want
    # distributed: under SecAgg+ at 16 bits, a little more epsilon than central at the same multiplier (rounding)
    assert dp["distributed DP"]["secure"] == "secagg+" and dp["distributed DP"]["dp_bits"] == 16
    assert want < dp["distributed DP"]["epsilon"] < 1.01 * want
    assert any(n.startswith("dp target") and "z=1" in n for n in doc["notes"])

    robust = {(r["attack"], r["defence"]): r for r in doc["rows"] if r["section"] == "robust"}
    assert set(robust) == {("none", "fedavg"), ("sign_flip", "fedavg"), ("sign_flip", "median")}
    assert robust["none", "fedavg"]["test_acc"] == dp["no DP"]["test_acc"]  # one shared plain FedAvg run
    assert [robust["sign_flip", d]["attackers"] for d in ("fedavg", "median")] == [2, 2]  # round(0.25 x 10) = 2 (half to even)
    for r in robust.values():
        assert r["gap_to_clean_pt"] == pytest.approx(100 * (robust["none", "fedavg"]["test_acc"] - r["test_acc"]))
    # 4x sign flip by 2 of 10 clients: FedAvg's accuracy differs from the clean run's (the attack really ran)
    assert robust["sign_flip", "fedavg"]["test_acc"] != robust["none", "fedavg"]["test_acc"]

    comp = {r["method"]: r for r in doc["rows"] if r["section"] == "compression"}
    assert list(comp) == ["float", "8-bit", "top-10%"]
    assert comp["float"]["bytes_up_per_client"] == 9930 * 4 + 8
    assert comp["8-bit"]["bytes_up_per_client"] == 9930 + 6 * 8 + 8
    assert comp["top-10%"]["bytes_up_per_client"] == 993 * 8 + 8
    assert comp["8-bit"]["bytes_ratio"] == pytest.approx((9930 * 4 + 8) / (9930 + 56))

    notes = doc["notes"]
    assert any(n.startswith("robust target") and "sign_flip" in n for n in notes)
    assert any(n.startswith("compression target") for n in notes)
    for png in ("privacy_smoke.png", "privacy_smoke_robust.png", "privacy_smoke_compression.png"):
        assert (tmp_path / png).stat().st_size > 0, png
    assert json.loads((tmp_path / "privacy_smoke.json").read_text())["config"]["smoke"] is True


def test_privacy_bench_sections_flag(tmp_path):
    with pytest.raises(SystemExit):
        privacy.main(["--smoke", "--sections=dp,backdoor", f"--results_dir={tmp_path}"])


def test_privacy_bench_records_a_diverged_run(tmp_path):
    """FedAvg under a 1e30x sign flip goes NaN: the row says so (no accuracy) instead of ending the benchmark."""
    doc = privacy.main(["--smoke", "--sections=robust", "--sign_flip_scale=1e30", f"--results_dir={tmp_path}"])
    robust = {(r["attack"], r["defence"]): r for r in doc["rows"]}
    assert robust["sign_flip", "fedavg"]["diverged_seeds"] == 1 and robust["sign_flip", "fedavg"]["test_acc"] is None
    assert robust["sign_flip", "fedavg"]["gap_to_clean_pt"] is None
    assert robust["none", "fedavg"]["diverged_seeds"] == 0 and robust["none", "fedavg"]["test_acc"] > 0
    assert {r["section"] for r in doc["rows"]} == {"robust"}


def test_privacy_bench_keyword_workload_uses_the_speaker_partition(tmp_path):
    """--workload=keywords: synthesized keywords, one client per training speaker (plus silence's own client)."""
    doc = privacy.main(["--smoke", "--workload=keywords", "--sections=robust", f"--results_dir={tmp_path}"])
    root = privacy.os.path.join(privacy.os.path.dirname(privacy.__file__), ".cache", "privacy_keywords_12")
    held = set()
    for name in ("validation_list.txt", "testing_list.txt"):
        with open(privacy.os.path.join(root, name)) as f:
            held |= {line.split("/")[1].split("_nohash_")[0] for line in f if line.strip()}
    speakers = {p.split("_nohash_")[0] for p in privacy.os.listdir(privacy.os.path.join(root, "yes"))}
    assert doc["config"]["population"] == len(speakers - held) + 1  # + the silence clips' client
    robust = {(r["attack"], r["defence"]): r for r in doc["rows"]}
    assert set(robust) == {("none", "fedavg"), ("sign_flip", "fedavg"), ("sign_flip", "median")}
    assert robust["sign_flip", "median"]["attackers"] == round(0.25 * doc["config"]["population"])
    assert 0 < robust["none", "fedavg"]["test_acc"] <= 1


def test_defence_options_size_f_for_the_worst_cohort():
    import argparse

    args = argparse.Namespace(clients_per_round=20, population=100, confidence=0.99, server_momentum=0.5)
    assert privacy.defence_options("krum", 0.25, args) == ("krum", {"krum_byzantine": 5})  # ceil(0.25 x 20)
    assert privacy.defence_options("bulyan", 0.25, args) == ("bulyan", {"krum_byzantine": 4})  # 20 >= 4f + 3
    # 25 of 100 malicious, cohorts of 20: P(X <= 8) < 0.99 <= P(X <= 9), so 9 trimmed per side
    assert privacy.defence_options("trimmed_mean+worst", 0.25, args) == ("trimmed_mean", {"trim_fraction": 0.45})
    assert privacy.defence_options("geometric_median+momentum", 0.25, args) == (
        "geometric_median", {"server_momentum": 0.5})
    with pytest.raises(ValueError, match="defence modifiers are"):
        privacy.defence_options("median+fast", 0.25, args)
