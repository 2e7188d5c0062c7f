"""The `Example:` sections of the streaming layers, the models factory and the conversion module run as doctests."""

import doctest

import keras
import numpy as np
import pytest

from tfx_ext.layers import delay, frontend, recurrent, stream


@pytest.mark.parametrize("module", [stream, recurrent, delay, frontend], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"np": np, "keras": keras}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
