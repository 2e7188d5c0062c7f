"""launch_local_cluster / launch_local_command: results, fail-fast on crash and hang, no orphan processes."""

import json
import os
import sys
import time

import numpy as np
import psutil
import pytest

from tests.distribute import workers
from tfx_ext.distribute import (
    ClusterTimeoutError,
    WorkerFailedError,
    launch_local_cluster,
    launch_local_command,
    make_tf_configs,
    parse_tf_config,
)


def _children():
    return [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(autouse=True)
def _no_orphans():
    before = {p.pid for p in _children()}
    yield
    left = [p for p in _children() if p.pid not in before]
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()) for p in left]}"


def test_make_tf_configs_is_a_valid_local_cluster():
    configs = [parse_tf_config(c) for c in make_tf_configs(3)]
    addresses = configs[0]["cluster"]["worker"]
    assert len(set(addresses)) == 3 and all(a.startswith("127.0.0.1:") for a in addresses)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)


def test_results_come_back_in_worker_order_with_arrays_and_tuples():
    results = launch_local_cluster(2, "tests.distribute.workers:echo", {"a": [1, 2]}, kwargs={"scale": 10},
                                   timeout=60)
    assert [r["index"] for r in results] == [0, 1]
    assert all(r["value"] == {"a": [1, 2]} for r in results)
    np.testing.assert_array_equal(results[1]["array"], [1, 11, 21])
    assert results[0]["tuple"] == (0, "x")


def test_target_by_function_reference():
    assert [r["index"] for r in launch_local_cluster(1, workers.echo, None, timeout=60)] == [0]


def test_each_worker_sees_its_own_tf_config(tmp_path):
    results = launch_local_cluster(2, "os:getenv", "TF_CONFIG", timeout=60)
    tasks = [json.loads(r)["task"]["index"] for r in results]
    assert tasks == [0, 1]


def test_a_crashing_worker_fails_fast_and_stops_the_others():
    start = time.monotonic()
    with pytest.raises(WorkerFailedError, match=r"worker 1 of 2 exited with code 1; the other workers were "
                                                r"stopped. Last lines of its log") as info:
        launch_local_cluster(2, workers.crash_or_sleep, 1, timeout=120)
    assert time.monotonic() - start < 15, "the launcher waited for the hanging peer instead of failing fast"
    assert info.value.worker == 1 and info.value.returncode == 1
    assert "RuntimeError: deliberate crash of worker 1" in info.value.log_tail
    assert "deliberate crash" in str(info.value)


def test_a_worker_killed_by_a_signal_is_named():
    with pytest.raises(WorkerFailedError, match=r"worker 0 of 1 was killed by signal SIGKILL"):
        launch_local_cluster(1, workers.kill_self, timeout=60)


def test_a_hanging_cluster_times_out_and_is_killed():
    start = time.monotonic()
    with pytest.raises(ClusterTimeoutError, match=r"did not finish within timeout=1.5 s: worker\(s\) \[0, 1\] "
                                                  r"of 2 were still running and were killed") as info:
        launch_local_cluster(2, workers.sleep_forever, timeout=1.5)
    assert time.monotonic() - start < 10
    assert isinstance(info.value, WorkerFailedError) and isinstance(info.value, TimeoutError)


def test_grandchildren_of_a_hanging_worker_are_killed_too(tmp_path):
    pid_file = str(tmp_path / "grandchild.pid")
    with pytest.raises(ClusterTimeoutError):
        launch_local_cluster(1, workers.spawn_grandchild_and_sleep, pid_file, timeout=3)
    grandchild = int(open(pid_file).read())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(grandchild) and time.monotonic() < deadline:
        try:
            if psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    alive = psutil.pid_exists(grandchild) and psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE
    assert not alive, "a worker's grandchild survived the launcher"


def test_logs_are_kept_in_log_dir(tmp_path):
    with pytest.raises(WorkerFailedError):
        launch_local_cluster(2, workers.crash_or_sleep, 0, timeout=60, log_dir=tmp_path)
    assert "deliberate crash of worker 0" in (tmp_path / "worker_0.log").read_text()
    assert (tmp_path / "worker_1.log").exists()


def test_launch_local_command_runs_every_worker_and_reports_exit_codes(tmp_path, capsys):
    script = ("import json, os, sys; t = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
              f"open(os.path.join({str(tmp_path)!r}, f'w{{t}}'), 'w').write(os.environ['TFX_EXT_LOCAL_WORKER']); "
              "print('hello from', t); sys.exit(3 if t == 1 and len(sys.argv) > 1 else 0)")
    launch_local_command(2, [sys.executable, "-c", script], timeout=60)
    assert sorted(os.listdir(tmp_path)) == ["w0", "w1"] and (tmp_path / "w1").read_text() == "1"
    assert "hello from 0" in capsys.readouterr().out  # The chief's output is echoed.
    with pytest.raises(WorkerFailedError, match=r"worker 1 of 2 exited with code 3"):
        launch_local_command(2, [sys.executable, "-c", script, "fail"], timeout=60)


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"num_workers": 0}, ValueError, r"`num_workers` must be an integer >= 1. Received: num_workers=0"),
    ({"timeout": 0}, ValueError, r"`timeout` must be a positive number of seconds. Received: timeout=0"),
    ({"target": "os.path.join"}, ValueError, r"`target` must be an importable 'package.module:function' string"),
    ({"target": lambda: 1}, ValueError, r"not a lambda, a local function or a function of `__main__`"),
    ({"args": (object(),)}, TypeError, r"`args` and `kwargs` of a worker target must be JSON-serialisable"),
])
def test_launcher_argument_errors(kwargs, error, pattern):
    call = {"num_workers": 1, "target": "os:getcwd", "args": (), "timeout": 10, **kwargs}
    with pytest.raises(error, match=pattern):
        launch_local_cluster(call["num_workers"], call["target"], *call["args"], timeout=call["timeout"])


def test_launch_local_command_rejects_an_empty_command():
    with pytest.raises(ValueError, match=r"`command` must be a non-empty list of strings. Received: command=\[\]"):
        launch_local_command(1, [], timeout=5)
