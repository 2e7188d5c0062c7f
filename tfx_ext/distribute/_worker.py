"""Entry point of one local worker process started by `launch_local_cluster` (run as a script, not imported).

`python _worker.py SPEC.json` imports `spec["target"]` ("package.module:function"), calls it with the JSON
arguments of the spec and writes its return value next to the spec. The file is run as a plain script so that
starting a worker imports nothing but the standard library before the target does: a worker that only sleeps or
crashes starts in milliseconds, and TensorFlow is first imported by the target, after TF_CONFIG is set.

Return values travel as JSON plus one `.npz` for the NumPy arrays inside them (no pickle): any nest of dicts with
string keys, lists, tuples, str/int/float/bool/None, NumPy scalars and arrays (TensorFlow tensors and Keras
variables are converted with `numpy()`/`np.asarray` first).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback

_ARRAY_KEY = "__ndarray__"
_TUPLE_KEY = "__tuple__"


def encode_result(value, arrays: dict) -> object:
    """Turns `value` into a JSON-able skeleton; arrays go into `arrays` under generated keys."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"result dicts must have string keys. Received keys: {list(value)!r}")
        if _ARRAY_KEY in value or _TUPLE_KEY in value:
            raise TypeError(f"result dicts may not use the reserved keys {_ARRAY_KEY!r}, {_TUPLE_KEY!r}")
        return {k: encode_result(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [encode_result(v, arrays) for v in value]
    if isinstance(value, tuple):
        return {_TUPLE_KEY: [encode_result(v, arrays) for v in value]}
    import numpy as np  # Only workers that return arrays pay for NumPy.

    if isinstance(value, np.generic):
        return value.item()
    if not isinstance(value, np.ndarray):
        if hasattr(value, "numpy"):
            value = value.numpy()
        else:
            try:
                value = np.asarray(value)
            except Exception as error:  # Says what could not be sent instead of a bare numpy message.
                raise TypeError(f"cannot send a {type(value).__name__} back from a worker: {error}") from None
        if value.dtype == object:
            raise TypeError(f"cannot send a {type(value).__name__} back from a worker (object array)")
    key = f"a{len(arrays)}"
    arrays[key] = value
    return {_ARRAY_KEY: key}


def decode_result(skeleton, arrays) -> object:
    """Inverse of `encode_result` (`arrays` is the loaded `.npz` mapping)."""
    if isinstance(skeleton, list):
        return [decode_result(v, arrays) for v in skeleton]
    if isinstance(skeleton, dict):
        if set(skeleton) == {_ARRAY_KEY}:
            return arrays[skeleton[_ARRAY_KEY]]
        if set(skeleton) == {_TUPLE_KEY}:
            return tuple(decode_result(v, arrays) for v in skeleton[_TUPLE_KEY])
        return {k: decode_result(v, arrays) for k, v in skeleton.items()}
    return skeleton


def write_result(value, json_path: str, npz_path: str) -> None:
    arrays: dict = {}
    skeleton = encode_result(value, arrays)
    if arrays:
        import numpy as np

        with open(npz_path + ".tmp", "wb") as f:
            np.savez(f, **arrays)
        os.replace(npz_path + ".tmp", npz_path)
    with open(json_path + ".tmp", "w") as f:
        json.dump({"result": skeleton, "has_arrays": bool(arrays)}, f)
    os.replace(json_path + ".tmp", json_path)  # Written last: its presence means the whole result is there.


def resolve_target(target: str):
    module_name, _, attr_path = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    for entry in reversed(spec.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    try:
        function = resolve_target(spec["target"])
        value = function(*spec.get("args", []), **spec.get("kwargs", {}))
        write_result(value, spec["result_json"], spec["result_npz"])
    except BaseException:  # Every failure, SystemExit included, ends with a traceback in the worker's log.
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
