"""scikit-learn digits and the keras.datasets image loaders (on injected arrays; the tests never download)."""

import numpy as np
import pytest

from tfx_ext.data import IMAGE_DATASETS, load_digits, load_image_dataset
from tfx_ext.errors import DataError


def test_digits_shapes_ranges_and_split():
    (x_train, y_train), (x_test, y_test) = load_digits()
    assert x_train.shape[1:] == (8, 8, 1) and x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == 450
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert set(np.unique(y_test)) == set(range(10))
    (x2, y2), _ = load_digits()
    np.testing.assert_array_equal(x_train, x2)  # Seeded.
    (x3, _), _ = load_digits(seed=1)
    assert not np.array_equal(x_train, x3)
    # Stratified: class proportions of train and test agree to within a few examples.
    assert np.abs(np.bincount(y_train) / len(y_train) - np.bincount(y_test) / len(y_test)).max() < 0.01


def test_digits_errors():
    with pytest.raises(ValueError, match="`test_fraction` must be a finite number > 0 and < 1. Received: test_fraction=1.0"):
        load_digits(test_fraction=1.0)


def _fake(shape, label_shape, seed=0):
    rng = np.random.default_rng(seed)

    def loader():
        return (
            (rng.integers(0, 256, (6, *shape), dtype=np.uint8), rng.integers(0, 10, (6, *label_shape))),
            (rng.integers(0, 256, (4, *shape), dtype=np.uint8), rng.integers(0, 10, (4, *label_shape))),
        )

    return loader


@pytest.mark.parametrize(
    "name, shape, label_shape, expected",
    [("cifar10", (32, 32, 3), (1,), (32, 32, 3)), ("mnist", (28, 28), (), (28, 28, 1)),
     ("fashion_mnist", (28, 28), (), (28, 28, 1))],
)  # fmt: skip
def test_image_dataset_normalizes_injected_arrays(name, shape, label_shape, expected):
    raw = _fake(shape, label_shape)()
    (x_train, y_train), (x_test, y_test) = load_image_dataset(name, loader=lambda: raw)
    assert x_train.shape == (6, *expected) and x_test.shape == (4, *expected)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32 and y_train.shape == (6,)
    np.testing.assert_allclose(x_train.reshape(6, -1), raw[0][0].reshape(6, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_test, raw[1][1].reshape(-1))
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0


def test_default_loader_is_keras_datasets(monkeypatch):
    import keras

    monkeypatch.setattr(keras.datasets.mnist, "load_data", _fake((28, 28), ()))
    (x_train, _), _ = load_image_dataset("mnist")
    assert x_train.shape == (6, 28, 28, 1)
    assert IMAGE_DATASETS == ("cifar10", "mnist", "fashion_mnist")


def test_image_dataset_errors():
    with pytest.raises(ValueError, match="`name` must be one of .*Received: name='imagenet'"):
        load_image_dataset("imagenet")
    bad = ((np.zeros((2, 4)), np.zeros(2)), (np.zeros((1, 4)), np.zeros(1)))
    with pytest.raises(DataError, match="mnist train images must have shape .*Received: shape=\\(2, 4\\)"):
        load_image_dataset("mnist", loader=lambda: bad)
    mismatched = ((np.zeros((2, 4, 4)), np.zeros(3)), (np.zeros((1, 4, 4)), np.zeros(1)))
    with pytest.raises(DataError, match="mnist train has 2 images but 3 labels"):
        load_image_dataset("mnist", loader=lambda: mismatched)
    with pytest.raises(DataError, match="loader must return"):
        load_image_dataset("cifar10", loader=lambda: (1, 2, 3))
