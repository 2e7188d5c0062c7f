"""A small Markdown + JSON report: sections with text, metrics tables and figures, written as work proceeds.

The demo writes one section per pipeline stage. The report is rewritten after every section, so an interrupted
run still leaves a readable report of the stages that finished.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
from typing import Any, Mapping


@dataclasses.dataclass
class Section:
    title: str
    text: str = ""
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    figures: list[str] = dataclasses.field(default_factory=list)  # Paths relative to the report directory.
    seconds: float | None = None


class Report:
    """Collects sections and writes `report.md` and `report.json` into `directory`.

    Args:
        directory: output directory (created).
        title: the report's heading.
    """

    def __init__(self, directory: str | os.PathLike, title: str):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.title = title
        self.sections: list[Section] = []
        self.started = datetime.datetime.now(datetime.timezone.utc)

    @property
    def markdown_path(self) -> pathlib.Path:
        return self.directory / "report.md"

    @property
    def json_path(self) -> pathlib.Path:
        return self.directory / "report.json"

    def figure_path(self, name: str) -> pathlib.Path:
        """Where to save a figure called `name` (a PNG file name) so the report can link it."""
        return self.directory / name

    def add(self, section: Section) -> None:
        """Adds a section and rewrites both files."""
        for figure in section.figures:
            if not (self.directory / figure).exists():
                raise FileNotFoundError(f"figure {figure!r} of section {section.title!r} was not written")
        self.sections.append(section)
        self.write()

    def write(self) -> None:
        _atomic_write(self.markdown_path, self.to_markdown())
        _atomic_write(self.json_path, json.dumps(self.to_json(), indent=2, default=_jsonable))

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "started": self.started.isoformat(timespec="seconds"),
            "sections": [dataclasses.asdict(section) for section in self.sections],
        }

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", "", f"Started {self.started:%Y-%m-%d %H:%M} UTC.", ""]
        total = sum(section.seconds or 0.0 for section in self.sections)
        if self.sections:
            lines += ["| Stage | Time (s) |", "| --- | ---: |"]
            lines += [f"| {s.title} | {s.seconds or 0.0:.1f} |" for s in self.sections]
            lines += [f"| **total** | **{total:.1f}** |", ""]
        for section in self.sections:
            lines += [f"## {section.title}", ""]
            if section.text:
                lines += [section.text.strip(), ""]
            if section.metrics:
                lines += metrics_table(section.metrics) + [""]
            for figure in section.figures:
                lines += [f"![{pathlib.Path(figure).stem}]({figure})", ""]
        return "\n".join(lines)


def metrics_table(metrics: Mapping[str, Any]) -> list[str]:
    """Markdown lines of a two-column table of metrics (floats with 4 significant digits)."""
    lines = ["| Metric | Value |", "| --- | ---: |"]
    for key, value in metrics.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"| {_cell(key)} | {_cell(shown)} |")
    return lines


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")  # A bare pipe would end the table cell.


def _atomic_write(path: pathlib.Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _jsonable(value: Any):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
