"""History: iterates over rounds, unknown keys raise, NaN/Inf kept in memory and in the JSON/CSV files."""

import csv
import io
import json
import math

import pytest

from tfx_ext.federated import History
from tfx_ext.federated.simulation import warn_if_diverged


def _history():
    h = History()
    h.append({"round": 1, "train_loss": 0.5, "eval_accuracy": 0.2})
    h.append({"round": 2, "train_loss": float("inf")})
    h.append({"round": 3, "train_loss": float("nan"), "eval_accuracy": float("-inf")})
    return h


def test_history_iterates_over_rounds_and_unknown_keys_raise():
    h = _history()
    rounds = list(h)  # used to loop forever (no __iter__, any integer key "worked")
    assert [r["round"] for r in rounds] == [1, 2, 3] and h[0] is h.rounds[0] and h[-1]["round"] == 3
    assert h["eval_accuracy"][:2] == [0.2, None]
    with pytest.raises(KeyError, match="No round has the metric 'nope'"):
        h["nope"]
    assert "train_loss" in h and "nope" not in h
    records = h.to_records()
    assert [sorted(r) for r in records] == [sorted(["round", "train_loss", "eval_accuracy"])] * 3
    assert records[1]["eval_accuracy"] is None


def test_non_finite_values_are_kept_and_last_reports_them():
    h = _history()
    loss = h["train_loss"]
    assert loss[1] == math.inf and math.isnan(loss[2])  # not 1e308 / None
    assert math.isnan(h.last("train_loss")) and h.last("eval_accuracy") == -math.inf
    assert h.last("nope", default=7) == 7


def test_json_writes_non_finite_as_strings_and_reads_them_back(tmp_path):
    h = _history()
    text = h.to_json(tmp_path / "h.json")
    data = json.loads(text)  # strict JSON: no bare NaN/Infinity tokens
    assert "NaN" not in text.replace('"NaN"', "") and data["rounds"][1]["train_loss"] == "Infinity"
    assert data["rounds"][2]["eval_accuracy"] == "-Infinity"
    back = History.from_json(tmp_path / "h.json")
    assert back["train_loss"][1] == math.inf and math.isnan(back["train_loss"][2])
    assert back["eval_accuracy"][2] == -math.inf


def test_csv_writes_non_finite_as_floats(tmp_path):
    rows = list(csv.DictReader(io.StringIO(_history().to_csv(tmp_path / "h.csv"))))
    assert [float(r["train_loss"]) for r in rows][:2] == [0.5, math.inf]
    assert math.isnan(float(rows[2]["train_loss"])) and float(rows[2]["eval_accuracy"]) == -math.inf


def test_divergence_warns():
    with pytest.warns(RuntimeWarning, match="Round 4: the run diverged"):
        warn_if_diverged({"train_loss": float("nan"), "eval_loss": 1.0}, 4)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_diverged({"train_loss": 1.0}, 1)
