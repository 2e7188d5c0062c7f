"""Reference KWS models: stream exactly in both modes, export to float LiteRT in both modes, round-trip `.keras`."""

import keras
import numpy as np
import pytest

from tfx_ext.models import MODELS, TINY_KWARGS, get_model
from tfx_ext.streaming.contract import Mode, reset_model_states
from tfx_ext.streaming.convert import to_non_streaming, to_streaming
from tfx_ext.streaming.runner import StreamingRunner
from tfx_ext.testing import BOTH_MODES, assert_all_close, save_and_load, verify_streaming, verify_tflite_streaming

# (frames, bins) and the frames_per_step to check: tc_resnet has a time stride of 4 with two blocks.
GEOMETRY = {
    "ds_cnn": ((12, 8), (1, 3)),
    "crnn": ((8, 8), (1, 4)),
    "gru": ((8, 5), (1, 4)),
    "tc_resnet": ((16, 8), (4, 8)),
    "svdf": ((10, 6), (1, 5)),
    "attention": ((10, 6), (1, 5)),
    "bc_resnet": ((12, 16), (1, 3)),
}
PARITY: dict[str, float] = {}


def randomized(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random weights everywhere (positive BN variances), so parity checks cover every parameter."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.path.endswith("moving_variance"):
            variable.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        else:
            variable.assign((0.4 * rng.normal(size=shape)).astype("float32"))
    return model


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    name = request.param
    shape, steps = GEOMETRY[name]
    model = randomized(get_model(name, shape, num_classes=3, **TINY_KWARGS[name]))
    x = np.random.default_rng(1).normal(size=(2, *shape)).astype("float32")
    return name, model, x, steps


def test_streaming_parity(case):
    name, model, x, steps = case
    errors = verify_streaming(model, x, frames_per_step=steps, compiled=(True,))
    for mode in BOTH_MODES:
        PARITY[f"{name}/{mode.value}"] = max(v for k, v in errors.items() if k.startswith(mode.value))
    print(f"\nparity {name}: " + ", ".join(f"{k}={v:.2g}" for k, v in errors.items()))


@pytest.mark.parametrize("mode", BOTH_MODES)
def test_tflite_parity(case, mode):
    name, model, x, steps = case
    err = verify_tflite_streaming(model, x[:1], mode, frames_per_step=steps[0])
    print(f"\ntflite {name}/{mode.value}: {err:.2g}")


def test_keras_round_trip_in_every_mode(case):
    name, model, x, steps = case
    step = steps[0]
    reference = to_non_streaming(model)  # tested itself here (against the model), never an oracle for streaming
    assert_all_close(reference(x), model(x, training=False))
    assert_all_close(save_and_load(reference)(x), reference(x))
    assert_all_close(save_and_load(model)(x, training=False), model(x, training=False))
    internal = to_streaming(model, Mode.STREAM_INTERNAL_STATE, batch_size=2, frames_per_step=step)
    loaded = save_and_load(internal.model)
    for i in range(0, x.shape[1], step):
        assert_all_close(loaded(x[:, i:i + step]), internal(x[:, i:i + step]))
    reset_model_states(loaded)
    external = to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=2, frames_per_step=step)
    revived = StreamingRunner(save_and_load(external.model))
    assert revived.state_names == external.state_names
    assert_all_close(revived.run(x), external.run(x))


def test_factory_and_sizes():
    assert get_model("ds_cnn").count_params() < 30_000  # kws_streaming's DS-CNN is ~25K parameters
    with pytest.raises(ValueError, match=r"`name` must be one of .* Received: name='resnet'"):
        get_model("resnet")
    with pytest.raises(ValueError, match=r"`input_shape` of ds_cnn must be \(frames, bins\)"):
        get_model("ds_cnn", (49, 40, 1))
    with pytest.raises(ValueError, match=r"`width` must be an integer >= 1. Received: width=0"):
        get_model("ds_cnn", width=0)
    with pytest.raises(ValueError, match=r"`channels` must be a non-empty list"):
        get_model("tc_resnet", channels=())


def test_tc_resnet_needs_frames_per_step_multiple_of_its_stride():
    from tfx_ext.errors import NotStreamableError

    model = get_model("tc_resnet", (16, 8), num_classes=3, **TINY_KWARGS["tc_resnet"])
    with pytest.raises(NotStreamableError, match=r"'block2_conv1' .* receives 1 frames per step .* multiple of 4"):
        to_streaming(model, frames_per_step=2)
