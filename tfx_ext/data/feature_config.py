"""`FeatureConfig` and `num_frames`: the speech front end's settings, free of TensorFlow.

`tfx_ext.data.features.compute_features` (the data pipeline) and `tfx_ext.layers.LogMelFrontend` (the in-model
front end) read the same config, so a model's features and the pipeline's cannot drift apart.
"""

from __future__ import annotations

import dataclasses

from tfx_ext._validate import check_choice, check_int, check_number, is_int, is_number

_KINDS = ("log_mel", "mfcc")


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Settings of the speech front end.

    Args:
        sample_rate: sample rate of the waveforms in Hz.
        window_ms: analysis window length in milliseconds (a periodic Hann window).
        hop_ms: distance between the starts of two frames in milliseconds.
        num_bins: number of mel filterbank channels.
        kind: `"log_mel"` (output has `num_bins` features per frame) or `"mfcc"` (output has `num_mfcc`
            coefficients per frame, the DCT-II of the log-mel spectrum).
        num_mfcc: number of MFCCs kept when `kind="mfcc"`; between 1 and `num_bins`.
        lower_edge_hz: lowest frequency covered by the mel filterbank.
        upper_edge_hz: highest frequency covered by the mel filterbank; at most `sample_rate / 2`.
        log_offset: added to the mel energies before the logarithm so silence gives a finite value.

    Raises:
        ValueError: an argument is out of range (the message names it and shows the received value).
        TypeError: an argument has the wrong type.

    Example:

    >>> config = FeatureConfig(hop_ms=10)
    >>> num_frames(16000, config), config.num_features
    (98, 40)
    """

    sample_rate: int = 16000
    window_ms: float = 30.0
    hop_ms: float = 20.0
    num_bins: int = 40
    kind: str = "log_mel"
    num_mfcc: int = 13
    lower_edge_hz: float = 20.0
    upper_edge_hz: float = 7600.0
    log_offset: float = 1e-6

    def __post_init__(self):
        for name in ("sample_rate", "num_bins", "num_mfcc"):
            value = getattr(self, name)
            if not is_int(value):  # A wrong type is a TypeError; a wrong value, below, a ValueError.
                raise TypeError(f"`{name}` must be an int. Received: {name}={value!r}")
            check_int(name, value, minimum=1)
        for name in ("window_ms", "hop_ms", "lower_edge_hz", "upper_edge_hz", "log_offset"):
            value = getattr(self, name)
            if not is_number(value):
                raise TypeError(f"`{name}` must be a number. Received: {name}={value!r}")
        check_choice("kind", self.kind, _KINDS)
        if self.window_ms <= 0 or self.window_samples < 2:
            raise ValueError(
                "`window_ms` must be positive and span at least 2 samples at `sample_rate`. "
                f"Received: window_ms={self.window_ms!r}, sample_rate={self.sample_rate!r}"
            )
        if self.hop_ms <= 0 or self.hop_samples < 1:
            raise ValueError(
                "`hop_ms` must be positive and span at least 1 sample at `sample_rate`. "
                f"Received: hop_ms={self.hop_ms!r}, sample_rate={self.sample_rate!r}"
            )
        if self.num_mfcc > self.num_bins:
            raise ValueError(
                f"`num_mfcc` must be at most `num_bins` ({self.num_bins}). Received: num_mfcc={self.num_mfcc!r}"
            )
        if not 0 <= self.lower_edge_hz < self.upper_edge_hz <= self.sample_rate / 2:
            raise ValueError(
                "`lower_edge_hz` and `upper_edge_hz` must satisfy 0 <= lower_edge_hz < upper_edge_hz <= "
                f"sample_rate / 2 ({self.sample_rate / 2:g}). Received: lower_edge_hz={self.lower_edge_hz!r}, "
                f"upper_edge_hz={self.upper_edge_hz!r}"
            )
        check_number("log_offset", self.log_offset, low=0, low_open=True)

    @property
    def window_samples(self) -> int:
        """Window length in samples (`round(sample_rate * window_ms / 1000)`)."""
        return int(round(self.sample_rate * self.window_ms / 1000.0))

    @property
    def hop_samples(self) -> int:
        """Hop length in samples (`round(sample_rate * hop_ms / 1000)`)."""
        return int(round(self.sample_rate * self.hop_ms / 1000.0))

    @property
    def fft_length(self) -> int:
        """FFT size: the smallest power of two that holds one window."""
        return 1 << (self.window_samples - 1).bit_length()

    @property
    def num_features(self) -> int:
        """Features per frame: `num_bins` for log-mel, `num_mfcc` for MFCC."""
        return self.num_bins if self.kind == "log_mel" else self.num_mfcc


def num_frames(num_samples: int, config: FeatureConfig = FeatureConfig()) -> int:
    """Number of frames `compute_features` returns for `num_samples` samples.

    `1 + (num_samples - window) // hop` (no padding), or 0 when the clip is shorter than one window. A 1 s clip at
    16 kHz gives 49 frames with a 30 ms window and 20 ms hop, and 98 frames with a 10 ms hop.

    Args:
        num_samples: length of the waveform in samples.
        config: the front-end settings.

    Returns:
        The number of frames, an int.

    Raises:
        ValueError: `num_samples` is negative.
    """
    num_samples = check_int("num_samples", num_samples, minimum=0)
    if num_samples < config.window_samples:
        return 0
    return 1 + (num_samples - config.window_samples) // config.hop_samples


__all__ = ["FeatureConfig", "num_frames"]
