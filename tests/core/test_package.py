"""Packaging and import-time contracts: wheel layout, subpackage mapping, backend check, CLI entry point."""

import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(args, env_extra=None, cwd=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "KERAS_HOME")}
    env.update(env_extra or {})
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    result = _run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    )
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("tfx_ext-*.whl")
    return path


def test_wheel_maps_layers_and_federated_under_tfx_ext(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "tfx_ext/__init__.py" in names
    assert "tfx_ext/layers/__init__.py" in names
    assert "tfx_ext/federated/__init__.py" in names
    top_level = {name.split("/")[0] for name in names if not name.startswith("tfx_ext-")}
    assert top_level == {"tfx_ext"}, f"unexpected top-level entries: {top_level}"
    assert not any(name.startswith(("tests/", "bench/", "colab/")) for name in names)


def test_wheel_declares_console_script_and_dependencies(wheel):
    archive = zipfile.ZipFile(wheel)
    entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
    assert "tfx-ext = tfx_ext.apps.cli:run" in archive.read(entry_points).decode()
    metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode()
    for requirement in ("tensorflow>=2.20", "keras>=3.10", "ai-edge-litert", "cryptography", "absl-py"):
        assert f"Requires-Dist: {requirement}" in metadata


def test_subpackages_import_from_outside_the_repository(tmp_path):
    result = _run(
        [sys.executable, "-c", "import tfx_ext.layers, tfx_ext.federated, tfx_ext; print(tfx_ext.layers.__name__)"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tfx_ext.layers"


def test_wrong_backend_from_environment_names_the_fix(tmp_path):
    result = _run([sys.executable, "-c", "import tfx_ext"], {"KERAS_BACKEND": "jax"}, cwd=tmp_path)
    assert result.returncode != 0
    assert "BackendError" in result.stderr and "KERAS_BACKEND selects 'jax'" in result.stderr
    assert "Set KERAS_BACKEND=tensorflow" in result.stderr


def test_wrong_backend_from_keras_config_file_names_the_fix(tmp_path):
    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    (keras_home / "keras.json").write_text(json.dumps({"backend": "numpy"}))
    result = _run([sys.executable, "-c", "import tfx_ext"], {"KERAS_HOME": str(keras_home)}, cwd=tmp_path)
    assert result.returncode != 0
    assert "BackendError" in result.stderr and "keras.json selects 'numpy'" in result.stderr


def test_cli_help_lists_commands_without_startup_noise(tmp_path):
    result = _run([sys.executable, "-m", "tfx_ext", "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("demo", "data", "kws", "federated"):
        assert f"  {command} " in result.stdout
    assert "I0000" not in result.stderr and "oneDNN" not in result.stderr


def test_cli_unknown_command_fails_with_usage(tmp_path):
    result = _run([sys.executable, "-m", "tfx_ext", "nonsense"], cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown command 'nonsense'" in result.stderr and "commands:" in result.stderr


def test_errors_are_catchable_by_family():
    import tfx_ext

    assert issubclass(tfx_ext.MalformedUpdateError, tfx_ext.FederatedError)
    assert issubclass(tfx_ext.NotStreamableError, ValueError)
    assert issubclass(tfx_ext.SecureAggregationError, tfx_ext.TfxExtError)


def test_command_help_lists_that_commands_flags(tmp_path):
    result = _run([sys.executable, "-m", "tfx_ext", "demo", "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tfx-ext demo:") and "--output_dir" in result.stdout and "--size" in result.stdout


def test_public_api_names_resolve():
    import tfx_ext
    import tfx_ext.federated
    import tfx_ext.layers

    for module in (tfx_ext, tfx_ext.layers, tfx_ext.federated):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
    assert tfx_ext.to_streaming.__module__ == "tfx_ext.streaming.convert"
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        tfx_ext.nope


def test_models_with_our_layers_load_after_a_bare_import_tfx_ext(tmp_path):
    import keras

    from tfx_ext.layers import DeltaActivation, Stream

    inputs = keras.Input((6, 3))
    outputs = DeltaActivation(0.1)(Stream(keras.layers.Conv1D(2, 3))(inputs))
    path = tmp_path / "model.keras"
    keras.Model(inputs, outputs).save(path)
    code = f"import tfx_ext, keras; print(keras.saving.load_model({str(path)!r}).layers[-1].__class__.__name__)"
    result = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "DeltaActivation"


def test_pyproject_declares_a_pep517_backend():
    """Without it, a second `pip install -e .` in a venv that has `wheel` falls back to `setup.py develop`, which
    ignores package_dir: `tfx_ext.layers` would not import (seen when running the demo then the test command)."""
    text = (ROOT / "pyproject.toml").read_text()
    assert 'build-backend = "setuptools.build_meta"' in text and "setuptools>=64" in text
