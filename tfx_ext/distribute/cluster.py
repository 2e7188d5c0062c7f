"""A local MultiWorkerMirroredStrategy cluster: worker processes on 127.0.0.1, each with its own TF_CONFIG.

`launch_local_cluster(2, "my_pkg.train:main", config)` starts two fresh Python processes (never `fork`:
TensorFlow does not survive it), each running `my_pkg.train.main(config)` with TF_CONFIG naming both workers
on free loopback ports; it returns their return values in worker order. `launch_local_command` does the same
for a whole command line (the CLI's `--local_workers=N`).

Failure handling: every worker runs in its own process group (its session). The first worker that exits with an
error, or the timeout, stops the whole cluster at once: SIGTERM to every group, SIGKILL after a short grace
period, then the launcher raises `WorkerFailedError` / `ClusterTimeoutError` naming the worker, its exit status
and the tail of its log. A worker that crashes makes its peers hang in their next collective, so failing fast
matters. Nothing is left running when the launcher returns or raises (KeyboardInterrupt included).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Sequence

import tfx_ext.distribute._worker as _worker
from tfx_ext._validate import check_int, is_number
from tfx_ext.distribute.errors import ClusterTimeoutError, WorkerFailedError

_WORKER_SCRIPT = str(pathlib.Path(_worker.__file__).resolve())
_GRACE_S = 3.0
_LOG_TAIL_LINES = 40
LOCAL_WORKER_ENV = "TFX_EXT_LOCAL_WORKER"  # Set in every worker, so a relaunched CLI does not relaunch again.


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports that were free on `host` a moment ago (the OS picks them)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def make_tf_configs(num_workers: int, host: str = "127.0.0.1", ports: Sequence[int] | None = None) -> list[str]:
    """TF_CONFIG JSON for each of `num_workers` workers of one local cluster (worker 0 is the chief)."""
    ports = list(ports) if ports is not None else free_ports(num_workers, host)
    addresses = [f"{host}:{port}" for port in ports]
    return [
        json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}})
        for i in range(num_workers)
    ]


def _target_name(target: str | Callable) -> str:
    if isinstance(target, str):
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(
                "`target` must be an importable 'package.module:function' string or a module-level function. "
                f"Received: target={target!r}"
            )
        return target
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    if not callable(target) or not module or not qualname or "<" in qualname or module == "__main__":
        raise ValueError(
            "`target` must be an importable 'package.module:function' string or a function defined at module "
            "level in an importable module (not a lambda, a local function or a function of `__main__`: the "
            f"workers are fresh processes that import it by name). Received: target={target!r}"
        )
    return f"{module}:{qualname}"


def _log_tail(path: pathlib.Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)  # The worker leads its own session: pgid == pid.


def _stop_all(processes: Sequence[subprocess.Popen]) -> None:
    """SIGTERM every worker's process group, SIGKILL what is left after the grace period, reap everything."""
    for p in processes:
        _kill_group(p, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_S
    for p in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
    for p in processes:
        _kill_group(p, signal.SIGKILL)  # Also reaches grandchildren a worker started in its group.
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=_GRACE_S)


def _pump(stream, log_file, echo) -> None:
    """Copies a worker's output to its log file and, for the echoed worker, to our stdout."""
    for chunk in iter(lambda: stream.read1(65536), b""):
        log_file.write(chunk)
        log_file.flush()
        if echo is not None:
            echo.write(chunk.decode(errors="replace"))
            echo.flush()
    stream.close()


def _user_paths() -> list[str]:
    """Our `sys.path` entries outside the Python installation (the project, test directories, the cwd)."""
    prefixes = tuple(os.path.realpath(p) + os.sep for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    return [p for p in sys.path if p and os.path.isdir(p) and not (os.path.realpath(p) + os.sep).startswith(prefixes)]


def _worker_env(env: dict[str, str] | None, tf_config: str, index: int) -> dict[str, str]:
    merged = dict(os.environ)
    merged.update(env or {})
    merged["TF_CONFIG"] = tf_config
    merged[LOCAL_WORKER_ENV] = str(index)
    merged.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    merged.setdefault("KERAS_BACKEND", "tensorflow")
    merged["PYTHONUNBUFFERED"] = "1"
    # What the launcher can import, the workers can import (tests' helper modules, the current directory).
    paths = _user_paths()
    if merged.get("PYTHONPATH"):
        paths.append(merged["PYTHONPATH"])
    merged["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([os.getcwd(), *paths]))
    return merged


def _run_cluster(commands: list[list[str]], tf_configs: list[str], *, timeout: float, env, log_dir: pathlib.Path,
                 echo_worker: int | None) -> list[int]:
    """Starts one process per command, waits, fails fast; returns the exit codes (all 0 on success)."""
    processes: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    logs = [log_dir / f"worker_{i}.log" for i in range(len(commands))]
    files = []
    try:
        for i, (command, tf_config) in enumerate(zip(commands, tf_configs)):
            log_file = open(logs[i], "wb")
            files.append(log_file)
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=_worker_env(env, tf_config, i), start_new_session=True, close_fds=True,
            )
            processes.append(process)
            echo = sys.stdout if i == echo_worker else None
            pump = threading.Thread(target=_pump, args=(process.stdout, log_file, echo), daemon=True)
            pump.start()
            pumps.append(pump)
        deadline = time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in processes]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                first = failed[0]
                _stop_all(processes)
                for pump in pumps:
                    pump.join(timeout=1.0)
                tails = {i: _log_tail(path) for i, path in enumerate(logs)}
                raise WorkerFailedError(
                    f"worker {first} of {len(processes)} {_describe_exit(codes[first])}; the other workers were "
                    f"stopped. Last lines of its log ({logs[first]}):\n{tails[first]}",
                    worker=first, returncode=codes[first], log_tail=tails[first], logs=tails,
                )
            if all(code == 0 for code in codes):
                for pump in pumps:
                    pump.join(timeout=5.0)
                return codes
            if time.monotonic() > deadline:
                running = [i for i, code in enumerate(codes) if code is None]
                _stop_all(processes)
                for pump in pumps:
                    pump.join(timeout=1.0)
                tails = {i: _log_tail(path) for i, path in enumerate(logs)}
                first = running[0]
                raise ClusterTimeoutError(
                    f"the local cluster did not finish within timeout={timeout:g} s: worker(s) {running} of "
                    f"{len(processes)} were still running and were killed (a worker that hangs, or waits in a "
                    f"collective for a peer that never comes). Last lines of worker {first}'s log "
                    f"({logs[first]}):\n{tails[first]}",
                    worker=first, returncode=None, log_tail=tails[first], logs=tails,
                )
            time.sleep(0.02)
    finally:
        if any(p.poll() is None for p in processes):  # An exception of ours, or KeyboardInterrupt.
            _stop_all(processes)
        for f in files:
            f.close()


def _check_common(num_workers: int, timeout: float) -> int:
    """Returns `num_workers` as a Python int (numpy ints accepted; booleans refused, as for `timeout`)."""
    num_workers = check_int("num_workers", num_workers, minimum=1)
    if not is_number(timeout) or not timeout > 0:
        raise ValueError(f"`timeout` must be a positive number of seconds. Received: timeout={timeout!r}")
    return num_workers


def launch_local_cluster(num_workers: int, target: str | Callable, *args: Any, timeout: float = 600.0,
                         env: dict[str, str] | None = None, kwargs: dict[str, Any] | None = None,
                         log_dir: str | os.PathLike | None = None, echo_chief: bool = False,
                         host: str = "127.0.0.1") -> list[Any]:
    """Runs `target(*args, **kwargs)` in `num_workers` local worker processes of one multi-worker cluster.

    Each worker is a fresh `python` process with TF_CONFIG set (cluster of `num_workers` "worker" tasks on
    `host` with free ports; worker 0 is the chief) and `TFX_EXT_LOCAL_WORKER=<index>`. Inside, call
    `get_strategy("multi_worker")` before any other TensorFlow op.

    Args:
        num_workers: number of worker processes (>= 1).
        target: "package.module:function", or a module-level function of an importable module.
        *args: positional arguments for `target`; JSON-serialisable (they are sent as JSON).
        timeout: seconds for the whole cluster; on expiry every worker is killed.
        env: extra environment variables for the workers (over a copy of ours).
        kwargs: keyword arguments for `target` (JSON-serialisable).
        log_dir: keep the workers' logs (`worker_<i>.log`) in this directory; by default they live in a
            temporary directory that is deleted afterwards (their tails are in any error raised).
        echo_chief: also copy worker 0's output to our stdout as it comes.
        host: loopback address to bind.

    Returns:
        The workers' return values, in worker order. They travel as JSON plus `.npz` for NumPy arrays: nests of
        dicts/lists/tuples, numbers, strings, None and arrays (tensors are converted to arrays).

    Raises:
        ValueError: bad `num_workers`, `timeout` or `target`.
        TypeError: `args`/`kwargs` are not JSON-serialisable.
        WorkerFailedError: a worker exited with an error (names it, with its exit status and log tail); the
            other workers were stopped.
        ClusterTimeoutError: the cluster ran past `timeout` (names the workers still running); all were killed.

    Example:
        >>> launch_local_cluster(2, "os.path:join", "a", "b", timeout=60)
        ['a/b', 'a/b']
    """
    num_workers = _check_common(num_workers, timeout)
    target_name = _target_name(target)
    try:
        payload = json.dumps({"args": list(args), "kwargs": dict(kwargs or {})})
    except TypeError as error:
        raise TypeError(f"`args` and `kwargs` of a worker target must be JSON-serialisable: {error}") from None
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix="tfx_ext_cluster_"))
    try:
        logs = pathlib.Path(log_dir) if log_dir is not None else work_dir
        logs.mkdir(parents=True, exist_ok=True)
        commands, specs = [], []
        for i in range(num_workers):
            spec = {
                "target": target_name,
                **json.loads(payload),
                "sys_path": _user_paths(),
                "result_json": str(work_dir / f"result_{i}.json"),
                "result_npz": str(work_dir / f"result_{i}.npz"),
            }
            spec_path = work_dir / f"spec_{i}.json"
            spec_path.write_text(json.dumps(spec))
            specs.append(spec)
            commands.append([sys.executable, "-u", _WORKER_SCRIPT, str(spec_path)])
        _run_cluster(commands, make_tf_configs(num_workers, host), timeout=timeout, env=env, log_dir=logs,
                     echo_worker=0 if echo_chief else None)
        results = []
        for i, spec in enumerate(specs):
            document = json.loads(pathlib.Path(spec["result_json"]).read_text())
            if document["has_arrays"]:
                import numpy as np

                with np.load(spec["result_npz"]) as arrays:
                    results.append(_worker.decode_result(document["result"], {k: arrays[k] for k in arrays}))
            else:
                results.append(_worker.decode_result(document["result"], {}))
        return results
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def launch_local_command(num_workers: int, command: Sequence[str], *, timeout: float = 3600.0,
                         env: dict[str, str] | None = None, log_dir: str | os.PathLike | None = None,
                         echo_chief: bool = True, host: str = "127.0.0.1") -> None:
    """Runs the same command line in `num_workers` local worker processes of one multi-worker cluster.

    Used by the CLI's `--local_workers=N`: the command is the CLI's own command line; each copy sees TF_CONFIG
    and `TFX_EXT_LOCAL_WORKER` and so trains as one worker instead of launching again. Worker 0's output is
    echoed to our stdout (it is the chief, with the progress bar).

    Raises:
        WorkerFailedError, ClusterTimeoutError: as `launch_local_cluster`.
    """
    num_workers = _check_common(num_workers, timeout)
    if not command or not all(isinstance(c, str) for c in command):
        raise ValueError(f"`command` must be a non-empty list of strings. Received: command={command!r}")
    with tempfile.TemporaryDirectory(prefix="tfx_ext_cluster_") as tmp:
        logs = pathlib.Path(log_dir) if log_dir is not None else pathlib.Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        _run_cluster([list(command)] * num_workers, make_tf_configs(num_workers, host), timeout=timeout, env=env,
                     log_dir=logs, echo_worker=0 if echo_chief else None)


def in_local_worker() -> bool:
    """Whether this process is a worker started by `launch_local_cluster`/`launch_local_command`."""
    return LOCAL_WORKER_ENV in os.environ


__all__ = ["free_ports", "in_local_worker", "launch_local_cluster", "launch_local_command", "make_tf_configs"]
