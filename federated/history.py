"""`History`: per-round metrics of a simulation, with JSON/CSV writers and `plot_history`."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile

from tfx_ext._plotting import pyplot, save_figure


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _plain(value):
    """`value` with numpy scalars unwrapped and containers made lists/dicts; floats kept as they are (NaN, Inf)."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def encode_non_finite(value):
    """JSON has no NaN or Infinity: they are written as the strings "NaN", "Infinity" and "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [encode_non_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: encode_non_finite(v) for k, v in value.items()}
    return value


def decode_non_finite(value):
    """The inverse of `encode_non_finite`: the strings "NaN", "Infinity", "-Infinity" become floats again."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [decode_non_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: decode_non_finite(v) for k, v in value.items()}
    return value


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
    """The per-round metrics of a simulation: a sequence of round dicts.

    - `for r in history` / `list(history)` / `history[i]`: the rounds, as dicts (`pandas.DataFrame(history.rounds)`
      or `pandas.DataFrame(history.to_records())` makes a table, one row per round);
    - `history["train_loss"]`: one metric over the rounds (None for rounds without it, e.g. `eval_accuracy`
      between evaluations); a key no round has raises `KeyError`;
    - `history.last("eval_accuracy")`: the last value recorded, NaN included (a diverged run reports NaN).

    Values are kept as they are, NaN and Inf included. In `history.json` (JSON has no NaN or Infinity) they are
    written as the strings "NaN", "Infinity" and "-Infinity", which `History.from_json` reads back as floats; in
    `history.csv` as `nan`, `inf` and `-inf` (what `pandas.read_csv` parses as floats).

    Train metrics (`train_loss`, `train_accuracy`) are example-weighted means over the round's accepted clients
    of each client's last local epoch.
    """

    def __init__(self, rounds=None):
        self.rounds: list[dict] = [dict(r) for r in (rounds or [])]

    def append(self, metrics: dict) -> None:
        self.rounds.append(_plain(dict(metrics)))

    def __len__(self) -> int:
        return len(self.rounds)

    def __iter__(self):
        return iter(self.rounds)

    def __contains__(self, key) -> bool:
        return any(key in r for r in self.rounds)

    def __getitem__(self, key):
        """`history[i]` (or a slice): round dict(s); `history["metric"]`: the metric over the rounds."""
        if not isinstance(key, str):
            return self.rounds[key]
        if key not in self:
            raise KeyError(f"No round has the metric {key!r}. Available: {self.keys()}")
        return [r.get(key) for r in self.rounds]

    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rounds:
            for k in r:
                seen.setdefault(k, None)
        return list(seen)

    def to_records(self) -> list[dict]:
        """One dict per round with every key (None where a round lacks it): `pandas.DataFrame(records)`."""
        keys = self.keys()
        return [{k: r.get(k) for k in keys} for r in self.rounds]

    def last(self, key: str, default=None):
        """The value of `key` in the last round that has it (NaN and Inf included), else `default`."""
        for r in reversed(self.rounds):
            if r.get(key) is not None:
                return r[key]
        return default

    def to_dict(self) -> dict:
        """`{"rounds": [...]}` ready for JSON (NaN/Inf as strings, see the class docstring)."""
        return {"rounds": encode_non_finite(self.rounds)}

    @classmethod
    def from_dict(cls, data: dict) -> History:
        """The inverse of `to_dict`."""
        return cls(decode_non_finite(data["rounds"]))

    def to_json(self, path=None) -> str:
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, text_or_path) -> History:
        text = text_or_path
        if os.path.exists(str(text_or_path)):
            with open(text_or_path, encoding="utf-8") as f:
                text = f.read()
        return cls.from_dict(json.loads(text))

    def to_csv(self, path=None) -> str:
        keys = self.keys()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        for r in self.rounds:
            writer.writerow({k: json.dumps(encode_non_finite(v)) if isinstance(v, (list, dict)) else v
                             for k, v in r.items()})
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
            key = f"{split}_{kind}"
            vals = history[key] if key in history else []
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


__all__ = ["History", "plot_history", "atomic_write", "atomic_write_text", "decode_non_finite", "encode_non_finite"]
