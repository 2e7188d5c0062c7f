"""Posteriors of a streamed classifier: a model or runner and arrays in, posteriors out (no files, no data root).

    stream_posteriors(model_or_runner, waveform_or_features)  -> (steps, classes)  one long recording, step by step
    stream_clips(runner, clips)                               -> (clips, classes)  the posterior after each clip

These are the library half of keyword spotting (`tfx_ext.apps.kws` reads the data and writes the reports). They
live beside, not in, `runner.py` because they convert non-streaming models with `to_streaming`, which itself
returns a runner: `convert` imports `runner`, and this module imports both.
"""

from __future__ import annotations

import numpy as np

from tfx_ext.data.features import FeatureConfig, compute_features
from tfx_ext.streaming.contract import Mode, streaming_layers
from tfx_ext.streaming.convert import min_frames_per_step, to_streaming
from tfx_ext.streaming.runner import StreamingRunner


def _as_runner(model_or_runner, frames_per_step: int | None) -> StreamingRunner:
    """A runner as it is; a streaming model wrapped; a non-streaming model converted (internal state, batch 1)."""
    if isinstance(model_or_runner, StreamingRunner):
        return model_or_runner
    layers = streaming_layers(model_or_runner)
    if layers and not layers[0].mode.is_streaming:
        step = frames_per_step or min_frames_per_step(model_or_runner)
        return to_streaming(model_or_runner, Mode.STREAM_INTERNAL_STATE, batch_size=1, frames_per_step=step)
    return StreamingRunner(model_or_runner)


def stream_posteriors(model_or_runner, waveform_or_features, *, features: FeatureConfig = FeatureConfig(),
                      frames_per_step: int | None = None) -> np.ndarray:
    """Runs a streaming model over a long recording frame by frame and returns the posteriors of every step.

    Args:
        model_or_runner: a `StreamingRunner` (from `to_streaming`), a streaming model, or a non-streaming model
            (converted here with `to_streaming(..., STREAM_INTERNAL_STATE, batch_size=1)`). Its state is reset
            first.
        waveform_or_features: a 1-D waveform (features computed here with `features`) or `(frames, bins)` features.
            Trailing frames that do not fill a step are dropped.
        features: the front end for waveforms.
        frames_per_step: frames per call when converting a non-streaming model (default: its total time stride).

    Returns:
        `(steps, num_classes)` posteriors of the first output; step `i` ends at frame
        `(i + 1) * frames_per_step - 1`, i.e. at `((i + 1) * frames_per_step - 1) * hop + window` seconds.

    Raises:
        ValueError: `waveform_or_features` is neither 1-D nor 2-D.
    """
    data = np.asarray(waveform_or_features, np.float32)
    if data.ndim == 1:
        data = np.asarray(compute_features(data, features))
    if data.ndim != 2:
        raise ValueError(
            "`waveform_or_features` must be a waveform (samples,) or features (frames, bins). "
            f"Received: shape={data.shape}"
        )
    runner = _as_runner(model_or_runner, frames_per_step)
    step = runner.frames_per_step
    usable = data.shape[0] - data.shape[0] % step
    outputs = runner.run(data[None, :usable])
    outputs = np.asarray(outputs[runner.output_names[0]] if isinstance(outputs, dict) else outputs)[0]
    return outputs.reshape(outputs.shape[0], -1) if outputs.ndim > 2 else outputs


def stream_clips(runner: StreamingRunner, clips) -> np.ndarray:
    """Streams each clip from a reset state and returns the posterior after its last full step.

    Args:
        runner: a `StreamingRunner` with a static batch size (`to_streaming(..., batch_size=n)`).
        clips: `(num, frames, bins)` features; streamed `runner.batch_size` clips at a time (the last batch padded
            with zeros), trailing frames that do not fill a step dropped.

    Returns:
        `(num, num_classes)` posteriors of the first output.
    """
    clips = np.asarray(clips, np.float32)
    if clips.ndim < 3:
        raise ValueError(f"`clips` must be (num, frames, features...). Received: shape={clips.shape}")
    batch, step = runner.batch_size or 1, runner.frames_per_step
    usable = clips.shape[1] - clips.shape[1] % step
    finals = []
    for start in range(0, clips.shape[0], batch):
        x = clips[start:start + batch, :usable]
        n = x.shape[0]
        if n < batch:  # the streaming model has a static batch: pad the last batch
            x = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), x.dtype)])
        outputs = runner.run(x)
        outputs = outputs[runner.output_names[0]] if isinstance(outputs, dict) else outputs
        finals.append(np.asarray(outputs)[:n, -1])
    return np.concatenate(finals)


__all__ = ["stream_posteriors", "stream_clips"]
