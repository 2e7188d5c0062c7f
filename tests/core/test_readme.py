"""README's first lines hold the two commands, `.ci/run` runs the test one, and every quick start executes."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _command_after(marker):
    lines = README.splitlines()
    index = lines.index(marker)
    assert lines[index + 1] == "```bash"
    return lines[index + 2]


def test_readme_opens_with_the_demo_and_test_commands():
    head = "\n".join(README.splitlines()[:15])
    demo = _command_after("<!-- demo-command -->")
    tests = _command_after("<!-- test-command -->")
    assert demo in head and tests in head
    assert demo.startswith("python3 -m venv .venv") and "tfx-ext demo" in demo
    assert tests.startswith("python3 -m venv .venv") and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    result = subprocess.run(["awk", "/<!-- test-command -->/{getline; getline; print; exit}", "README.md"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == _command_after("<!-- test-command -->")
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_there_are_quick_starts():
    assert len(SNIPPETS) >= 8


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_quick_start_runs(index, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run([sys.executable, "-c", SNIPPETS[index]], capture_output=True, text=True, cwd=tmp_path,
                            env=env, timeout=600)
    assert result.returncode == 0, f"quick start {index} failed:\n{SNIPPETS[index]}\n{result.stderr[-3000:]}"
    assert result.stdout.strip(), "every quick start prints its result"
