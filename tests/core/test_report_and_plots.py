"""The report writer and the plotting helpers."""

import json

import numpy as np
import pytest

from tfx_ext.apps.plots import confusion_matrix, plot_confusion_matrix, plot_curves
from tfx_ext.apps.report import Report, Section


def test_confusion_matrix_counts_pairs():
    matrix = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], num_classes=3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert matrix.sum() == 6


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix([0, 1], [0], num_classes=2)
    with pytest.raises(ValueError, match=r"`predictions` must lie in \[0, 2\)"):
        confusion_matrix([0, 1], [0, 2], num_classes=2)


def test_plots_write_png_files(tmp_path):
    path = plot_confusion_matrix(np.eye(3, dtype=int) * 4, ["a", "b", "c"], tmp_path / "cm.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    path = plot_curves({"fedavg": [0.1, 0.5, 0.7]}, tmp_path / "curve.png", xlabel="round", ylabel="accuracy")
    assert open(path, "rb").read(4) == b"\x89PNG"


def test_plots_leave_the_users_backend_alone(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("pdf")  # Any backend the user chose; the plots once forced Agg over it.
    try:
        plot_curves({"x": [1.0, 2.0]}, tmp_path / "c.png", xlabel="a", ylabel="b")
        plot_confusion_matrix(np.eye(2, dtype=int), ["a", "b"], tmp_path / "cm.png")
        assert matplotlib.get_backend() == "pdf"
        assert open(tmp_path / "c.png", "rb").read(4) == b"\x89PNG"
    finally:
        matplotlib.use(before)


def test_confusion_matrix_needs_a_positive_class_count():
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 1. Received: num_classes=0"):
        confusion_matrix([], [], num_classes=0)


def test_report_writes_markdown_and_json_after_each_section(tmp_path):
    report = Report(tmp_path / "out", "Demo")
    plot_curves({"x": [1.0, 2.0]}, report.figure_path("c.png"), xlabel="a", ylabel="b")
    report.add(Section("Train", text="trained", metrics={"accuracy": 0.91234, "epochs": 3}, figures=["c.png"], seconds=2.0))
    markdown = report.markdown_path.read_text()
    assert "## Train" in markdown and "| accuracy | 0.9123 |" in markdown and "![c](c.png)" in markdown
    assert "| **total** | **2.0** |" in markdown
    saved = json.loads(report.json_path.read_text())
    assert saved["sections"][0]["metrics"]["epochs"] == 3


def test_report_refuses_missing_figures(tmp_path):
    report = Report(tmp_path, "Demo")
    with pytest.raises(FileNotFoundError, match="figure 'nope.png' of section 'S'"):
        report.add(Section("S", figures=["nope.png"]))
