"""tfx_ext.data.augment: each augmentation checked against a numpy measurement of what it should do."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfx_ext.data.augment import AugmentConfig, augment_features, augment_waveforms

RATE = 16000


def _batches(waveforms, labels=None):
    waveforms = np.asarray(waveforms, np.float32)
    labels = np.zeros(len(waveforms), np.int32) if labels is None else labels
    return tf.data.Dataset.from_tensor_slices((waveforms, labels)).batch(len(waveforms))


def _run(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _dominant_hz(signal):
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return np.fft.rfftfreq(signal.size, 1 / RATE)[np.argmax(spectrum)]


def test_config_groups_none_only_and_errors():
    none = AugmentConfig.none()
    assert not none.waveform_active and not none.features_active and none.loader_kwargs["time_shift_ms"] == 0
    speed = AugmentConfig.only("speed")
    assert speed.speed == AugmentConfig().speed and speed.reverb == 0 and speed.gain_db == 0
    assert dataclasses.replace(speed, speed=0) == none
    assert AugmentConfig.only("specaugment").features_active and not AugmentConfig.only("specaugment").waveform_active
    with pytest.raises(ValueError, match="`group` must be one of .*Received: group='echo'"):
        AugmentConfig.only("echo")
    with pytest.raises(ValueError, match="`speed` must be a finite number >= 0 and <= 0.5. Received: speed=0.7"):
        AugmentConfig(speed=0.7)
    with pytest.raises(ValueError, match="`time_masks` must be an integer >= 0"):
        AugmentConfig(time_masks=-1)


def test_speed_scales_the_frequency_of_a_tone():
    t = np.arange(RATE) / RATE
    tone = 0.5 * np.sin(2 * np.pi * 500 * t)
    config = dataclasses.replace(AugmentConfig.none(), speed=0.2)
    (x, _), = _run(augment_waveforms(_batches([tone] * 8), config, seed=3))
    measured = np.array([_dominant_hz(row[4000:12000]) for row in x])  # the middle: no zero fill there
    assert np.all((measured > 500 * 0.79) & (measured < 500 * 1.21)), measured
    assert np.ptp(measured) > 20  # the factor differs from clip to clip
    # Zero fill only where a sped-up clip runs out of samples, at both ends.
    assert np.all(np.abs(x[:, 6000:10000]).max(axis=1) > 0.4)


def test_reverb_adds_a_decaying_tail_and_keeps_the_peak():
    click = np.zeros(RATE, np.float32)
    click[2000] = 0.8
    config = dataclasses.replace(AugmentConfig.none(), reverb=1.0)
    (x, _), = _run(augment_waveforms(_batches([click] * 4), config, seed=0))
    np.testing.assert_allclose(np.abs(x).max(axis=1), 0.8, rtol=1e-3)
    np.testing.assert_allclose(x[:, :2000], 0.0, atol=1e-4)  # causal: nothing before the click
    early = np.abs(x[:, 2001:2801]).mean(axis=1)
    late = np.abs(x[:, 5201:6001]).mean(axis=1)
    assert np.all(early > 0) and np.all(late < early), (early, late)
    never = dataclasses.replace(AugmentConfig.none(), reverb=1e-9)
    (same, _), = _run(augment_waveforms(_batches([click] * 4), never, seed=0))
    np.testing.assert_allclose(same, click[None].repeat(4, 0), atol=1e-6)


def test_gain_is_one_factor_per_clip_within_its_range():
    rng = np.random.default_rng(0)
    clips = 0.1 * rng.standard_normal((16, RATE)).astype(np.float32)
    config = dataclasses.replace(AugmentConfig.none(), gain_db=6.0)
    (x, _), = _run(augment_waveforms(_batches(clips), config, seed=1))
    ratios = x / clips
    np.testing.assert_allclose(ratios, ratios[:, :1].repeat(RATE, 1), rtol=1e-4)
    db = 20 * np.log10(ratios[:, 0])
    assert np.all(np.abs(db) <= 6.0 + 1e-4) and np.ptp(db) > 3


def test_specaugment_masks_bands_with_the_mean_and_is_seeded():
    rng = np.random.default_rng(1)
    features = rng.uniform(1, 2, (8, 49, 40)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((features, np.arange(8, dtype=np.int32))).batch(8)
    config = dataclasses.replace(AugmentConfig.none(), time_masks=1, time_mask_frames=6, freq_masks=2,
                                 freq_mask_bins=4)
    (x, y), = _run(augment_features(ds, config, seed=5))
    np.testing.assert_array_equal(y, np.arange(8))
    changed = x != features
    for k in range(8):
        np.testing.assert_allclose(x[k][changed[k]], features[k].mean(), rtol=1e-5)
        rows, cols = changed[k].all(axis=1), changed[k].all(axis=0)  # masked frames, masked bins
        assert rows.sum() <= 6 and cols.sum() <= 8
        np.testing.assert_array_equal(changed[k], rows[:, None] | cols[None, :])  # only whole bands change
    assert changed.any()
    (again, _), = _run(augment_features(ds, config, seed=5))
    (other, _), = _run(augment_features(ds, config, seed=6))
    np.testing.assert_array_equal(again, x)
    assert not np.array_equal(other, x)
