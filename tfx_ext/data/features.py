"""Speech feature front end (log-mel and MFCC) built on `tf.signal`.

Frame counts. Frames are taken without padding, so a clip of `N` samples gives

    frames = 1 + (N - window) // hop        (0 when N < window)

with `window = sample_rate * window_ms / 1000` and `hop = sample_rate * hop_ms / 1000` samples. For a 1 s clip at
16 kHz (`N = 16000`) and a 30 ms window (480 samples):

    * 20 ms hop (320 samples): 1 + 15520 // 320 = 49 frames,
    * 10 ms hop (160 samples): 1 + 15520 // 160 = 98 frames.

`num_frames(num_samples, config)` gives the same number without running the front end, and the tests check that
`compute_features` agrees with it.
"""

from __future__ import annotations

import tensorflow as tf

from tfx_ext.data.feature_config import FeatureConfig, num_frames


def compute_features(waveforms, config: FeatureConfig = FeatureConfig()) -> tf.Tensor:
    """Log-mel spectrogram or MFCCs of float waveforms in [-1, 1].

    STFT magnitude (periodic Hann window, FFT size the next power of two of the window) -> mel filterbank with
    `num_bins` channels between `lower_edge_hz` and `upper_edge_hz` -> `log(mel + log_offset)`; for `kind="mfcc"`
    the first `num_mfcc` DCT-II coefficients of that (`tf.signal.mfccs_from_log_mel_spectrograms`).

    Args:
        waveforms: float waveforms of shape `(samples,)` or `(batch, samples)` (any numeric dtype; cast to
            float32).
        config: the front-end settings.

    Returns:
        float32 tensor of shape `(frames, features)` or `(batch, frames, features)` with
        `frames = num_frames(samples, config)` and `features = config.num_features`.

    Raises:
        ValueError: `waveforms` is not rank 1 or 2.
    """
    waveforms = tf.convert_to_tensor(waveforms)
    if waveforms.shape.rank not in (1, 2):
        raise ValueError(
            "`waveforms` must have shape (samples,) or (batch, samples). "
            f"Received: waveforms.shape={tuple(waveforms.shape)}"
        )
    waveforms = tf.cast(waveforms, tf.float32)
    stft = tf.signal.stft(
        waveforms,
        frame_length=config.window_samples,
        frame_step=config.hop_samples,
        fft_length=config.fft_length,
        window_fn=tf.signal.hann_window,
        pad_end=False,
    )
    magnitude = tf.abs(stft)
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=config.num_bins,
        num_spectrogram_bins=config.fft_length // 2 + 1,
        sample_rate=config.sample_rate,
        lower_edge_hertz=float(config.lower_edge_hz),
        upper_edge_hertz=float(config.upper_edge_hz),
    )
    mel = tf.tensordot(magnitude, mel_matrix, axes=1)
    log_mel = tf.math.log(mel + config.log_offset)
    if config.kind == "log_mel":
        return log_mel
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., : config.num_mfcc]


__all__ = ["FeatureConfig", "compute_features", "num_frames"]
