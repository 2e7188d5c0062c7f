"""Atomic round checkpoints: one `.npz` (no pickles) written to a temporary file, then `os.replace`d.

Contents: `weights/<i>` (global weights, positional), `state/<name>/<i>` (server-optimizer state),
and `meta` (UTF-8 JSON as uint8: completed rounds, the numpy bit-generator state, history, weight paths and
shapes, seed). Loading uses `np.load(..., allow_pickle=False)`.
"""

from __future__ import annotations

import json
import os

import numpy as np

from tfx_ext.errors import FederatedError
from tfx_ext.federated.history import atomic_write

CHECKPOINT_NAME = "checkpoint.npz"


def save_checkpoint(directory, *, weights, server_state: dict, meta: dict) -> str:
    """Writes the checkpoint atomically and returns its path."""
    os.makedirs(directory, exist_ok=True)
    arrays = {f"weights/{i:04d}": np.asarray(w) for i, w in enumerate(weights)}
    for name, values in server_state.items():
        for i, v in enumerate(values):
            arrays[f"state/{name}/{i:04d}"] = np.asarray(v)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path = os.path.join(directory, CHECKPOINT_NAME)
    atomic_write(path, lambda f: np.savez(f, **arrays), binary=True)
    return path


def load_checkpoint(directory):
    """Returns `(weights, server_state, meta)`, or None when `directory` holds no checkpoint."""
    path = os.path.join(directory, CHECKPOINT_NAME)
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode("utf-8"))
            weights = [data[k] for k in sorted(k for k in data.files if k.startswith("weights/"))]
            state: dict[str, list] = {}
            for k in sorted(k for k in data.files if k.startswith("state/")):
                _, name, _ = k.split("/")
                state.setdefault(name, []).append(data[k])
    except (OSError, ValueError, KeyError) as e:
        raise FederatedError(f"Cannot read the checkpoint {path!r}: {e}") from e
    return weights, state, meta


__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT_NAME"]
