"""Checks that Keras runs on TensorFlow before anything else in tfx-ext is imported, and quiets TF's start-up.

tfx-ext uses TensorFlow directly (tf.distribute, tf.lite, tf.data), so another Keras backend would fail later in
confusing ways; we fail at import time with the fix instead.

TensorFlow's native start-up lines (oneDNN and CPU-feature INFO lines, the "no CUDA drivers" notice on CPU-only
machines) bypass `TF_CPP_MIN_LOG_LEVEL` because they are written before absl logging is initialised. We capture
the native stderr while TensorFlow starts and replay every line except those INFO lines, so warnings and errors
still reach the user. Set `TFX_EXT_KEEP_TF_STARTUP_LOGS=1` to see everything. `quiet_native_logs()` does the same around the
TFLite converter and the LiteRT interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile

from tfx_ext.errors import BackendError

# Native INFO lines ("I0000 00:00:... file.cc:123] ..."), absl's preamble line, LiteRT's delegate notice and the
# converter's notes about options it ignores; nothing else at WARNING or above, except the cuInit failure that
# every CPU-only machine prints when it looks for a GPU.
_STARTUP_NOISE = re.compile(
    r"^(I\d{4} |WARNING: All log messages before absl::InitializeLog\(\)|E\d{4} .*failed call to cuInit"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate|W\d{4} .*Ignored (output_format|drop_control_dependency)"
    r"|W\d{4} .*Skipping runtime version metadata)"
)

_LOG_PREFIX = re.compile(r"^([IWEF]\d{4} |WARNING|ERROR|Traceback)")


@contextlib.contextmanager
def quiet_native_logs():
    """Redirects file descriptor 2 to a temporary file and replays its lines afterwards, minus known noise.

    Used around TensorFlow's start-up, the TFLite converter and the LiteRT interpreter, whose native INFO lines
    ignore `TF_CPP_MIN_LOG_LEVEL` once TensorFlow is imported. Warnings and errors are replayed untouched.
    """
    if os.environ.get("TFX_EXT_KEEP_TF_STARTUP_LOGS"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # No real file descriptor 2 (some embedded interpreters): nothing to filter.
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept, in_noise = [], False
            for line in capture.read().decode("utf-8", errors="replace").splitlines():
                # A line without a log prefix continues the previous message (e.g. the CPU-feature INFO).
                in_noise = bool(_STARTUP_NOISE.match(line)) or (in_noise and not _LOG_PREFIX.match(line))
                if not in_noise:
                    kept.append(line)
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


def _configured_backend() -> tuple[str | None, str]:
    """The backend Keras will pick before it is imported: KERAS_BACKEND, else keras.json (as Keras reads it)."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], "KERAS_BACKEND"
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    config = os.path.join(keras_home, "keras.json")
    try:
        with open(config, encoding="utf-8") as handle:
            return json.load(handle).get("backend"), config
    except (OSError, ValueError):  # No or unreadable config: Keras falls back to TensorFlow as well.
        return None, config


def require_tensorflow_backend() -> None:
    """Raises `BackendError` unless Keras uses (or will use) the TensorFlow backend."""
    requested, source = _configured_backend()
    if requested is not None and requested != "tensorflow":
        raise BackendError(
            f"tfx-ext needs Keras 3 with the TensorFlow backend, but {source} selects {requested!r}. "
            "Set KERAS_BACKEND=tensorflow before importing keras or tfx_ext."
        )
    with quiet_native_logs() if "tensorflow" not in sys.modules else contextlib.nullcontext():
        import tensorflow as tf

        tf.config.list_physical_devices()  # Looks for GPUs now, inside the filter (cuInit noise on CPU machines).
        import keras

    backend = keras.config.backend()
    if backend != "tensorflow":
        raise BackendError(
            f"tfx-ext needs Keras 3 with the TensorFlow backend, but Keras uses {backend!r} (from "
            "~/.keras/keras.json or an earlier import). Set KERAS_BACKEND=tensorflow before importing keras "
            "or tfx_ext."
        )
    if int(keras.__version__.split(".")[0]) < 3:
        raise BackendError(f"tfx-ext needs Keras 3, found keras {keras.__version__}.")
