"""`tfx_ext._validate`: the one set of argument validators every room uses.

Each validator refuses booleans where numbers are asked for, accepts numpy scalars, returns a plain Python value and
raises the caller's error class with a Keras-style "`name` must be ... Received: name=value" message.
"""

import math

import numpy as np
import pytest

from tfx_ext._validate import check_choice, check_int, check_number, is_int, is_number
from tfx_ext.errors import DataError


@pytest.mark.parametrize("value, expected", [
    (3, True), (0, True), (-2, True), (np.int8(3), True), (np.int64(3), True), (np.uint16(3), True),
    (True, False), (False, False), (np.bool_(True), False), (3.0, False), (np.float32(3.0), False), ("3", False),
    (None, False),
])
def test_is_int(value, expected):
    assert is_int(value) is expected


@pytest.mark.parametrize("value, expected", [
    (3, True), (0.5, True), (np.float32(0.5), True), (np.int64(2), True), (math.inf, True), (math.nan, True),
    (True, False), (np.bool_(False), False), ("0.5", False), (None, False), (1j, False),
])
def test_is_number(value, expected):
    assert is_number(value) is expected


def test_check_int_returns_a_python_int():
    for value in (4, np.int32(4), np.int64(4), np.uint8(4)):
        out = check_int("units", value, minimum=1)
        assert out == 4 and type(out) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 2.0, np.float32(2.0), 2.5, "2", None, [2]])
def test_check_int_refuses_booleans_floats_and_others(value):
    with pytest.raises(ValueError, match=r"^`units` must be an integer >= 1\. Received: units="):
        check_int("units", value, minimum=1)


def test_check_int_bounds_are_inclusive():
    assert check_int("n", 1, minimum=1, maximum=3) == 1
    assert check_int("n", 3, minimum=1, maximum=3) == 3
    with pytest.raises(ValueError, match=r"^`n` must be an integer >= 1 and <= 3\. Received: n=0$"):
        check_int("n", 0, minimum=1, maximum=3)
    with pytest.raises(ValueError, match=r"^`n` must be an integer >= 1 and <= 3\. Received: n=4$"):
        check_int("n", 4, minimum=1, maximum=3)
    with pytest.raises(ValueError, match=r"^`n` must be an integer <= 3\. Received: n=4$"):
        check_int("n", 4, maximum=3)
    with pytest.raises(ValueError, match=r"^`n` must be an integer\. Received: n=0\.5$"):
        check_int("n", 0.5)
    assert check_int("n", -10**30) == -10**30  # no bound, any integer


def test_check_int_allow_none():
    assert check_int("window", None, minimum=1, allow_none=True) is None
    with pytest.raises(ValueError, match=r"^`window` must be an integer >= 1 or None\. Received: window=0$"):
        check_int("window", 0, minimum=1, allow_none=True)
    with pytest.raises(ValueError, match=r"^`window` must be an integer >= 1\. Received: window=None$"):
        check_int("window", None, minimum=1)


def test_check_number_returns_a_python_float():
    for value in (1, 0.25, np.float32(0.25), np.float64(0.25), np.int64(1)):
        out = check_number("rate", value, low=0.0, high=1.0)
        assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value", [True, False, np.bool_(True), "0.5", None, math.nan, math.inf, -math.inf,
                                   np.float32("nan"), 10**400])
def test_check_number_refuses_booleans_non_finite_and_others(value):
    with pytest.raises(ValueError, match=r"^`rate` must be a finite number\. Received: rate="):
        check_number("rate", value)


def test_check_number_closed_and_open_bounds():
    assert check_number("rate", 0.0, low=0.0, high=1.0, high_open=True) == 0.0
    with pytest.raises(ValueError, match=r"^`rate` must be a finite number >= 0\.0 and < 1\.0\. Received: rate=1\.0$"):
        check_number("rate", 1.0, low=0.0, high=1.0, high_open=True)
    with pytest.raises(ValueError, match=r"^`lr` must be a finite number > 0\. Received: lr=0$"):
        check_number("lr", 0, low=0, low_open=True)
    assert check_number("lr", 1e-12, low=0, low_open=True) == 1e-12
    assert check_number("x", 1.0, high=1.0) == 1.0
    with pytest.raises(ValueError, match=r"^`x` must be a finite number <= 1\.0\. Received: x=1\.5$"):
        check_number("x", 1.5, high=1.0)


def test_check_number_allow_none():
    assert check_number("clip", None, low=0, low_open=True, allow_none=True) is None
    with pytest.raises(ValueError, match=r"^`clip` must be a finite number > 0 or None\. Received: clip=-1$"):
        check_number("clip", -1, low=0, low_open=True, allow_none=True)


def test_check_choice():
    assert check_choice("mode", "b", ("a", "b")) == "b"
    assert check_choice("verbose", 1, (0, 1, 2)) == 1
    assert check_choice("verbose", np.int64(2), (0, 1, 2)) == 2
    with pytest.raises(ValueError, match=r"^`mode` must be one of 'a', 'b'\. Received: mode='c'$"):
        check_choice("mode", "c", ("a", "b"))


def test_check_choice_matches_booleans_only_to_booleans():
    with pytest.raises(ValueError, match=r"^`verbose` must be one of 0, 1, 2\. Received: verbose=True$"):
        check_choice("verbose", True, (0, 1, 2))
    assert check_choice("flag", True, (True, False)) is True
    with pytest.raises(ValueError, match=r"^`flag` must be one of True, False\. Received: flag=1$"):
        check_choice("flag", 1, (True, False))


def test_check_choice_refuses_an_array_by_name():
    with pytest.raises(ValueError, match=r"^`mode` must be one of 0, 1\. Received: mode=array"):
        check_choice("mode", np.array([0, 1]), (0, 1))


def test_error_class_is_the_callers():
    with pytest.raises(DataError, match=r"^`num_clients` must be an integer >= 1\. Received: num_clients=0$"):
        check_int("num_clients", 0, minimum=1, error=DataError)
    with pytest.raises(TypeError, match=r"^`rate` must be a finite number\. Received: rate='x'$"):
        check_number("rate", "x", error=TypeError)
    with pytest.raises(KeyError):
        check_choice("mode", "z", ("a",), error=KeyError)
