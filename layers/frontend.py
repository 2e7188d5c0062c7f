"""`LogMelFrontend`: the speech front end (`tfx_ext.data.compute_features`) as a streamable layer on raw audio."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from tfx_ext._validate import check_choice
from tfx_ext.data.feature_config import FeatureConfig, num_frames
from tfx_ext.streaming.contract import Mode, StateSpec, StreamingLayer

DFTS = ("matmul", "rfft")
# int16 PCM is read as `x / 32768`: full scale maps to [-1, 1), the range `compute_features` expects.
INT16_SCALE = 1.0 / 32768.0


def mel_matrix(config: FeatureConfig) -> np.ndarray:
    """`(fft_length // 2 + 1, num_bins)` triangular mel filterbank, HTK mel scale, DC row zero (the layout of
    `tf.signal.linear_to_mel_weight_matrix`, written in NumPy so the layer needs no TensorFlow)."""
    bins = config.fft_length // 2 + 1

    def to_mel(hz):
        return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)

    linear = to_mel(np.linspace(0.0, config.sample_rate / 2.0, bins)[1:])[:, None]
    edges = np.linspace(to_mel(config.lower_edge_hz), to_mel(config.upper_edge_hz), config.num_bins + 2)
    lower, center, upper = edges[:-2][None], edges[1:-1][None], edges[2:][None]
    weights = np.maximum(0.0, np.minimum((linear - lower) / (center - lower), (upper - linear) / (upper - center)))
    return np.pad(weights, [(1, 0), (0, 0)]).astype(np.float32)


def hann_window(length: int) -> np.ndarray:
    """The periodic Hann window of `tf.signal.hann_window` (float64)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def dft_matrix(config: FeatureConfig, bins) -> np.ndarray:
    """`(window, 2 * len(bins))`: the periodic Hann window folded into the real-input DFT at frequency `bins`,
    `[cos | -sin]` columns (bins the mel filterbank ignores are left out: they would only multiply zeros)."""
    window, length = config.window_samples, config.fft_length
    n, hann = np.arange(window), hann_window(window)
    phase = 2.0 * np.pi * (np.outer(n, np.asarray(bins)) % length) / length  # exact integer phase first
    return np.concatenate([hann[:, None] * np.cos(phase), -hann[:, None] * np.sin(phase)], axis=1).astype(np.float32)


def dct_matrix(num_bins: int, num_mfcc: int) -> np.ndarray:
    """`(num_bins, num_mfcc)` DCT-II scaled as `tf.signal.mfccs_from_log_mel_spectrograms` (2 cos / sqrt(2 N))."""
    n, k = np.arange(num_bins)[:, None], np.arange(num_mfcc)[None]
    return (2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * num_bins)) / math.sqrt(2.0 * num_bins)).astype(np.float32)


def _as_config(config) -> FeatureConfig:
    if config is None:
        return FeatureConfig()
    if isinstance(config, FeatureConfig):
        return config
    if isinstance(config, dict):
        return FeatureConfig(**config)
    raise TypeError(f"`config` must be a FeatureConfig or its dict. Received: config={config!r}")


@keras.saving.register_keras_serializable(package="tfx_ext")
class LogMelFrontend(StreamingLayer):
    """Log-mel (or MFCC) features of raw audio inside the model: `compute_features` as a streamable layer.

    Frames of `window` samples every `hop` samples (no padding: `1 + (samples - window) // hop` frames), a periodic
    Hann window, the magnitude of the real DFT (a matrix multiply with the window folded in, or `rfft`), the mel
    filterbank, `log(mel + log_offset)` and, for `kind="mfcc"`, the DCT-II. On whole clips it equals
    `tfx_ext.data.compute_features(audio, config)`, so a model trained on the pipeline's features runs on raw
    audio. It computes in float32 whatever the dtype policy (float16 samples and DFT sums lose the quiet bands)
    and returns the compute dtype.

    Args:
        config: a `tfx_ext.data.FeatureConfig` (or its dict): sample rate, window, hop, bins, kind, log offset.
        dft: `"matmul"` (default: one matrix multiply, any window, converts to every TFLite backend) or `"rfft"`
            (`keras.ops.rfft` over the zero-padded window: TFLite's RFFT2D, float only).
        mode: a `tfx_ext.Mode`.

    Call arguments:
        inputs: `(batch, samples)` float audio in [-1, 1], or int16 PCM (read as `x / 32768`, see `INT16_SCALE`);
            `[inputs, buffer]` in `STREAM_EXTERNAL_STATE` mode.

    Input shape:
        `(batch, samples)`.

    Output shape:
        `(batch, frames, config.num_features)`; streamed, one frame per `hop` samples.

    Streaming:
        State `buffer`: `((K - 1) * hop,)` float32 samples with `K = ceil(window / hop)` (the last
        `window - hop` samples, rounded up to whole hops; no state when the hop covers the window). Block size:
        `hop` samples. Latency: frame `j` needs samples up to `j * hop + window`, so it comes out at step
        `j + K - 1`: `output_delay = (K - 1) * hop` samples (one 20 ms frame at 30/20 ms, two at 30/10 ms). Layers
        with state after it take `warmup_frames=K - 1` (`tfx_ext.models.get_model(..., raw_audio=True)` sets it).

    Export:
        Float TFLite is exact (5e-5 from `compute_features`). Keep it float in int8 deployments: int8 (or int8
        weights alone) loses the quiet mel bands, whose energies span ~8 decades (log-mel 3.6 off on average,
        `bench/README.md`); `dft="rfft"` makes the float file 48 KB instead of 955 KB.

    Example:
        >>> layer = LogMelFrontend({"hop_ms": 20.0, "window_ms": 30.0})
        >>> tuple(layer(np.zeros((2, 16000), "float32")).shape)
        (2, 49, 40)
    """

    def __init__(self, config=None, dft: str = "matmul", mode=Mode.TRAINING, **kwargs):
        kwargs["autocast"] = False  # raw samples stay float32 under a float16 policy (see the docstring)
        super().__init__(mode=mode, **kwargs)
        self.config = _as_config(config)
        self.dft = check_choice("dft", dft, DFTS)
        c = self.config
        self.window, self.hop = c.window_samples, c.hop_samples
        self.hops_per_frame = -(-self.window // self.hop)  # K: whole hops that hold one window
        self._mel = mel_matrix(c)
        if dft == "matmul":  # only the DFT bins some mel filter weighs (243 of 257 at the defaults)
            used = np.flatnonzero(self._mel.any(axis=1))
            self._dft, self._mel_used = dft_matrix(c, used), self._mel[used]
        self._dct = dct_matrix(c.num_bins, c.num_mfcc) if c.kind == "mfcc" else None

    # ----- streaming geometry ------------------------------------------------------------------------------------
    @property
    def block_size(self) -> int:
        return self.hop

    @property
    def time_stride(self) -> int:
        return self.hop

    @property
    def output_delay(self) -> int:
        return (self.hops_per_frame - 1) * self.hop

    @property
    def warmup_frames_after(self) -> int:
        """Output frames before the first whole-clip frame when streamed (`warmup_frames` of the layers after)."""
        return self.hops_per_frame - 1

    def state_specs(self, input_shape) -> list[StateSpec]:
        buffer = (self.hops_per_frame - 1) * self.hop
        return [StateSpec("buffer", (buffer,), "float32")] if buffer else []

    # ----- computation -------------------------------------------------------------------------------------------
    def _samples(self, inputs):
        if str(inputs.dtype) == "int16" or getattr(inputs.dtype, "name", None) == "int16":
            return ops.cast(inputs, "float32") * INT16_SCALE
        return ops.cast(inputs, "float32")

    def _frames(self, samples, count):
        """`(batch, count, K * hop)` frames of whole hops (the window is their first `window` samples)."""
        k = self.hops_per_frame
        hops = ops.reshape(samples, (-1, count + k - 1, self.hop))
        if k == 1:
            return hops
        return ops.concatenate([hops[:, i:i + count] for i in range(k)], axis=-1)

    def _features(self, frames):
        c = self.config
        if frames.shape[-1] != self.window:
            frames = frames[..., : self.window]  # whole hops past the window
        if self.dft == "matmul":
            spectrum = ops.matmul(frames, ops.convert_to_tensor(self._dft))
            bins = self._dft.shape[1] // 2
            real, imag, mel = spectrum[..., :bins], spectrum[..., bins:], self._mel_used
        else:
            hann = ops.convert_to_tensor(hann_window(self.window).astype(np.float32))
            x = ops.pad(frames * hann, [[0, 0], [0, 0], [0, c.fft_length - self.window]])
            (real, imag), mel = ops.rfft(x), self._mel
        magnitude = ops.sqrt(real * real + imag * imag)
        log_mel = ops.log(ops.matmul(magnitude, ops.convert_to_tensor(mel)) + c.log_offset)
        if self._dct is not None:
            log_mel = ops.matmul(log_mel, ops.convert_to_tensor(self._dct))
        return ops.cast(log_mel, self.compute_dtype)

    def call_full(self, inputs, training=None):
        samples = self._samples(inputs)
        length = samples.shape[1]
        extra = self.hops_per_frame * self.hop - self.window  # zeros after the last window to fill its last hop
        if length is not None:
            count = num_frames(length, self.config)
            if count == 0:
                return ops.zeros((ops.shape(samples)[0], 0, self.config.num_features), self.compute_dtype)
            used = samples[:, : (count - 1) * self.hop + self.window]
        else:  # a dynamic length: the same arithmetic on tensors
            count = 1 + (ops.shape(samples)[1] - self.window) // self.hop
            used = samples[:, : (count - 1) * self.hop + self.window]
        padded = ops.pad(used, [[0, 0], [0, extra]]) if extra else used
        return self._features(self._frames(padded, count))

    def step(self, inputs, states, training=None):
        samples = self._samples(inputs)
        count = samples.shape[1] // self.hop
        if not states:
            return self._features(self._frames(samples, count)), []
        history = ops.concatenate([states[0], samples], axis=1)
        return self._features(self._frames(history, count)), [history[:, -states[0].shape[1]:]]

    def compute_output_shape(self, input_shape):
        shape = self._data_shape(input_shape)
        length = shape[1]
        if length is None:
            frames = None
        elif self.mode.is_streaming:
            frames = length // self.hop
        else:
            frames = num_frames(length, self.config)
        out = (shape[0], frames, self.config.num_features)
        if self.mode == Mode.STREAM_EXTERNAL_STATE:
            return [out, *[(shape[0], *spec.shape) for spec in self.state_specs(shape)]]
        return out

    def get_config(self):
        return {**super().get_config(), "config": dataclasses.asdict(self.config), "dft": self.dft}


__all__ = ["DFTS", "INT16_SCALE", "LogMelFrontend", "dct_matrix", "dft_matrix", "hann_window", "mel_matrix"]
