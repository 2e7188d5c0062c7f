"""--strategy / --local_workers flags shared by the training commands."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf
from absl import flags

from tfx_ext.apps.cli import flags as cli_flags
from tfx_ext.distribute import STRATEGY_NAMES, WorkerFailedError


def parsed(*args):
    values = flags.FlagValues()
    cli_flags.define_strategy_flags(values)
    cli_flags.define_strategy_flags(values)  # A second call is harmless (two commands may both ask).
    values(["prog", *args])
    return values


def test_flag_names_match_get_strategy():
    assert cli_flags.STRATEGY_NAMES == STRATEGY_NAMES


def test_defaults_give_the_default_strategy():
    values = parsed()
    assert values.strategy == "default" and values.local_workers == 0
    assert cli_flags.strategy_from_flags(values) is tf.distribute.get_strategy()
    assert not cli_flags.run_local_cluster_if_requested(values)


def test_mirrored_flag():
    assert cli_flags.strategy_from_flags(parsed("--strategy=mirrored")).num_replicas_in_sync == 2
    assert cli_flags.strategy_from_flags(parsed("--strategy=mirrored", "--logical_cpus=2")).num_replicas_in_sync == 2


def test_unknown_strategy_is_rejected_by_absl():
    with pytest.raises(flags.IllegalFlagValueError, match=r"value should be one of <default\|mirrored\|"):
        parsed("--strategy=tpu")


def test_local_workers_needs_multi_worker():
    with pytest.raises(flags.IllegalFlagValueError, match=r"--local_workers needs --strategy=multi_worker. "
                                                          r"Received: --strategy=mirrored --local_workers=2"):
        cli_flags.strategy_from_flags(parsed("--strategy=mirrored", "--local_workers=2"))


def test_multi_worker_without_tf_config_is_a_named_error(monkeypatch):
    from tfx_ext.distribute import ClusterConfigError

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ClusterConfigError, match=r"needs the TF_CONFIG environment variable"):
        cli_flags.strategy_from_flags(parsed("--strategy=multi_worker"))


def test_local_workers_relaunch_the_command_line(tmp_path):
    script = ("import json, os, sys; t = json.loads(os.environ['TF_CONFIG']); "
              f"open(os.path.join({str(tmp_path)!r}, 'w%d' % t['task']['index']), 'w').write("
              "json.dumps(t['cluster'])); sys.exit(int(sys.argv[1]))")
    values = parsed("--strategy=multi_worker", "--local_workers=2")
    assert cli_flags.run_local_cluster_if_requested(values, argv=["-c", script, "0"])
    assert sorted(os.listdir(tmp_path)) == ["w0", "w1"]
    assert len(json.loads((tmp_path / "w0").read_text())["worker"]) == 2
    with pytest.raises(WorkerFailedError, match=r"worker [01] of 2 exited with code 4"):
        cli_flags.run_local_cluster_if_requested(values, argv=["-c", script, "4"])


@pytest.mark.slow
def test_cli_command_trains_on_two_local_workers(tmp_path):
    """End to end: the command relaunches itself as 2 workers; the chief's output is echoed; chief saves."""
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])}
    env.pop("TF_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "tests.distribute.cli_demo", "--strategy=multi_worker", "--local_workers=2",
         f"--out={tmp_path}"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "worker 0 of 2 replicas done" in result.stdout  # Echoed from the chief.
    assert "worker 1 of 2" not in result.stdout
    assert result.stdout.rstrip().endswith("local cluster finished")
    assert os.listdir(tmp_path) == ["m.keras"]
