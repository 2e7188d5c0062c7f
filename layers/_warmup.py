"""Warm-up frames of a streamable layer that follows a delayed one (a 'valid' or look-ahead layer upstream).

Streamed, a layer whose outputs lag the whole-sequence ones by `d` frames emits `d` warm-up frames first (values
over its zero buffer that have no whole-sequence counterpart). A stateful layer downstream must not take them in:
a `Stream` treats them as the zeros its whole-sequence form pads with, a GRU/LSTM keeps its state through them.
The layer counts the frames it has seen in a state `frames` of shape `(1,)` (saturating at `warmup_frames`).
"""

from __future__ import annotations

from keras import ops

from tfx_ext.streaming.contract import StateSpec

WARMUP_STATE = "frames"


def warmup_spec() -> StateSpec:
    return StateSpec(WARMUP_STATE, (1,), "float32")


def warmup_mask(count, frames: int, warmup_frames: int):
    """(active, new_count): `active` (batch, frames) is True for the frames past the warm-up; `count` is the
    `(batch, 1)` number of frames seen before this chunk."""
    index = ops.cast(count, "float32") + ops.cast(ops.arange(frames), "float32")[None, :]
    active = ops.greater_equal(index, float(warmup_frames))
    new_count = ops.minimum(ops.cast(count, "float32") + float(frames), float(warmup_frames))
    return active, ops.cast(new_count, count.dtype)
