"""scikit-learn's bundled 8x8 digits: a small image data set for federated experiments (no download)."""

from __future__ import annotations

import numpy as np

from tfx_ext._validate import check_number


def load_digits(test_fraction: float = 0.25, seed: int = 0):
    """The 1797 8x8 handwritten digits of `sklearn.datasets.load_digits`, split into train and test.

    The split is stratified by class and seeded, so the same seed gives the same split.

    Args:
        test_fraction: fraction of the examples in the test split, in (0, 1).
        seed: seeds the split.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images float32 of shape `(n, 8, 8, 1)` in [0, 1] (pixel / 16),
        labels int32 in 0..9.

    Raises:
        ValueError: `test_fraction` is not in (0, 1).
    """
    test_fraction = check_number("test_fraction", test_fraction, low=0, high=1, low_open=True, high_open=True)
    from sklearn.datasets import load_digits as _sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = _sklearn_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return (x_train, y_train), (x_test, y_test)


__all__ = ["load_digits"]
