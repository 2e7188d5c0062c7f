"""int8 (full-integer) export of the reference KWS models: parity, agreement, op check, states, named errors."""

from __future__ import annotations

import numpy as np
import pytest

from tfx_ext.errors import DataError, ExportError
from tfx_ext.lite.convert import to_tflite
from tfx_ext.lite.runtime import TFLiteModel, quantize_input
from tfx_ext.lite.int8 import model_ops, non_integer_ops, streaming_calibration_data
from tfx_ext.streaming.convert import to_streaming
from tfx_ext.lite.verification import verify

MODES = ["non_stream", "stream_internal_state", "stream_external_state"]
NAMES = ("ds_cnn", "crnn", "gru", "tc_resnet", "svdf", "attention", "bc_resnet")
CASES = [(name, mode) for name in NAMES for mode in MODES]


@pytest.mark.parametrize("name,mode", CASES)
def test_float_tflite_matches_keras(name, mode, trained, data, exports):
    _, flatbuffer = exports(name, mode, None)
    result = verify(trained[name], flatbuffer, data["test"])
    print(f"\nfloat {name}/{mode}: max abs error {result.max_abs_error:.2g}, accuracy {result.accuracy_model:.3f}")
    assert result.max_abs_error <= 1e-4
    assert result.agreement == 1.0


@pytest.mark.parametrize("name,mode", CASES)
def test_int8_agrees_with_float_and_is_full_integer(name, mode, trained, data, exports):
    _, flatbuffer = exports(name, mode, "int8")
    _, float_flatbuffer = exports(name, mode, None)
    assert non_integer_ops(flatbuffer) == []
    runner = TFLiteModel(flatbuffer)
    for detail in [*runner.input_details.values(), *runner.output_details.values()]:
        assert detail["dtype"] == np.int8, detail["name"]
    result = verify(trained[name], runner, data["test"], float_size=len(float_flatbuffer))
    print(f"\nint8 {name}/{mode}: agreement {result.agreement:.3f}, accuracy float {result.accuracy_model:.3f} "
          f"int8 {result.accuracy_tflite:.3f}, max abs error {result.max_abs_error:.3g}, "
          f"size {result.size_bytes} B ({result.size_ratio:.2f} of float)")
    assert result.agreement >= 0.97
    assert result.accuracy_model >= 0.9  # the fixture trained a real classifier, so agreement means something
    assert result.accuracy_tflite >= result.accuracy_model - 0.03


@pytest.mark.parametrize("name", NAMES)
def test_external_states_are_int8_signature_inputs_and_outputs(name, exports):
    runner_keras, flatbuffer = exports(name, "stream_external_state", "int8")
    runner = TFLiteModel(flatbuffer)
    assert sorted(runner.state_names) == sorted(runner_keras.state_names)
    assert runner.state_names
    for state in runner.state_names:
        for detail in (runner.input_details[state], runner.output_details[state]):
            assert detail["dtype"] == np.int8
            scale, _ = detail["quantization"]
            assert scale > 0


@pytest.mark.parametrize("name", NAMES)
def test_internal_state_variables_are_int8_without_quantize_pairs(name, exports):
    _, flatbuffer = exports(name, "stream_internal_state", "int8")
    ops = model_ops(flatbuffer)
    names = {op["op"] for op in ops}
    assert {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"} <= names
    assert "DEQUANTIZE" not in names
    assigned = [t for op in ops if op["op"] == "ASSIGN_VARIABLE" for t, _ in op["inputs"] if t != "RESOURCE"]
    assert assigned and set(assigned) == {"INT8"}


def test_int8_stream_restarts_with_reset_signature(trained, data, exports):
    _, flatbuffer = exports("ds_cnn", "stream_internal_state", "int8")
    runner = TFLiteModel(flatbuffer)
    x = data["test"][0][:1]
    first = runner.run_stream(x)["probs"]
    again = runner.run_stream(x)["probs"]  # reset=True: same stream from zero state
    np.testing.assert_array_equal(first, again)
    continued = runner.run_stream(x, reset=False)["probs"]
    assert not np.array_equal(first, continued)


def test_raw_int8_io_dequantizes_to_the_same_values(exports, data):
    _, flatbuffer = exports("ds_cnn", "non_stream", "int8")
    x = data["test"][0][:1]
    floats = TFLiteModel(flatbuffer)({"features": x})["probs"]
    raw_runner = TFLiteModel(flatbuffer, dequantize=False)
    raw = raw_runner({"features": x})["probs"]
    assert raw.dtype == np.int8
    scale, zero_point = raw_runner.output_details["probs"]["quantization"]
    np.testing.assert_allclose((raw.astype(np.float32) - zero_point) * scale, floats, atol=1e-7)


def test_streaming_calibration_data_covers_realistic_states(trained, data):
    runner = to_streaming(trained["ds_cnn"], "stream_external_state", batch_size=1, frames_per_step=1)
    x = data["train"][0][:3]
    samples = streaming_calibration_data(runner, x)
    assert len(samples) == 3 * x.shape[1]
    assert set(samples[0]) == {"features", *runner.state_names}
    np.testing.assert_array_equal(samples[5]["features"], x[:1, 5:6])
    # the first step of each sequence sees zero states, later steps the states the stream left
    assert all(not np.any(samples[0][s]) for s in runner.state_names)
    assert any(np.any(samples[-1][s]) for s in runner.state_names)

    internal = to_streaming(trained["ds_cnn"], "stream_internal_state", batch_size=1, frames_per_step=1)
    samples = streaming_calibration_data(internal, x)
    assert len(samples) == 3 * (x.shape[1] + 1)
    assert samples[0][0] == "reset_states" and samples[x.shape[1] + 1][0] == "reset_states"


# ----- named errors ------------------------------------------------------------------------------------------------
def test_int8_without_representative_data_is_named(trained):
    with pytest.raises(ValueError, match="quantize='int8' needs `representative_data`"):
        to_tflite(trained["ds_cnn"], quantize="int8")


def test_representative_data_of_wrong_shape_is_named(trained, data):
    x = data["train"][0]
    with pytest.raises(DataError, match=r"input 'features' \(sample 0\) must have shape \(1, 12, 10\).*"
                                        r"Received: shape=\(2, 12, 10\)"):
        to_tflite(trained["ds_cnn"], quantize="int8", representative_data=[{"features": x[:2]}])


def test_representative_data_of_wrong_dtype_is_named(trained, data):
    x = data["train"][0]
    with pytest.raises(DataError, match="must have dtype float32. Received: dtype=int64"):
        to_tflite(trained["ds_cnn"], quantize="int8",
                  representative_data=[{"features": x[:1].astype(np.int64)}])


def test_representative_data_without_states_is_named(trained, data):
    runner = to_streaming(trained["ds_cnn"], "stream_external_state", batch_size=1, frames_per_step=1)
    x = data["train"][0]
    with pytest.raises(DataError, match=r"streaming states included\). Missing: \['conv0_buffer'"):
        to_tflite(runner.model, quantize="int8", representative_data=[{"features": x[:1, :1]}])


def test_representative_data_not_an_iterable_is_named(trained, data):
    with pytest.raises(DataError, match=r"must be a numpy array of samples .*, or an iterable.*input order "
                                        r"\['features'\].*Received: representative_data of type dict"):
        to_tflite(trained["ds_cnn"], quantize="int8", representative_data={"features": data["train"][0][:1]})
    with pytest.raises(DataError, match="is empty"):
        to_tflite(trained["ds_cnn"], quantize="int8", representative_data=[])


def test_unsupported_op_for_int8_is_named():
    import keras

    inputs = keras.Input((6,), name="x")
    outputs = keras.layers.Activation("squareplus", name="act")(keras.layers.Dense(4, name="dense")(inputs))
    model = keras.Model(inputs, outputs, name="squareplus_model")
    samples = [{"x": np.full((1, 6), v, np.float32)} for v in np.linspace(-2, 2, 8)]
    with pytest.raises(ExportError, match=r"'squareplus_model' is not full-integer: ops without int8 kernels: "
                                          r"\['SQUARE'\].*allow_float_ops=True"):
        to_tflite(model, quantize="int8", representative_data=samples)
    hybrid = to_tflite(model, quantize="int8", representative_data=samples, allow_float_ops=True)
    assert any("SQUARE" in op for op in non_integer_ops(hybrid))


def test_whole_sequence_recurrence_is_unrolled_for_int8_and_restored(trained, exports):
    _, flatbuffer = exports("crnn", "non_stream", "int8")
    ops = {op["op"] for op in model_ops(flatbuffer)}
    assert "WHILE" not in ops and "FULLY_CONNECTED" in ops  # unrolled per frame
    inner = trained["crnn"].get_layer("gru").rnn
    assert inner.unroll is False  # the user's model is left as it was


def test_unknown_quantize_is_named(trained):
    with pytest.raises(ValueError, match=r"`quantize` must be one of .*'int8'.*Received: quantize='int4'"):
        to_tflite(trained["ds_cnn"], quantize="int4")


def test_invoker_runs_the_bound_signature_bare(exports, data):
    _, flatbuffer = exports("ds_cnn", "stream_internal_state", "int8")
    x = data["test"][0][:1]
    runner = TFLiteModel(flatbuffer)
    expected = runner.run_stream(x[:, :3])["probs"][:, -1]  # three steps from a fresh stream
    runner.reset_variables()
    invoke = runner.invoker({"features": x[:, :1]})  # binding runs step 1
    runner.reset_variables()
    invoke()  # step 1 as a bare invocation of the bound first frame, then steps 2 and 3 as calls
    runner({"features": x[:, 1:2]})
    after = runner({"features": x[:, 2:3]})["probs"]
    np.testing.assert_array_equal(after, expected)
    invoke()  # ...and a bare invocation advances the internal state like a call does
    assert not np.array_equal(runner({"features": x[:, 2:3]})["probs"], expected)
    assert runner.latency({"features": x[:, :1]}, warmup=1, repeats=3) > 0


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_stepper_feeds_states_back_like_run_stream(exports, data, quantize):
    """The bare external-state step (bench/streaming.py times it) against run_stream, which binds by name: binding
    runs a step from the bound (zero) states without feeding back, then each bare step runs one more."""
    _, flatbuffer = exports("crnn", "stream_external_state", quantize)
    chunk = data["test"][0][:1, :1]
    runner = TFLiteModel(flatbuffer, dequantize=False)
    expected = runner.run_stream(np.repeat(chunk, 4, axis=1))["probs"][:, :, 0]  # raw outputs of steps 1..4
    zeros = {name: quantize_input(np.zeros(runner.input_details[name]["shape"], np.float32),
                                  runner.input_details[name]) for name in runner.state_names}
    step = runner.stepper({"features": chunk, **zeros})
    probs = runner.output_details["probs"]["index"]
    for t in range(4):
        step()
        np.testing.assert_array_equal(runner.interpreter.get_tensor(probs)[:, 0], expected[:, t])
    assert not np.array_equal(expected[:, 0], expected[:, 3])  # the states matter: feeding back is tested


def test_streamed_state_calibration_beats_zero_state_calibration(trained, data, exports):
    """External states calibrated on zeros (what calibrating with non-streaming samples amounts to) get a useless
    range: the int8 stream drifts from Keras. Streaming the float model for calibration keeps it close."""
    runner, realistic = exports("ds_cnn", "stream_external_state", "int8")
    samples = streaming_calibration_data(runner, data["train"][0][:48])
    naive = to_tflite(runner.model, quantize="int8",
                      representative_data=[{k: (v if k == "features" else np.zeros_like(v)) for k, v in s.items()}
                                           for s in samples])
    test = (data["test"][0][:48], data["test"][1][:48])
    good, bad = (verify(trained["ds_cnn"], f, test) for f in (realistic, naive))
    print(f"\nstate calibration: streamed max error {good.max_abs_error:.3f} agreement {good.agreement:.3f}; "
          f"zeros max error {bad.max_abs_error:.3f} agreement {bad.agreement:.3f}")
    assert good.max_abs_error < bad.max_abs_error / 2 and good.agreement >= 0.97
