"""The application's figures (confusion matrices, learning curves, DET curves), as PNG files.

Built on `tfx_ext._plotting`: pyplot is imported on first use and the user's backend is left alone (matplotlib
chooses a non-interactive one by itself on machines without a display), and `save_figure` closes each figure.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from tfx_ext._plotting import pyplot, save_figure
from tfx_ext._validate import check_int

_DPI = 110


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts `matrix[true, predicted]`.

    Raises:
        ValueError: labels and predictions differ in length, a class index is outside [0, num_classes), or
            `num_classes` is not a positive integer.
    """
    num_classes = check_int("num_classes", num_classes, minimum=1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"`labels` and `predictions` must have the same length. Received: {labels.size} and {predictions.size}"
        )
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"`{name}` must lie in [0, {num_classes}). Received: range [{values.min()}, {values.max()}]"
            )
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                          title: str = "Confusion matrix") -> str:
    """Saves a row-normalised confusion matrix with counts in the cells; returns the path."""
    plt = pyplot()
    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if normalised[i, j] > 0.5 else "black")
    fig.tight_layout()
    return save_figure(fig, path, dpi=_DPI)


def plot_curves(curves: dict[str, Sequence[float]], path: str | os.PathLike, *, xlabel: str, ylabel: str,
                title: str = "", x: Sequence[float] | None = None) -> str:
    """Saves one line per named curve; returns the path."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in curves.items():
        values = [np.nan if v is None else v for v in values]  # Rounds without a measurement leave a gap.
        xs = x if x is not None else range(1, len(values) + 1)
        ax.plot(list(xs)[: len(values)], list(values), marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=_DPI)


def plot_det(curves: dict[str, dict], path: str | os.PathLike, *, title: str = "DET curve",
             operating_point: tuple[float, float] | None = None, target_fa_per_hour: float | None = None) -> str:
    """Saves DET curves (false rejection rate against false accepts per hour, one line per named
    `tfx_ext.streaming.detection.det_curve` result); x on a symmetric log scale so 0 FA/h stays on the plot.

    Args:
        curves: name -> a `det_curve` dict (`false_accepts_per_hour`, `false_rejection_rate`).
        path: output `.png`.
        title: figure title.
        operating_point: (FA/h, FRR) of the chosen threshold, drawn as a star.
        target_fa_per_hour: drawn as a dashed vertical line.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(curve["false_accepts_per_hour"], 100 * np.asarray(curve["false_rejection_rate"]), marker=".",
                markersize=3, label=name)
    if target_fa_per_hour is not None:
        ax.axvline(target_fa_per_hour, color="0.5", ls="--", lw=1, label=f"target {target_fa_per_hour:g} FA/h")
    if operating_point is not None:
        ax.plot([operating_point[0]], [100 * operating_point[1]], marker="*", markersize=12, color="black", ls="",
                label="operating point")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("false accepts per hour")
    ax.set_ylabel("false rejection rate (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=_DPI)
