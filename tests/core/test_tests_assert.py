"""Lint: every test under tests/ checks something (an assert, pytest.raises/warns/fail, or an asserting helper).

A test function passes the lint when its body (nested functions and `with` blocks included) holds

- an `assert` statement, or a `pytest.raises` / `pytest.warns` / `pytest.fail` / `pytest.xfail` / `pytest.skip`
  call (a test that only skips says why in the skip);
- a call to a comparison helper by name: anything named `assert*`, `check_*`, `verify*`, `expect_*`
  (`np.testing.assert_allclose`, `tfx_ext.testing.assert_all_close`, `self.assertEqual`, ...) or a project helper
  in `PROJECT_HELPERS`;
- a call to a function defined in tests/ that itself passes the lint (helpers are followed by name, transitively).

`ALLOWED` lists tests that legitimately assert in a way the lint cannot see, each with its reason.
"""

import ast
import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]

CHECK_PREFIXES = ("assert", "check_", "verify", "expect_")
PYTEST_CHECKS = {"raises", "warns", "fail", "xfail", "skip", "deprecated_call"}
# Project helpers that assert internally (tfx_ext.testing's layer checks).
PROJECT_HELPERS = {"run_layer_test", "layer_test"}
ALLOWED: dict[str, str] = {}


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _direct_check(node: ast.AST) -> bool:
    for child in ast.walk(node):
        if isinstance(child, ast.Assert):
            return True
        if isinstance(child, ast.Call):
            name = _called_name(child)
            if name is None:
                continue
            if name.startswith(CHECK_PREFIXES) or name in PROJECT_HELPERS:
                return True
            func = child.func
            if (isinstance(func, ast.Attribute) and name in PYTEST_CHECKS and isinstance(func.value, ast.Name)
                    and func.value.id == "pytest"):
                return True
    return False


def _calls(node: ast.AST) -> set[str]:
    return {name for child in ast.walk(node) if isinstance(child, ast.Call) and (name := _called_name(child))}


def _functions():
    """Every function defined in tests/: (path, qualified name, node)."""
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def find_tests_without_checks() -> list[str]:
    functions = list(_functions())
    checking = {node.name for _, node in functions if _direct_check(node)}
    helpers = {node.name: node for _, node in functions if not node.name.startswith("test")}
    changed = True
    while changed:  # helpers that call an asserting helper assert too
        changed = False
        for name, node in helpers.items():
            if name not in checking and _calls(node) & checking:
                checking.add(name)
                changed = True
    missing = []
    for path, node in functions:
        if not node.name.startswith("test_") or node.name in checking or _calls(node) & checking:
            continue
        key = f"{path.relative_to(TESTS.parent)}::{node.name}"
        if key not in ALLOWED:
            missing.append(key)
    return missing


def test_every_test_checks_something():
    missing = find_tests_without_checks()
    assert not missing, "tests without an assert, pytest.raises/warns or a comparison helper:\n  " + "\n  ".join(missing)


def test_the_lint_catches_a_test_without_checks(tmp_path):
    source = (
        "import numpy as np, pytest\n"
        "def helper(x):\n    assert x\n"
        "def test_ok_assert():\n    assert 1\n"
        "def test_ok_helper():\n    helper(1)\n"
        "def test_ok_numpy():\n    np.testing.assert_allclose(1, 1)\n"
        "def test_ok_raises():\n    with pytest.raises(ValueError):\n        int('x')\n"
        "def test_bad():\n    x = 1 + 1\n    print(x)\n"
        "def test_bad_approx():\n    pytest.approx(1.0)\n"
    )
    tree = ast.parse(source)
    functions = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    checking = {name for name, node in functions.items() if _direct_check(node)}
    checking |= {name for name, node in functions.items() if _calls(node) & checking}
    assert checking >= {"helper", "test_ok_assert", "test_ok_helper", "test_ok_numpy", "test_ok_raises"}
    assert "test_bad" not in checking and "test_bad_approx" not in checking


def test_allow_list_entries_exist_and_give_a_reason():
    names = {f"{path.relative_to(TESTS.parent)}::{node.name}" for path, node in _functions()}
    for key, reason in ALLOWED.items():
        assert key in names, f"stale allow-list entry {key}"
        assert len(reason) > 10, key


def test_skipped_tests_are_listed_with_how_to_run_them():
    from tests.conftest import skip_summary_lines

    lines = skip_summary_lines([("tests/export/test_tfmot_oracle.py::test_qat", "could not import 'tf_keras'"),
                                ("tests/data/test_synthesis.py::test_espeak", "espeak-ng is not installed"),
                                ("tests/layers/test_x.py::test_y", "some reason")])
    assert lines[0].startswith("tests/export/test_tfmot_oracle.py::test_qat: could not import 'tf_keras'")
    assert "--no-deps" in lines[0] and "apt-get install espeak-ng" in lines[1]
    assert lines[2] == "tests/layers/test_x.py::test_y: some reason"
