"""Executes every notebook in colab/ top to bottom (nbclient + ipykernel) with TFX_EXT_NOTEBOOK_SIZE=tiny.

Each notebook runs in a fresh kernel whose working directory is a temporary folder (data, models and .tflite files
land there). A failing cell fails the test with the cell's traceback. Besides running, a notebook must show its
plots inline (image/png outputs) and must be committed with its outputs cleared.
"""

import importlib.util
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

COLAB = pathlib.Path(__file__).resolve().parents[2] / "colab"
NOTEBOOKS = sorted(p.name for p in COLAB.glob("*.ipynb"))
# Fewest inline figures each notebook shows in tiny mode (a plotting cell that silently shows nothing fails).
MIN_FIGURES = {"streaming_kws.ipynb": 4, "layers_tour.ipynb": 3, "federated.ipynb": 3}
EXPORTS_TFLITE = {"streaming_kws.ipynb", "layers_tour.ipynb"}


def test_the_three_notebooks_exist():
    assert set(MIN_FIGURES) <= set(NOTEBOOKS), NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs_and_starts_with_the_install_cell(name):
    notebook = nbformat.read(COLAB / name, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "clear the outputs"
    assert "REPO_URL" in code[0].source and "except ImportError" in code[0].source
    assert 'os.environ.get("TFX_EXT_NOTEBOOK_SIZE", "full")' in code[1].source


def test_notebooks_are_what_build_notebooks_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("build_notebooks", COLAB / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.build(tmp_path)
    assert sorted(path.name for path in written) == NOTEBOOKS
    for path in written:
        assert path.read_text() == (COLAB / path.name).read_text(), (
            f"{path.name} differs from colab/build_notebooks.py: edit the script and run it"
        )


# The kernel inherits these: tiny settings, quiet TensorFlow, inline plots, no progress bars.
KERNEL_ENV = {
    "TFX_EXT_NOTEBOOK_SIZE": "tiny",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "TQDM_DISABLE": "1",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom_in_tiny_mode(name, tmp_path, monkeypatch):
    notebook = nbformat.read(COLAB / name, as_version=4)
    for key, value in KERNEL_ENV.items():
        monkeypatch.setenv(key, value)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )  # the kernelspec's "python" is replaced by sys.executable (this interpreter) by jupyter_client
    client.execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    errors = [output for output in outputs if output.output_type == "error"]
    assert not errors, errors
    figures = sum("image/png" in output.get("data", {}) for output in outputs)
    assert figures >= MIN_FIGURES[name], f"{name} showed {figures} inline figures"
    assert (tmp_path / "tfx_ext_notebook").is_dir()
    if name in EXPORTS_TFLITE:
        assert list((tmp_path / "tfx_ext_notebook").glob("*.tflite")), f"{name} wrote no .tflite file"
