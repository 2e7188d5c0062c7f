"""The Mode enum and StateSpec normalise and validate their inputs."""

import pytest

from tfx_ext.streaming.contract import Mode, StateSpec, state_name


@pytest.mark.parametrize("value", ["stream_internal_state", "STREAM_INTERNAL_STATE", Mode.STREAM_INTERNAL_STATE])
def test_mode_of_accepts_values_names_and_members(value):
    assert Mode.of(value) is Mode.STREAM_INTERNAL_STATE


def test_mode_of_rejects_unknown_values():
    with pytest.raises(ValueError, match="`mode` must be one of .* Received: mode='streaming'"):
        Mode.of("streaming")


def test_streaming_modes_are_flagged():
    assert [m for m in Mode if m.is_streaming] == [Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE]


def test_state_spec_names_and_shapes():
    spec = StateSpec("buffer", [2, 3])
    assert spec.shape == (2, 3) and spec.dtype == "float32"
    assert state_name("conv1", spec) == "conv1_buffer"
    with pytest.raises(ValueError, match="free of '/'"):
        StateSpec("a/b", (1,))
