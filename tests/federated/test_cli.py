"""`tfx-ext federated simulate` and `run_federated_demo` write their history, curve and summary."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfx_ext.federated import History
from tfx_ext.apps.federated_experiments import run_federated_demo


@pytest.mark.slow  # two fresh Python processes importing TensorFlow (~25 s on a loaded 2-core machine)
def test_cli_simulate_writes_history_and_curve(tmp_path):
    out = tmp_path / "fed"
    cmd = [sys.executable, "-m", "tfx_ext", "federated", "simulate", "--dataset=digits", "--partition=dirichlet",
           "--alpha=0.5", "--clients=20", "--clients_per_round=4", "--rounds=2", "--aggregator=fedadam",
           f"--output_dir={out}", "--progress=false"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fedadam on digits (dirichlet, 20 clients, 4 per round, 2 rounds)" in proc.stdout
    history = History.from_json(out / "history.json")
    assert len(history) == 2 and history["eval_accuracy"][-1] is not None
    for name in ("history.csv", "learning_curve.png", "label_distribution.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "summary.json").read_text())["population"]["num_clients"] == 20
    usage = subprocess.run(cmd[:4], capture_output=True, text=True, timeout=120, env=env)
    assert usage.returncode == 2 and "usage: tfx-ext federated SUBCOMMAND" in usage.stderr


def test_run_federated_demo_returns_headline_numbers(tmp_path):
    summary = run_federated_demo(tmp_path, rounds=3, clients=20, clients_per_round=5)
    assert summary["rounds"] == 3 and 0.0 <= summary["final_eval_accuracy"] <= 1.0
    assert summary["client_updates_per_s"] > 0
    assert os.path.exists(summary["learning_curve_png"]) and summary["learning_curve_png"].endswith(".png")


# ----- every algorithm from the CLI, defaults that learn, named flag errors (issue 18) --------------------------------
@pytest.mark.parametrize("kw", [dict(aggregator="fedma"), dict(aggregator="matched", secure="secagg+", dropout_rate=0.1),
                                dict(secure="secagg", secure_threshold=0.6)], ids=["fedma", "matched+secagg+", "secagg"])
def test_run_experiment_runs_every_algorithm(tmp_path, kw):
    from tfx_ext.apps.federated_experiments import run_experiment

    summary = run_experiment(tmp_path, clients=8, clients_per_round=4, rounds=2, progress=False, **kw)
    assert summary["rounds"] == 2 and summary["final_eval_accuracy"] > 0.2
    assert summary["failed_rounds"] == 0 and summary["secure"] == kw.get("secure", "none")


def test_bad_experiment_settings_are_named():
    from tfx_ext.apps.federated_experiments import make_aggregator, make_secure

    with pytest.raises(ValueError, match="`aggregator` must be one of"):
        make_aggregator("fedsgd")
    with pytest.raises(ValueError, match="`aggregator='fedma'` needs the `model_fn`"):
        make_aggregator("fedma")
    with pytest.raises(ValueError, match="need `secure=secagg` or `secagg\\+`"):
        make_secure("none", dropout_rate=0.1)
    with pytest.raises(ValueError, match="`dropout_rate` must be"):
        make_secure("secagg", dropout_rate=1.5)
    assert make_secure("secagg+", threshold=5.0).threshold == 5


@pytest.mark.slow  # a fresh Python process importing TensorFlow
def test_cli_default_output_dir_and_named_flag_errors(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    base = [sys.executable, "-m", "tfx_ext", "federated", "simulate", "--progress=false"]
    bad = subprocess.run(base + ["--dropout_rate=0.1"], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert bad.returncode == 2 and "error: `secure_threshold`, `dropout_rate`" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert "writing to out/federated-" in bad.stdout  # the default --output_dir is a fresh timestamped folder
    missing = subprocess.run(base + ["--dataset=speech_commands"], capture_output=True, text=True, timeout=300,
                             env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "`data_dir` is required" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.slow  # a fresh Python process importing TensorFlow (~10 s on a loaded 2-core machine)
def test_cli_secagg_plus_with_dropout_succeeds_and_writes_metrics(tmp_path):
    out = tmp_path / "secure"
    cmd = [sys.executable, "-m", "tfx_ext", "federated", "simulate", "--clients=10", "--clients_per_round=6",
           "--rounds=3", "--secure=secagg+", "--dropout_rate=0.2", f"--output_dir={out}", "--progress=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fedavg with secagg+ on digits (dirichlet, 10 clients, 6 per round, 3 rounds)" in proc.stdout
    assert "failed rounds         0" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["secure"] == "secagg+" and summary["failed_rounds"] == 0
    assert summary["final_eval_accuracy"] > 0.3  # 10 digit classes: chance is 0.1
    rounds = History.from_json(out / "history.json").to_records()
    assert [r["round_failed"] for r in rounds] == [0, 0, 0]
    # Clients really dropped out, and the round metrics count only the clients SecAgg+ kept.
    assert sum(r["secure/dropped"] for r in rounds) > 0
    for r in rounds:
        assert r["clients_accepted"] == r["secure/survivors"] == r["clients_sampled"] - r["secure/dropped"]
        assert r["examples"] > 0 and r["eval_accuracy"] is not None
    for name in ("history.csv", "learning_curve.png", "label_distribution.png"):
        assert (out / name).stat().st_size > 0, name


@pytest.mark.parametrize("kw, floor", [(dict(), 0.85), (dict(aggregator="fedma"), 0.80), (dict(secure="secagg+"), 0.80)],
                         ids=["fedavg", "fedma", "secagg+"])
def test_cli_defaults_learn_digits(tmp_path, kw, floor):
    """Issue 18's targets with the CLI's defaults (client lr 0.1, 2 local epochs, batch 16): Dirichlet(0.5) digits,
    16 clients, 8 per round, 8 rounds. Measured 0.904 (FedAvg), 0.851 (FedMA), 0.904 (SecAgg+)."""
    from tfx_ext.apps.federated_experiments import run_experiment

    summary = run_experiment(tmp_path, dataset="digits", partition="dirichlet", alpha=0.5, clients=16,
                             clients_per_round=8, rounds=8, progress=False, **kw)
    assert summary["final_eval_accuracy"] >= floor and summary["failed_rounds"] == 0


@pytest.mark.slow  # a fresh Python process importing TensorFlow
def test_cli_central_dp_with_active_secagg_prints_the_epsilon_spent(tmp_path):
    from tfx_ext.federated import DPAccountant

    out = tmp_path / "dp"
    cmd = [sys.executable, "-m", "tfx_ext", "federated", "simulate", "--clients=12", "--clients_per_round=6",
           "--rounds=2", "--secure=secagg", "--threat_model=active", "--dp=central", "--noise_multiplier=0.7",
           "--clip_norm=0.5", "--adaptive_clip_quantile=0.5", f"--output_dir={out}", "--progress=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    want = DPAccountant(population_size=12, cohort_size=6, noise_multiplier=0.7,
                        clipped_count_stddev=6 / 20).epsilon(2, 1 / 12**1.1)
    assert summary["epsilon"] == want and summary["dp"] == "central" and summary["threat_model"] == "active"
    assert f"privacy               epsilon {want:.3f} at delta" in proc.stdout
    assert summary["failed_rounds"] == 0


def test_privacy_settings_are_named_and_calibrated():
    from tfx_ext.apps.federated_experiments import make_privacy

    assert make_privacy("none", population_size=10, cohort_size=5, rounds=3) == []
    with pytest.raises(ValueError, match=r"need `dp='central'`"):
        make_privacy("none", population_size=10, cohort_size=5, rounds=3, noise_multiplier=1.0)
    with pytest.raises(ValueError, match=r"`dp='central'` needs `noise_multiplier` or `target_epsilon`"):
        make_privacy("central", population_size=10, cohort_size=5, rounds=3)
    with pytest.raises(ValueError, match=r"`dp` must be one of"):
        make_privacy("local", population_size=10, cohort_size=5, rounds=3)
    with pytest.raises(ValueError, match=r"`dp='distributed'` needs `noise_multiplier`"):
        make_privacy("distributed", population_size=10, cohort_size=5, rounds=3, target_epsilon=1.0)
    with pytest.raises(ValueError, match=r"`dp_bits` needs `dp='distributed'`"):
        make_privacy("central", population_size=10, cohort_size=5, rounds=3, noise_multiplier=1.0, bits=12)
    (ddp,) = make_privacy("distributed", population_size=10, cohort_size=5, rounds=3, noise_multiplier=1.0, bits=12)
    assert (ddp.bits, ddp.noise_multiplier, ddp.clip_norm, ddp.accountant.cohort_size) == (12, 1.0, 1.0, 5)
    (dp,) = make_privacy("central", population_size=100, cohort_size=10, rounds=5, target_epsilon=3.0)
    assert 2.9 < dp.epsilon(5) <= 3.0 + 1e-6


@pytest.mark.slow  # a fresh Python process importing TensorFlow
def test_cli_distributed_dp_under_secagg_plus_prints_the_epsilon_of_its_rounds(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "tfx_ext", "federated", "simulate", "--clients=12", "--clients_per_round=6",
           "--rounds=2", "--secure=secagg+", "--dp=distributed", "--noise_multiplier=0.7", "--clip_norm=0.5",
           "--dp_bits=14", f"--output_dir={out}", "--progress=false"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    rounds = json.loads((out / "history.json").read_text())["rounds"]
    assert summary["dp"] == "distributed" and summary["dp_bits"] == 14
    assert summary["epsilon"] == rounds[-1]["DistributedDP/epsilon"] > rounds[0]["DistributedDP/epsilon"] > 0
    assert f"epsilon {summary['epsilon']:.3f} at delta" in proc.stdout and "14-bit secure sums" in proc.stdout
    bad = subprocess.run(cmd[:-3] + ["--secure=none", f"--output_dir={tmp_path / 'bad'}", "--progress=false"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and "needs `secure='secagg'` or `'secagg+'`" in bad.stderr


# ----- LiteRT clients from the CLI (issue 23) ---------------------------------------------------------------------
def test_run_experiment_with_litert_clients_learns_and_reports_its_runtime(tmp_path):
    """Equality with Keras clients is tested in test_litert_clients.py on whole batches; here the digits CNN's
    clients (uneven sizes: LiteRT drops each client's remainder batch) learn from the CLI's defaults."""
    from tfx_ext.apps.federated_experiments import run_experiment

    with pytest.warns(RuntimeWarning, match="whole batches"):
        summary = run_experiment(tmp_path, clients=8, clients_per_round=4, rounds=2, progress=False, local_epochs=1,
                                 client_runtime="litert")
    assert summary["client_runtime"] == "litert" and summary["client_updates_per_s"] > 0
    assert summary["final_eval_accuracy"] > 0.2  # 10 classes: chance is 0.1


@pytest.mark.slow  # a fresh Python process importing TensorFlow
def test_cli_simulate_with_litert_clients(tmp_path):
    out = tmp_path / "fed"
    cmd = [sys.executable, "-m", "tfx_ext", "federated", "simulate", "--clients=8", "--clients_per_round=4",
           "--rounds=1", "--client_runtime=litert", "--local_epochs=1", f"--output_dir={out}", "--progress=false"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(litert clients)" in proc.stdout
    assert json.loads((out / "summary.json").read_text())["client_runtime"] == "litert"
    bad = subprocess.run(cmd[:-2] + [f"--output_dir={tmp_path / 'bad'}", "--aggregator=fedprox"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and "proximal term" in bad.stderr and "Traceback" not in bad.stderr


# ----- robust aggregators, attacks and compression from the CLI (issue 20) ------------------------------------------
@pytest.mark.parametrize("name, options, attr, want", [
    ("median", {}, None, None), ("trimmed_mean", {"trim_fraction": 0.25}, "beta", 0.25),
    ("krum", {"krum_byzantine": 1}, "f", 1), ("multi_krum", {"krum_byzantine": 1, "multi_krum_m": 2}, "m", 2),
    ("geometric_median", {}, None, None), ("norm_bounding", {"norm_bound": 0.5}, "bound", 0.5),
    ("bulyan", {"krum_byzantine": 0}, "f", 0), ("centered_clipping", {"cc_tau": 0.5, "cc_iterations": 2}, "tau", 0.5),
    ("centered_clipping", {"server_momentum": 0.5, "pre_clip": "median"}, "pre_clip", "median")])
def test_run_experiment_with_each_robust_aggregator(tmp_path, name, options, attr, want):
    from tfx_ext.apps.federated_experiments import make_aggregator, run_experiment

    assert type(make_aggregator(name, **options)).__name__.lower().replace("_", "") == name.replace("_", "")
    if attr is not None:
        assert getattr(make_aggregator(name, **options), attr) == want
    summary = run_experiment(tmp_path, clients=8, clients_per_round=4, rounds=2, progress=False, aggregator=name,
                             aggregator_options=options)
    assert summary["aggregator"] == name and summary["rounds"] == 2 and summary["final_eval_accuracy"] > 0.15


@pytest.mark.parametrize("attack, scale", [("sign_flip", 2.0), ("scale", 5.0), ("gaussian", None),
                                           ("label_flip", None), ("replace", 5.0)])
def test_run_experiment_under_attack_records_the_attackers(tmp_path, attack, scale):
    from tfx_ext.apps.federated_experiments import run_experiment

    summary = run_experiment(tmp_path, clients=8, clients_per_round=8, rounds=2, progress=False, aggregator="median",
                             attack=attack, malicious_fraction=0.25, attack_scale=scale)
    assert summary["attack"] == attack and summary["attackers"] == 2 and summary["malicious_fraction"] == 0.25
    rounds = History.from_json(tmp_path / "history.json").to_records()
    # every client is sampled each round, so each round sees exactly the 2 = 0.25 x 8 attackers
    assert [r["aggregator/num_attackers"] for r in rounds] == [2, 2]


def test_run_experiment_compression_counts_the_bytes_each_client_sends(tmp_path):
    """The digits CNN has 9,930 parameters in 6 arrays (160 + 4,640 + 5,130); a float payload is 4 bytes a value
    plus the float64 weight, 8-bit quantization 1 byte a value plus float32 (min, max) per array, top-10% keeps
    ceil(993) (int32 index, float32 value) pairs."""
    from tfx_ext.apps.federated_experiments import run_experiment

    def run(sub, **kw):
        return run_experiment(tmp_path / sub, clients=8, clients_per_round=4, rounds=2, progress=False, **kw)

    assert run("float")["bytes_up_per_client"] == 9930 * 4 + 8
    q = run("q8", compression="quantize", compression_options={"bits": 8}, dp="central",
            dp_options={"noise_multiplier": 0.5, "clip_norm": 1.0})
    assert q["bytes_up_per_client"] == 9930 + 6 * 8 + 8 and q["compression"] == "quantize"
    assert q["compression_options"] == ["StochasticQuantizer(bits=8)"] and q["epsilon"] > 0
    top = run("topk", compression="topk", compression_options={"fraction": 0.1})
    assert top["bytes_up_per_client"] == 993 * 8 + 8 and top["final_eval_accuracy"] > 0.15


def test_server_momentum_and_pre_clip_compose_with_the_robust_rules_only():
    from tfx_ext.apps.federated_experiments import make_aggregator

    cc = make_aggregator("centered_clipping", server_momentum=0.5, server_lr=0.8, pre_clip=2.0)
    assert (cc.server_optimizer.momentum, cc.server_optimizer.learning_rate, cc.pre_clip) == (0.5, 0.8, 2.0)
    with pytest.raises(ValueError, match=r"`server_momentum` and `pre_clip` apply to the robust aggregators .*"
                                         r"Received: aggregator='fedavg'"):
        make_aggregator("fedavg", server_momentum=0.9)
    with pytest.raises(ValueError, match="norm_bounding clips on the clients with `norm_bound`"):
        make_aggregator("norm_bounding", pre_clip="median")
    from tfx_ext.apps.cli.federated import _pre_clip

    assert [_pre_clip(v) for v in (None, "median", "2.5")] == [None, "median", 2.5]
    with pytest.raises(ValueError, match=r"--pre_clip must be 'median' or a number. Received: --pre_clip='mean'"):
        _pre_clip("mean")


def test_run_experiment_refuses_preloaded_data_of_the_wrong_form(tmp_path):
    from tfx_ext.apps.federated_experiments import run_experiment

    with pytest.raises(ValueError, match=r"`data` must be load_dataset's \(x_train, .*Received: 2 items"):
        run_experiment(tmp_path, data=(np.zeros(3), np.zeros(3)), progress=False)


def test_bad_attack_and_compression_settings_are_named():
    from tfx_ext.apps.federated_experiments import make_attack, make_compression

    with pytest.raises(ValueError, match="`malicious_fraction` and `attack_scale` need an `attack`"):
        make_attack("none", malicious_fraction=0.1)
    with pytest.raises(ValueError, match=r"needs `malicious_fraction` in \(0, 1\]"):
        make_attack("sign_flip")
    with pytest.raises(ValueError, match="`attack` must be one of"):
        make_attack("backdoor", malicious_fraction=0.1)
    assert make_attack("scale", malicious_fraction=0.1, attack_scale=3.0).boost == 3.0
    replace = make_attack("replace", malicious_fraction=0.1, attack_scale=3.0, num_classes=10)
    assert replace.name == "label_flip+scale" and replace.label_flip.num_classes == 10
    assert replace.attacks[1].boost == 3.0
    with pytest.raises(ValueError, match="`compression_bits` needs `compression='quantize'`"):
        make_compression("topk", bits=4)
    assert make_compression("none") == [] and make_compression("quantize", bits=2)[0].bits == 2


@pytest.mark.slow  # fresh Python processes importing TensorFlow
def test_cli_robust_attack_and_compression_flags(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    base = [sys.executable, "-m", "tfx_ext", "federated", "simulate", "--clients=10", "--clients_per_round=5",
            "--rounds=2", "--progress=false"]
    out = tmp_path / "attacked"
    proc = subprocess.run(base + ["--aggregator=trimmed_mean", "--trim_fraction=0.2", "--attack=sign_flip",
                                  "--malicious_fraction=0.2", "--attack_scale=3", f"--output_dir={out}"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "attack                sign_flip: 2 malicious clients (fraction 0.2)" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aggregator"] == "trimmed_mean" and summary["attackers"] == 2
    out = tmp_path / "compressed"
    proc = subprocess.run(base + ["--compression=quantize", "--compression_bits=4", f"--output_dir={out}"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"compression           StochasticQuantizer(bits=4): {4965 + 48 + 8:,} bytes up per client" in proc.stdout
    bad = subprocess.run(base + ["--aggregator=median", "--secure=secagg", f"--output_dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and "Secure aggregation cannot be used with Median" in bad.stderr
    assert "Traceback" not in bad.stderr
