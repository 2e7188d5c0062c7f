"""Tiny reference KWS models trained a few steps on separable synthetic data, and their exports (session-scoped)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfx_ext.models import get_model

FRAMES, BINS, CLASSES = 12, 10, 4
TINY = {
    "ds_cnn": {"width": 8, "num_blocks": 1},
    "crnn": {"width": 3, "units": 6, "dense": 5},
    "gru": {"units": 6, "num_layers": 2, "dense": 5},
    "tc_resnet": {"channels": (4, 6, 8), "kernel_size": 3},  # time stride 4: streams 4 frames per step
    "svdf": {"units1": (8, 8), "memory_size": (3, 4), "units2": (6, -1), "dense": 8},
    "attention": {"width": 8, "num_blocks": 1, "num_heads": 2, "window": 4},
    "bc_resnet": {"width": 4, "stages": (1, 1, 1, 1), "sub_bands": 1},  # 10 bins: 5, 3, 2 per stage, plain BN
}


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise features where class c lifts bins [2c, 2c + 3) (linearly separable, overlapping neighbours)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.normal(size=(n, FRAMES, BINS)).astype("float32")
    for i, c in enumerate(y):
        x[i, :, 2 * c:2 * c + 3] += 2.0
    return x, y


@pytest.fixture(scope="session")
def data():
    return {"train": synthetic(256, 0), "test": synthetic(128, 1)}


@pytest.fixture(scope="session")
def trained(data):
    """{name: trained non-streaming model}."""
    models = {}
    x, y = data["train"]
    for name, kwargs in TINY.items():
        keras.utils.set_random_seed(0)
        model = get_model(name, (FRAMES, BINS), CLASSES, **kwargs)
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=15, batch_size=32, verbose=0)
        models[name] = model
    return models


@pytest.fixture(scope="session")
def exports(trained, data):
    """exports(name, mode, quantize) -> (keras model or runner, flatbuffer), converted once per session."""
    from tfx_ext.lite.convert import to_tflite
    from tfx_ext.lite.int8 import streaming_calibration_data
    from tfx_ext.streaming.convert import min_frames_per_step, to_streaming

    cache = {}
    streaming = {}

    def get(name: str, mode: str, quantize: str | None):
        key = (name, mode, quantize)
        if key in cache:
            return cache[key]
        model = trained[name]
        if mode == "non_stream":
            target = model
        else:
            if (name, mode) not in streaming:
                streaming[(name, mode)] = to_streaming(model, mode, batch_size=1,
                                                       frames_per_step=min_frames_per_step(model))
            target = streaming[(name, mode)]
        keras_model = target if mode == "non_stream" else target.model
        kwargs = {}
        if quantize == "int8":
            x = data["train"][0][:48]
            if mode == "non_stream":
                kwargs["representative_data"] = [{"features": x[i:i + 1]} for i in range(len(x))]
            else:
                kwargs["representative_data"] = streaming_calibration_data(target, x)
        cache[key] = (target, to_tflite(keras_model, quantize=quantize, **kwargs))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def qat_ds_cnn(trained, data):
    """The trained DS-CNN made quantize-aware and fine-tuned 3 epochs."""
    from tfx_ext.transforms.qat import quantize_aware

    keras.utils.set_random_seed(0)
    qat = quantize_aware(trained["ds_cnn"])
    qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = data["train"]
    qat.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return qat
