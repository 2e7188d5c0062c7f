"""LogMelFrontend: whole clips equal `compute_features` (random and synthesized audio, any length), a float64 NumPy
STFT where float32 itself is at its limit, int16 PCM, streaming one hop per step in both state modes (alone and
in front of a causal conv), float LiteRT on raw chunks, `.keras` round trip, Keras's layer conventions."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tfx_ext.apps.synthesis import _numpy_word, _place
from tfx_ext.data import FeatureConfig, compute_features
from tfx_ext.errors import NotStreamableError
from tfx_ext.layers import LogMelFrontend, Stream
from tfx_ext.streaming.contract import Mode
from tfx_ext.streaming.convert import to_streaming
from tfx_ext.testing import run_layer_test, save_and_load, verify_streaming, verify_tflite_streaming

CONFIGS = {
    "30/20": FeatureConfig(),
    "30/10": FeatureConfig(hop_ms=10.0),  # window = 3 hops: 2 frames of lag
    "25/10 mfcc": FeatureConfig(window_ms=25.0, hop_ms=10.0, kind="mfcc", num_bins=32, num_mfcc=10),  # 2.5 hops
    "20/20": FeatureConfig(window_ms=20.0, hop_ms=20.0, num_bins=24),  # the hop covers the window: no state
}
# compute_features is float32 tf.signal: two float32 DFTs agree to ~1e-5 where the spectrum is above float32's
# rounding floor (see test_clean_audio_against_float64).
ATOL = 1e-4


def frontend(x, config, dft="matmul"):
    return keras.ops.convert_to_numpy(LogMelFrontend(config, dft=dft)(x))


@pytest.mark.parametrize("dft", ["matmul", "rfft"])
@settings(max_examples=12, deadline=None)
@given(length=st.integers(0, 2600), name=st.sampled_from(sorted(CONFIGS)), seed=st.integers(0, 2**16))
def test_random_audio_equals_compute_features(dft, length, name, seed):
    config = CONFIGS[name]
    x = np.random.default_rng(seed).uniform(-0.8, 0.8, (2, length)).astype("float32")
    got = frontend(x, config, dft)
    if length < config.window_samples:
        assert got.shape == (2, 0, config.num_features)  # compute_features gives no frame either
        return
    want = compute_features(x, config).numpy()  # the oracle: tf.signal.stft, computed apart
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def synthesized(word: str, noise: float, seed: int) -> np.ndarray:
    """One 1 s clip of the offline synthesizer (chirps and noise bursts placed in silence) over white noise of
    `noise` rms (0: digital silence around the word)."""
    rng = np.random.default_rng(seed)
    clip = _place(_numpy_word(word, {"speed": 1.0, "shift": 1.1, "f0": 130.0}, rng), rng, 0.0)
    return (clip + noise * rng.standard_normal(clip.size)).astype("float32")


@pytest.mark.parametrize("name", ["30/20", "25/10 mfcc"])
def test_synthesized_words_equal_compute_features(name):
    """Words over a -50 dBFS noise floor (a quiet microphone): every band is above float32's rounding floor."""
    x = np.stack([synthesized(w, 0.003, i) for i, w in enumerate(("yes", "left", "stop"))])
    want = compute_features(x, CONFIGS[name]).numpy()
    np.testing.assert_allclose(frontend(x, CONFIGS[name]), want, atol=ATOL, rtol=0)


def float64_log_mel(x, config):
    """The front end written out in NumPy float64: frames, periodic Hann, |rfft|, mel (tf.signal's), log."""
    import tensorflow as tf

    window, hop = config.window_samples, config.hop_samples
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
    count = 1 + (x.shape[-1] - window) // hop
    frames = np.stack([x[:, j * hop: j * hop + window] for j in range(count)], axis=1).astype(np.float64) * hann
    mel = tf.signal.linear_to_mel_weight_matrix(config.num_bins, config.fft_length // 2 + 1, config.sample_rate,
                                                config.lower_edge_hz, config.upper_edge_hz).numpy()
    return np.log(np.abs(np.fft.rfft(frames, config.fft_length)) @ mel + config.log_offset)


def test_clean_audio_against_float64():
    """Digitally clean audio (tones in exact silence) leaves bands below float32's rounding floor, where no float32
    STFT is defined to 1e-4 (compute_features is 0.05-0.15 off the float64 value there); the layer stays closer."""
    config = CONFIGS["30/20"]
    x = np.stack([synthesized(w, 0.0, i) for i, w in enumerate(("yes", "left"))])
    exact = float64_log_mel(x, config)
    ours = np.max(np.abs(frontend(x, config) - exact))
    theirs = np.max(np.abs(compute_features(x, config).numpy() - exact))
    assert ours <= 0.05 and ours <= theirs, (ours, theirs)


def test_int16_pcm_is_read_as_x_over_32768():
    pcm = np.random.default_rng(3).integers(-32768, 32767, (1, 1600)).astype("int16")
    inputs = keras.Input((1600,), dtype="int16")
    model = keras.Model(inputs, LogMelFrontend()(inputs))
    want = compute_features(pcm.astype("float32") / 32768.0).numpy()
    np.testing.assert_allclose(model.predict(pcm, verbose=0), want, atol=ATOL, rtol=0)


def test_layer_contract():
    run_layer_test(LogMelFrontend, {"config": {"hop_ms": 10.0}}, (2, 1120), expected_output_shape=(2, 5, 40),
                   expected_num_trainable_weights=0, expected_num_non_trainable_weights=0,
                   run_training_check=False, mixed_precision_outliers=0.0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_streams_one_hop_per_step_in_both_modes(name):
    config = CONFIGS[name]
    hop = config.hop_samples
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 12 * hop)).astype("float32")
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, LogMelFrontend(config, name="front")(inputs))
    errors = verify_streaming(model, x, frames_per_step=(hop, 2 * hop), compiled=(True,))
    assert len(errors) == 4 and max(errors.values()) <= 1e-5
    runner = to_streaming(model, Mode.STREAM_EXTERNAL_STATE, batch_size=2, frames_per_step=hop)
    lag = -(-config.window_samples // hop) - 1
    assert runner.output_delays == {"front": lag * hop}
    assert runner.state_names == (["front_buffer"] if lag else [])


def conv_model(config, warmup: int, samples: int):
    inputs = keras.Input((samples,), name="audio")
    x = LogMelFrontend(config, name="front")(inputs)
    x = Stream(keras.layers.Conv1D(6, 3), warmup_frames=warmup, name="conv")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


@pytest.mark.parametrize("name", ["30/20", "30/10"])
def test_front_end_then_causal_conv_streams_like_the_whole_clip(name):
    """The conv skips the front end's K - 1 warm-up frames as its zero padding: exact, K - 1 hops late."""
    config = CONFIGS[name]
    hop = config.hop_samples
    lag = -(-config.window_samples // hop) - 1
    keras.utils.set_random_seed(0)
    model = conv_model(config, lag, 10 * hop)
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (2, 10 * hop)).astype("float32")
    errors = verify_streaming(model, x, frames_per_step=(hop,), compiled=(True,))
    assert len(errors) == 2 and max(errors.values()) <= 1e-5


def test_conv_without_warmup_is_refused_by_name():
    model = conv_model(CONFIGS["30/20"], 0, 3200)
    with pytest.raises(NotStreamableError, match=r"layer 'conv' \(Stream\).*warmup_frames=1"):
        to_streaming(model, frames_per_step=320)


def test_dense_on_raw_samples_is_refused_by_name():
    inputs = keras.Input((320,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
    with pytest.raises(NotStreamableError, match=r"layer 'dense' \(Dense\) acts on the last axis, which is time"):
        to_streaming(model, frames_per_step=320)


@pytest.mark.parametrize("mode", [Mode.STREAM_INTERNAL_STATE, Mode.STREAM_EXTERNAL_STATE])
@pytest.mark.parametrize("dft", ["matmul", "rfft"])
def test_float_litert_on_raw_chunks(mode, dft):
    inputs = keras.Input((1600,), name="audio")
    model = keras.Model(inputs, LogMelFrontend(CONFIGS["30/10"], dft=dft, name="front")(inputs))
    x = np.random.default_rng(4).uniform(-0.5, 0.5, (1, 1600)).astype("float32")
    assert verify_tflite_streaming(model, x, mode, frames_per_step=160, atol=1e-4) <= 1e-4


def test_keras_round_trip_and_config():
    inputs = keras.Input((960,))
    layer = LogMelFrontend(CONFIGS["25/10 mfcc"], dft="rfft", name="front")
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(5).uniform(-0.5, 0.5, (1, 960)).astype("float32")
    loaded = save_and_load(model)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    again = loaded.get_layer("front")
    assert (again.config, again.dft) == (CONFIGS["25/10 mfcc"], "rfft")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"`dft` must be one of"):
        LogMelFrontend(dft="fft")
    with pytest.raises(TypeError, match=r"`config` must be a FeatureConfig or its dict"):
        LogMelFrontend(config=16000)
    with pytest.raises(NotStreamableError, match=r"steps over multiples of 320 frames; received a chunk of 100"):
        LogMelFrontend(mode=Mode.STREAM_INTERNAL_STATE)(np.zeros((1, 100), "float32"))
