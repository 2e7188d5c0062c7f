"""`tfx-ext data synthesize` and `tfx-ext data info` through `python -m tfx_ext` in a subprocess.

Each subprocess imports TensorFlow (seconds), so the cases share as few processes as they can.
"""

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tfx_ext", "data", *args], capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=300)  # fmt: skip


@pytest.mark.slow  # Two TensorFlow start-ups: ~12 s of CPU, much more on a loaded machine.
def test_synthesize_then_info(tmp_path):
    root = str(tmp_path / "kws")
    result = run_cli("synthesize", f"--root={root}", "--speakers=3", "--clips_per_speaker=1", "--engine=numpy",
                     "--seed=2", "--words=yes,no,up,down,left,right,on,off,stop,go,cat", "--noprogress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "33 clips of 11 words by 3 speakers (engine numpy, wrote in" in result.stdout
    assert "splits: train 11, validation 11, test 11" in result.stdout
    assert len(os.listdir(os.path.join(root, "cat"))) == 3

    info = run_cli("info", f"--root={root}")
    assert info.returncode == 0, info.stderr
    lines = [" ".join(line.split()) for line in info.stdout.splitlines()]
    assert lines[2] == "word train validation test total"
    assert "cat 1 1 1 3" in lines and "total 11 11 11 33" in lines
    assert "speakers: 3 (train 1, validation 1, test 1)" in info.stdout


def test_usage_errors():
    """The usage and data errors of `main(argv)`, in one subprocess (flags parsed as the dispatcher does)."""
    script = textwrap.dedent(
        """
        import contextlib, io, json
        from absl import flags
        from tfx_ext.apps.cli import data
        results = []
        for positional, flag_args in [([], []), (["synthesize"], []), (["convert"], ["--root=x"]),
                                      (["info", "extra"], ["--root=x"]), (["info"], ["--root=/nonexistent/tfx"])]:
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["tfx-ext data", *flag_args])
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = data.main(["tfx-ext data", *positional])
            results.append([code, err.getvalue()])
        print(json.dumps(results))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=REPO,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    import json

    (empty, no_root, unknown, extra, missing) = json.loads(result.stdout.strip().splitlines()[-1])
    assert empty[0] == 2 and "usage: tfx-ext data SUBCOMMAND --root=DIR" in empty[1]
    assert no_root[0] == 2 and "tfx-ext data synthesize: --root=DIR is required." in no_root[1]
    assert unknown[0] == 2 and "unknown subcommand 'convert'" in unknown[1]
    assert extra[0] == 2 and "unexpected arguments ['extra']" in extra[1]
    assert missing[0] == 1
    assert "tfx-ext data info: DataError: Speech Commands directory not found: '/nonexistent/tfx'" in missing[1]
