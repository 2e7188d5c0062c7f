"""Training augmentation for keyword spotting, inside `tf.data`: batch maps on waveforms and on features.

Every draw is stateless, seeded by a per-batch random number from `tf.data.Dataset.random` and the seed, so the
same seed gives the same epochs. Defaults are mild on purpose: with the few epochs a small machine affords, a
strong recipe under-fits (measured in `bench/kws.py`, which ablates each augmentation).

    AugmentConfig(...)                   which augmentations, how strong; `.none()`, `.only(name)`
    augment_waveforms(ds, config, seed)  (batch, samples) waveforms: speed, reverberation, gain
    augment_features(ds, config, seed)   (batch, frames, bins) features: SpecAugment time and frequency masks

Time shift and background noise (the data set's `_background_noise_` files) are `load_speech_commands` options;
`AugmentConfig` carries their settings too (`loader_kwargs`).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfx_ext._validate import check_int, check_number

_RIR_SECONDS = 0.25


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The recipe's augmentations; a zero turns one off.

    Args:
        time_shift_ms: random shift in [-t, t] ms (zero fill).
        background_noise: maximum volume of a `_background_noise_` segment mixed in (white/pink/brown noise, hum).
        background_frequency: fraction of clips that get background noise.
        speed: speed (and with it pitch) perturbation: a factor in [1 - speed, 1 + speed].
        reverb: probability of convolving with a synthetic room impulse response (exponentially decaying noise,
            RT60 in [0.1, 0.6] s).
        gain_db: random gain in [-gain_db, gain_db] dB.
        time_masks, time_mask_frames: SpecAugment: masks of up to this many frames.
        freq_masks, freq_mask_bins: SpecAugment: masks of up to this many bins.
    """

    time_shift_ms: float = 100.0
    background_noise: float = 0.1
    background_frequency: float = 0.8
    speed: float = 0.1
    reverb: float = 0.25
    gain_db: float = 6.0
    time_masks: int = 1
    time_mask_frames: int = 5
    freq_masks: int = 1
    freq_mask_bins: int = 5

    def __post_init__(self):
        for name in ("time_shift_ms", "background_noise", "gain_db"):
            check_number(name, getattr(self, name), low=0)
        check_number("speed", self.speed, low=0, high=0.5)
        for name in ("reverb", "background_frequency"):
            check_number(name, getattr(self, name), low=0, high=1)
        for name in ("time_masks", "time_mask_frames", "freq_masks", "freq_mask_bins"):
            check_int(name, getattr(self, name), minimum=0)

    # Groups of fields that one ablation row switches on together.
    GROUPS = {
        "time_shift": ("time_shift_ms",),
        "noise": ("background_noise",),
        "speed": ("speed",),
        "reverb": ("reverb",),
        "gain": ("gain_db",),
        "specaugment": ("time_masks", "freq_masks"),
    }

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation at all."""
        return cls(**{field: 0 for fields in cls.GROUPS.values() for field in fields})

    @classmethod
    def only(cls, group: str) -> "AugmentConfig":
        """Only the augmentation `group` (a key of `GROUPS`), at its default strength."""
        if group not in cls.GROUPS:
            raise ValueError(f"`group` must be one of {sorted(cls.GROUPS)}. Received: group={group!r}")
        defaults = cls()
        return dataclasses.replace(cls.none(), **{f: getattr(defaults, f) for f in cls.GROUPS[group]})

    @property
    def loader_kwargs(self) -> dict:
        """The `load_speech_commands` arguments for time shift and background noise."""
        return {"time_shift_ms": self.time_shift_ms, "background_noise": self.background_noise,
                "background_frequency": self.background_frequency}

    @property
    def waveform_active(self) -> bool:
        return bool(self.speed or self.reverb or self.gain_db)

    @property
    def features_active(self) -> bool:
        return bool(self.time_masks and self.time_mask_frames or self.freq_masks and self.freq_mask_bins)


def _with_seeds(ds: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    return tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)))


def _seed(random, k: int):
    return tf.stack([random, tf.constant(k, tf.int64)])


def _speed(waveform, factor):
    """Resamples each row by its factor (linear interpolation around the centre, zero outside the clip)."""
    n = tf.shape(waveform)[1]
    centre = tf.cast(n, tf.float32) / 2.0
    positions = centre + (tf.range(tf.cast(n, tf.float32))[None] - centre) * factor[:, None]
    low = tf.floor(positions)
    weight = positions - low
    low = tf.cast(low, tf.int32)

    def take(index):
        inside = (index >= 0) & (index < n)
        values = tf.gather(waveform, tf.clip_by_value(index, 0, n - 1), batch_dims=1)
        return tf.where(inside, values, 0.0)

    return (1.0 - weight) * take(low) + weight * take(low + 1)


def _reverb(waveform, random, probability: float, sample_rate: int):
    """Convolves the chosen rows with an exponentially decaying noise impulse response (FFT), keeping the peak."""
    batch, n = tf.shape(waveform)[0], tf.shape(waveform)[1]
    length = int(_RIR_SECONDS * sample_rate)
    t = tf.range(length, dtype=tf.float32) / sample_rate
    rt60 = tf.random.stateless_uniform([batch, 1], _seed(random, 11), 0.1, 0.6)
    rir = tf.random.stateless_normal([batch, length], _seed(random, 12)) * tf.exp(-6.9 * t[None] / rt60)
    rir = tf.concat([tf.ones([batch, 1]), rir[:, 1:] * 0.3], axis=1)  # The direct path, then the tail.
    size = 1 << ((waveform.shape[1] or sample_rate) + length).bit_length()
    wet = tf.signal.irfft(tf.signal.rfft(waveform, [size]) * tf.signal.rfft(rir, [size]), [size])[:, :n]
    peak = lambda x: tf.reduce_max(tf.abs(x), axis=1, keepdims=True) + 1e-6  # noqa: E731
    wet = wet * peak(waveform) / peak(wet)
    chosen = tf.random.stateless_uniform([batch, 1], _seed(random, 13)) < probability
    return tf.where(chosen, wet, waveform)


def augment_waveforms(ds: tf.data.Dataset, config: AugmentConfig, seed: int, sample_rate: int = 16000):
    """Maps batches of `(waveforms (batch, samples), labels)` through speed, reverberation and gain."""
    if not config.waveform_active:
        return ds

    def apply(element, random):
        waveform, label = element
        batch = tf.shape(waveform)[0]
        if config.speed:
            factor = tf.random.stateless_uniform([batch], _seed(random, 1), 1 - config.speed, 1 + config.speed)
            waveform = _speed(waveform, factor)
        if config.reverb:
            waveform = _reverb(waveform, random, config.reverb, sample_rate)
        if config.gain_db:
            db = tf.random.stateless_uniform([batch, 1], _seed(random, 2), -config.gain_db, config.gain_db)
            waveform = waveform * tf.pow(10.0, db / 20.0)
        return tf.clip_by_value(waveform, -1.0, 1.0), label

    return _with_seeds(ds, seed).map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def _masks(shape, random, k: int, count: int, width: int, axis: int):
    """(batch, frames, bins) bool: `count` bands of up to `width` along `axis` (1 time, 2 frequency) per example."""
    batch, size = shape[0], shape[axis]
    keep = tf.zeros([batch, size], tf.bool)
    positions = tf.range(size)[None]
    for i in range(count):
        w = tf.random.stateless_uniform([batch, 1], _seed(random, k + 2 * i), 0, width + 1, tf.int32)
        start = tf.random.stateless_uniform([batch, 1], _seed(random, k + 2 * i + 1), 0, tf.int32.max, tf.int32)
        start = start % tf.maximum(size - w + 1, 1)
        keep |= (positions >= start) & (positions < start + w)
    return keep[:, :, None] if axis == 1 else keep[:, None, :]


def augment_features(ds: tf.data.Dataset, config: AugmentConfig, seed: int):
    """Maps batches of `(features (batch, frames, bins), labels)` through SpecAugment masks (filled with each
    example's mean)."""
    if not config.features_active:
        return ds

    def apply(element, random):
        x, label = element
        shape = tf.shape(x)
        masked = tf.zeros_like(x, tf.bool)
        if config.time_masks and config.time_mask_frames:
            masked |= _masks(shape, random, 100, config.time_masks, config.time_mask_frames, 1)
        if config.freq_masks and config.freq_mask_bins:
            masked |= _masks(shape, random, 200, config.freq_masks, config.freq_mask_bins, 2)
        mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        return tf.where(masked, mean, x), label

    return _with_seeds(ds, seed + 1).map(apply, num_parallel_calls=tf.data.AUTOTUNE)


__all__ = ["AugmentConfig", "augment_features", "augment_waveforms"]
