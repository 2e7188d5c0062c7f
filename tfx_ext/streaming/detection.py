"""Wake-word detection over streamed posteriors, pure numpy (the kws_streaming / microWakeWord post-processing).

A streaming model gives one posterior per step. A detector smooths the keyword's posterior with a causal moving
average (single noisy frames do not fire), fires when the smoothed score reaches a threshold, and then stays
silent for a refractory period (one utterance fires once). Wake-word quality is then two numbers per threshold:
false accepts per hour of negative audio and the false rejection rate on positives; over many thresholds they
trace the DET curve.

    smooth(posteriors, window)                       causal moving average over the last `window` steps
    detect(scores, threshold, refractory)            step indices where the detector fires
    false_accepts_per_hour(count, seconds)           count / hours
    accepted(detections, windows)                    which positive windows contain a detection
    det_curve(negative, positive, windows, ...)      FA/h and FRR at each threshold
    threshold_for(curve, max_false_accepts_per_hour) the lowest threshold that keeps FA/h under the target
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tfx_ext._validate import check_int, check_number


def smooth(posteriors, window: int, *, axis: int = 0) -> np.ndarray:
    """Causal moving average along `axis` (time): step t averages steps `max(0, t - window + 1) .. t`.

    The first `window - 1` steps average the steps seen so far (a stream has nothing before its start), so the
    output has the input's shape and never uses a future step. `window=1` returns the posteriors unchanged.

    Example:
        >>> smooth([0.0, 1.0, 1.0, 0.0], 2).tolist()
        [0.0, 0.5, 1.0, 0.5]
    """
    window = check_int("window", window, minimum=1)
    values = np.moveaxis(np.asarray(posteriors, np.float64), axis, 0)
    cumulative = np.cumsum(values, axis=0)
    shifted = np.zeros_like(cumulative)
    if window < len(values):
        shifted[window:] = cumulative[:-window]
    counts = np.minimum(np.arange(1, len(values) + 1), window).reshape((-1,) + (1,) * (values.ndim - 1))
    return np.moveaxis((cumulative - shifted) / counts, 0, axis)


def detect(scores, threshold: float, refractory: int = 0) -> np.ndarray:
    """Steps at which a detector with a refractory period fires.

    The detector fires at step t when `scores[t] >= threshold` and at least `refractory` steps have passed since
    it last fired (the first firing has no such wait). Firing again while the score stays high is what the
    refractory period prevents: one spoken wake word must count as one detection, not one per step.

    Args:
        scores: `(steps,)` scores (smoothed keyword posteriors).
        threshold: firing threshold.
        refractory: steps after a detection during which the detector stays silent (0: every step at or above
            the threshold fires).

    Returns:
        int64 step indices, increasing.

    Example:
        >>> detect([0.1, 0.9, 0.9, 0.2, 0.95, 0.9], 0.5, refractory=3).tolist()
        [1, 4]
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 1:
        raise ValueError(f"`scores` must be one score per step, shape (steps,). Received: shape={scores.shape}")
    refractory = check_int("refractory", refractory, minimum=0)
    candidates = np.flatnonzero(scores >= threshold)
    if refractory <= 1:
        return candidates.astype(np.int64)
    fired, position = [], 0
    while position < candidates.size:  # One iteration per detection: jump past each refractory period.
        step = int(candidates[position])
        fired.append(step)
        position = int(np.searchsorted(candidates, step + refractory, side="left"))
    return np.asarray(fired, np.int64)


def false_accepts_per_hour(count: int, seconds: float) -> float:
    """False accepts per hour: `count` detections in `seconds` of negative audio."""
    check_number("seconds", seconds, low=0, low_open=True)
    return float(count) * 3600.0 / float(seconds)


def accepted(detections, windows) -> np.ndarray:
    """Whether each positive window `(first_step, last_step)` (inclusive) contains at least one detection."""
    detections = np.sort(np.asarray(detections, np.int64))
    windows = np.asarray(windows, np.int64).reshape(-1, 2)
    first = np.searchsorted(detections, windows[:, 0], side="left")
    after = np.searchsorted(detections, windows[:, 1], side="right")
    return after > first


def det_curve(negative: Sequence, positive: Sequence, windows: Sequence, *, step_seconds: float,
              thresholds=None, refractory: int = 0) -> dict:
    """False accepts per hour and false rejection rate at each threshold (the points of a DET curve).

    Args:
        negative: keyword scores of negative streams (each `(steps,)`; several streams count as their total
            duration). Every detection in them is a false accept.
        positive: keyword scores of streams that hold positives (each `(steps,)`).
        windows: per positive stream, the `(first_step, last_step)` windows of its positives; a positive is
            accepted when a detection falls inside its window, else falsely rejected.
        step_seconds: seconds per step (the hop times the frames per step).
        thresholds: increasing thresholds (default: 101 from 0 to 1).
        refractory: the detector's refractory period in steps.

    Returns:
        `{"thresholds", "false_accepts_per_hour", "false_rejection_rate", "false_accepts", "negative_hours",
        "positives"}` (lists, one entry per threshold for the first three).
    """
    check_number("step_seconds", step_seconds, low=0, low_open=True)
    negative, positive = [np.asarray(s).reshape(-1) for s in negative], [np.asarray(s).reshape(-1) for s in positive]
    if len(positive) != len(windows):
        raise ValueError(f"`windows` must hold one list of windows per positive stream. Received: "
                         f"{len(windows)} for {len(positive)} streams")
    thresholds = np.linspace(0.0, 1.0, 101) if thresholds is None else np.asarray(thresholds, np.float64)
    seconds = sum(s.size for s in negative) * step_seconds
    total = sum(len(w) for w in windows)
    if not seconds or not total:
        raise ValueError(f"`negative` needs steps and `windows` positives. Received: {seconds} s, {total} positives")
    fa, frr, counts = [], [], []
    for threshold in thresholds:
        count = sum(detect(s, threshold, refractory).size for s in negative)
        hits = sum(int(accepted(detect(s, threshold, refractory), w).sum()) for s, w in zip(positive, windows))
        counts.append(count)
        fa.append(false_accepts_per_hour(count, seconds))
        frr.append(1.0 - hits / total)
    return {"thresholds": thresholds.tolist(), "false_accepts_per_hour": fa, "false_rejection_rate": frr,
            "false_accepts": counts, "negative_hours": seconds / 3600.0, "positives": total}


def threshold_for(curve: dict, max_false_accepts_per_hour: float) -> dict:
    """The operating point: the lowest threshold at and above which every threshold keeps FA/h within the target.

    Lower thresholds reject fewer positives, so the lowest safe one is the best; "at and above" guards against a
    refractory period making FA/h non-monotonic. Returns `{"threshold", "false_accepts_per_hour",
    "false_rejection_rate"}` of that point, or of the highest threshold (with `"met": False`) when none meets it.
    """
    fa = np.asarray(curve["false_accepts_per_hour"], np.float64)
    ok = fa <= max_false_accepts_per_hour
    safe = np.flatnonzero(np.logical_and.accumulate(ok[::-1])[::-1])  # thresholds with every higher one ok
    index = int(safe[0]) if safe.size else len(fa) - 1
    return {"threshold": float(curve["thresholds"][index]), "false_accepts_per_hour": float(fa[index]),
            "false_rejection_rate": float(curve["false_rejection_rate"][index]), "met": bool(safe.size)}


__all__ = ["accepted", "det_curve", "detect", "false_accepts_per_hour", "smooth", "threshold_for"]
