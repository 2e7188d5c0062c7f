"""A tiny benchmark harness: time with warm-up and repeats, compare candidates in the same run, print and save.

Absolute times on shared machines are noise; ratios measured side by side in one process are what we report.
Every benchmark writes `bench/results/<name>.json` with its config (including the seed), library versions, the
device and the rows it printed.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import statistics
import time
from typing import Any, Callable, Sequence

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"


def time_callable(fn: Callable[[], Any], *, warmup: int = 3, repeats: int = 20) -> dict[str, float]:
    """Runs `fn` `warmup` times untimed, then `repeats` times; returns median, p10, p90 and mean seconds."""
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1. Received: repeats={repeats}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return {
        "median_s": statistics.median(samples),
        "p10_s": samples[int(0.1 * (len(samples) - 1))],
        "p90_s": samples[int(0.9 * (len(samples) - 1))],
        "mean_s": statistics.fmean(samples),
        "repeats": repeats,
    }


def compare(candidates: dict[str, Callable[[], Any]], *, warmup: int = 3, repeats: int = 20,
            baseline: str | None = None) -> dict[str, dict[str, float]]:
    """Times several candidates interleaved (round-robin), so drift in machine load hits all of them alike.

    Returns per candidate the timing dict of `time_callable` plus `ratio_to_<baseline>` (baseline median divided
    by the candidate's median: > 1 means the candidate is faster).
    """
    names = list(candidates)
    baseline = baseline or names[0]
    if baseline not in candidates:
        raise ValueError(f"`baseline` must be one of {names}. Received: baseline={baseline!r}")
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            start = time.perf_counter()
            candidates[name]()
            samples[name].append(time.perf_counter() - start)
    results = {}
    for name in names:
        s = sorted(samples[name])
        results[name] = {
            "median_s": statistics.median(s),
            "p10_s": s[int(0.1 * (len(s) - 1))],
            "p90_s": s[int(0.9 * (len(s) - 1))],
            "repeats": repeats,
        }
    for name in names:
        results[name][f"speedup_vs_{baseline}"] = results[baseline]["median_s"] / results[name]["median_s"]
    return results


def environment() -> dict[str, Any]:
    """Library versions and the device, recorded with every result."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for module in ("tensorflow", "keras", "numpy", "ai_edge_litert", "scipy", "cryptography"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # A benchmark may not need every library; record what is there.
            info[module] = None
    try:
        import tensorflow as tf

        info["devices"] = [d.name for d in tf.config.list_logical_devices()]
    except Exception:
        pass
    return info


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A fixed-width text table of `rows` (floats with 4 significant digits)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    cells = [[cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    line = "  ".join(col.ljust(w) for col, w in zip(columns, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.rjust(w) if _is_number(v) else v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join([line, rule, *body])


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@dataclasses.dataclass
class Benchmark:
    """Collects rows for one benchmark run, then prints them as a table and writes JSON.

    Example:
        >>> b = Benchmark("demo", config={"seed": 0}, results_dir=None)
        >>> b.add_row({"model": "a", "latency_ms": 1.5})
        >>> print(b.table())
        model  latency_ms
        -----  ----------
        a             1.5
    """

    name: str
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    results_dir: pathlib.Path | str | None = RESULTS_DIR
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add_row(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))

    def note(self, text: str) -> None:
        """A sentence printed under the table and saved in the JSON (e.g. why a target is not met)."""
        self.notes.append(text)

    def table(self, columns: Sequence[str] | None = None) -> str:
        return format_table(self.rows, columns)

    def finish(self, columns: Sequence[str] | None = None, *, print_table: bool = True) -> dict[str, Any]:
        """Prints the table and writes `<results_dir>/<name>.json`; returns the JSON document."""
        document = {
            "benchmark": self.name,
            "config": self.config,
            "environment": environment(),
            "rows": self.rows,
            "notes": self.notes,
        }
        if print_table:
            print(f"\n== {self.name} ==")
            print(self.table(columns))
            for text in self.notes:
                print(f"note: {text}")
        if self.results_dir is not None:
            directory = pathlib.Path(self.results_dir)
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{self.name}.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(document, indent=2, default=_json_default))
            os.replace(tmp, path)
            document["path"] = str(path)
            if print_table:
                print(f"wrote {path}")
        return document


def _json_default(value: Any):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    return str(value)
