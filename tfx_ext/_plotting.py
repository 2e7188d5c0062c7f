"""The one way tfx-ext gets pyplot: imported on first use, the user's backend left alone.

matplotlib picks a non-interactive backend by itself on machines without a display, and the inline backend in
notebooks, so forcing Agg (as each plotting module once did) only broke interactive sessions. Figures are written
with `save_figure`, which closes them so long runs do not accumulate open figures.
"""

from __future__ import annotations

import os


def pyplot():
    """Returns `matplotlib.pyplot`, imported lazily (matplotlib is slow to import and only plots need it)."""
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | os.PathLike, *, dpi: int = 120) -> str:
    """Writes `figure` to `path` (PNG by extension), closes it, and returns the path as a string."""
    figure.savefig(os.fspath(path), dpi=dpi, bbox_inches="tight")
    pyplot().close(figure)
    return os.fspath(path)


__all__ = ["pyplot", "save_figure"]
