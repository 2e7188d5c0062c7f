"""The streaming contract as checks: streamed chunk by chunk == whole sequence, in both state modes.

`verify_model_streaming(model, x)` converts a model with `tfx_ext.streaming.to_streaming` and checks, for each
mode and each `frames_per_step`:
  - outputs with a time axis: the concatenated streamed outputs equal the non-streaming outputs (shifted by the
    model's declared output delay); outputs without one (window summaries, last RNN state): the output after the
    last chunk equals the non-streaming output;
  - eager steps and steps inside `tf.function` agree;
  - after `reset`, a second pass gives the same outputs (and, for models with state, running on without a reset
    gives different ones, so the state is really carried);
  - external state with the batch of `x` (> 1 in the tests).
`verify_layer_streaming(layer_cls, init_kwargs, input_data)` runs it on `Input -> layer`, and is what
`tests.testing.run_layer_test(streaming=True)` calls. `verify_tflite_streaming` checks float LiteRT parity of a
streaming model (internal state restarted through `reset_variables`, external state bound by name).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfx_ext.streaming.contract import Mode, StreamingLayer, reset_model_states
from tfx_ext.streaming.convert import StreamingRunner, to_non_streaming, to_streaming

FLOAT_ATOL = 1e-5
TFLITE_ATOL = 1e-4
BOTH_MODES = (Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE)


def _as_dict(outputs, names) -> dict[str, np.ndarray]:
    if isinstance(outputs, dict):
        return {k: np.asarray(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return {n: np.asarray(o) for n, o in zip(names, outputs)}
    return {names[0]: np.asarray(outputs)}


def _output_names(model: keras.Model) -> list[str]:
    return list(model.output.keys()) if isinstance(model.output, dict) else list(model.output_names)


def _compare(streamed: np.ndarray, expected: np.ndarray, delay_frames: int, rate: int, atol: float, what: str) -> float:
    """Compares stacked/concatenated streamed outputs with whole-sequence outputs; returns max abs error."""
    if streamed.shape == expected.shape and expected.ndim >= 3:  # time axis: concatenated along time
        shift = delay_frames // max(rate, 1)
        a, e = streamed[:, shift:], expected[:, : expected.shape[1] - shift]
    elif streamed.shape[2:] == expected.shape[1:]:  # no time axis: one entry per step, compare the last
        a, e = streamed[:, -1], expected
    else:
        raise AssertionError(f"{what}: streamed shape {streamed.shape} does not match {expected.shape}")
    err = float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if a.size else 0.0
    assert err <= atol, f"{what}: max abs error {err:.3g} > atol {atol:g}"
    return err


def _stack(results: list[dict]) -> dict[str, np.ndarray]:
    stacked = {}
    for key in results[0]:
        values = [np.asarray(r[key]) for r in results]
        stacked[key] = np.concatenate(values, axis=1) if values[0].ndim >= 3 else np.stack(values, axis=1)
    return stacked


def _stream_internal(model: keras.Model, x: np.ndarray, step: int, compiled: bool) -> dict[str, np.ndarray]:
    names = _output_names(model)
    fn = tf.function(lambda chunk: model(chunk, training=False)) if compiled else (
        lambda chunk: model(chunk, training=False))
    reset_model_states(model)
    return _stack([_as_dict(fn(x[:, i:i + step]), names) for i in range(0, x.shape[1], step)])


def _time_rates(streaming_model: keras.Model, names, x_frames: int, step: int, expected) -> dict[str, int]:
    """Model-input frames per output frame, for outputs with a time axis."""
    rates = {}
    for name in names:
        e = expected[name]
        rates[name] = max(x_frames // e.shape[1], 1) if e.ndim >= 3 else 1
    return rates


def verify_model_streaming(
    model: keras.Model,
    x: np.ndarray,
    *,
    modes=BOTH_MODES,
    frames_per_step=(1,),
    compiled=(False, True),
    atol: float = FLOAT_ATOL,
    check_reset: bool = True,
) -> dict[str, float]:
    """Streams `x` through `to_streaming(model)` in each mode and step size; returns max abs errors by case.

    Args:
        model: a functional or Sequential model with streamable layers.
        x: `(batch, time, ...)`; `time` must be a multiple of every frames_per_step.
        modes: streaming modes to check.
        frames_per_step: step sizes to check.
        compiled: run steps eagerly (False) and/or inside `tf.function` (True).
        atol: tolerance (float32: 1e-5).
        check_reset: also check that `reset` restarts the stream.
    """
    x = np.asarray(x, dtype="float32")
    reference = to_non_streaming(model)
    names = _output_names(reference)
    expected = _as_dict(reference(x, training=False), names)
    errors: dict[str, float] = {}
    for mode in modes:
        mode = Mode.of(mode)
        for step in frames_per_step:
            assert x.shape[1] % step == 0, f"time {x.shape[1]} is not a multiple of frames_per_step={step}"
            converted = to_streaming(model, mode, batch_size=x.shape[0], frames_per_step=step)
            runner = converted if isinstance(converted, StreamingRunner) else None
            streaming_model = runner.model if runner else converted
            delays = getattr(streaming_model, "output_delays", {})
            rates = _time_rates(streaming_model, names, x.shape[1], step, expected)
            for is_compiled in compiled:
                if runner is not None:
                    run = StreamingRunner(streaming_model, compiled=is_compiled)
                    streamed = _as_dict(run.run(x), run.output_names)
                else:
                    streamed = _stream_internal(streaming_model, x, step, is_compiled)
                for name in names:
                    case = f"{mode.value}/fps={step}/{'compiled' if is_compiled else 'eager'}/{name}"
                    errors[case] = _compare(streamed[name], expected[name], delays.get(name, 0), rates[name],
                                            atol, case)
            if check_reset:
                _check_reset(streaming_model, runner, x, step)
    return errors


def _check_reset(streaming_model, runner, x, step) -> None:
    """A reset restarts the stream: a second pass equals the first; without a reset, state carries over."""
    if runner is not None:
        first = runner.run(x)
        second = runner.run(x)  # run() resets first
        carried = runner.run(x, reset=False)
    else:
        first = _stream_internal(streaming_model, x, step, compiled=False)
        second = _stream_internal(streaming_model, x, step, compiled=False)
        names = _output_names(streaming_model)
        carried = _stack([_as_dict(streaming_model(x[:, i:i + step], training=False), names)
                          for i in range(0, x.shape[1], step)])  # no reset before this pass
    first, second, carried = (v if isinstance(v, dict) else {"out": v} for v in (first, second, carried))
    for key in first:
        np.testing.assert_allclose(second[key], first[key], atol=FLOAT_ATOL, err_msg=f"reset did not restart {key}")
    if runner is not None:
        has_state = bool(runner.state_names)
    else:
        has_state = any(layer.state_variables for layer in streaming_model.layers if isinstance(layer, StreamingLayer))
    if has_state:
        differs = any(not np.allclose(carried[k], first[k], atol=FLOAT_ATOL) for k in first)
        assert differs, "streaming without reset gave the same outputs as from a fresh state: no state carried"


def verify_layer_streaming(layer_cls, init_kwargs: dict, input_data: np.ndarray, *, atol: float = FLOAT_ATOL,
                           frames_per_step=None, compiled=(True,)) -> dict[str, float]:
    """Streams `Input -> layer_cls(**init_kwargs)` over `input_data` in both modes (see module docstring).

    Steps of one and two blocks, inside `tf.function` by default (eager steps are covered by the model-level tests;
    pass `compiled=(False, True)` for both).
    """
    input_data = np.asarray(input_data, dtype="float32")
    probe = layer_cls(**init_kwargs)
    assert isinstance(probe, StreamingLayer), f"{layer_cls.__name__} is not a StreamingLayer"
    block = max(int(probe.block_size), 1)
    if frames_per_step is None:
        frames_per_step = (block, 2 * block)
    longest = max(frames_per_step)
    frames = input_data.shape[1] - input_data.shape[1] % longest
    assert frames > 0, f"input of {input_data.shape[1]} frames is shorter than a step of {longest}"
    x = input_data[:, :frames]
    inputs = keras.Input(shape=x.shape[1:], name="x")
    model = keras.Model(inputs, layer_cls(**init_kwargs)(inputs))
    window_like = getattr(probe, "is_window_cell", False)
    steps = tuple(s for s in frames_per_step if not window_like or s <= frames)
    return verify_model_streaming(model, x, frames_per_step=steps, atol=atol, compiled=compiled)


def verify_tflite_streaming(model: keras.Model, x: np.ndarray, mode, *, frames_per_step: int = 1,
                            atol: float = TFLITE_ATOL) -> float:
    """Float LiteRT of the streaming model equals the Keras streaming model step by step; returns max abs error.

    Internal state: two passes with `reset_variables()` between them must both match a freshly reset Keras model.
    External state: states are named signature inputs/outputs fed back by name.
    """
    from tfx_ext.lite import TFLiteModel, to_tflite

    x = np.asarray(x, dtype="float32")
    mode = Mode.of(mode)
    converted = to_streaming(model, mode, batch_size=x.shape[0], frames_per_step=frames_per_step)
    runner = converted if isinstance(converted, StreamingRunner) else StreamingRunner(converted, compiled=False)
    lite = TFLiteModel(to_tflite(runner.model, batch_size=x.shape[0]))
    input_name = runner.input_names[0]
    assert set(lite.input_names) == {input_name, *runner.state_names}, lite.input_names
    worst = 0.0
    for _ in range(2 if mode == Mode.STREAM_INTERNAL_STATE else 1):
        runner.reset()
        lite.reset_variables()
        states = {n: np.zeros(lite.input_details[n]["shape"], lite.input_details[n]["dtype"])
                  for n in runner.state_names}
        for i in range(0, x.shape[1], frames_per_step):
            chunk = x[:, i:i + frames_per_step]
            expected = runner(chunk)
            expected = expected if isinstance(expected, dict) else {runner.output_names[0]: expected}
            got = lite({input_name: chunk, **states})
            states = {n: got[n] for n in runner.state_names}
            for name, value in expected.items():
                err = float(np.max(np.abs(got[name] - value)))
                assert err <= atol, f"TFLite step {i}: {name} max abs error {err:.3g} > {atol:g}"
                worst = max(worst, err)
    return worst


__all__ = ["verify_model_streaming", "verify_layer_streaming", "verify_tflite_streaming", "BOTH_MODES"]
