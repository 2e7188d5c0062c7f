"""Image data sets from `keras.datasets` (CIFAR-10, MNIST, Fashion-MNIST) in one normalized form.

Downloads on first use (in Colab or on a machine with internet access); the tests inject small arrays through
`loader` and never download.
"""

from __future__ import annotations

import numpy as np

from tfx_ext._validate import check_choice
from tfx_ext.errors import DataError

IMAGE_DATASETS = ("cifar10", "mnist", "fashion_mnist")


def _normalize(x, y, name: str, part: str):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., None]  # Grayscale: add the channel axis.
    if x.ndim != 4:
        raise DataError(
            f"{name} {part} images must have shape (n, height, width) or (n, height, width, channels). "
            f"Received: shape={x.shape}"
        )
    y = y.reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise DataError(f"{name} {part} has {x.shape[0]} images but {y.shape[0]} labels.")
    # keras.datasets gives uint8 pixels; float arrays are taken as already scaled to [0, 1].
    x = x.astype(np.float32) / 255.0 if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)
    return x, y.astype(np.int32)


def load_image_dataset(name: str, *, loader=None):
    """Loads a `keras.datasets` image data set as float32 images in [0, 1] and int32 labels.

    Args:
        name: `"cifar10"`, `"mnist"` or `"fashion_mnist"`.
        loader: a callable returning `((x_train, y_train), (x_test, y_test))` like `load_data()`; default
            `keras.datasets.<name>.load_data` (downloads on first use).

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images float32 `(n, height, width, channels)` (grayscale gets a
        channel axis of 1), integer pixels divided by 255 (float
        arrays are kept as given); labels int32 of shape `(n,)`.

    Raises:
        ValueError: `name` is not one of `IMAGE_DATASETS`.
        DataError: the loader returned arrays of the wrong shape.
    """
    check_choice("name", name, IMAGE_DATASETS)
    if loader is None:
        import keras

        loader = getattr(keras.datasets, name).load_data
    try:
        (x_train, y_train), (x_test, y_test) = loader()
    except (TypeError, ValueError) as error:
        raise DataError(f"{name} loader must return ((x_train, y_train), (x_test, y_test)): {error}") from error
    return _normalize(x_train, y_train, name, "train"), _normalize(x_test, y_test, name, "test")


__all__ = ["IMAGE_DATASETS", "load_image_dataset"]
