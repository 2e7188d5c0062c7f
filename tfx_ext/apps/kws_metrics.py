"""Keyword-spotting scores, pure numpy: accuracy broken down by voice and word, so a figure on the synthetic test
split cannot hide that the model fails on voices it never heard.

    breakdown(labels, predictions, words, unseen, label_names) -> dict
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tfx_ext.apps.plots import confusion_matrix


def _accuracy(correct: np.ndarray) -> float | None:
    return float(correct.mean()) if correct.size else None


def breakdown(labels, predictions, words: Sequence[str], unseen, label_names: Sequence[str]) -> dict:
    """Accuracy overall, on seen and on unseen voices, per spoken word and per label, and the confusion matrix.

    Args:
        labels, predictions: class indices, one per example.
        words: the word spoken in each example (its folder name; `"_silence_"` for silence), so the unknown
            class is scored word by word too.
        unseen: per example, whether its speaker's voice was held out of training (True/False), or None for
            examples without a voice (silence): those count in neither voice group.
        label_names: the class names.

    Returns:
        `accuracy`, `seen_voice_accuracy`, `unseen_voice_accuracy` (None when that group is empty),
        `num_examples`, `num_seen`, `num_unseen`, `per_word` and `per_label` (name -> accuracy), `confusion`
        (`[true][predicted]` counts, a list of lists).

    Raises:
        ValueError: the per-example sequences differ in length, or a class index is out of range.
    """
    labels = np.asarray(labels, np.int64).reshape(-1)
    predictions = np.asarray(predictions, np.int64).reshape(-1)
    words = np.asarray(list(words), dtype=object)
    unseen = np.asarray(list(unseen), dtype=object)
    seen, unseen = unseen == False, unseen == True  # noqa: E712 (None is in neither)
    if not labels.size == predictions.size == words.size == unseen.size:
        raise ValueError("`labels`, `predictions`, `words` and `unseen` must have one entry per example. Received: "
                         f"{labels.size}, {predictions.size}, {words.size} and {unseen.size}")
    matrix = confusion_matrix(labels, predictions, len(label_names))
    correct = labels == predictions
    return {
        "accuracy": _accuracy(correct),
        "seen_voice_accuracy": _accuracy(correct[seen]),
        "unseen_voice_accuracy": _accuracy(correct[unseen]),
        "num_examples": int(labels.size),
        "num_seen": int(seen.sum()),
        "num_unseen": int(unseen.sum()),
        "per_word": {str(w): _accuracy(correct[words == w]) for w in sorted(set(words.tolist()))},
        "per_label": {name: _accuracy(correct[labels == k]) for k, name in enumerate(label_names)
                      if (labels == k).any()},
        "confusion": matrix.tolist(),
    }


__all__ = ["breakdown"]
