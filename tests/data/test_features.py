"""The tf.signal front end: frame counts (1 s -> 49 frames at 30/20 ms, 98 at 30/10 ms), shapes, values, errors."""

import dataclasses

import numpy as np
import pytest

from tfx_ext.data import FeatureConfig, compute_features, num_frames


@pytest.mark.parametrize(
    "hop_ms, kind, expected",
    [(20, "log_mel", (49, 40)), (10, "log_mel", (98, 40)), (20, "mfcc", (49, 13)), (10, "mfcc", (98, 13))],
)
def test_one_second_frame_counts(hop_ms, kind, expected):
    config = FeatureConfig(window_ms=30, hop_ms=hop_ms, kind=kind)
    assert num_frames(16000, config) == expected[0]
    assert config.num_features == expected[1]
    waves = np.random.default_rng(0).uniform(-0.5, 0.5, (3, 16000)).astype(np.float32)
    out = compute_features(waves, config)
    assert tuple(out.shape) == (3, *expected) and out.dtype == "float32"
    single = compute_features(waves[1], config)
    assert tuple(single.shape) == expected
    np.testing.assert_allclose(single.numpy(), out.numpy()[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("samples", [0, 479, 480, 481, 799, 800, 8000, 12345])
def test_num_frames_agrees_with_compute_features(samples):
    config = FeatureConfig()
    expected = 0 if samples < 480 else 1 + (samples - 480) // 320
    assert num_frames(samples, config) == expected
    if samples >= 480:
        assert compute_features(np.zeros(samples, np.float32), config).shape[0] == expected


def test_pure_tone_peaks_in_its_mel_band():
    import tensorflow as tf

    config = FeatureConfig()
    t = np.arange(16000) / 16000
    mel = tf.signal.linear_to_mel_weight_matrix(40, 257, 16000, 20.0, 7600.0).numpy()
    bin_hz = np.arange(257) * 16000 / 512
    for freq in (300.0, 1000.0, 3000.0):
        features = compute_features(np.sin(2 * np.pi * freq * t).astype(np.float32), config).numpy()
        expected = np.argmax(mel[np.argmin(np.abs(bin_hz - freq))])
        assert abs(int(np.argmax(features.mean(axis=0))) - int(expected)) <= 1
    # Silence gives log(log_offset) everywhere.
    np.testing.assert_allclose(compute_features(np.zeros(16000), config).numpy(), np.log(1e-6), rtol=1e-6)


def test_mfcc_is_dct_of_log_mel():
    import tensorflow as tf

    waves = np.random.default_rng(1).normal(size=(2, 4000)).astype(np.float32)
    log_mel = compute_features(waves, FeatureConfig())
    mfcc = compute_features(waves, FeatureConfig(kind="mfcc", num_mfcc=5))
    np.testing.assert_allclose(mfcc.numpy(), tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :5].numpy())


def test_config_is_frozen_and_derived_sizes():
    config = FeatureConfig()
    assert (config.window_samples, config.hop_samples, config.fft_length) == (480, 320, 512)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hop_ms = 10


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"kind": "mel"}, ValueError, "`kind` must be one of .*Received: kind='mel'"),
        ({"sample_rate": 16000.0}, TypeError, "`sample_rate` must be an int. Received: sample_rate=16000.0"),
        ({"num_bins": 0}, ValueError, "`num_bins` must be an integer >= 1. Received: num_bins=0"),
        ({"window_ms": "30"}, TypeError, "`window_ms` must be a number. Received: window_ms='30'"),
        ({"window_ms": 0.05}, ValueError, "`window_ms` must be positive and span at least 2 samples"),
        ({"hop_ms": 0}, ValueError, "`hop_ms` must be positive and span at least 1 sample"),
        ({"num_mfcc": 41}, ValueError, "`num_mfcc` must be at most `num_bins` \\(40\\). Received: num_mfcc=41"),
        ({"upper_edge_hz": 9000}, ValueError, "0 <= lower_edge_hz < upper_edge_hz <= sample_rate / 2 \\(8000\\)"),
        ({"lower_edge_hz": 8000, "upper_edge_hz": 7000}, ValueError, "Received: lower_edge_hz=8000"),
        ({"log_offset": 0.0}, ValueError, "`log_offset` must be a finite number > 0. Received: log_offset=0.0"),
    ],
)
def test_config_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        FeatureConfig(**kwargs)


def test_compute_features_rank_error_and_num_frames_error():
    with pytest.raises(ValueError, match="`waveforms` must have shape \\(samples,\\) or \\(batch, samples\\)"):
        compute_features(np.zeros((1, 2, 16000)), FeatureConfig())
    with pytest.raises(ValueError, match="`num_samples` must be an integer >= 0. Received: num_samples=-1"):
        num_frames(-1)
