"""`History`: per-round metrics of a simulation, with JSON/CSV writers and `plot_history`."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile

from tfx_ext._plotting import pyplot, save_figure


def _jsonable(value):
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def atomic_write(path, write, *, binary: bool = False) -> None:
    """Calls `write(file)` on a temporary file in `path`'s folder, syncs it, then `os.replace`s it onto `path`,
    so a reader (or a resumed run after a crash) sees the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    """Writes `text` to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: f.write(text))


class History:
    """A list of per-round metric dicts; `history["train_loss"]` gives one metric over rounds (None if absent)."""

    def __init__(self, rounds=None):
        self.rounds: list[dict] = [dict(r) for r in (rounds or [])]

    def append(self, metrics: dict) -> None:
        self.rounds.append(_jsonable(dict(metrics)))

    def __len__(self) -> int:
        return len(self.rounds)

    def __getitem__(self, key: str) -> list:
        return [r.get(key) for r in self.rounds]

    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rounds:
            for k in r:
                seen.setdefault(k, None)
        return list(seen)

    def last(self, key: str, default=None):
        """The last non-None value of `key`."""
        for r in reversed(self.rounds):
            if r.get(key) is not None:
                return r[key]
        return default

    def to_dict(self) -> dict:
        return {"rounds": self.rounds}

    def to_json(self, path=None) -> str:
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, text_or_path) -> History:
        text = text_or_path
        if os.path.exists(str(text_or_path)):
            with open(text_or_path, encoding="utf-8") as f:
                text = f.read()
        return cls(json.loads(text)["rounds"])

    def to_csv(self, path=None) -> str:
        keys = self.keys()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        for r in self.rounds:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
        if path is not None:
            atomic_write_text(path, buf.getvalue())
        return buf.getvalue()

    def __repr__(self) -> str:
        return f"History(rounds={len(self)}, keys={self.keys()})"


def plot_history(history: History, path=None, *, title: str = "Federated training"):
    """Learning curves: loss (train, eval) and accuracy (train, eval) against the round.

    Args:
        history: a `History`.
        path: PNG path to write; when None the Figure is returned.
        title: figure title.

    Returns:
        `path` (str) when given, else the matplotlib Figure.
    """
    plt = pyplot()
    rounds = history["round"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, kind in zip(axes, ("loss", "accuracy")):
        for split, style in (("train", "-"), ("eval", "o-")):
            vals = history[f"{split}_{kind}"]
            pts = [(r, v) for r, v in zip(rounds, vals) if v is not None]
            if pts:
                ax.plot(*zip(*pts), style, label=split, markersize=3)
        ax.set_xlabel("round")
        ax.set_ylabel(kind)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    if path is None:
        return fig
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return save_figure(fig, path, dpi=100)


__all__ = ["History", "plot_history", "atomic_write", "atomic_write_text"]
