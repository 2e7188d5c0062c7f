"""Raw int8 state feedback for quantize-aware (QAT) recurrent models: a state's input and output share the learned
range exactly (one scale and zero point), so feeding raw int8 states back equals the dequantize-requantize path
bit for bit, as for calibrated exports (tests/export/test_state_feedback.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfx_ext.errors import ExportError
from tfx_ext.lite.convert import to_tflite
from tfx_ext.lite.int8 import non_integer_ops, share_state_quantization, state_quantization, \
    streaming_calibration_data
from tfx_ext.lite.runtime import TFLiteModel, dequantize_output
from tfx_ext.models import TINY_KWARGS, get_model
from tfx_ext.streaming.convert import min_frames_per_step, to_streaming
from tfx_ext.transforms.qat import quantize_aware

FRAMES, BINS, CLASSES = 12, 10, 4


def _qat_trained(name: str):
    """A tiny reference model, made quantize-aware and trained one epoch; returns it and its state ranges' moves."""
    keras.utils.set_random_seed(0)
    qat = quantize_aware(get_model(name, (FRAMES, BINS), CLASSES, **TINY_KWARGS[name]))
    cells = {layer.name: layer.rnn.cell for layer in qat.layers if hasattr(getattr(layer, "rnn", None), "cell")}
    ranges = {f"{layer}_{fq.name.removesuffix('_range')}": fq for layer, cell in cells.items()
              for fq in cell.state_ranges}
    before = {k: (float(fq.range_min), float(fq.range_max)) for k, fq in ranges.items()}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, FRAMES, BINS)).astype("float32")
    y = rng.integers(0, CLASSES, 48)
    qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    after = {k: (float(fq.range_min), float(fq.range_max)) for k, fq in ranges.items()}
    return qat, ranges, before, after, x


@pytest.fixture(scope="module", params=["gru", "crnn"])
def qat_export(request):
    qat, ranges, before, after, x = _qat_trained(request.param)
    runner = to_streaming(qat, "stream_external_state", batch_size=1, frames_per_step=min_frames_per_step(qat))
    flatbuffer = to_tflite(runner, quantize="int8", representative_data=streaming_calibration_data(runner, x[:6]))
    return request.param, flatbuffer, ranges, before, after


def test_qat_state_ranges_move_during_training(qat_export):
    name, _, ranges, before, after = qat_export
    assert ranges, name
    for state in ranges:
        assert before[state] == (0.0, 0.0)
        assert after[state][0] < 0.0 < after[state][1], (state, after[state])


def test_qat_state_input_and_output_share_the_learned_range(qat_export):
    name, flatbuffer, ranges, _, after = qat_export
    assert non_integer_ops(flatbuffer) == []
    runner = TFLiteModel(flatbuffer)
    quantization = state_quantization(flatbuffer)
    for state, fq in ranges.items():  # the recurrent states; conv buffers (crnn) are checked by the raw run below
        given, produced = quantization[state]
        assert given == produced, (state, given, produced)  # bit for bit, not only close
        assert runner.input_details[state]["quantization"] == runner.output_details[state]["quantization"]
        learned = (after[state][1] - after[state][0]) / 255
        assert given[0] == pytest.approx(learned, rel=2e-2), (state, given, learned)  # the learned range, tied
    for state in runner.state_names:
        assert quantization[state][0] == quantization[state][1], state


def test_qat_raw_int8_state_feedback_equals_the_float_boundary_path(qat_export):
    name, flatbuffer, _, _, _ = qat_export
    runner = TFLiteModel(flatbuffer)
    x = np.random.default_rng(1).normal(size=(1, 4 * FRAMES, BINS)).astype("float32")
    boundary = runner.run_stream(x)
    raw = runner.run_stream(x, dequantize=False)
    for output, values in raw.items():
        assert values.dtype == np.int8
        np.testing.assert_array_equal(dequantize_output(values, runner.output_details[output]), boundary[output])


def test_share_state_quantization_refuses_more_than_a_rounding(qat_export):
    from tfx_ext._compat import tflite_schema
    import flatbuffers

    name, flatbuffer, ranges, _, _ = qat_export
    assert share_state_quantization(flatbuffer, name) == flatbuffer  # already shared: unchanged
    schema = tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    signature = model.signatureDefs[0]
    state = next(iter(ranges))
    out = next(o.tensorIndex for o in signature.outputs if (o.name.decode() if isinstance(o.name, bytes)
                                                             else o.name) == state)
    quant = model.subgraphs[signature.subgraphIndex].tensors[out].quantization
    quant.scale = [float(quant.scale[0]) * 1.1]
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ExportError, match=rf"state {state!r} is quantized with scale/zero point .* as input but "
                                          r".* as output"):
        share_state_quantization(bytes(builder.Output()), name)
