"""eSpeak NG through ctypes, from the `espeakng-loader` wheel: speech synthesis with pip alone (no apt package).

The wheel ships `libespeak-ng` and its voice data; this module loads them at run time (espeak-ng is GPL-3 and is
not vendored here). The library keeps one global synthesizer, so every call runs under one process-wide lock.

    available() -> bool                        the wheel is installed and the library loads and initializes
    variants() -> tuple of str                 every voice variant the wheel ships (m1..m8, f1..f5, klatt, ...)
    speak(text, voice, ...) -> float32 audio   at `RATE` (22,050 Hz), the library's native rate
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import threading

import numpy as np

RATE = 22050
_SYNCHRONOUS = 0x02  # espeak_AUDIO_OUTPUT: AUDIO_OUTPUT_SYNCHRONOUS, samples come back through the callback.
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7  # espeak_PARAMETER values.
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_LOCK = threading.Lock()


class _Engine:
    """The initialized library and the callback that collects its samples (kept referenced for ctypes)."""

    def __init__(self):
        import espeakng_loader

        self.data_path = espeakng_loader.get_data_path()
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, self.data_path.encode(), 0)
        if rate != RATE:
            raise RuntimeError(f"libespeak-ng initialized at {rate} Hz; expected {RATE} Hz ({self.data_path}).")
        self.chunks: list[np.ndarray] = []
        self.callback = _CALLBACK(self._collect)
        self.lib.espeak_SetSynthCallback(self.callback)

    def _collect(self, wav, num_samples, events):
        if num_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
        return 0  # 0: go on synthesizing.


@functools.lru_cache(maxsize=1)
def _engine() -> _Engine:
    return _Engine()


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether `espeakng-loader` is installed and its library loads and initializes on this machine."""
    try:
        _engine()
    except (ImportError, OSError, RuntimeError, AttributeError):
        return False
    return True


@functools.lru_cache(maxsize=1)
def variants() -> tuple[str, ...]:
    """The voice variants in the wheel's `voices/!v` folder (names with spaces or odd characters left out)."""
    folder = os.path.join(_engine().data_path, "voices", "!v")
    return tuple(sorted(name for name in os.listdir(folder) if _VARIANT_NAME.match(name)))


def speak(text: str, voice: str, speed: int = 160, pitch: int = 50, amplitude: int = 100, pitch_range: int = 50,
          word_gap: int = 0) -> np.ndarray:
    """Speaks `text` with `voice` (e.g. `"en-gb-scotland+f3"`); float32 samples in [-1, 1] at `RATE`.

    Args:
        speed: words per minute (80-450). pitch, pitch_range: 0-99 (range: intonation, 0 monotone).
        amplitude: volume, 0-200. word_gap: extra pause between words, in units of 10 ms.

    Raises:
        RuntimeError: the library cannot be loaded, does not know `voice`, or produced no audio.
    """
    engine = _engine()
    with _LOCK:
        if engine.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"libespeak-ng has no voice {voice!r} (variants: `libespeak.variants()`).")
        for parameter, value in ((_RATE, speed), (_PITCH, pitch), (_VOLUME, amplitude), (_RANGE, pitch_range),
                                 (_WORDGAP, word_gap)):
            engine.lib.espeak_SetParameter(parameter, int(value), 0)
        engine.chunks.clear()
        data = text.encode("utf-8") + b"\0"
        status = engine.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        engine.lib.espeak_Synchronize()
        chunks, engine.chunks = engine.chunks, []
    if status != 0 or not chunks:
        raise RuntimeError(f"libespeak-ng failed (status {status}) to speak {text!r} with voice {voice!r}.")
    return np.concatenate(chunks).astype(np.float32) / 32768.0


__all__ = ["RATE", "available", "speak", "variants"]
